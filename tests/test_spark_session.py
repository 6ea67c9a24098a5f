"""Local Spark session sizing: the JIT mode follows the input's row count (no JVM started here)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from processing import spark_session as ss


def test_jit_is_c1_only_below_the_threshold_and_tiered_from_it_or_when_unknown() -> None:
    assert ss.jit_options(0) == ss.jit_options(ss.C1_ONLY_BELOW_ROWS - 1) == ss.C1_ONLY
    assert ss.jit_options(ss.C1_ONLY_BELOW_ROWS) == ss.jit_options(None) == ss.JIT_OPTIONS
    assert "TieredStopAtLevel" not in ss.JIT_OPTIONS


def test_row_hint_reads_parquet_footers_and_estimates_csv(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": list(range(7))}), tmp_path / "one.parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"x": list(range(5))}), parts / f"part-{i}.parquet")
    assert ss.input_rows_hint(tmp_path / "one.parquet") == 7
    assert ss.input_rows_hint(parts) == 15
    csv = tmp_path / "tx.csv"
    csv.write_bytes(b"x" * (ss.CSV_BYTES_PER_ROW * 40 + 3))
    assert ss.input_rows_hint(str(csv)) == 40
    (tmp_path / "tx.csv.gz").write_bytes(b"x" * 8000)  # compressed: its size says nothing
    assert ss.input_rows_hint(tmp_path / "tx.csv.gz") is None


def test_row_hint_is_none_when_the_input_cannot_be_read(tmp_path: Path) -> None:
    assert ss.input_rows_hint(tmp_path / "missing.parquet") is None
    assert ss.input_rows_hint(tmp_path / "missing.csv") is None
    assert ss.input_rows_hint("s3://bucket/transactions.parquet") is None
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert ss.input_rows_hint(tmp_path / "broken.parquet") is None
