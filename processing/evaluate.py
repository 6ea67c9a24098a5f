"""Evaluate a model artifact on the test channel: SageMaker model-quality JSON and a PR/ROC plot.

`evaluation.json` follows the Model Monitor model-quality layout for binary classification
(`binary_classification_metrics.<metric>.{value, standard_deviation}`, `confusion_matrix`
keyed actual label -> predicted label, ROC and PR curves), so the pipeline's condition step
reads e.g. `binary_classification_metrics.pr_auc.value` and the model registry shows it.
`pr_auc` is average precision; `threshold` is the decision threshold the counts use
(score >= threshold is fraud, as in serving). Curves are thinned to at most 101 points.
Standard deviations are "NaN" (no resampling), as SageMaker writes when it does not compute them.
Without positives in the test split, average precision is undefined; `pr_auc` is then written as
0.0, not null: the pipeline's `JsonGet(pr_auc) >= MinPrAuc` condition errors on a null instead of
reaching its Fail step, while 0.0 makes the quality gate fail with a measured value. The reason is
kept next to the metrics, in `dataset.positives` (0) and `dataset.undefined_metrics`.

On SageMaker it runs as a processing step:
    python evaluate.py --model /opt/ml/processing/model --test /opt/ml/processing/test \
        --output /opt/ml/processing/evaluation
It needs `features/spec.py` and `training/model_artifact.py` next to it (the step's code
dependencies); matplotlib is optional there (no plot without it).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from sklearn import metrics as skm

from features import spec
from shared.cli import ArgumentParser, run
from shared.errors import UserError
from shared.files import write_text_atomic
from training.model_artifact import ArtifactError, load_booster, read_label_first_csv

EVALUATION_JSON = "evaluation.json"
EVALUATION_PNG = "evaluation.png"
IMPORTANCE_PNG = "feature_importance.png"
CURVE_POINTS = 101


class EvaluationError(UserError, ValueError):
    """Bad inputs for an evaluation (user error)."""


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at full resolution (scikit-learn, no point dropped)."""
    return skm.roc_curve(y_true, scores, drop_intermediate=False)


def precision_recall_curve(
    y_true: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) with decreasing recall, ending at (1, 0) (scikit-learn)."""
    return skm.precision_recall_curve(y_true, scores)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN with a single class."""
    if np.unique(np.asarray(y_true)).size < 2:
        return math.nan
    return float(skm.roc_auc_score(y_true, scores))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision = sum over thresholds of (R_n - R_{n-1}) P_n (the PR-AUC without interpolation)."""
    if not np.any(np.asarray(y_true) == 1):
        return math.nan
    return float(skm.average_precision_score(y_true, scores))


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _fbeta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    return _ratio((1 + b2) * precision * recall, b2 * precision + recall)


def _thin(xs: np.ndarray, ys: np.ndarray, points: int = CURVE_POINTS) -> tuple[list[float], list[float]]:
    if xs.size > points:
        idx = np.unique(np.linspace(0, xs.size - 1, points).round().astype(int))
        xs, ys = xs[idx], ys[idx]
    return [round(float(v), 6) for v in xs], [round(float(v), 6) for v in ys]


def _metric(value: float | None) -> dict[str, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"value": None, "standard_deviation": "NaN"}
    return {"value": float(value), "standard_deviation": "NaN"}


NO_POSITIVES_REASON = (
    "no positives in the test split: average precision is undefined; written as 0.0 so the "
    "quality gate fails with a measured value"
)


def undefined_metrics(y_true: Any) -> dict[str, str]:
    """Metrics whose written value is a stand-in (not a measurement), with the reason."""
    return {} if np.any(np.asarray(y_true) == 1) else {"pr_auc": NO_POSITIVES_REASON}


def compute_metrics(y_true: Any, scores: Any, threshold: float = spec.DECISION_THRESHOLD) -> dict[str, Any]:
    """The `binary_classification_metrics` block for labels in {0, 1} and scores in [0, 1].

    `pr_auc` is 0.0 without positives (see the module docstring and `undefined_metrics`)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0 or y.size != s.size:
        raise EvaluationError(f"need as many scores as labels (> 0), got {s.size} scores for {y.size} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise EvaluationError("labels must be 0 or 1")
    predicted = s >= threshold
    actual = y == 1
    tp = int(np.count_nonzero(predicted & actual))
    fp = int(np.count_nonzero(predicted & ~actual))
    fn = int(np.count_nonzero(~predicted & actual))
    tn = int(y.size - tp - fp - fn)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    positives = tp + fn
    # Model Monitor's "best constant classifier" always predicts the positive class (its doc example:
    # 1 positive in 4 gives precision 0.25, recall 1.0, accuracy 0.25).
    const_precision = _ratio(positives, y.size)
    const_recall = 1.0 if positives else 0.0
    if 0 < positives < y.size:
        fpr, tpr, _ = roc_curve(y, s)
        pr_p, pr_r, _ = precision_recall_curve(y, s)
        roc_x, roc_y = _thin(fpr, tpr)
        pr_x, pr_y = _thin(pr_r, pr_p)
    else:  # curves are undefined with a single class (and NaN is not JSON)
        roc_x, roc_y, pr_x, pr_y = [], [], [], []
    return {
        "confusion_matrix": {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}},
        "recall": _metric(recall),
        "precision": _metric(precision),
        "accuracy": _metric(_ratio(tp + tn, y.size)),
        "recall_best_constant_classifier": _metric(const_recall),
        "precision_best_constant_classifier": _metric(const_precision),
        "accuracy_best_constant_classifier": _metric(const_precision),
        "true_positive_rate": _metric(recall),
        "true_negative_rate": _metric(_ratio(tn, tn + fp)),
        "false_positive_rate": _metric(_ratio(fp, fp + tn)),
        "false_negative_rate": _metric(_ratio(fn, fn + tp)),
        "receiver_operating_characteristic_curve": {
            "false_positive_rates": roc_x,
            "true_positive_rates": roc_y,
        },
        "precision_recall_curve": {"precisions": pr_y, "recalls": pr_x},
        "auc": _metric(roc_auc(y, s)),
        "pr_auc": _metric(average_precision(y, s) if positives else 0.0),
        "f0_5": _metric(_fbeta(precision, recall, 0.5)),
        "f1": _metric(_fbeta(precision, recall, 1.0)),
        "f2": _metric(_fbeta(precision, recall, 2.0)),
        "f1_best_constant_classifier": _metric(_fbeta(const_precision, const_recall, 1.0)),
        "threshold": {"value": float(threshold), "standard_deviation": "NaN"},
    }


