#!/usr/bin/env python3
"""The original study's batch aggregation, the way its notebooks compute it: the baseline.

One Spark SQL query over the raw transactions: per card, a 10-minute and a 1-week RANGE window per
transaction on unix-second timestamps (`RANGE BETWEEN 600 / 604800 PRECEDING AND CURRENT ROW`),
the count and average amount of each, the three ratios, written as one CSV data set. No time
split, no snapshot table, no ingestion: only the study's aggregation, as in its
`aggregate_batch` processing job.

    python benchmarks/study_baseline.py --input tx.parquet --output out/ [--runs 1]
Prints one JSON line per run (wall seconds, rows written). Used by benchmarks/bench_spark.py,
which runs it in a fresh process next to `processing/aggregate.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STUDY_QUERY = """
SELECT tid, datetime, cc_num, amount, fraud_label,
       num_trans_last_10m, avg_amt_last_10m, num_trans_last_1w, avg_amt_last_1w,
       avg_amt_last_10m / avg_amt_last_1w AS amt_ratio1,
       amount / avg_amt_last_1w AS amt_ratio2,
       num_trans_last_10m / num_trans_last_1w AS count_ratio
FROM (
    SELECT *,
           COUNT(*) OVER last_10m AS num_trans_last_10m,
           AVG(amount) OVER last_10m AS avg_amt_last_10m,
           COUNT(*) OVER last_1w AS num_trans_last_1w,
           AVG(amount) OVER last_1w AS avg_amt_last_1w
    FROM (SELECT *, unix_timestamp(datetime) AS ts FROM transactions)
    WINDOW last_10m AS (PARTITION BY cc_num ORDER BY ts RANGE BETWEEN 600 PRECEDING AND CURRENT ROW),
           last_1w AS (PARTITION BY cc_num ORDER BY ts RANGE BETWEEN 604800 PRECEDING AND CURRENT ROW)
)
"""


def run_once(spark, input_path: str, output: str) -> dict[str, float | int]:
    """Read, aggregate with the study's query, write CSV; returns wall seconds and rows written."""
    t = time.perf_counter()
    spark.read.parquet(input_path).createOrReplaceTempView("transactions")
    features = spark.sql(STUDY_QUERY)
    features.write.mode("overwrite").option("header", True).csv(output)
    seconds = time.perf_counter() - t
    rows = spark.read.option("header", True).csv(output).count()  # after the clock: a check only
    return {"wall_s": round(seconds, 3), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="transactions Parquet (tid, datetime, cc_num, ...)")
    parser.add_argument("--output", required=True, help="CSV output directory")
    parser.add_argument("--runs", type=int, default=1, help="runs in this session (run 1: fresh JVM)")
    parser.add_argument("--explain", action="store_true", help="print the physical plan first")
    args = parser.parse_args(argv)
    from processing.spark_session import local_spark_session

    t0 = time.perf_counter()
    spark = local_spark_session("study-baseline")
    session_s = time.perf_counter() - t0
    if args.explain:
        spark.read.parquet(args.input).createOrReplaceTempView("transactions")
        spark.sql(STUDY_QUERY).explain()
    for i in range(args.runs):
        result = run_once(spark, args.input, args.output)
        result.update(run=i + 1, session_s=round(session_s, 3), loadavg_1m=round(os.getloadavg()[0], 2))
        print(json.dumps(result), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
