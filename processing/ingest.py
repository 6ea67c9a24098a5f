"""Batch ingestion of the daily snapshot into the online feature group, from the Spark executors.

One record per card (`cc_num`, the snapshot features, event time = the cut-off), written with
PutRecord (the API has no batch form) from a bounded thread pool inside each partition. Two stores
behind one client shape: the boto3 `sagemaker-featurestore-runtime` client on AWS and the SQLite
store of local mode (`pipeline/local/feature_store.py`).

One retry layer: botocore's (`Config(retries={"mode": "adaptive", "total_max_attempts": 10})`). Its standard conditions
(botocore/retries/standard.py) retry every error PutRecord can answer transiently: throttling codes
(`ThrottlingException`, `TooManyRequestsException`, ...), HTTP 500/502/503/504 (PutRecord's modeled
`InternalFailure` is 500, `ServiceUnavailable` 503), `RequestTimeout`, and connection errors
(`ConnectionError`, `HTTPClientError`: endpoint unreachable, connection closed, read timeout);
adaptive mode also rate-limits the shared client when throttled. What is not retried is not
transient (`ValidationError`, `AccessForbidden`): the task fails, and Spark retries the task. The
local store waits on a locked database itself (SQLite busy timeout, 60 s).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from features import spec

REPO_ROOT = str(Path(__file__).resolve().parents[1])
MAX_ATTEMPTS = 10
"""botocore attempts per PutRecord (first call included)."""


class SageMakerFeatureStoreFactory:
    """Picklable: builds the boto3 client inside the Spark partition, botocore retries configured."""

    def __init__(self, region: str | None, max_pool_connections: int = 10) -> None:
        self.region = region or None
        self.max_pool_connections = max_pool_connections

    def __call__(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "adaptive"},
            max_pool_connections=self.max_pool_connections,
        )
        return boto3.client("sagemaker-featurestore-runtime", region_name=self.region, config=config)


class LocalFeatureStoreFactory:
    """Picklable: opens the SQLite online store inside the partition (local mode only)."""

    def __init__(self, db_path: str, repo_root: str = REPO_ROOT) -> None:
        self.db_path = db_path
        self.repo_root = repo_root

    def __call__(self) -> Any:
        if self.repo_root not in sys.path:
            sys.path.insert(0, self.repo_root)
        from pipeline.local.feature_store import LocalFeatureStoreRuntime

        return LocalFeatureStoreRuntime(self.db_path)


def record_writer(
    names: tuple[str, ...], integral: tuple[bool, ...]
) -> Callable[[Any], list[dict[str, str]]]:
    """A row (values in `names` order) -> the PutRecord `Record` (integers whole, floats repr'd)."""

    def record(row: Any) -> list[dict[str, str]]:
        return [
            {"FeatureName": n, "ValueAsString": str(int(v)) if whole else repr(float(v))}
            for n, v, whole in zip(names, row, integral, strict=True)
        ]

    return record


def ingest_partition(
    factory: Callable[[], Any],
    group_name: str,
    names: tuple[str, ...],
    integral: tuple[bool, ...],
    workers: int,
) -> Callable[[Iterable[Any]], Iterator[int]]:
    """Partition function: PutRecord calls from a thread pool; yields the partition's record count.

    Plain arguments (no spec objects), so the closure pickles without importing features/ on the
    executors. The in-flight queue is bounded, so memory stays flat for any partition size; a failed
    call (after botocore's retries) re-raises and fails the task, which Spark retries."""
    record = record_writer(names, integral)

    def run(rows: Iterable[Any]) -> Iterator[int]:
        client = factory()
        done = 0
        in_flight: deque[Future[Any]] = deque()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for row in rows:
                in_flight.append(
                    pool.submit(client.put_record, FeatureGroupName=group_name, Record=record(row))
                )
                if len(in_flight) >= 4 * workers:
                    in_flight.popleft().result()
                    done += 1
            while in_flight:
                in_flight.popleft().result()
                done += 1
        yield done

    return run


def ingest_snapshot(
    snapshot: DataFrame,
    factory: Callable[[], Any],
    feature_group: str = spec.BATCH_FEATURE_GROUP.name,
    workers: int = 8,
    partitions: int = 0,
    fs: spec.FeatureSpec = spec.SPEC,
) -> int:
    """Write one record per row of `snapshot` (cc_num, snapshot features, cutoff) from the executors."""
    group = spec.feature_group(feature_group, fs.snapshot_features, fs)
    integral = tuple(t == "Integral" for _, t in group.features)
    n = partitions or snapshot.sparkSession.sparkContext.defaultParallelism
    rows = snapshot.select(spec.CARD_ID, *fs.snapshot_features, "cutoff").repartition(n)
    run = ingest_partition(factory, group.name, group.feature_names, integral, workers)
    return int(sum(rows.rdd.mapPartitions(run).collect()))
