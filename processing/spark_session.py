"""Local Spark session on embedded defaults (the SageMaker image builds its own)."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

JIT_OPTIONS = (
    "-XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=20000 "
    "-XX:Tier4CompileThreshold=150000 -XX:Tier4BackEdgeThreshold=400000"
)
"""C2 (the optimising JIT) only for code 10x hotter than the JVM's default thresholds: the
per-row loops of a job still reach it within seconds, while the planner's and the generated
classes' lukewarm methods stay on C1. On 2 cores the JIT compiler threads were the largest CPU
user after the task threads: 35 of ~140 CPU-s for the 5.4 M-row job and 23 of ~45 for 120 k rows,
22 and 14 with these thresholds, task CPU unchanged (benchmarks/performance_notes.md). C1 only
(`-XX:TieredStopAtLevel=1`) halves the 120 k-row job's CPU but costs +35 % at 5.4 M rows."""


def local_spark_session(
    app_name: str, cores: int | None = None, shuffle_partitions: int | None = None
) -> SparkSession:
    """`local[N]` session, UTC, no UI, driver memory sized for the full 5.4 M-row data set."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault(
        "SPARK_LOCAL_IP", "127.0.0.1"
    )  # local mode: loopback only, no hostname lookup warning
    n = cores or os.cpu_count() or 2
    session = (
        SparkSession.builder.master(f"local[{n}]")
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "6g"))
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions or max(4, 2 * n)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")  # the runner prints its own progress per step
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Throughput GC: a batch job over millions of rows, no latency target (measured ~5-10% faster).
        .config("spark.driver.extraJavaOptions", f"-Duser.timezone=UTC -XX:+UseParallelGC {JIT_OPTIONS}")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session
