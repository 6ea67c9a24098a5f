"""`run_pipeline.py local` end to end: the contract of the foundation issue, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features import spec

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_local_run_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "run"
    result = run_cli(
        "local",
        "--rows",
        "120000",
        "--seed",
        "3",
        "--work-dir",
        str(work),
        "--no-stream",
        "--approve",
        "--min-pr-auc",
        "0.3",
    )
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((work / "evaluation" / "evaluation.json").read_text())[
            "binary_classification_metrics"
        ]
        for name in ("auc", "pr_auc", "precision", "recall", "f1", "threshold"):
            assert 0.0 <= metrics[name]["value"] <= 1.0, name
        assert (work / "evaluation" / "evaluation.png").stat().st_size > 10_000
        # Summary table lists every step, and the endpoint serves the approved version.
        for step in ("data", "aggregate+ingest", "train", "evaluate", "quality-gate", "register", "deploy"):
            assert f"\n{step} " in result.stdout, step
        deployed = json.loads((work / "endpoint" / "deployed.json").read_text())
        assert deployed["version"] == 1
        from training.endpoint_client import LocalSageMakerRuntime, parse_scores

        runtime = LocalSageMakerRuntime({spec.ENDPOINT_NAME: deployed["url"]})
        body = "\n".join(",".join(["12.5", "1.0", "1.0", "0.5"]) for _ in range(3))
        response = runtime.invoke_endpoint(EndpointName=spec.ENDPOINT_NAME, ContentType="text/csv", Body=body)
        scores = parse_scores(response["Body"].read().decode())
        assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)

        # The quality gate fails the run with a one-line reason, and nothing new is registered.
        gated = run_cli("local", "--transactions", str(work / "data" / "transactions.parquet"), "--work-dir", str(work),
                        "--no-stream", "--min-pr-auc", "1.01")  # fmt: skip
        assert gated.returncode == 1
        assert gated.stderr.strip().splitlines()[-1].startswith("error: quality gate: test pr_auc")
        assert sorted(
            p.name for p in (work / "registry" / spec.MODEL_PACKAGE_GROUP).iterdir() if p.name.isdigit()
        ) == ["1"]
    finally:
        run_cli("endpoint", "--work-dir", str(work), "--stop")


@pytest.mark.xdist_group("e2e")
def test_local_run_rejects_csv_without_required_column(tmp_path: Path) -> None:
    csv = tmp_path / "tx.csv"
    pd.DataFrame(
        {"tid": ["a"], "datetime": ["2020-01-01 00:00:00"], "cc_num": [4000000000000001], "fraud_label": [0]}
    ).to_csv(csv, index=False)
    result = run_cli("local", "--transactions", str(csv), "--work-dir", str(tmp_path / "w"), "--no-stream")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "amount" in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_local_run_rejects_missing_file(tmp_path: Path) -> None:
    result = run_cli(
        "local",
        "--transactions",
        str(tmp_path / "nope.csv"),
        "--work-dir",
        str(tmp_path / "w"),
        "--no-stream",
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: --transactions {tmp_path / 'nope.csv'}: no such file or directory"
    )


@pytest.mark.xdist_group("e2e")
def test_local_run_on_too_short_history_fails_with_one_line(tmp_path: Path) -> None:
    """Ten days of data leave the train split empty: the run says so instead of a traceback."""
    from processing.simulate import simulate

    csv = tmp_path / "short.csv"
    simulate(rows=3000, seed=1, start="2020-01-01", end="2020-01-11").to_csv(csv, index=False)
    result = run_cli("local", "--transactions", str(csv), "--work-dir", str(tmp_path / "w"), "--no-stream")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
