"""The exit-code convention of shared/errors.py (docs/design.md) on every command line of the project.

0 success, 1 a run failed, 2 bad usage or input, 130/143 interrupted; a user error is one line on
stderr, never a traceback. Every subcommand of run_pipeline.py and every standalone script is run
with an argument it must refuse.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_pipeline
from shared.cli import ArgumentParser, non_negative_int, positive_int, run
from shared.errors import EXIT_RUN_FAILED, EXIT_SIGTERM, EXIT_USAGE, RunFailed, UserError
from shared.signals import INTERRUPTS, Interrupted

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = sorted(run_pipeline.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
SCRIPTS = ("processing/simulate.py", "processing/aggregate.py", "processing/evaluate.py", "training/train.py")


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1, stderr[-2000:]
    assert "error: " in lines[0], lines[0]
    return lines[0]


def test_every_subcommand_is_covered() -> None:
    assert {"local", "endpoint", "approve", "replay", "definition", "upsert", "start", "status"} <= set(
        SUBCOMMANDS
    )
    assert {"send", "decisions"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_refuses_an_unknown_flag_with_one_line_and_exit_2(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        run_pipeline.main([command, "--no-such-flag"])
    assert refused.value.code == EXIT_USAGE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("run_pipeline.py") and ": error: " in line  # a missing required flag comes first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["local", "--rows", "many"], "argument --rows: invalid int value"),
        (["local", "--history-days", "-1"], "must be >= 0"),
        (["approve", "--work-dir", "w"], "--version is required with --work-dir"),
        (["endpoint", "--port", "x"], "argument --port: invalid int value"),
        (["replay", "--work-dir", "w", "--events", "e", "--out", "o", "--batch-size", "0"], "must be >= 1"),
        (["definition", "--role-arn", "not-a-role"], "not an IAM role ARN"),
        (["start", "--param", "no-equals-sign", "--region", "us-east-1"], "--param expects Name=Value"),
        (["decisions", "--file", "x.jsonl", "--since", "soon"], "--since expects a duration"),
        (["send", "--rows", "0", "--region", "us-east-1"], "--rows must be >= 1"),
    ],
)
def test_bad_values_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    try:
        code = run_pipeline.main(argv)
    except SystemExit as exc:  # refused by the argument parser
        code = exc.code
    assert code == EXIT_USAGE
    assert message in _one_line(capsys.readouterr().err)


def test_missing_subcommand_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        run_pipeline.main([])
    assert refused.value.code == EXIT_USAGE
    _one_line(capsys.readouterr().err)


def test_entry_maps_user_errors_and_interrupts(capsys) -> None:
    def bad_input() -> int:
        raise UserError("no such file:\n  x.csv")

    def failed_run() -> int:
        raise RunFailed("quality gate: pr_auc 0.1 < 0.7")

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run(bad_input, "prog") == EXIT_USAGE
    assert _one_line(capsys.readouterr().err) == "prog: error: no such file: x.csv"
    assert run(failed_run) == EXIT_RUN_FAILED
    assert _one_line(capsys.readouterr().err) == "error: quality gate: pr_auc 0.1 < 0.7"
    assert run(interrupted) == 130
    assert _one_line(capsys.readouterr().err) == "error: interrupted (Ctrl-C)"
    assert run(lambda: None) == 0
    with pytest.raises(SystemExit) as refused:
        ArgumentParser(prog="p").parse_args(["--x"])
    assert refused.value.code == EXIT_USAGE


def test_entry_turns_sigterm_into_143_after_the_clean_up(capsys) -> None:
    cleaned_up = []

    def terminated() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # never reached: the signal raises here
            return 0
        finally:
            cleaned_up.append(True)

    def explained() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        except INTERRUPTS as exc:
            raise Interrupted(exc, "terminated (SIGTERM); the job was stopped") from None

    handler_before = signal.getsignal(signal.SIGTERM)
    assert run(terminated, "prog") == EXIT_SIGTERM and cleaned_up == [True]
    assert _one_line(capsys.readouterr().err) == "prog: error: terminated (SIGTERM)"
    assert run(explained) == EXIT_SIGTERM
    assert _one_line(capsys.readouterr().err) == "error: terminated (SIGTERM); the job was stopped"
    assert signal.getsignal(signal.SIGTERM) == handler_before  # restored after the command


def test_shared_argument_types_refuse_in_one_line(capsys) -> None:
    parser = ArgumentParser(prog="p")
    parser.add_argument("--days", type=non_negative_int)
    parser.add_argument("--size", type=positive_int)
    assert parser.parse_args(["--days", "0", "--size", "1"]) == argparse.Namespace(days=0, size=1)
    for argv, message in (
        (["--days", "x"], "expected a whole number, got 'x'"),
        (["--size", "0"], "must be >= 1"),
    ):
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(argv)
        assert refused.value.code == EXIT_USAGE
        assert message in _one_line(capsys.readouterr().err)


def test_user_error_classes_share_the_base() -> None:
    from pipeline.aws_cli import CliError
    from pipeline.aws_stream import StreamError
    from pipeline.definition import DefinitionError
    from pipeline.local_runner import StepFailed
    from processing.aggregate import JobInputError
    from processing.evaluate import EvaluationError
    from processing.simulate import SimulationError
    from streaming.replay import ReplayError
    from training.model_artifact import ArtifactError
    from training.train import TrainingError

    for cls in (
        JobInputError,
        EvaluationError,
        SimulationError,
        TrainingError,
        ArtifactError,
        DefinitionError,
    ):
        assert issubclass(cls, UserError) and cls("x").exit_code == EXIT_USAGE, cls
        assert issubclass(cls, ValueError), cls  # callers that caught ValueError still do
    assert ReplayError("x").exit_code == EXIT_USAGE
    for cls in (StepFailed, CliError, StreamError):
        assert issubclass(cls, RunFailed) and cls("x").exit_code == EXIT_RUN_FAILED, cls
    assert CliError("x", code=2).exit_code == 2 == CliError("x", code=2).code


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        *[(script, ["--no-such-flag"], ": error: ") for script in SCRIPTS],
        (
            "processing/simulate.py",
            ["--rows", "10", "--out", "x.txt"],
            "--out must end with .csv or .parquet",
        ),
        ("processing/aggregate.py", ["--input", "i", "--output", "o", "--history-days=-1"], "must be >= 0"),
        ("processing/evaluate.py", ["--model", "missing", "--test", "missing", "--output", "o"], ""),
        ("training/train.py", ["--train", "missing", "--model-dir", "m"], ""),
    ],
)
def test_standalone_script_exits_2_with_one_line(
    script: str, argv: list[str], message: str, tmp_path
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_USAGE, result.stderr[-2000:]
    assert message in _one_line(result.stderr)
