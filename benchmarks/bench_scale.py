#!/usr/bin/env python3
"""Cost curves: every step of the pipeline at 0.25x .. 4x the study's size (1.35 M .. 21.6 M rows).

For each scale (cards scale with rows, ~540 transactions per card as in the study) the steps run
in order, each as its own process tree, exactly as the pipeline runs them:
- simulator: `processing/simulate.py --rows N` (Parquet)
- spark:     `processing/aggregate.py --local` (features, training CSV, snapshots, local ingestion)
- train:     `training/train.py` on the Spark job's train/validation CSV
- evaluate:  `processing/evaluate.py` on its test CSV
- flink:     the Flink job (`streaming.replay.run_flink`, as the replay launches it) on the test
             window's events (the last 14 days, ~8.5 % of the rows: what `local` replays)
- scoring:   `benchmarks/bench_scoring.py` on as many events as the test window holds (batch
             handler + local store + local endpoint)
Each point records wall seconds, CPU seconds and peak RSS of the whole process tree (psutil,
sampled every 0.2 s) and the 1-minute load average before and after: on a shared machine CPU
seconds are the steadier figure. Every point is written to benchmarks/results/scale/ as soon as
it finishes, and points already there are skipped (rerun with --force), so an interrupted run
resumes where it stopped.

    python benchmarks/bench_scale.py [--scales 0.25,0.5,1,2,4] [--steps spark,train] [--force]
    python benchmarks/bench_scale.py --render      # fit exponents, docs/cost_curves.png, scale.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "scale"
SUMMARY = REPO / "benchmarks" / "results" / "scale.json"
PLOT = REPO / "docs" / "cost_curves.png"
PY = sys.executable
FULL_ROWS = 5_400_000
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
STEPS = ("simulator", "spark", "train", "evaluate", "flink", "scoring")


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd`; wall s, CPU s (user + system, every process of the tree) and peak tree RSS."""
    import psutil

    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        cpu: dict[int, float] = {}
        peak = 0
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = 0
            for p in tree:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
                except psutil.Error:
                    continue
            peak = max(peak, rss)
            time.sleep(0.2)
        code = proc.wait()
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "cpu_s": round(sum(cpu.values()), 2),
        "peak_rss_mb": round(peak / 2**20),
        "exit_code": code,
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "command": " ".join(cmd).replace(str(REPO) + "/", ""),
    }


def _point_path(step: str, scale: float) -> Path:
    return RESULTS / f"{step}-{scale:g}x.json"


