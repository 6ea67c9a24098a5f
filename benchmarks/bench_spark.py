#!/usr/bin/env python3
"""The Spark job against the study's approach, same data, same run, each a fresh process.

Simulates the study-sized data set once (5.4 M rows, Parquet), then alternates, `--runs` times:
- baseline: `benchmarks/study_baseline.py` (the study's one query: a 10-minute and a 1-week RANGE
  window per transaction on unix seconds, the three ratios, written as CSV);
- job: `processing/aggregate.py --local` (every declared feature, the features Parquet, the
  training CSV splits, the snapshot table and the ingestion of the latest cut-off into the local
  store).
Each run is a new Python process with a new JVM; wall time is the whole process (JVM start
included), CPU time the sum over the process tree, as is peak RSS (benchmarks/bench_scale.measure).
Alternating pairs see the same machine load, so the ratio of the medians is the figure; the
1-minute load average is recorded before and after every run.

    python benchmarks/bench_spark.py [--rows 5400000] [--runs 3]
Writes benchmarks/results/spark.json. Target: job / baseline <= 0.5 (wall, medians).
"""

from __future__ import annotations

import argparse
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

from benchmarks.bench_scale import measure  # noqa: E402
from processing.simulate import FULL_ROWS, simulate_table, write_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "spark.json"
TARGET = 0.5


def summarize(runs: dict[str, list[dict]], rows: int) -> dict:
    """Medians, ratios and pair ratios of the (baseline, job) runs recorded so far."""

    def med(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[name]), 2)

    ratio_wall = med("job", "wall_s") / med("baseline", "wall_s")
    ratio_cpu = med("job", "cpu_s") / med("baseline", "cpu_s")
    pair_ratios = [
        round(j["wall_s"] / b["wall_s"], 3) for b, j in zip(runs["baseline"], runs["job"], strict=True)
    ]
    return {
        "rows": rows,
        "runs_each": min(len(runs["baseline"]), len(runs["job"])),
        "baseline": {
            "median_wall_s": med("baseline", "wall_s"),
            "median_cpu_s": med("baseline", "cpu_s"),
            "median_peak_rss_mb": med("baseline", "peak_rss_mb"),
            "runs": runs["baseline"],
        },
        "job": {
            "median_wall_s": med("job", "wall_s"),
            "median_cpu_s": med("job", "cpu_s"),
            "median_peak_rss_mb": med("job", "peak_rss_mb"),
            "runs": runs["job"],
        },
        "ratio_wall": round(ratio_wall, 3),
        "ratio_cpu": round(ratio_cpu, 3),
        "pair_ratios_wall": pair_ratios,
        "target_ratio": TARGET,
        "meets_target": ratio_wall <= TARGET,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3, help="pairs (baseline, job); median of each")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--from-partial",
        action="store_true",
        help="summarise the runs an interrupted run left in *.partial.json",
    )
    args = parser.parse_args(argv)
    if args.from_partial:
        partial = Path(args.out).with_suffix(".partial.json")
        runs_done = json.loads(partial.read_text())
        n = min(len(runs_done["baseline"]), len(runs_done["job"]))
        result = summarize({k: v[:n] for k, v in runs_done.items()}, args.rows)
        result["note"] = f"interrupted after {n} pair(s) of the {args.runs} planned"
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k not in ("baseline", "job")}, indent=2))
        return 0
    py = sys.executable
    runs: dict[str, list[dict]] = {"baseline": [], "job": []}
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        data = Path(tmp) / "tx.parquet"
        write_table(simulate_table(args.rows, args.seed), data)
        for i in range(args.runs):
            for name in ("baseline", "job"):
                out = Path(tmp) / f"{name}{i}"
                if name == "baseline":
                    cmd = [py, "benchmarks/study_baseline.py", "--input", str(data), "--output", str(out)]
                else:
                    cmd = [py, "processing/aggregate.py", "--input", str(data), "--output", str(out), "--local",
                           "--feature-store", "local", "--feature-store-db", str(Path(tmp) / f"fs{i}.db")]  # fmt: skip
                point = measure(cmd, Path(tmp) / f"{name}{i}.log")
                if point["exit_code"] != 0:
                    sys.exit(
                        f"bench_spark: {name} failed: {(Path(tmp) / f'{name}{i}.log').read_text()[-800:]}"
                    )
                if name == "job":
                    summary = json.loads((out / "summary.json").read_text())
                    point["phases_s"] = summary["timings_s"]
                    point["rows_out"] = summary["rows_out"]
                    point["records_ingested"] = summary["records_ingested"]
                runs[name].append(point)
                print(f"run {i + 1} {name}: {json.dumps({k: point[k] for k in ('wall_s', 'cpu_s', 'peak_rss_mb', 'loadavg_1m')})}", flush=True)  # fmt: skip
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).with_suffix(".partial.json").write_text(json.dumps(runs, indent=2) + "\n")

    result = summarize(runs, args.rows)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".partial.json").unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in result.items() if k not in ("baseline", "job")}, indent=2))
    print(
        f"baseline median {result['baseline']['median_wall_s']} s, job median {result['job']['median_wall_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
