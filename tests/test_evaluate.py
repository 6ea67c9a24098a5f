"""Evaluation: metrics equal scikit-learn's, SageMaker model-quality JSON layout, plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sklearn import metrics as skm

from processing import evaluate as ev
from processing.evaluate import EvaluationError, compute_metrics, evaluate
from training.model_artifact import write_model_archive


def test_model_monitor_documentation_example_is_reproduced() -> None:
    # SageMaker's model-quality doc example: 4 rows, 1 positive, 2 false positives.
    m = compute_metrics([0, 0, 0, 1], [0.1, 0.6, 0.7, 0.9], threshold=0.5)
    assert m["confusion_matrix"] == {"0": {"0": 1, "1": 2}, "1": {"0": 0, "1": 1}}
    assert m["recall"] == {"value": 1.0, "standard_deviation": "NaN"}
    assert m["precision"]["value"] == pytest.approx(1 / 3)
    assert m["accuracy"]["value"] == 0.5
    assert m["recall_best_constant_classifier"]["value"] == 1.0
    assert m["precision_best_constant_classifier"]["value"] == 0.25
    assert m["accuracy_best_constant_classifier"]["value"] == 0.25
    assert m["true_negative_rate"]["value"] == pytest.approx(1 / 3)
    assert m["false_positive_rate"]["value"] == pytest.approx(2 / 3)
    assert m["false_negative_rate"]["value"] == 0.0
    assert m["auc"]["value"] == 1.0 and m["pr_auc"]["value"] == 1.0


def test_score_equal_to_threshold_is_flagged() -> None:
    m = compute_metrics([1, 0, 1], [0.5, 0.4999, 0.2], threshold=0.5)
    assert m["confusion_matrix"] == {"0": {"0": 1, "1": 0}, "1": {"0": 1, "1": 1}}
    assert m["threshold"]["value"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(3000) < 0.05).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(2)  # rounding creates many ties
    thr = 0.55
    m = compute_metrics(y, scores, thr)
    pred = (scores >= thr).astype(int)
    assert m["auc"]["value"] == pytest.approx(skm.roc_auc_score(y, scores), rel=1e-12)
    assert m["pr_auc"]["value"] == pytest.approx(skm.average_precision_score(y, scores), rel=1e-12)
    assert m["precision"]["value"] == pytest.approx(skm.precision_score(y, pred), rel=1e-12)
    assert m["recall"]["value"] == pytest.approx(skm.recall_score(y, pred), rel=1e-12)
    assert m["f1"]["value"] == pytest.approx(skm.f1_score(y, pred), rel=1e-12)
    assert m["f2"]["value"] == pytest.approx(skm.fbeta_score(y, pred, beta=2), rel=1e-12)
    assert m["f0_5"]["value"] == pytest.approx(skm.fbeta_score(y, pred, beta=0.5), rel=1e-12)
    assert m["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred)
    assert m["confusion_matrix"] == {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}}
    # Full-resolution curves equal scikit-learn's point by point.
    fpr, tpr, _ = ev.roc_curve(y, scores)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    p, r, t = ev.precision_recall_curve(y, scores)
    sk_p, sk_r, sk_t = skm.precision_recall_curve(y, scores)
    np.testing.assert_allclose(p, sk_p)
    np.testing.assert_allclose(r, sk_r)
    np.testing.assert_allclose(t, sk_t)
    # JSON curves are thinned but keep their end points.
    roc = m["receiver_operating_characteristic_curve"]
    assert len(roc["false_positive_rates"]) <= ev.CURVE_POINTS
    assert roc["false_positive_rates"][0] == 0.0 and roc["true_positive_rates"][-1] == 1.0
    assert m["precision_recall_curve"]["recalls"][0] == 1.0


def test_single_class_gives_null_auc_and_zero_pr_auc_not_nan() -> None:
    m = compute_metrics([0, 0, 0], [0.1, 0.2, 0.9])
    # AUC is undefined and null; pr_auc (the quality gate's metric) is 0.0 so the gate fails measurably.
    assert m["auc"]["value"] is None
    assert m["pr_auc"] == {"value": 0.0, "standard_deviation": "NaN"}
    assert ev.undefined_metrics([0, 0, 0]) == {"pr_auc": ev.NO_POSITIVES_REASON}
    assert ev.undefined_metrics([0, 1]) == {}
    json.dumps(m, allow_nan=False)
    only_positives = compute_metrics([1, 1], [0.2, 0.9])  # AP is defined (precision 1 everywhere)
    assert only_positives["pr_auc"]["value"] == 1.0 and only_positives["auc"]["value"] is None
    with pytest.raises(EvaluationError, match="labels must be 0 or 1"):
        compute_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(EvaluationError, match="as many scores"):
        compute_metrics([0, 1], [0.1])


@pytest.fixture(scope="module")
def model_and_test(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(7)
    x = rng.exponential(1, (2500, 4))
    y = (rng.random(2500) < 1 / (1 + np.exp(-(-4 + 1.5 * x[:, 3])))).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x[:1500], label=y[:1500]), 15
    )
    model = write_model_archive(booster, root / "model" / "model.tar.gz")
    test = root / "test"
    test.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(1500, 2500), 3)):
        (test / f"part-{i}.csv").write_text(
            "".join(f"{y[r]}," + ",".join(repr(float(v)) for v in x[r]) + "\n" for r in idx)
        )
    (test / "_SUCCESS").write_text("")
    return model, test, y[1500:], booster.predict(xgb.DMatrix(x[1500:]))


def test_evaluate_writes_model_quality_json_and_plot(model_and_test, tmp_path: Path) -> None:
    model, test, y, scores = model_and_test
    doc = evaluate(model.parent, test, tmp_path / "out", threshold=0.3)  # a model directory works too
    text = (tmp_path / "out" / "evaluation.json").read_text()
    on_disk = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert on_disk == doc
    m = on_disk["binary_classification_metrics"]
    assert m["auc"]["value"] == pytest.approx(skm.roc_auc_score(y, scores), rel=1e-9)
    assert m["pr_auc"]["value"] == pytest.approx(skm.average_precision_score(y, scores), rel=1e-9)
    assert m["precision"]["value"] == pytest.approx(skm.precision_score(y, scores >= 0.3), rel=1e-12)
    assert m["threshold"]["value"] == 0.3
    assert on_disk["dataset"] == {"rows": 1000, "positives": int(y.sum())}  # no undefined metrics
    for name in ("auc", "pr_auc", "precision", "recall", "f1", "accuracy"):
        assert set(m[name]) == {"value", "standard_deviation"}
    assert (tmp_path / "out" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_without_positives_writes_zero_pr_auc_and_why(model_and_test, tmp_path: Path) -> None:
    model, test, y, scores = model_and_test
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    lines = [ln for f in sorted(test.glob("part-*.csv")) for ln in f.read_text().splitlines()]
    kept = [ln for ln in lines if ln.startswith("0,")]
    (negatives / "part-0.csv").write_text("\n".join(kept) + "\n")
    doc = evaluate(model, negatives, tmp_path / "out", threshold=0.3)
    on_disk = json.loads(
        (tmp_path / "out" / "evaluation.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"),
    )
    assert on_disk == doc
    # What the pipeline's JsonGet reads (binary_classification_metrics.pr_auc.value): a number.
    value = on_disk["binary_classification_metrics"]["pr_auc"]["value"]
    assert isinstance(value, float) and value == 0.0
    assert not value >= 0.01  # the MinPrAuc gate fails with a measured value
    assert on_disk["dataset"] == {
        "rows": len(kept),
        "positives": 0,
        "undefined_metrics": {"pr_auc": ev.NO_POSITIVES_REASON},
    }
    m = on_disk["binary_classification_metrics"]
    assert m["confusion_matrix"]["1"] == {"0": 0, "1": 0}
    assert m["confusion_matrix"]["0"]["1"] == int((scores[y == 0] >= 0.3).sum())
    assert (tmp_path / "out" / "evaluation.png").is_file()


def test_evaluate_errors(model_and_test, tmp_path: Path) -> None:
    model, test, _, _ = model_and_test
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "part-0.csv").write_text("1,1,2,3,4,5\n")
    with pytest.raises(EvaluationError, match="expected 5 columns"):
        evaluate(model, wide, tmp_path / "o1")
    with pytest.raises(EvaluationError, match="threshold"):
        evaluate(model, test, tmp_path / "o2", threshold=1.5)
    not_a_model = tmp_path / "bad.tar.gz"
    not_a_model.write_bytes(b"not a model")
    with pytest.raises(EvaluationError, match="not an XGBoost model"):
        evaluate(not_a_model, test, tmp_path / "o3")
    assert (
        ev.main(
            ["--model", str(model), "--test", str(tmp_path / "missing"), "--output", str(tmp_path / "o4")]
        )
        == 2
    )
    assert (
        ev.main(["--model", str(model), "--test", str(test), "--output", str(tmp_path / "o5"), "--no-plot"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "o5").iterdir()) == ["evaluation.json"]


def test_evaluation_adds_gain_importance_by_name_and_a_second_png(model_and_test, tmp_path: Path) -> None:
    """The fixture's label depends on the 4th column only: it must carry most of the total gain."""
    model, test, _, _ = model_and_test
    names = ("a", "b", "c", "driver")
    doc = evaluate(model, test, tmp_path / "out", features=names)
    imp = doc["feature_importance"]
    assert imp["importance_type"] == "total_gain"
    assert set(imp["features"]) == set(names)
    assert sum(v["share"] for v in imp["features"].values()) == pytest.approx(1.0, abs=1e-5)
    assert next(iter(imp["features"])) == "driver" and imp["features"]["driver"]["share"] > 0.5
    assert (tmp_path / "out" / "feature_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
