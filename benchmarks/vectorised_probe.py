#!/usr/bin/env python3
"""Probe (not the product): the Spark job's feature pass as one vectorised `mapInArrow` pass.

Measures what issue 11's main lever would buy, on the same data and in the same session as the
product's Spark pass, and checks the values agree:
- spark: `processing.aggregate.training_rows` (exchange by card, one sort, RANGE frames, recency
  lags, the snapshot grid joined by broadcast), as the job runs it;
- arrow: exchange by card, then per partition NumPy over the (card, time)-sorted columns: window
  starts by `np.searchsorted` on a per-partition (card rank, microsecond) int64 key, every window
  aggregation with `ufunc.reduceat` over [start, i] (sequential sums as exact as Spark's, min/max
  as well), recency from the first index of a row's tie group, the snapshot values of a training
  row from the [T - w, T) bounds of T = floor_day(ts) (no grid join). It loops over the spec's
  declarations like the product.
Each variant runs to Spark's `noop` sink (compute only) and to Parquet (what the job writes); CPU
seconds are the whole process tree's (JVM + Python workers), wall and 1-minute load recorded.

Why it is a probe: `mapInArrow` needs pyarrow on every executor, and the stock SageMaker Spark 3.5
processing image (aws/sagemaker-spark-container, smsparkbuild/py312/Pipfile.runtime.lock: numpy
1.26.4, pandas 3.0.2) has none; benchmarks/performance_notes.md has the figures and the choice.

    python benchmarks/vectorised_probe.py --input tx.parquet [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from features import spec  # noqa: E402

DAY = spec.SNAPSHOT_PERIOD_SECONDS
_REDUCE = {"sum": np.add, "avg": np.add, "min": np.minimum, "max": np.maximum}


def _window_reduce(op: np.ufunc, values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """op over values[start[i]:stop[i]] for every i (stop > start), sequentially, in C."""
    bounds = np.empty(2 * len(start), dtype=np.int64)
    bounds[0::2], bounds[1::2] = start, np.minimum(stop, len(values) - 1)
    out = op.reduceat(values, bounds)[0::2]
    tail = stop == len(values)  # reduceat's last segment runs to the end: fix the capped ones
    if tail.any():
        out[tail] = [op.reduce(values[s:]) for s in start[tail]]
    return out


def _aggregate(a: spec.Aggregation, amount: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """One declared aggregation over rows [lo, hi) (empty: 0, count 0)."""
    n = hi - lo
    if a.operation == "count":
        return n.astype(np.int64)
    out = np.zeros(len(lo))
    some = n > 0
    if some.any():
        out[some] = _window_reduce(_REDUCE[a.operation], amount, lo[some], hi[some])
        if a.operation == "avg":
            out[some] /= n[some]
    return out


def features_of_partition(batches: Iterator, fs: spec.FeatureSpec) -> Iterator:
    """mapInArrow function: every streaming, recency and snapshot feature of the partition's rows."""
    import pyarrow as pa

    table = pa.Table.from_batches(list(batches))
    if table.num_rows == 0:
        return
    card = table.column(spec.CARD_ID).to_numpy()
    ts = table.column(spec.EVENT_TIME).to_numpy()
    order = np.lexsort((ts, card))
    table = table.take(pa.array(order))
    card, ts = card[order], ts[order]
    amount = table.column(spec.AMOUNT).to_numpy()
    us = np.rint(ts * 1e6).astype(np.int64)
    first = np.r_[True, card[1:] != card[:-1]]
    rank = np.cumsum(first) - 1
    longest = max([a.seconds for a in fs.aggregations] + [DAY])
    stride = int(us.max() - us.min()) + 2 * longest * 1_000_000 + 1
    if int(rank[-1]) + 1 > (2**62) // stride:
        raise ValueError("partition too large for the int64 (card, time) key: use more partitions")
    base = rank * stride - int(us.min()) + longest * 1_000_000
    key = base + us  # strictly orders (card, time); windows never cross a card
    card_start = np.flatnonzero(first)[rank]
    columns: dict[str, np.ndarray] = {}
    after = np.searchsorted(key, key, "right")  # one past the row's last same-time peer
    for a in fs.streaming:
        lo = np.searchsorted(key, key - a.seconds * 1_000_000, "left")
        columns[a.name] = _aggregate(a, amount, lo, after)
    if fs.recency:
        tie_first = np.searchsorted(key, key, "left")
        ties = after - tie_first  # g rows share ts, the row included
        for r in fs.recency:
            j = tie_first - (r.nth - ties + 1)  # the (nth - g + 1)-th latest time before ts
            value = np.where(j >= card_start, ts - ts[np.maximum(j, 0)], spec.RECENCY_SENTINEL)
            columns[r.name] = np.where(ties > r.nth, 0.0, value)
    cutoff_us = (np.floor(ts / DAY) * DAY * 1e6).astype(np.int64)
    hi = np.searchsorted(key, base + cutoff_us, "left")
    for a in fs.snapshot:
        lo = np.searchsorted(key, base + cutoff_us - a.seconds * 1_000_000, "left")
        columns[a.name] = _aggregate(a, amount, lo, hi)
    for ratio in fs.ratios:
        num = columns.get(ratio.numerator, amount if ratio.numerator == spec.AMOUNT else None)
        den = columns[ratio.denominator]
        columns[ratio.name] = np.divide(num, den, out=np.zeros(len(ts)), where=den != 0)
    out = table
    for name, values in columns.items():
        out = out.append_column(name, pa.array(values))
    yield from out.to_batches(max_chunksize=65536)