def run_scale(scale: float, steps: list[str], work: Path, force: bool) -> None:
    rows = round(FULL_ROWS * scale)
    d = work / f"{scale:g}x"
    d.mkdir(parents=True, exist_ok=True)
    tx, feats, model, evald = d / "tx.parquet", d / "features", d / "model", d / "evaluation"
    events = d / "events.jsonl"

    def commands(step: str) -> list[str]:
        if step == "simulator":
            return [PY, "processing/simulate.py", "--rows", str(rows), "--seed", "42", "--out", str(tx)]
        if step == "spark":
            return [PY, "processing/aggregate.py", "--input", str(tx), "--output", str(feats), "--local",
                    "--feature-store", "local", "--feature-store-db", str(d / "online-store.sqlite")]  # fmt: skip
        if step == "train":
            return [PY, "training/train.py", "--train", str(feats / "train"), "--validation",
                    str(feats / "validation"), "--model-dir", str(model)]  # fmt: skip
        if step == "evaluate":
            return [PY, "processing/evaluate.py", "--model", str(model / "model.tar.gz"), "--test",
                    str(feats / "test"), "--output", str(evald)]  # fmt: skip
        if step == "flink":
            code = (
                "import sys; from pathlib import Path; from streaming.replay import run_flink;"
                "from streaming.sql import DEFAULT_WATERMARK_SECONDS as W;"
                f"print(run_flink(Path({str(events)!r}), Path({str(d / 'flink-out')!r}), W, Path({str(d / 'flink.log')!r})))"
            )
            return [PY, "-c", code]
        if step == "scoring":
            n = _test_events(feats)
            return [PY, "benchmarks/bench_scoring.py", "--events", str(n), "--baseline-events", "0",
                    "--out", str(d / "scoring.json")]  # fmt: skip
        raise ValueError(step)

    for step in steps:
        path = _point_path(step, scale)
        if step == "simulator" and path.exists() and not force and not tx.exists() and len(steps) > 1:
            subprocess.run(commands(step), cwd=REPO, check=True, capture_output=True)  # data, untimed
        if path.exists() and not force:
            print(f"{scale:g}x {step}: kept {path.relative_to(REPO)}", flush=True)
            continue
        needs = {"spark": tx, "train": feats / "train", "evaluate": model / "model.tar.gz", "flink": events}
        if step == "flink" and not events.exists() and (feats / "summary.json").exists():
            _write_events(tx, feats, events)
        if step in needs and not needs[step].exists():
            print(
                f"{scale:g}x {step}: skipped, {needs[step].name} missing (run the earlier steps)", flush=True
            )
            continue
        if step == "scoring" and not (feats / "summary.json").exists():
            print(f"{scale:g}x scoring: skipped, run spark first (event count)", flush=True)
            continue
        print(f"{scale:g}x {step} ...", flush=True)
        point = measure(commands(step), d / f"{step}.log")
        point.update(step=step, scale=scale, rows=rows, cards=max(1, round(10_000 * scale)))
        if step in ("flink", "scoring"):
            point["events"] = _test_events(feats)
        if point["exit_code"] != 0:
            point["error"] = _tail(d / f"{step}.log")
        if step == "spark" and (feats / "summary.json").exists():
            point["phases_s"] = json.loads((feats / "summary.json").read_text())["timings_s"]
        if step == "scoring" and (d / "scoring.json").exists():
            point["events_per_second"] = json.loads((d / "scoring.json").read_text())["new_handler"][
                "events_per_second"
            ]
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(point, indent=2) + "\n")
        print(f"{scale:g}x {step}: {json.dumps({k: point[k] for k in ('wall_s', 'cpu_s', 'peak_rss_mb', 'exit_code')})}", flush=True)  # fmt: skip


def _test_events(feats: Path) -> int:
    summary = json.loads((feats / "summary.json").read_text())
    return int(summary["rows_out"]["test"])


def _write_events(tx: Path, feats: Path, events: Path) -> None:
    from streaming.events import transactions_to_events

    window = json.loads((feats / "summary.json").read_text())["test_window"]
    transactions_to_events(tx, events, start=window["start"], end=window["end"])


def _tail(log: Path, n: int = 3) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-600:]


# --- rendering ------------------------------------------------------------------------------------
def load_points() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]


