#!/usr/bin/env python3
"""The Flink job locally: events/s after start-up on 1 M events (start-up measured separately).

Generates N synthetic events (10,000 cards, event time over 10 days, arrival shuffled within
3 s < the 5 s watermark), then runs streaming/job.py in .venv-flink twice as the replay does
(a subprocess per run): on 100 events (= fixed cost: JVM, planner, job submission, teardown) and
on the N events. Throughput after start-up = N / (t_N - t_100).

    python benchmarks/bench_flink.py [--events 1000000] [--parallelism 1]
Writes benchmarks/results/flink.json.
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
RESULTS = REPO / "benchmarks" / "results" / "flink.json"
FLINK_PY = Path(os.environ.get("FLINK_PYTHON", REPO / ".venv-flink" / "bin" / "python"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streaming.replay import ReplayError, enriched_lines, run_flink  # noqa: E402
from streaming.sql import DEFAULT_WATERMARK_SECONDS  # noqa: E402


def write_events(path: Path, n: int, seed: int = 0) -> None:
    """Synthetic events in arrival order (numpy only, fast)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = 1_580_515_200
    ts = np.sort(rng.integers(start, start + 10 * 86400, n)).astype(np.float64)
    arrival = ts + rng.uniform(0, 3, n)
    order = np.argsort(arrival, kind="stable")
    cards = 4_000_000_000_000_000 + rng.integers(0, 10_000, n)
    amounts = np.round(rng.lognormal(3.5, 1.5, n), 2)
    with path.open("w") as f:
        for i in order:
            f.write(
                f'{{"tid": "t{i:08d}", "cc_num": {cards[i]}, "amount": {float(amounts[i])!r}, "trans_ts": {float(ts[i])!r}}}\n'
            )


def run_job(src: Path, out: Path, parallelism: int) -> tuple[float, int]:
    """Wall seconds and output rows of one job run, launched exactly as the replay launches it."""
    try:
        elapsed = run_flink(
            src, out, DEFAULT_WATERMARK_SECONDS, out.with_suffix(".log"), parallelism=parallelism
        )
    except ReplayError as exc:
        sys.exit(f"bench_flink: {exc}")
    return elapsed, sum(1 for _ in enriched_lines(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if not FLINK_PY.exists():
        sys.exit(f"bench_flink: {FLINK_PY} not found: run `make install`")
    with tempfile.TemporaryDirectory(prefix="bench-flink-") as tmp:
        tmp_path = Path(tmp)
        small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
        print(f"generating {args.events:,} events ...", flush=True)
        t = time.perf_counter()
        write_events(big, args.events)
        write_events(small, 100, seed=1)
        gen_s = time.perf_counter() - t
        print("start-up run (100 events) ...", flush=True)
        startup_s, n_small = run_job(small, tmp_path / "out-small", args.parallelism)
        print(f"  {startup_s:.1f}s; full run ({args.events:,} events) ...", flush=True)
        total_s, n_big = run_job(big, tmp_path / "out-big", args.parallelism)
        size_mb = big.stat().st_size / 1e6
    if n_big != args.events or n_small != 100:
        sys.exit(f"bench_flink: expected {args.events} and 100 output rows, got {n_big} and {n_small}")
    processing_s = max(total_s - startup_s, 1e-9)
    result = {
        "benchmark": "flink_job_local",
        "events": args.events,
        "input_mb": round(size_mb, 1),
        "parallelism": args.parallelism,
        "startup_seconds": round(startup_s, 2),
        "total_seconds": round(total_s, 2),
        "processing_seconds": round(processing_s, 2),
        "events_per_second_after_startup": round(args.events / processing_s),
        "events_per_second_including_startup": round(args.events / total_s),
        "generate_seconds": round(gen_s, 2),
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
