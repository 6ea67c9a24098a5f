#!/usr/bin/env python3
"""Run every benchmark one after another and render docs/benchmarks.md from their results.

    python benchmarks/run_all.py [--skip model,flink] [--only spark]

Each benchmark writes benchmarks/results/<name>.json; this script runs them sequentially (the
figures only mean something on an otherwise idle machine) and then writes the Markdown table the
README links to. `model` runs the whole local pipeline on the default full-scale data set
(`run_pipeline.py local --no-stream`) and records the test metrics and step times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "benchmarks.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCHMARKS: dict[str, list[str]] = {
    "simulator": ["benchmarks/bench_simulator.py"],
    "spark": ["benchmarks/bench_spark.py", "--runs", "3"],
    "model": ["benchmarks/run_all.py", "--model-run"],
    "endpoint": ["benchmarks/bench_endpoint.py"],
    "flink": ["benchmarks/bench_flink.py"],
    "scoring": ["benchmarks/bench_scoring.py"],
    # Long (about an hour on an idle 2-core machine): every step at 0.25x .. 4x the study's size.
    "scale": ["benchmarks/bench_scale.py"],
}


def spark_section(spark: dict[str, Any]) -> list[str]:
    """The job against the study-style baseline, same run (benchmarks/bench_spark.py)."""
    if "ratio_wall" not in spark:  # a result file of the earlier single-run format
        return []
    b, j = spark["baseline"], spark["job"]
    loads = [r["loadavg_1m"] for r in b["runs"] + j["runs"]]
    lo, hi = min(x for pair in loads for x in pair), max(x for pair in loads for x in pair)
    median_job = sorted(j["runs"], key=lambda r: r["wall_s"])[len(j["runs"]) // 2]
    phases = ", ".join(f"{k} {v} s" for k, v in median_job["phases_s"].items() if k != "total")
    return [
        "## Spark job against the study's approach (`benchmarks/bench_spark.py`)", "",
        f"- {spark['rows']:,} rows, `local[2]`, {spark['runs_each']} alternating pairs, each run a fresh process and JVM "
        f"(1-minute load average {lo}..{hi} during the runs; {spark['measured_at']}).",
        f"- Study-style baseline (`benchmarks/study_baseline.py`: one query, 10-minute and 1-week RANGE windows, ratios, CSV): "
        f"median **{b['median_wall_s']} s** wall, {b['median_cpu_s']} CPU-s, peak RSS {b['median_peak_rss_mb']:.0f} MiB.",
        f"- `processing/aggregate.py` (7 declared aggregations, 2 recency features, 3 ratios; features Parquet, training CSV, "
        f"snapshot table, ingestion of {median_job['records_ingested']:,} records): median **{j['median_wall_s']} s** wall, "
        f"{j['median_cpu_s']} CPU-s, peak RSS {j['median_peak_rss_mb']:.0f} MiB.",
        f"- Ratio job / baseline: **{spark['ratio_wall']}x** wall (pairs: {', '.join(map(str, spark['pair_ratios_wall']))}), "
        f"{spark['ratio_cpu']}x CPU; target <= {spark['target_ratio']}x: {'met' if spark['meets_target'] else '**not met**'}.",
        f"- Job phases (median run, seconds): {phases}.", "",
    ]  # fmt: skip


def model_run(work_dir: Path) -> dict[str, Any]:
    """Full-scale local pipeline (default simulator data); metrics come from its evaluation.json."""
    command = [
        sys.executable,
        "run_pipeline.py",
        "local",
        "--work-dir",
        str(work_dir),
        "--no-stream",
        "--min-pr-auc",
        "0",
    ]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    subprocess.run(
        [sys.executable, "run_pipeline.py", "endpoint", "--work-dir", str(work_dir), "--stop"], cwd=REPO
    )
    if run.returncode != 0:
        raise SystemExit(f"model run failed: {run.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((work_dir / "evaluation" / "evaluation.json").read_text())[
        "binary_classification_metrics"
    ]
    steps = {
        line.split()[0]: float(line.split()[1].rstrip("s"))
        for line in run.stdout.splitlines()
        if line.split() and line.split()[0] in {"data", "aggregate+ingest", "train", "evaluate", "register", "deploy"}
        and len(line.split()) > 1 and line.split()[1].endswith("s")
    }  # fmt: skip
    return {
        "command": " ".join(command[1:]),
        "wall_s": round(seconds, 1),
        "steps_s": steps,
        "test_metrics": {
            k: metrics[k]["value"] for k in ("pr_auc", "auc", "precision", "recall", "f1", "threshold")
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def render() -> str:
    """docs/benchmarks.md: one section per benchmark, figures straight from the result files."""
    out = ["# Benchmarks", "", "Measured on this project's 2-core / 24 GiB machine by `python benchmarks/run_all.py`",
           "(every figure below is read from `benchmarks/results/*.json`; rerun to refresh).", ""]  # fmt: skip
    if sim := load("simulator"):
        out += ["## Transaction simulator (`benchmarks/bench_simulator.py`)", "",
                f"- {sim['rows']:,} transactions: generate {sim['generate_s']} s, + Parquet {sim['total_parquet_s']} s total, "
                f"+ CSV {sim['total_csv_s']} s total (target < 15 s; the original Faker generator needs ~100 s of CPU).", ""]  # fmt: skip
    if spark := load("spark"):
        out += spark_section(spark)
    if scale := load("scale"):
        from benchmarks.bench_scale import markdown as scale_markdown

        out += scale_markdown(scale)
    notes = REPO / "benchmarks" / "performance_notes.md"
    if notes.exists():  # the prose (profile, what changed, sizing on paper) kept next to the scripts
        out += [notes.read_text().rstrip(), ""]
    if model := load("model"):
        m = model["test_metrics"]
        out += ["## Model on the default simulated data (`benchmarks/run_all.py --only model`)", "",
                f"- `{model['command']}`: test pr_auc **{m['pr_auc']:.4f}**, auc {m['auc']:.4f}, precision {m['precision']:.3f}, "
                f"recall {m['recall']:.3f}, f1 {m['f1']:.3f} at threshold {m['threshold']} (quality gate: pr_auc >= 0.70).",
                "- Step times: " + ", ".join(f"{k} {v} s" for k, v in model["steps_s"].items()) + f"; wall {model['wall_s']} s.", ""]  # fmt: skip
    if ep := load("endpoint"):
        s, b = ep["single_row"], ep["batch"]
        out += ["## Local endpoint (`benchmarks/bench_endpoint.py`)", "",
                f"- Single row: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms ({s['requests_per_s']} req/s, {s['requests']} requests).",
                f"- {b['rows_per_request']}-row requests: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, **{b['rows_per_s']:,.0f} rows/s**.", ""]  # fmt: skip
    if fl := load("flink"):
        out += ["## Flink job locally (`benchmarks/bench_flink.py`)", "",
                f"- {fl['events']:,} events, parallelism {fl['parallelism']}: **{fl['events_per_second_after_startup']:,} events/s** "
                f"after start-up (start-up {fl['startup_seconds']} s; {fl['events_per_second_including_startup']:,} events/s including it).", ""]  # fmt: skip
    if sc := load("scoring"):
        new, base = sc["new_handler"], sc["baseline_per_record"]
        out += ["## Scoring path (`benchmarks/bench_scoring.py`)", "",
                f"- Batch handler (one BatchGetRecord + one multi-row InvokeEndpoint per batch of {sc['batch_size']}): "
                f"**{new['events_per_second']:,.0f} events/s**, p50 {new['batch_of_100_ms']['p50']} ms, p99 {new['batch_of_100_ms']['p99']} ms per batch.",
                f"- Original per-record pattern (GetRecord x2 + InvokeEndpoint per event), same run, same local services: "
                f"{base['events_per_second']:,.0f} events/s, p50 {base['batch_of_100_ms']['p50']} ms per 100 events.",
                f"- Speed-up: **{sc['speedup_events_per_second']}x** (target >= 10x).", ""]  # fmt: skip
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to skip")
    parser.add_argument("--model-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render-only", action="store_true", help="only rewrite docs/benchmarks.md")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.model_run:
        result = model_run(Path("work") / "bench-model")
        (RESULTS / "model.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    if not args.render_only:
        chosen = [
            n
            for n in (args.only.split(",") if args.only else BENCHMARKS)
            if n and n not in args.skip.split(",")
        ]
        unknown = [n for n in chosen if n not in BENCHMARKS]
        if unknown:
            print(f"error: unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        for name in chosen:
            print(f"=== {name} ===", flush=True)
            if subprocess.run([sys.executable, *BENCHMARKS[name]], cwd=REPO).returncode != 0:
                print(f"warning: benchmark {name} exited non-zero", file=sys.stderr)
    DOC.write_text(render() + "\n")
    print(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