def exponents(points: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """Per step: the local exponent log(t2/t1)/log(2) of each doubling, and the least-squares slope."""
    out: dict[str, dict[str, float]] = {}
    for step in STEPS:
        pts = sorted((p["scale"], p[key]) for p in points if p["step"] == step and p["exit_code"] == 0)
        if len(pts) < 2:
            continue
        fit: dict[str, float] = {}
        for (s1, v1), (s2, v2) in itertools.pairwise(pts):
            fit[f"{s1:g}x->{s2:g}x"] = round(math.log(v2 / v1) / math.log(s2 / s1), 2)
        xs, ys = [math.log(s) for s, _ in pts], [math.log(v) for _, v in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        fit["overall"] = round(
            sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs), 2
        )
        out[step] = fit
    return out


def render() -> dict[str, Any]:
    points = load_points()
    summary = {
        "points": points,
        "exponent_wall": exponents(points, "wall_s"),
        "exponent_cpu": exponents(points, "cpu_s"),
        "exponent_rss": exponents(points, "peak_rss_mb"),
    }
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return summary
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for step in STEPS:
        pts = sorted((p["scale"], p) for p in points if p["step"] == step and p["exit_code"] == 0)
        if not pts:
            continue
        xs = [s * FULL_ROWS / 1e6 for s, _ in pts]
        for ax, key in zip(axes, ("wall_s", "cpu_s", "peak_rss_mb"), strict=True):
            ax.plot(xs, [p[key] for _, p in pts], marker="o", label=step)
    titles = ("wall time (s)", "CPU time, process tree (s)", "peak RSS, process tree (MiB)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("transactions (millions; cards scale with them)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Cost curves, 2 cores / 24 GiB (benchmarks/bench_scale.py)")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=90)
    return summary


MACHINE_RSS_MB = 20 * 1024
"""What one job may use on this 24 GiB machine with the OS and a second user's work beside it."""
STUDY_EVENTS_PER_S = FULL_ROWS / (152 * 86400)
"""The study's average rate: 5.4 M transactions over 152 days (0.41 events/s)."""


def _at(points: list[dict[str, Any]], step: str, scale: float) -> dict[str, Any] | None:
    return next(
        (p for p in points if p["step"] == step and p["scale"] == scale and p["exit_code"] == 0), None
    )


def markdown(summary: dict[str, Any]) -> list[str]:
    """docs/benchmarks.md section: table, exponents, limits of this machine, AWS sizing on paper."""
    points = summary["points"]
    scales = sorted({p["scale"] for p in points})
    out = ["## Cost curves, 0.25x .. 4x the study's size (`benchmarks/bench_scale.py`)", "",
           "Every step as its own process tree, cards scaled with rows (~540 transactions per card). "
           "Wall s / CPU s (all processes of the tree) / peak RSS MiB (sum over the tree). The machine was shared "
           "(1-minute load average per point in `benchmarks/results/scale/*.json`), so wall times are inflated and "
           "CPU seconds are the steadier figure. Flink and scoring process the test window's events "
           "(the last 14 days, what `local` replays).", "",
           "![cost curves](cost_curves.png)", "",
           "| step | " + " | ".join(f"{s:g}x ({FULL_ROWS * s / 1e6:.2f} M)" for s in scales) + " |",
           "| --- |" + " --- |" * len(scales)]  # fmt: skip
    for step in STEPS:
        cells = []
        for sc in scales:
            p = next((q for q in points if q["step"] == step and q["scale"] == sc), None)
            if p is None:
                cells.append("not run")
            elif p["exit_code"] != 0:
                cells.append(f"failed (exit {p['exit_code']})")
            else:
                cells.append(f"{p['wall_s']:.0f} / {p['cpu_s']:.0f} / {p['peak_rss_mb']:,}")
        out.append(f"| {step} | " + " | ".join(cells) + " |")
    out += ["", "Growth exponents (t ~ size^k; between consecutive measured scales, then the least-squares fit over all points):", "",
            "| step | CPU s | wall s | peak RSS |", "| --- | --- | --- | --- |"]  # fmt: skip
    for step in STEPS:
        fits = [summary[k].get(step) for k in ("exponent_cpu", "exponent_wall", "exponent_rss")]
        if fits[0] is None:
            continue
        out.append(
            f"| {step} | "
            + " | ".join(", ".join(f"{k} {v}" for k, v in f.items()) if f else "-" for f in fits)
            + " |"
        )
    out += ["", "Where this machine runs out (peak RSS extrapolated with its fitted exponent to "
            f"{MACHINE_RSS_MB // 1024} GiB, what one job can have beside the OS and another user):", ""]  # fmt: skip
    for step in STEPS:
        measured = [q["scale"] for q in points if q["step"] == step and q["exit_code"] == 0]
        top = max(measured, default=0.0)
        p = _at(points, step, top)
        k = summary["exponent_rss"].get(step, {}).get("overall")
        if p is None or not k or k < 0.5 or step == "spark":  # Spark's heap is capped (-Xmx): it spills
            continue
        limit = top * (MACHINE_RSS_MB / p["peak_rss_mb"]) ** (1 / k)
        out.append(f"- {step}: {p['peak_rss_mb']:,} MiB at {top:g}x, exponent {k} -> ~{limit:.0f}x "
                   f"({limit * FULL_ROWS / 1e6:,.0f} M rows).")  # fmt: skip
    out += [""]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES))
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--work", default="/tmp/bench-scale", help="scratch space (~6 GB at 4x)")
    ap.add_argument("--force", action="store_true", help="re-measure points already recorded")
    ap.add_argument("--clean", action="store_true", help="delete each scale's data after its steps")
    ap.add_argument("--render", action="store_true", help="only fit and plot the recorded points")
    args = ap.parse_args(argv)
    if not args.render:
        steps = [s for s in args.steps.split(",") if s]
        unknown = set(steps) - set(STEPS)
        if unknown:
            ap.error(f"unknown step(s): {', '.join(sorted(unknown))}")
        for scale in (float(s) for s in args.scales.split(",")):
            run_scale(scale, steps, Path(args.work), args.force)
            if args.clean:
                shutil.rmtree(Path(args.work) / f"{scale:g}x", ignore_errors=True)
    summary = render()
    print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