def plot_curves(
    y_true: np.ndarray, scores: np.ndarray, metrics: dict[str, Any], path: str | Path
) -> Path | None:
    """PR and ROC curves side by side, the decision threshold marked; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("evaluate: matplotlib not installed, no plot written", file=sys.stderr)
        return None
    precision, recall, _ = precision_recall_curve(y_true, scores)
    fpr, tpr, _ = roc_curve(y_true, scores)
    thr = metrics["threshold"]["value"]
    pr_auc, auc = metrics["pr_auc"]["value"], metrics["auc"]["value"]
    fig, (ax_pr, ax_roc) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax_pr.step(
        recall,
        precision,
        where="post",
        label=f"PR curve (pr_auc = {pr_auc if pr_auc is None else f'{pr_auc:.4f}'})",
    )
    ax_pr.plot(
        metrics["recall"]["value"],
        metrics["precision"]["value"],
        "o",
        color="crimson",
        label=f"threshold {thr:g}",
    )
    base = float(np.mean(y_true))
    ax_pr.axhline(base, ls=":", color="grey", label=f"base rate {base:.4f}")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1.01), ylim=(0, 1.02))
    ax_pr.legend(loc="lower left")
    ax_roc.plot(fpr, tpr, label=f"ROC curve (auc = {auc if auc is None else f'{auc:.4f}'})")
    ax_roc.plot(
        metrics["false_positive_rate"]["value"],
        metrics["true_positive_rate"]["value"],
        "o",
        color="crimson",
        label=f"threshold {thr:g}",
    )
    # Log x-axis: with ~0.3 % positives the useful operating points sit at false-positive rates << 1 %.
    negatives = max(1, int(np.count_nonzero(np.asarray(y_true) == 0)))
    low = 0.5 / negatives
    chance = np.logspace(np.log10(low), 0, 50)
    ax_roc.plot(chance, chance, ls=":", color="grey", label="chance")
    ax_roc.set_xscale("log")
    ax_roc.set(
        xlabel="false positive rate (log scale)",
        ylabel="true positive rate",
        title="ROC",
        xlim=(low, 1),
        ylim=(0, 1.02),
    )
    ax_roc.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def feature_importance(booster: Any, names: tuple[str, ...] = spec.MODEL_FEATURES) -> dict[str, Any]:
    """Total gain per model input, by name (the CSV channels carry no names: column i is names[i]).

    Total gain (not the per-split average) says how much each feature reduced the loss overall;
    `share` is its fraction of the sum. A feature the trees never split on has 0."""
    raw = booster.get_score(importance_type="total_gain")
    if booster.num_features() != len(names):
        names = tuple(f"f{i}" for i in range(booster.num_features()))
    gains = {n: float(raw.get(f"f{i}", raw.get(n, 0.0))) for i, n in enumerate(names)}
    total = sum(gains.values()) or 1.0
    ordered = sorted(gains.items(), key=lambda kv: -kv[1])
    return {
        "importance_type": "total_gain",
        "features": {n: {"gain": round(g, 6), "share": round(g / total, 6)} for n, g in ordered},
    }


def plot_importance(importance: dict[str, Any], path: str | Path) -> Path | None:
    """Horizontal bars of each feature's share of the total gain; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    items = list(importance["features"].items())[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    ax.barh([n for n, _ in items], [v["share"] for _, v in items], color="steelblue")
    for i, (_, v) in enumerate(items):
        ax.text(v["share"], i, f" {v['share']:.1%}", va="center", fontsize=8)
    ax.set(xlabel="share of total gain", title="Feature importance (XGBoost total gain)")
    ax.set_xlim(0, max(v["share"] for _, v in items) * 1.2 or 1)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=1, allow_nan=False)
    # Keep curve arrays on one line each: readable metrics, compact file.
    text = re.sub(
        r"\[\s*([-0-9.eE,\s]*?)\s*\]",
        lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
        text,
    )
    write_text_atomic(path, text)


