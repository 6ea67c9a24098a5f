"""`run_pipeline.py local` end to end: the contract of the foundation issue, as a user runs it."""

from __future__ import annotations

import json
import os
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
        body = "\n".join(",".join(["1.0"] * len(spec.MODEL_FEATURES)) for _ in range(3))
        response = runtime.invoke_endpoint(EndpointName=spec.ENDPOINT_NAME, ContentType="text/csv", Body=body)
        scores = parse_scores(response["Body"].read().decode())
        assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    finally:
        run_cli("endpoint", "--work-dir", str(work), "--stop")


@pytest.mark.slow
def test_failed_quality_gate_ends_the_run_in_one_line_and_registers_nothing(tmp_path: Path) -> None:
    """The gate fails the run (exit 1, one line) after evaluation: no version, no endpoint, and
    the replay's Flink job, started beside training (`stream-start`), is stopped: here a stand-in
    job that would run for 10 minutes.

    Its own small data set and work dir, outside the `e2e` group, so it runs beside the end-to-end
    run instead of after it."""
    import psutil

    work, pid_file = tmp_path / "run", tmp_path / "job.pid"
    job = tmp_path / "flink-python"
    job.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    job.chmod(0o755)
    gated = subprocess.run(
        [sys.executable, "run_pipeline.py", "local", "--rows", "120000", "--seed", "3", "--work-dir", str(work),
         "--approve", "--min-pr-auc", "1.01"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "FLINK_PYTHON": str(job)},
    )  # fmt: skip
    assert gated.returncode == 1, gated.stderr[-3000:]
    assert gated.stderr.strip().splitlines()[-1].startswith("error: quality gate: test pr_auc")
    assert "Traceback" not in gated.stderr
    assert (work / "evaluation" / "evaluation.json").exists()  # the gate ran after evaluation
    group = work / "registry" / spec.MODEL_PACKAGE_GROUP
    assert not group.exists() or not [p for p in group.iterdir() if p.name.isdigit()]
    assert not (work / "endpoint" / "deployed.json").exists()
    assert "stream-start done" in gated.stdout
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


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
    assert result.returncode == 2  # bad input (docs/design.md, exit codes)
    assert (
        result.stderr.strip() == f"error: --transactions {tmp_path / 'nope.csv'}: no such file or directory"
    )


@pytest.mark.xdist_group("e2e")
def test_local_run_on_too_short_history_fails_with_one_line(tmp_path: Path) -> None:
    """Three days cannot be split (one day per period is the minimum): one line naming it, exit 2."""
    from processing.simulate import simulate

    csv = tmp_path / "short.csv"
    simulate(rows=3000, seed=1, start="2020-01-01", end="2020-01-04").to_csv(csv, index=False)
    result = run_cli("local", "--transactions", str(csv), "--work-dir", str(tmp_path / "w"), "--no-stream")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "at least 4" in last, last


# --- issue 9: deployment, quality gate, interrupts, input errors ---------------------------------
@pytest.fixture(scope="module")
def model_archives(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import numpy as np
    import xgboost as xgb

    from training.model_artifact import write_model_archive

    root = tmp_path_factory.mktemp("models")
    x = np.random.default_rng(0).uniform(0, 5, (300, len(spec.MODEL_FEATURES)))
    out = []
    for i in range(2):
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=x[:, 2] > 2.5), 2 + i)
        out.append(write_model_archive(booster, root / f"m{i}" / "model.tar.gz"))
    return out


def _work_servers(work: Path) -> list[int]:
    from pipeline.local import endpoint

    return sorted(p.pid for p in endpoint.servers(work))


def test_deploy_is_atomic_and_refuses_a_port_held_by_someone_else(tmp_path, model_archives) -> None:
    from pipeline.local import endpoint
    from training.serve import LocalEndpointServer

    work = tmp_path / "w"
    other = LocalEndpointServer(model_archives[1], model_version="42").start()  # another work dir's
    try:
        first = endpoint.deploy(work, model_archives[0], 1)
        assert endpoint.server_info(first["url"])["pid"] == first["pid"]
        # The port is taken by another server: refused with one line, the previous one keeps serving.
        with pytest.raises(endpoint.DeployError, match=f"port {other.port} is already in use"):
            endpoint.deploy(work, model_archives[1], 2, port=other.port)
        assert endpoint.read_deployment(work) == first and endpoint.is_live(first)
        assert _work_servers(work) == [first["pid"]]  # the failed child is gone
        # A redeploy starts the new server, checks it, records it, then stops the old one.
        second = endpoint.deploy(work, model_archives[1], 2)
        info = endpoint.server_info(second["url"])
        assert (info["pid"], info["model_version"]) == (second["pid"], "2")
        assert endpoint.read_deployment(work) == second and _work_servers(work) == [second["pid"]]
        # Same explicit port as the running deployment: hot swap in place, checked by /info.
        third = endpoint.deploy(work, model_archives[0], 3, port=second["port"])
        assert third["pid"] == second["pid"] and endpoint.server_info(third["url"])["model_version"] == "3"
    finally:
        other.stop()
        assert endpoint.stop(work) == 1
    assert _work_servers(work) == [] and not endpoint.is_live(endpoint.read_deployment(work))