def arrow_rows(tx, fs: spec.FeatureSpec):
    from pyspark.sql import types as T

    fields = [*tx.schema.fields]
    for a in fs.streaming:
        fields.append(T.StructField(a.name, T.LongType() if a.operation == "count" else T.DoubleType()))
    fields += [T.StructField(r.name, T.DoubleType()) for r in fs.recency]
    for a in fs.snapshot:
        fields.append(T.StructField(a.name, T.LongType() if a.operation == "count" else T.DoubleType()))
    fields += [T.StructField(r.name, T.DoubleType()) for r in fs.ratios]
    n = tx.sparkSession.conf.get("spark.sql.shuffle.partitions")
    return tx.repartition(int(n), spec.CARD_ID).mapInArrow(
        lambda it: features_of_partition(it, fs), T.StructType(fields)
    )


def main(argv: list[str] | None = None) -> int:
    import psutil
    from pyspark.sql import functions as F

    from processing import aggregate
    from processing.spark_session import local_spark_session

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--work", default="/tmp/vectorised-probe")
    p.add_argument("--check", action="store_true", help="compare every value (collects both)")
    args = p.parse_args(argv)
    spark = local_spark_session("vectorised-probe")
    me = psutil.Process()

    def cpu() -> float:
        return sum(sum(q.cpu_times()[:2]) for q in [me, *me.children(recursive=True)])

    tx = aggregate.read_transactions(spark, args.input).where(aggregate.valid_row())
    tx = tx.withColumn("day", F.floor(F.col(spec.EVENT_TIME) / DAY).cast("long")).drop("datetime")
    fs = spec.SPEC
    span = tx.agg(F.min("day").alias("lo"), F.max("day").alias("hi")).first()
    # The job builds (and caches) the grid in its snapshot step: the Spark pass only joins it.
    grid = aggregate.snapshot_grid(tx, int(span["lo"]), int(span["hi"]), fs).persist()
    grid.count()
    variants = {
        "spark": lambda: aggregate.training_rows(tx, fs, grid=grid),
        "arrow": lambda: arrow_rows(tx, fs),
    }
    results = []
    for sink in ("noop", "parquet"):
        for name, build in variants.items():
            rows = build()
            c0, t0, load0 = cpu(), time.perf_counter(), os.getloadavg()[0]
            writer = rows.write.mode("overwrite")
            if sink == "noop":
                writer.format("noop").save()
            else:
                writer.parquet(f"{args.work}/{name}")
            point = {"variant": name, "sink": sink, "wall_s": round(time.perf_counter() - t0, 2),
                     "cpu_s": round(cpu() - c0, 2), "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip
            results.append(point)
            print(json.dumps(point), flush=True)
    if args.check:
        names = [*fs.streaming_features, *fs.snapshot_features, *(r.name for r in fs.ratios)]
        a = (
            spark.read.parquet(f"{args.work}/spark")
            .select("tid", *names)
            .toPandas()
            .set_index("tid")
            .sort_index()
        )
        b = (
            spark.read.parquet(f"{args.work}/arrow")
            .select("tid", *names)
            .toPandas()
            .set_index("tid")
            .sort_index()
        )
        worst = {n: float(np.max(np.abs(a[n] - b[n]) / np.maximum(np.abs(a[n]), 1e-300))) for n in names}
        print(
            json.dumps({"rows": len(a), "same_tids": bool((a.index == b.index).all()), "max_rel_diff": worst})
        )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