def evaluate(
    model: str | Path,
    test_dir: str | Path,
    output_dir: str | Path,
    threshold: float = spec.DECISION_THRESHOLD,
    *,
    plot: bool = True,
    features: tuple[str, ...] = spec.MODEL_FEATURES,
) -> dict[str, Any]:
    """Score the test channel with the model and write evaluation.json (+ PNG); returns the JSON document."""
    started = time.perf_counter()
    if not 0.0 <= threshold <= 1.0:
        raise EvaluationError(f"threshold must be in [0, 1], got {threshold}")
    try:
        booster = load_booster(model)
        y, x = read_label_first_csv(test_dir, booster.num_features())
    except ArtifactError as exc:
        raise EvaluationError(str(exc)) from exc
    scores = booster.inplace_predict(x)
    metrics = compute_metrics(y, scores, threshold)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset: dict[str, Any] = {"rows": int(y.size), "positives": int(np.count_nonzero(y == 1))}
    undefined = undefined_metrics(y)
    if undefined:
        dataset["undefined_metrics"] = undefined
        print(f"evaluate: warning: {NO_POSITIVES_REASON} (pr_auc = 0.0)", file=sys.stderr, flush=True)
    importance = feature_importance(booster, features)
    document = {
        "binary_classification_metrics": metrics,
        "dataset": dataset,
        "feature_importance": importance,
    }
    _write_json_atomic(output_dir / EVALUATION_JSON, document)
    if plot:
        plot_curves(y, scores, metrics, output_dir / EVALUATION_PNG)
        plot_importance(importance, output_dir / IMPORTANCE_PNG)
    print(
        f"evaluated {y.size} rows in {time.perf_counter() - started:.2f} s: auc={metrics['auc']['value']} "
        f"pr_auc={metrics['pr_auc']['value']} precision={metrics['precision']['value']:.4f} "
        f"recall={metrics['recall']['value']:.4f} at threshold {threshold:g} -> {output_dir / EVALUATION_JSON}",
        flush=True,
    )
    return document


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Evaluate model.tar.gz on the test channel (model-quality JSON).")
    parser.add_argument(
        "--model", default="/opt/ml/processing/model", help="model.tar.gz, its directory or xgboost-model"
    )
    parser.add_argument("--test", default="/opt/ml/processing/test", help="label-first CSV directory")
    parser.add_argument("--output", default="/opt/ml/processing/evaluation")
    parser.add_argument("--threshold", type=float, default=spec.DECISION_THRESHOLD)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    def run_evaluation() -> int:
        evaluate(args.model, args.test, args.output, args.threshold, plot=not args.no_plot)
        return 0

    return run(run_evaluation, "evaluate.py")


if __name__ == "__main__":
    sys.exit(main())
