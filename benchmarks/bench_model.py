"""Model quality on study-faithful data: the full feature set against the study's four, same run.

Simulates the default data (or takes --transactions), runs the Spark job once, then trains and
evaluates the same trainer (training/train.py defaults, the values the pipeline sends to the
built-in algorithm) on two column sets of the same splits: `spec.MODEL_FEATURES` and
`spec.STUDY_FEATURES`. Writes benchmarks/results/model_ablation.json.

    .venv/bin/python benchmarks/bench_model.py [--rows 5400000] [--seed 7] [--transactions F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from features import spec

RESULTS = Path(__file__).resolve().parent / "results" / "model_ablation.json"


def write_channel(parquet_dir: Path, out_dir: Path, columns: tuple[str, ...]) -> int:
    """Label-first, header-less CSV of `columns` (the layout of the Spark job's channels)."""
    table = ds.dataset(parquet_dir, format="parquet").to_table(columns=[spec.LABEL, *columns])
    out_dir.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(table, out_dir / "part-0.csv", pcsv.WriteOptions(include_header=False))
    return table.num_rows


def train_and_evaluate(features: Path, work: Path, name: str, columns: tuple[str, ...]) -> dict:
    from processing.evaluate import evaluate
    from training.train import train

    t0 = time.perf_counter()
    for split in ("train", "validation", "test"):
        write_channel(features / "parquet" / split, work / name / split, columns)
    result = train(work / name / "train", work / name / "validation", work / name / "model", features=columns)
    doc = evaluate(
        result["model_data"], work / name / "test", work / name / "evaluation", plot=False, features=columns
    )
    m = doc["binary_classification_metrics"]
    return {
        "features": list(columns),
        "pr_auc": m["pr_auc"]["value"],
        "auc": m["auc"]["value"],
        "precision": m["precision"]["value"],
        "recall": m["recall"]["value"],
        "best_iteration": result.get("best_iteration"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=5_400_000)
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default: the local runner's)")
    p.add_argument("--transactions", help="use this CSV/Parquet instead of the simulator")
    p.add_argument("--work-dir", type=Path, default=Path("work/bench_model"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--reuse-features", action="store_true", help="keep WORK_DIR/features from an earlier run")
    args = p.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    source = args.transactions
    if not source and not (args.reuse_features and (work / "transactions.parquet").exists()):
        from processing.simulate import simulate_table, write_table

        source = str(write_table(simulate_table(args.rows, args.seed), work / "transactions.parquet"))
    source = source or str(work / "transactions.parquet")
    from processing import aggregate
    from processing.spark_session import local_spark_session

    local_spark_session("bench-model")
    summary = aggregate.main(
        ["--input", source, "--output", str(work / "features"), "--local", "--no-ingest"]
    )
    runs = {
        "full": train_and_evaluate(work / "features", work, "full", spec.MODEL_FEATURES),
        "study_four": train_and_evaluate(work / "features", work, "study_four", spec.STUDY_FEATURES),
    }
    result = {
        "data": source
        if args.transactions
        else f"simulator rows={args.rows} seed={args.seed} (study profile)",
        "rows_out": summary["rows_out"],
        "load_average": os.getloadavg(),
        **runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in runs.items():
        print(
            f"{name:10s} pr_auc {r['pr_auc']:.4f} auc {r['auc']:.4f} precision {r['precision']:.3f} "
            f"recall {r['recall']:.3f} ({len(r['features'])} features)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
