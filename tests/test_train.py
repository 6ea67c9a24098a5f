"""Training: SageMaker built-in XGBoost artifact layout, hyperparameter semantics, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from features import spec
from training import train as train_mod
from training.model_artifact import MODEL_FILENAME, load_booster, read_label_first_csv
from training.train import TrainingError, parse_hyperparameters, resolve_scale_pos_weight, train

REPO = Path(__file__).resolve().parents[1]
N_FEATURES = len(spec.MODEL_FEATURES)


def synthetic(n: int, seed: int, positive_rate_shift: float = -4.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and features with a learnable signal (feature 3 ~ count_ratio drives fraud)."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.lognormal(3, 1, n), *(rng.exponential(1, n) for _ in range(N_FEATURES - 1))])
    logit = positive_rate_shift + 1.5 * x[:, 3] + 0.5 * x[:, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return y, x


def write_channel(directory: Path, y: np.ndarray, x: np.ndarray, parts: int = 2) -> Path:
    """Spark-like output: part files, an empty part, _SUCCESS and a .crc file."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(y)), parts)):
        with (directory / f"part-{i:05d}-abc.csv").open("w") as fh:
            for r in idx:
                fh.write(f"{int(y[r])}," + ",".join(repr(float(v)) for v in x[r]) + "\n")
    (directory / f"part-{parts:05d}-abc.csv").write_text("")
    (directory / "_SUCCESS").write_text("")
    (directory / ".part-00000-abc.csv.crc").write_bytes(b"\x00garbage")
    return directory


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("channels")
    y_tr, x_tr = synthetic(3000, 1)
    y_va, x_va = synthetic(1000, 2)
    return {
        "train": write_channel(root / "train", y_tr, x_tr),
        "validation": write_channel(root / "validation", y_va, x_va),
    }


def test_channel_reader_skips_spark_markers_and_keeps_all_rows(channels: dict[str, Path]) -> None:
    y, x = read_label_first_csv(channels["train"], N_FEATURES)
    y_ref, x_ref = synthetic(3000, 1)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(x, x_ref)


def test_channel_reader_without_pyarrow_reads_the_same(channels: dict[str, Path], monkeypatch) -> None:
    y_ref, x_ref = read_label_first_csv(channels["validation"], N_FEATURES)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as in an image without pyarrow
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)
    y, x = read_label_first_csv(channels["validation"], N_FEATURES)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(x, x_ref)


def test_train_writes_model_tar_with_exactly_xgboost_model(channels: dict[str, Path], tmp_path: Path) -> None:
    hp = {"num_round": "60", "max_depth": "3", "eta": "0.3", "early_stopping_rounds": "5", "subsample": "1"}
    result = train(channels["train"], channels["validation"], tmp_path / "model", hp, progress_every=20)

    archive = Path(result["model_path"])
    assert archive == tmp_path / "model" / "model.tar.gz" and result["model_data"] == str(archive)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [MODEL_FILENAME]
        assert members[0].isfile()
        tar.extractall(tmp_path / "extracted", filter="data")
    booster = xgb.Booster()
    booster.load_model(str(tmp_path / "extracted" / MODEL_FILENAME))  # what the container does
    assert booster.num_boosted_rounds() == result["best_iteration"] + 1 == result["num_rounds"]
    assert booster.feature_names is None  # positional, like the built-in algorithm's CSV models

    # Same semantics as a direct xgb.train with the built-in names mapped to xgboost's.
    y_tr, x_tr = synthetic(3000, 1)
    y_va, x_va = synthetic(1000, 2)
    weight = train_mod.DEFAULT_SCALE_POS_WEIGHT
    assert result["scale_pos_weight"] == pytest.approx(weight, rel=1e-12)
    history: dict = {}
    ref = xgb.train(
        {
            "objective": "binary:logistic",
            "max_depth": 3,
            "eta": 0.3,
            "subsample": 1.0,
            "min_child_weight": 1.0,
            "max_bin": train_mod.DEFAULT_HYPERPARAMETERS["max_bin"],
            "eval_metric": "aucpr",
            "scale_pos_weight": weight,
            "seed": 42,
        },
        xgb.DMatrix(x_tr, label=y_tr),
        num_boost_round=60,
        evals=[(xgb.DMatrix(x_tr, label=y_tr), "train"), (xgb.DMatrix(x_va, label=y_va), "validation")],
        early_stopping_rounds=5,
        evals_result=history,
        verbose_eval=False,
    )
    assert result["best_iteration"] == ref.best_iteration
    assert result["validation_aucpr"] == pytest.approx(
        history["validation"]["aucpr"][ref.best_iteration], rel=1e-9
    )
    expected = ref.predict(xgb.DMatrix(x_va), iteration_range=(0, ref.best_iteration + 1))
    np.testing.assert_allclose(
        booster.predict(xgb.DMatrix(x_va), validate_features=False), expected, rtol=1e-6
    )
    np.testing.assert_allclose(load_booster(archive).inplace_predict(x_va), expected, rtol=1e-6)
    assert result["rows"] == {
        "train": 3000,
        "train_positive": int(y_tr.sum()),
        "validation": 1000,
        "validation_positive": int(y_va.sum()),
    }


