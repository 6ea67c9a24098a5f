"""Local Spark session on embedded defaults (the SageMaker image builds its own)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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

C1_ONLY = "-XX:TieredStopAtLevel=1"
C1_ONLY_BELOW_ROWS = 1_000_000
"""Below this many input rows a local session runs C1 only: the job is mostly Spark's own fixed
cost (planning, code generation, first calls), which C2's compilations slow down. Measured
(`processing/aggregate.py --local`, fresh JVM, load 1.4-2.3): 300 k rows 22.5-27.9 s C1 only
against 27.7-31.3 s tiered; 1 M rows 31.9-32.0 against 31.5-35.8 s, the crossover; the test
suite's Spark jobs ~30 % faster."""


def jit_options(input_rows: int | None) -> str:
    """C1 only for small inputs, else tiered compilation with C2 kept for the hottest loops."""
    return C1_ONLY if input_rows is not None and input_rows < C1_ONLY_BELOW_ROWS else JIT_OPTIONS


CSV_BYTES_PER_ROW = 80
"""About one simulated transaction as CSV text (32-hex tid, timestamp, 16-digit card, amount, label)."""


def input_rows_hint(path: str | Path) -> int | None:
    """Rows of a local input for `jit_options`: Parquet's footers (file or directory), CSV's size
    over CSV_BYTES_PER_ROW; None for anything else (remote, compressed or unreadable: the default JIT)."""
    p = Path(path)
    try:
        if p.is_dir() or p.suffix.lower() == ".parquet":
            import pyarrow.dataset as ds

            return ds.dataset(p, format="parquet").count_rows()
        if p.is_file() and p.suffix.lower() == ".csv":
            return p.stat().st_size // CSV_BYTES_PER_ROW
    except (ImportError, OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None
    return None


def local_spark_session(
    app_name: str,
    cores: int | None = None,
    shuffle_partitions: int | None = None,
    input_rows: int | None = None,
) -> SparkSession:
    """`local[N]` session, UTC, no UI, driver memory sized for the full 5.4 M-row data set; the
    JIT sized to `input_rows` when the caller knows it (`jit_options`)."""
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
        .config(
            "spark.driver.extraJavaOptions",
            f"-Duser.timezone=UTC -XX:+UseParallelGC {jit_options(input_rows)}",
        )
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session
