#!/usr/bin/env python3
"""Simulator throughput at full scale: generation, then writing Parquet and CSV.

    python benchmarks/bench_simulator.py [--rows 5400000] [--seed 42]
Writes benchmarks/results/simulator.json. Figure to reach: 5.4 M rows in < 15 s including writing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from processing.simulate import FULL_ROWS, simulate_table, write_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "simulator.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        t0 = time.perf_counter()
        table = simulate_table(args.rows, args.seed)
        gen = time.perf_counter() - t0
        t1 = time.perf_counter()
        write_table(table, Path(tmp) / "tx.parquet")
        pq_s = time.perf_counter() - t1
        pq_mb = (Path(tmp) / "tx.parquet").stat().st_size / 1e6
        t2 = time.perf_counter()
        write_table(table, Path(tmp) / "tx.csv")
        csv_s = time.perf_counter() - t2
        csv_mb = (Path(tmp) / "tx.csv").stat().st_size / 1e6
    result = {
        "rows": args.rows,
        "seed": args.seed,
        "generate_s": round(gen, 3),
        "write_parquet_s": round(pq_s, 3),
        "write_csv_s": round(csv_s, 3),
        "total_parquet_s": round(gen + pq_s, 3),
        "total_csv_s": round(gen + csv_s, 3),
        "rows_per_s_generate": round(args.rows / gen),
        "rows_per_s_with_parquet": round(args.rows / (gen + pq_s)),
        "rows_per_s_with_csv": round(args.rows / (gen + csv_s)),
        "parquet_mb": round(pq_mb, 1),
        "csv_mb": round(csv_mb, 1),
        "target_s": 15.0,
        "meets_target_parquet": gen + pq_s < 15.0,
        "meets_target_csv": gen + csv_s < 15.0,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
    }
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