def test_no_package_writes_bare_model_file_like_sagemaker_model_dir(
    channels: dict[str, Path], tmp_path: Path
) -> None:
    result = train(
        channels["train"], None, tmp_path, {"num_round": 4, "scale_pos_weight": "sqrt"}, package=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_FILENAME]
    y_tr, _ = synthetic(3000, 1)
    assert result["scale_pos_weight"] == pytest.approx(
        math.sqrt((y_tr == 0).sum() / (y_tr == 1).sum()), rel=1e-12
    )
    assert result["num_rounds"] == 4 and result["validation_aucpr"] is None
    assert load_booster(tmp_path).num_boosted_rounds() == 4


def test_scale_pos_weight_rules() -> None:
    labels = np.array([0.0] * 96 + [1.0] * 4)
    assert resolve_scale_pos_weight("sqrt", labels) == pytest.approx(math.sqrt(24))
    assert resolve_scale_pos_weight("balanced", labels) == pytest.approx(24.0)
    assert resolve_scale_pos_weight("3.5", labels) == 3.5
    assert resolve_scale_pos_weight(7, labels) == 7.0
    with pytest.raises(TrainingError, match="scale_pos_weight"):
        resolve_scale_pos_weight("lots", labels)
    with pytest.raises(TrainingError, match="> 0"):
        resolve_scale_pos_weight("0", labels)
    with pytest.raises(TrainingError, match="both classes"):
        resolve_scale_pos_weight("sqrt", np.zeros(10))
    # Local default and the AWS hyperparameter are the same fixed number (parity of both trainings).
    assert train_mod.DEFAULT_HYPERPARAMETERS["scale_pos_weight"] == train_mod.AWS_SCALE_POS_WEIGHT == 4.0


def test_hyperparameters_are_typed_like_the_builtin_algorithm() -> None:
    hp = parse_hyperparameters(
        {"num_round": "150", "eta": "0.05", "max_depth": "4.0", "eval_metric": "aucpr"}
    )
    assert hp["num_round"] == 150 and hp["eta"] == 0.05 and hp["max_depth"] == 4
    assert parse_hyperparameters({})["objective"] == "binary:logistic"
    with pytest.raises(TrainingError, match="unknown hyperparameter 'n_estimators'"):
        parse_hyperparameters({"n_estimators": 5})
    with pytest.raises(TrainingError, match="not a valid int"):
        parse_hyperparameters({"num_round": "many"})
    with pytest.raises(TrainingError, match="binary:logistic"):
        parse_hyperparameters({"objective": "reg:squarederror"})
    with pytest.raises(TrainingError, match="subsample"):
        parse_hyperparameters({"subsample": "1.5"})


def test_bad_channels_fail_with_clear_errors(tmp_path: Path) -> None:
    y, x = synthetic(50, 3)
    narrow = write_channel(tmp_path / "narrow", y, x[:, :3])
    with pytest.raises(TrainingError, match=f"expected {N_FEATURES + 1} columns"):
        train(narrow, None, tmp_path / "m1", {"num_round": 2})
    labels = write_channel(tmp_path / "labels", y * 2, x)
    with pytest.raises(TrainingError, match="labels must be 0 or 1"):
        train(labels, None, tmp_path / "m2", {"num_round": 2})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(TrainingError, match="no data files"):
        train(tmp_path / "empty", None, tmp_path / "m3", {"num_round": 2})
    with pytest.raises(TrainingError, match="not found"):
        train(tmp_path / "missing", None, tmp_path / "m4", {"num_round": 2})
    text = tmp_path / "text"
    text.mkdir()
    (text / "part-0.csv").write_text("0,1,2,3,4\n1,a,2,3,4\n")
    with pytest.raises(TrainingError, match="non-numeric"):
        train(text, None, tmp_path / "m5", {"num_round": 2})


def test_cli_runs_with_sagemaker_style_arguments(channels: dict[str, Path], tmp_path: Path, capsys) -> None:
    rc = train_mod.main(
        [
            "--train",
            str(channels["train"]),
            "--validation",
            str(channels["validation"]),
            "--model-dir",
            str(tmp_path / "out"),
            "--num_round",
            "12",
            "--early_stopping_rounds",
            "20",
            "--progress-every",
            "5",
            "--result-json",
            str(tmp_path / "result.json"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "[0]\ttrain-aucpr:" in out and "[5]\t" in out and "[10]\t" in out
    assert (tmp_path / "out" / "model.tar.gz").is_file()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["num_rounds"] == result["best_iteration"] + 1 <= 12


def test_script_fails_with_one_line_reason(tmp_path: Path) -> None:
    bad = subprocess.run(
        [
            sys.executable,
            "training/train.py",
            "--train",
            str(tmp_path / "nope"),
            "--model-dir",
            str(tmp_path / "x"),
            "--num_round",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "data channel not found" in bad.stderr
    assert "Traceback" not in bad.stderr
