#!/usr/bin/env python3
"""Scoring path: score_transaction handler + local store + local endpoint, vs the original design.

Same run, same services (SQLite online store, local HTTP endpoint serving one XGBoost model):
- new: `score_transaction.process_batch` on Kinesis batches of 100 enriched events — one
  BatchGetRecord, ratios via features.spec, ONE multi-row CSV InvokeEndpoint, PutRecords;
- baseline (original design): per record GetRecord(cc-agg-fg) + GetRecord(cc-agg-batch-fg) +
  a single-row InvokeEndpoint, timed per group of 100 records.
Reports events/s and p50/p99 per batch of 100, and the speed-up (must be >= 10x).

    python benchmarks/bench_scoring.py [--events 20000] [--baseline-events 3000]
Writes benchmarks/results/scoring.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from features import spec  # noqa: E402
from lambdas.score_transaction import handler as score  # noqa: E402
from lambdas.testing import kinesis_event  # noqa: E402
from pipeline.local.feature_store import LocalFeatureStoreRuntime  # noqa: E402
from training.endpoint_client import LocalSageMakerRuntime  # noqa: E402
from training.model_artifact import write_model_archive  # noqa: E402
from training.serve import LocalEndpointServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "scoring.json"
CARDS = 10_000
BATCH = 100


class NullKinesis:
    def __init__(self) -> None:
        self.n = 0

    def put_records(self, *, StreamName, Records):
        self.n += len(Records)
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in Records]}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q * 100))


def setup(tmp: Path, rng: np.random.Generator) -> tuple[LocalFeatureStoreRuntime, Path]:
    import xgboost as xgb

    store = LocalFeatureStoreRuntime(tmp / "store.sqlite")
    cards = 4_000_000_000_000_000 + np.arange(CARDS)
    for c in cards:  # both feature groups populated for every card (the baseline reads both)
        for fg, t in (
            (spec.BATCH_FEATURE_GROUP, 1_580_515_200.0),
            (spec.STREAMING_FEATURE_GROUP, 1_580_515_300.0),
        ):
            values = {spec.CARD_ID: str(c), fg.event_time: repr(t)}
            for name, kind in fg.features:
                if name not in values:
                    values[name] = (
                        str(int(rng.integers(1, 60)))
                        if kind == "Integral"
                        else repr(float(rng.uniform(1, 900)))
                    )
            store.put_record(
                FeatureGroupName=fg.name,
                Record=[{"FeatureName": k, "ValueAsString": values[k]} for k in fg.feature_names],
            )
    x = rng.uniform(0, 5, (5000, len(spec.MODEL_FEATURES)))
    y = (x[:, 1] * x[:, 3] > 6).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1}, xgb.DMatrix(x, label=y), 100
    )
    model = write_model_archive(booster, tmp / "model.tar.gz")
    return store, model


def make_events(n: int, rng: np.random.Generator) -> list[dict]:
    cards = 4_000_000_000_000_000 + rng.integers(0, CARDS, n)
    amounts = np.round(rng.lognormal(3.5, 1.5, n), 2)
    return [
        {
            "tid": f"t{i}",
            "cc_num": int(cards[i]),
            "amount": float(amounts[i]),
            "trans_ts": 1_580_520_000.0 + i,
            **{
                name: 1 if spec.SPEC.feature_type(name) == "Integral" else float(amounts[i])
                for name in spec.STREAMING_FEATURES
            },
            "late": False,
        }
        for i in range(n)
    ]


def bench_new(events: list[dict], store, runtime) -> dict:
    kin = NullKinesis()
    cfg = score.Config(failure_queue_url="local")
    latencies = []
    batches = [
        kinesis_event(events[i : i + BATCH], start_sequence=i + 1) for i in range(0, len(events), BATCH)
    ]
    sink = io.StringIO()
    t0 = time.perf_counter()
    for ev in batches:
        t = time.perf_counter()
        with contextlib.redirect_stdout(sink):
            r = score.process_batch(
                ev, featurestore=store, runtime=runtime, kinesis=kin, sqs=None, config=cfg
            )
        latencies.append((time.perf_counter() - t) * 1000)
        if r["batchItemFailures"]:
            sys.exit("bench_scoring: the handler reported failures")
        sink.seek(0)
        sink.truncate()
    total = time.perf_counter() - t0
    assert kin.n == len(events)
    return _stats(len(events), total, latencies)


def bench_baseline(events: list[dict], store, runtime) -> dict:
    """The original design: per record 2 x GetRecord + 1 single-row InvokeEndpoint.

    It gets the same Kinesis batches and decodes each record (base64 + JSON) like its Lambda did."""
    latencies = []
    batches = [
        kinesis_event(events[i : i + BATCH], start_sequence=i + 1) for i in range(0, len(events), BATCH)
    ]
    t0 = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        for rec in batch["Records"]:
            ev = json.loads(base64.b64decode(rec["kinesis"]["data"]))
            rid = str(ev[spec.CARD_ID])
            agg = store.get_record(
                FeatureGroupName=spec.STREAMING_FEATURE_GROUP.name, RecordIdentifierValueAsString=rid
            )
            snap = store.get_record(
                FeatureGroupName=spec.BATCH_FEATURE_GROUP.name, RecordIdentifierValueAsString=rid
            )
            vals = {f["FeatureName"]: float(f["ValueAsString"]) for f in agg["Record"] + snap["Record"]}
            row = spec.model_input({**vals, spec.AMOUNT: ev[spec.AMOUNT]})
            body = ",".join(repr(row[n]) for n in spec.MODEL_FEATURES)
            resp = runtime.invoke_endpoint(
                EndpointName=spec.ENDPOINT_NAME, Body=body.encode(), ContentType="text/csv"
            )
            float(resp["Body"].read())
        latencies.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t0
    return _stats(len(events), total, latencies)


def _stats(n: int, total: float, latencies: list[float]) -> dict:
    return {
        "events": n,
        "seconds": round(total, 3),
        "events_per_second": round(n / total, 1),
        "batch_of_100_ms": {
            "p50": round(percentile(latencies, 0.5), 3),
            "p99": round(percentile(latencies, 0.99), 3),
            "mean": round(statistics.fmean(latencies), 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument(
        "--baseline-events",
        type=int,
        default=3_000,
        help="events for the per-record baseline; 0 skips it and the 10x verdict (cost curves)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        print(f"populating the local store ({CARDS:,} cards x 2 groups) and training a model ...", flush=True)
        store, model = setup(Path(tmp), rng)
        server = LocalEndpointServer(model).start()
        try:
            runtime = LocalSageMakerRuntime({spec.ENDPOINT_NAME: server.url})
            events = make_events(max(args.events, args.baseline_events), rng)
            bench_new(events[:500], store, runtime)  # warm-up (connections, caches)
            print(f"new path: {args.events:,} events in batches of {BATCH} ...", flush=True)
            new = bench_new(events[: args.events], store, runtime)
            base = None
            if args.baseline_events > 0:
                print(f"baseline: {args.baseline_events:,} events, per record ...", flush=True)
                base = bench_baseline(events[: args.baseline_events], store, runtime)
        finally:
            server.stop()
            store.close()
    speedup = new["events_per_second"] / base["events_per_second"] if base else None
    result = {
        "benchmark": "scoring_path_local",
        "batch_size": BATCH,
        "new_handler": new,
        "baseline_per_record": base,
        "speedup_events_per_second": None if speedup is None else round(speedup, 1),
        "meets_10x": None if speedup is None else speedup >= 10,
        "model": "xgboost 100 trees depth 6",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if speedup is None or speedup >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
