"""Write the 10-minute aggregates of enriched transactions to the `cc-agg-fg` online store.

PutRecord with event time = the transaction's `trans_ts` (never the wall clock), so the store's
event-time guard makes redelivery and reordering harmless; per batch only each card's newest
on-time event is written (the older ones would be no-op writes under that guard). Late events (flagged by Flink,
whose aggregates are partial by construction) are not written: they are counted instead, so a
partial aggregate can never become a card's current record. Malformed records go to the failure
queue with the reason; writes that still fail after retries (throttling, connection errors,
service errors) are reported as `batchItemFailures`: the invocation itself never fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from features import spec
from lambdas.clients import aws_client
from lambdas.failures import FailureQueue, batch_item_failures
from lambdas.records import KinesisItem, decode_batch
from lambdas.retries import AWS_ERRORS, RetryPolicy, error_code, with_retries
from lambdas.telemetry import DEFAULT_METRICS_NAMESPACE, log, put_metrics


@dataclass(frozen=True)
class Config:
    """Everything read from the environment, in one place."""

    feature_group: str = spec.STREAMING_FEATURE_GROUP.name
    failure_queue_url: str | None = None
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            feature_group=env.get("FEATURE_GROUP_NAME", spec.STREAMING_FEATURE_GROUP.name),
            failure_queue_url=env.get("FAILURE_QUEUE_URL") or None,
            metrics_namespace=env.get("METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE),
        )


def record_of(ev: Mapping[str, Any]) -> list[dict[str, str]]:
    """The `cc-agg-fg` record of an enriched event, in the feature group's schema order."""
    fg = spec.STREAMING_FEATURE_GROUP
    card, event_time = str(ev[spec.CARD_ID]), repr(float(ev[spec.EVENT_TIME]))
    record = []
    for name, kind in fg.features:
        if name == spec.CARD_ID:
            value = card
        elif name == fg.event_time:
            value = event_time
        else:
            value = str(int(ev[name])) if kind == "Integral" else repr(float(ev[name]))
        record.append({"FeatureName": name, "ValueAsString": value})
    return record


def process_batch(
    event: Mapping[str, Any],
    *,
    featurestore: Any,
    sqs: Any,
    config: Config,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Ingest one Kinesis batch; returns the partial-batch response."""
    policy = policy or RetryPolicy()
    failure_queue = FailureQueue(sqs, config.failure_queue_url, "ingest_aggregates", policy, sleep)
    t0 = time.perf_counter()
    items = decode_batch(event, enriched=True)
    bad = [it for it in items if it.event is None]
    failures: list[str] = []
    written = late = superseded = 0
    # Only the newest on-time event per card matters: the store keeps the record with the latest
    # event time anyway, so older ones in the same batch would be no-op writes (and throttle sooner).
    newest: dict[int, KinesisItem] = {}
    covered: dict[int, list[KinesisItem]] = {}
    for it in items:
        if it.event is None:
            continue
        if it.event["late"]:
            late += 1
            continue
        card = it.event[spec.CARD_ID]
        covered.setdefault(card, []).append(it)
        if card not in newest or it.event[spec.EVENT_TIME] >= newest[card].event[spec.EVENT_TIME]:
            newest[card] = it
    for card, it in newest.items():
        superseded += len(covered[card]) - 1
        try:
            with_retries(
                lambda it=it: featurestore.put_record(
                    FeatureGroupName=config.feature_group, Record=record_of(it.event)
                ),
                policy=policy,
                sleep=sleep,
            )
            written += 1
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code in ("ValidationError", "ValidationException"):
                it.reason = f"rejected by the feature store: {exc}"
                bad.append(it)
            else:  # throttling/connection errors exhausted, service errors, missing group: retry later
                log(
                    "ERROR",
                    "PutRecord failed",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    sequence=it.sequence_number,
                )
                failures.extend(x.sequence_number for x in covered[card])
    failures += failure_queue.divert(bad, stage="validate")
    latency_ms = (time.perf_counter() - t0) * 1000
    put_metrics(
        config.metrics_namespace,
        {
            "RecordsWritten": (written, "Count"),
            "RecordsSuperseded": (superseded, "Count"),
            "LateEvents": (late, "Count"),
            "MalformedRecords": (len(bad), "Count"),
            "FailedRecords": (len(set(failures)), "Count"),
            "BatchLatency": (latency_ms, "Milliseconds"),
        },
        Function="ingest_aggregates",
    )
    log(
        "INFO",
        "batch ingested",
        records=len(items),
        written=written,
        late=late,
        malformed=len(bad),
        failed=len(set(failures)),
        latency_ms=round(latency_ms, 3),
    )
    return batch_item_failures(failures)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_batch(
        event,
        featurestore=aws_client("sagemaker-featurestore-runtime"),
        sqs=aws_client("sqs"),
        config=Config.from_env(),
    )