def test_interrupted_deploy_keeps_the_previous_one_and_stop_finds_leftovers(
    tmp_path, model_archives, monkeypatch, capsys
) -> None:
    from pipeline.local import endpoint

    work = tmp_path / "w"
    first = endpoint.deploy(work, model_archives[0], 1)
    real_check = endpoint._check_identity

    def interrupted(*args, **kwargs):
        real_check(*args, **kwargs)  # the new server is up and answering ...
        raise KeyboardInterrupt  # ... and Ctrl-C arrives before the switch

    monkeypatch.setattr(endpoint, "_check_identity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        endpoint.deploy(work, model_archives[1], 2)
    monkeypatch.undo()
    assert endpoint.read_deployment(work) == first and endpoint.is_live(first)
    assert _work_servers(work) == [first["pid"]]

    # Interrupted after the switch, before the old server was stopped: the record names the new
    # server, and the old one (no longer in any record) is still found by `stop`.
    monkeypatch.setattr(endpoint, "_terminate", lambda procs, timeout=0: None)
    second = endpoint.deploy(work, model_archives[1], 2)
    monkeypatch.undo()
    assert endpoint.read_deployment(work) == second and _work_servers(work) == sorted(
        [first["pid"], second["pid"]]
    )
    import run_pipeline

    assert run_pipeline.main(["endpoint", "--work-dir", str(work), "--stop"]) == 0
    assert capsys.readouterr().out.strip() == "stopped 2 local endpoint server(s)"
    assert _work_servers(work) == []


def test_sigterm_during_endpoint_deploy_leaves_old_serving_or_new_recorded(tmp_path, model_archives) -> None:
    import signal
    import time

    from pipeline.local import endpoint
    from pipeline.local.registry import LocalModelRegistry

    work = tmp_path / "w"
    registry = LocalModelRegistry(work / "registry")
    registry.register(spec.MODEL_PACKAGE_GROUP, model_archives[0], approval_status="Approved")
    first = endpoint.deploy(work, registry.latest_approved(spec.MODEL_PACKAGE_GROUP).model_data, 1)
    registry.register(spec.MODEL_PACKAGE_GROUP, model_archives[1], approval_status="Approved")
    try:
        proc = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "endpoint", "--work-dir", str(work), "--deploy-latest"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        import psutil

        deadline = time.monotonic() + 60  # SIGTERM once the new server process exists (mid-deploy)
        while time.monotonic() < deadline and not any(
            "training.serve" in c.cmdline() for c in psutil.Process(proc.pid).children()
        ):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        record = endpoint.read_deployment(work)
        assert endpoint.is_live(record)  # the previous deployment serving, or the new one recorded
        assert record == first or record["version"] == 2
        assert proc.returncode in (0, 143), err
        if proc.returncode == 143:
            assert err.strip() == (
                f"error: terminated (SIGTERM); deployment now: version {record['version']} serving at "
                f"{record['url']}"
            )
        assert _work_servers(work) == [record["pid"]]
    finally:
        endpoint.stop(work)


def test_quality_gate_refuses_a_model_that_flags_nothing_and_names_no_fraud() -> None:
    import numpy as np

    from pipeline.local_runner import StepFailed, check_quality_gate
    from processing.evaluate import compute_metrics

    y = np.zeros(2000)
    y[::200] = 1
    # Ranks the frauds well (pr_auc 1.0) but no score reaches the decision threshold: flags nothing.
    useless = compute_metrics(y, np.where(y == 1, 0.3, 0.1))
    assert useless["pr_auc"]["value"] >= 0.75 and useless["recall"]["value"] == 0.0
    with pytest.raises(
        StepFailed, match=r"recall 0 at the decision threshold 0\.5: the model flags no fraud"
    ):
        check_quality_gate(useless, 10, 0.75)
    no_fraud = compute_metrics(np.zeros(100), np.full(100, 0.1))
    with pytest.raises(StepFailed) as info:
        check_quality_gate(no_fraud, 0, 0.75)
    assert str(info.value).startswith("quality gate: no fraud in the test split")
    good = compute_metrics(y, np.where(y == 1, 0.9, 0.1))
    assert check_quality_gate(good, 10, 0.75).startswith("pr_auc 1.0000 >= 0.75, recall 1.0000 > 0")


def test_training_refuses_a_validation_split_without_fraud(tmp_path) -> None:
    import numpy as np

    from training.train import TrainingError, train

    rng = np.random.default_rng(0)
    for name, labels in (("train", rng.integers(0, 2, 200)), ("validation", np.zeros(50))):
        (tmp_path / name).mkdir()
        rows = np.column_stack([labels, rng.uniform(0, 5, (len(labels), len(spec.MODEL_FEATURES)))])
        np.savetxt(tmp_path / name / "part-0.csv", rows, delimiter=",", fmt="%.6g")
    with pytest.raises(TrainingError) as info:
        train(tmp_path / "train", tmp_path / "validation", tmp_path / "model")
    assert str(info.value).startswith("validation channel has no positive (fraud) rows among 50")
    assert "\n" not in str(info.value)


def test_local_run_refuses_nested_or_binary_parquet_columns_in_one_line(tmp_path) -> None:
    """Spark used to fail deep in the job with a 40-line AnalysisException; now one line, before Spark."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.local_runner import StepFailed, check_input_columns

    base = {"tid": ["a"], "datetime": ["2020-01-01 00:00:00"], "cc_num": [4000000000000001],
            "amount": [1.0], "fraud_label": [0]}  # fmt: skip
    cases = {
        "struct": ("amount", [{"dollars": 1.0}], "expected integer or floating or decimal or string"),
        "list": ("amount", [[1.0, 2.0]], "expected integer or floating or decimal or string"),
        "binary": ("cc_num", [b"\x00\x01"], "expected integer or string"),
    }
    for kind, (column, values, expected) in cases.items():
        path = tmp_path / f"{kind}.parquet"
        pq.write_table(pa.table(base | {column: values}), path)
        with pytest.raises(StepFailed) as info:
            check_input_columns(path)
        assert str(info.value) == (
            f"--transactions {path}: column {column!r} has type {pq.read_schema(path).field(column).type}, "
            f"{expected}"
        )
    check_input_columns(tmp_path / "none.csv")  # no such file: the Spark job reports it
    csv_ok = tmp_path / "ok.csv"
    csv_ok.write_text("\ufefftid,datetime,cc_num,amount,fraud_label\n")  # a BOM is fine
    check_input_columns(csv_ok)
    # A missing column, CSV header or Parquet schema: named, before Spark starts.
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("tid,datetime,cc_num,fraud_label\n")
    pq.write_table(pa.table({k: v for k, v in base.items() if k != "amount"}), tmp_path / "bad.parquet")
    for bad, found in (
        (csv_bad, "tid, datetime, cc_num, fraud_label"),
        (tmp_path / "bad.parquet", "tid, datetime, cc_num, fraud_label"),
    ):
        with pytest.raises(StepFailed) as info:
            check_input_columns(bad)
        assert str(info.value) == (
            f"--transactions {bad} is missing column(s) 'amount' "
            f"(required: {', '.join(spec.TRANSACTION_COLUMNS)}; found: {found})"
        )
    # Through the CLI: one line, exit 2 (bad input), no traceback.
    path = tmp_path / "struct.parquet"
    result = run_cli("local", "--transactions", str(path), "--work-dir", str(tmp_path / "w"), "--no-stream")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --transactions {path}: column 'amount' has type struct<dollars: double>, "
        "expected integer or floating or decimal or string"
    ]


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_sigterm_during_spark_ends_in_one_line_without_a_jvm_left(tmp_path) -> None:
    """SIGTERM to `local` while the Spark job runs: exit 143, one line, the Spark JVM is gone."""
    import signal
    import time

    import psutil

    proc = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "local", "--rows", "30000", "--work-dir", str(tmp_path / "w"),
         "--no-stream"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        me = psutil.Process(proc.pid)
        jvms: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while not jvms and time.monotonic() < deadline and proc.poll() is None:
            jvms = [c for c in me.children(recursive=True) if "java" in c.name()]
            time.sleep(0.2)
        assert jvms, "the Spark JVM never started"
        time.sleep(2)  # into the Spark job
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: terminated (SIGTERM) during step aggregate+ingest"), err[-2000:]
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(jvms, timeout=15)
    assert alive == []


def test_data_shorter_than_four_days_is_refused_before_spark_starts(tmp_path) -> None:
    """Any type of `datetime` pyarrow reads (UTC offset or not, sub-second Parquet timestamps):
    under 4 days in all is refused at once; a column it cannot type is left to the Spark job."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.local_runner import StepFailed, check_time_span

    t0 = 1_577_836_800  # 2020-01-01
    short = pa.array([(t0 + 0.5) * 1000, (t0 + 3 * 86400 - 1) * 1000], pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"datetime": short}), tmp_path / "short.parquet")
    (tmp_path / "short.csv").write_text("tid,datetime\na,2020-01-01 00:00:00\nb,2020-01-03 23:59:59\n")
    for path in (tmp_path / "short.parquet", tmp_path / "short.csv"):
        with pytest.raises(StepFailed) as info:
            check_time_span(path)
        assert (
            str(info.value)
            == f"--transactions {path}: the data spans 3 day(s): a time-based split needs at least 4"
        )
    (tmp_path / "long.csv").write_text(
        "tid,datetime\na,2020-01-01 00:00:00+00:00\nb,2020-01-04 00:00:00+00:00\n"
    )
    check_time_span(tmp_path / "long.csv")  # 4 days: the Spark job decides the rest
    (tmp_path / "odd.csv").write_text("tid,datetime\na,01/01/2020\nb,01/02/2020\n")
    check_time_span(tmp_path / "odd.csv")  # not typed here: left to Spark
