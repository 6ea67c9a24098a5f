"""`run_pipeline.py local`: the SageMaker pipeline's steps, in order, on embedded defaults.

The steps call the very scripts the SageMaker pipeline runs (Spark job, training,
evaluation); only the services differ: local Spark, a SQLite online store, a
directory registry and a local HTTP endpoint. Everything lands in `--work-dir`:

    data/transactions.parquet   simulated input (unless --transactions)
    features/                   Spark job output (train/ validation/ test/ parquet/ snapshots/)
    online-store.sqlite         cc-agg-batch-fg (latest 1-week snapshot per card)
    model/model.tar.gz          the built-in-XGBoost-compatible artifact
    evaluation/                 evaluation.json + evaluation.png
    registry/                   model package group, numbered versions
    endpoint/                   deployed.json, server.log (the running local endpoint)
    replay/                     streaming replay of the test window (decisions, rejects)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features import spec
from pipeline.parameters import DEFAULT_MIN_PR_AUC
from processing.aggregate import HISTORY_DAYS, TEST_DAYS, VALIDATION_DAYS
from processing.simulate import FULL_ROWS

DEFAULT_WORK_DIR = Path("work/local")
DEPLOYED_FILE = "deployed.json"


class StepFailed(RuntimeError):
    """A step failed for a reason the user can act on (printed as one line, exit 1)."""


@dataclass
class StepResult:
    name: str
    seconds: float
    detail: str


@dataclass
class RunReport:
    """What the summary table prints: one line per step plus artifacts."""

    steps: list[StepResult] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    replay_summary: dict[str, Any] | None = None

    def table(self) -> str:
        width = max(len(s.name) for s in self.steps) if self.steps else 10
        lines = [f"{'step':<{width}}  {'time':>8}  detail", f"{'-' * width}  {'-' * 8}  {'-' * 40}"]
        lines += [f"{s.name:<{width}}  {s.seconds:>7.1f}s  {s.detail}" for s in self.steps]
        total = sum(s.seconds for s in self.steps)
        lines.append(f"{'total':<{width}}  {total:>7.1f}s")
        if self.artifacts:
            lines.append("")
            lines += [f"{k:<22} {v}" for k, v in self.artifacts.items()]
        return "\n".join(lines)


def _log(message: str) -> None:
    print(message, flush=True)


# --- Local endpoint lifecycle -------------------------------------------------
def _pid_alive(pid: int) -> bool:
    """True when `pid` runs our endpoint server (a recycled PID of another program does not count)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"training.serve" in cmdline.read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_deployment(work_dir: Path) -> dict[str, Any] | None:
    """The deployment record of a previous `local` run, or None."""
    path = work_dir / "endpoint" / DEPLOYED_FILE
    return json.loads(path.read_text()) if path.exists() else None


def stop_endpoint(work_dir: Path) -> bool:
    """Stop the local endpoint server started by `deploy` (True when one was running)."""
    record = read_deployment(work_dir)
    pid = (record or {}).get("pid")
    if not pid or not _pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _pid_alive(pid):
            break
        time.sleep(0.05)
    return True


def deploy_local(work_dir: Path, model_data: Path, version: int, port: int) -> dict[str, Any]:
    """Start (or restart on the new model) the local endpoint; record it in endpoint/deployed.json."""
    from training.endpoint_client import wait_until_ready

    endpoint_dir = work_dir / "endpoint"
    endpoint_dir.mkdir(parents=True, exist_ok=True)
    previous = read_deployment(work_dir)
    if previous and previous.get("pid") and _pid_alive(previous["pid"]):
        port = port or int(previous.get("port") or 0)
        stop_endpoint(work_dir)
    port = port or _free_port()
    with open(endpoint_dir / "server.log", "ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "training.serve", "--model", str(model_data), "--port", str(port)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this run, like a deployed endpoint
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, timeout=60)
    except Exception as exc:  # the log says why (port taken, bad model, ...)
        process.terminate()
        raise StepFailed(
            f"local endpoint did not start on port {port}: {exc} (see {endpoint_dir / 'server.log'})"
        ) from exc
    record = {
        "endpoint_name": spec.ENDPOINT_NAME,
        "model_data": str(model_data.resolve()),
        "version": version,
        "url": url,
        "port": port,
        "pid": process.pid,
        "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (endpoint_dir / DEPLOYED_FILE).write_text(json.dumps(record, indent=2))
    return record


# --- The steps ----------------------------------------------------------------
def _timed(report: RunReport, index: int, total: int, name: str, step: Callable[[], str]) -> None:
    _log(f"[{index}/{total}] {name} ...")
    start = time.perf_counter()
    try:
        detail = step()
    except (ValueError, LookupError, OSError) as exc:  # bad input or data: the step's own message says what
        raise StepFailed(f"{name}: {exc}") from exc
    seconds = time.perf_counter() - start
    report.steps.append(StepResult(name, seconds, detail))
    _log(f"[{index}/{total}] {name} done in {seconds:.1f}s: {detail}")


def run_local(args: argparse.Namespace) -> RunReport:
    """Execute the pipeline steps in order; raise StepFailed with a one-line reason."""
    work_dir: Path = args.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    features_dir = work_dir / "features"
    store_db = work_dir / "online-store.sqlite"
    model_dir = work_dir / "model"
    evaluation_dir = work_dir / "evaluation"
    registry_dir = work_dir / "registry"
    report = RunReport()
    state: dict[str, Any] = {}

    def prepare_data() -> str:
        if args.transactions:
            path = Path(args.transactions)
            if not path.exists():
                raise StepFailed(f"--transactions {path}: no such file or directory")
            state["transactions"] = path
            return f"using {path}"
        from processing.simulate import simulate, write_transactions

        out = work_dir / "data" / "transactions.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        frame = simulate(rows=args.rows, seed=args.seed)
        write_transactions(frame, out)
        state["transactions"] = out
        return f"{len(frame):,} transactions, {frame['cc_num'].nunique():,} cards -> {out}"

    def aggregate_and_ingest() -> str:
        from processing import aggregate
        from processing.spark_session import local_spark_session

        local_spark_session("fraud-local")
        argv = [
            "--input", str(state["transactions"]),
            "--output", str(features_dir),
            "--feature-store", "local",
            "--feature-store-db", str(store_db),
            "--local",
        ]  # fmt: skip
        if args.snapshot_date:
            argv += ["--snapshot-date", args.snapshot_date]
        summary = aggregate.main(argv)
        state["aggregate"] = summary
        rows = summary["rows_out"]
        empty = [split for split in ("train", "validation", "test") if not rows.get(split)]
        if empty:
            raise StepFailed(
                f"the {'/'.join(empty)} split is empty: data from {summary.get('first_day')} to {summary.get('last_day')} is too "
                f"short for the time-based split (first {HISTORY_DAYS} days are history, last {TEST_DAYS} test, {VALIDATION_DAYS} before them validation)"
            )
        return (
            f"train {rows.get('train', '?'):,} / validation {rows.get('validation', '?'):,} / "
            f"test {rows.get('test', '?'):,} rows; {summary.get('records_ingested', '?'):,} snapshot records "
            f"(cut-off {summary.get('snapshot_date', '?')}) -> {spec.BATCH_FEATURE_GROUP.name}"
        )

    def train() -> str:
        from training.train import train as train_model

        result = train_model(features_dir / "train", features_dir / "validation", model_dir, {})
        state["model_data"] = Path(result["model_data"])
        return f"best iteration {result.get('best_iteration')}, validation aucpr {result.get('validation_aucpr', float('nan')):.4f}"

    def evaluate() -> str:
        from processing.evaluate import evaluate as evaluate_model

        metrics = evaluate_model(state["model_data"], features_dir / "test", evaluation_dir)
        state["metrics"] = metrics["binary_classification_metrics"]
        state["test_positives"] = metrics.get("dataset", {}).get("positives")
        m = {k: v["value"] for k, v in state["metrics"].items() if isinstance(v, dict) and "value" in v}
        shown = ", ".join(
            f"{k} {'n/a' if m.get(k) is None else format(m[k], '.4f')}"
            for k in ("pr_auc", "auc", "precision", "recall", "f1")
        )
        return f"{shown} at threshold {m.get('threshold')}"

    def quality_gate() -> str:
        pr_auc = state["metrics"]["pr_auc"]["value"]
        if pr_auc is None:
            raise StepFailed(
                "quality gate: test pr_auc is undefined (the test split holds no fraud): use more data"
            )
        if pr_auc < args.min_pr_auc:
            raise StepFailed(
                f"quality gate: test pr_auc {pr_auc:.4f} is under --min-pr-auc {args.min_pr_auc}"
            )
        return f"pr_auc {pr_auc:.4f} >= {args.min_pr_auc}"

    def register() -> str:
        from pipeline.local.registry import LocalModelRegistry

        status = "Approved" if args.approve else "PendingManualApproval"
        package = LocalModelRegistry(registry_dir).register(
            spec.MODEL_PACKAGE_GROUP, state["model_data"], evaluation_dir / "evaluation.json", status
        )
        state["package"] = package
        return f"{spec.MODEL_PACKAGE_GROUP} version {package.version} ({status})"

    def deploy() -> str:
        from pipeline.local.registry import LocalModelRegistry

        approved = LocalModelRegistry(registry_dir).latest_approved(spec.MODEL_PACKAGE_GROUP)
        if approved is None:
            return "skipped: no approved version (approve with `run_pipeline.py approve --work-dir ... --version N`)"
        record = deploy_local(work_dir, Path(approved.model_data), approved.version, args.endpoint_port)
        state["deployment"] = record
        return f"version {approved.version} serving at {record['url']} (pid {record['pid']})"

    def stream_replay() -> str:
        if "deployment" not in state:
            return "skipped: no deployed model (pass --approve, or approve a version and run `replay`)"
        from streaming.events import transactions_to_events
        from streaming.replay import ReplayError, run_replay

        replay_dir = work_dir / "replay"
        replay_dir.mkdir(parents=True, exist_ok=True)
        events = replay_dir / "events.jsonl"
        test_rows = state["aggregate"].get("test_window", {})
        transactions_to_events(
            state["transactions"], events, start=test_rows.get("start"), end=test_rows.get("end"),
            max_events=args.replay_events, seed=args.seed,
        )  # fmt: skip
        try:
            summary = run_replay(
                work_dir, events, replay_dir / "decisions.jsonl", endpoint_url=state["deployment"]["url"]
            )
        except ReplayError as exc:
            raise StepFailed(f"streaming replay: {exc}") from exc
        state["replay"] = summary
        return (
            f"{summary['events']:,} events -> {summary['decisions']:,} decisions, {summary['rejects']} rejects, "
            f"{summary['late']} late, {summary['fraud_flagged']} flagged"
        )

    steps = [
        ("data", prepare_data),
        ("aggregate+ingest", aggregate_and_ingest),
        ("train", train),
        ("evaluate", evaluate),
        ("quality-gate", quality_gate),
        ("register", register),
        ("deploy", deploy),
    ]
    if not args.no_stream:
        steps.append(("stream-replay", stream_replay))
    for index, (name, step) in enumerate(steps, start=1):
        _timed(report, index, len(steps), name, step)

    report.artifacts = {
        "training data": str(features_dir),
        "online store": str(store_db),
        "model": str(state.get("model_data", "")),
        "evaluation": str(evaluation_dir / "evaluation.json"),
        "curves": str(evaluation_dir / "evaluation.png"),
        "registry": str(registry_dir / spec.MODEL_PACKAGE_GROUP),
    }
    if "deployment" in state:
        report.artifacts["endpoint"] = f"{state['deployment']['url']}/invocations"
    if "replay" in state:
        report.replay_summary = state["replay"]
        report.artifacts["decisions"] = str(work_dir / "replay" / "decisions.jsonl")
    return report


def cmd_local(args: argparse.Namespace) -> int:
    try:
        report = run_local(args)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _log("\n" + report.table())
    if report.replay_summary:
        from streaming.replay import format_summary

        _log("\nstreaming replay of the test window\n" + format_summary(report.replay_summary))
    if "endpoint" in report.artifacts:
        _log(
            f"\nThe local endpoint keeps serving; stop it with: python run_pipeline.py endpoint --work-dir {args.work_dir} --stop"
        )
    return 0


def approve_local(args: argparse.Namespace) -> int:
    """`approve --work-dir DIR --version N [--status S]`: set a local model package's status."""
    from pipeline.local.registry import LocalModelRegistry

    if args.version is None:
        print("error: --version is required with --work-dir", file=sys.stderr)
        return 2
    try:
        package = LocalModelRegistry(Path(args.work_dir) / "registry").set_status(
            spec.MODEL_PACKAGE_GROUP, args.version, args.status
        )
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{spec.MODEL_PACKAGE_GROUP} version {package.version}: {package.status}")
    return 0


def cmd_endpoint(args: argparse.Namespace) -> int:
    """`endpoint --work-dir DIR [--stop | --deploy-latest]`: inspect or manage the local endpoint."""
    from pipeline.local.registry import LocalModelRegistry

    work_dir = Path(args.work_dir)
    if args.stop:
        print("stopped" if stop_endpoint(work_dir) else "no local endpoint running")
        return 0
    if args.deploy_latest:
        approved = LocalModelRegistry(work_dir / "registry").latest_approved(spec.MODEL_PACKAGE_GROUP)
        if approved is None:
            print("error: no approved model version in the registry", file=sys.stderr)
            return 1
        try:
            record = deploy_local(work_dir, Path(approved.model_data), approved.version, args.port)
        except StepFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"version {approved.version} serving at {record['url']}")
        return 0
    record = read_deployment(work_dir)
    running = bool(record and record.get("pid") and _pid_alive(record["pid"]))
    print(json.dumps({**(record or {}), "running": running}, indent=2))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    local = commands.add_parser("local", help="run the whole pipeline locally (no AWS)", description=__doc__)
    local.add_argument(
        "--rows", type=int, default=FULL_ROWS, help="simulated transactions (default: %(default)s)"
    )
    local.add_argument("--seed", type=int, default=7, help="simulator and replay seed (default: %(default)s)")
    local.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="where everything lands (default: %(default)s)",
    )
    local.add_argument(
        "--transactions",
        help="CSV/Parquet with columns " + ", ".join(spec.TRANSACTION_COLUMNS) + " instead of the simulator",
    )
    local.add_argument(
        "--snapshot-date",
        help="cut-off of the published 1-week snapshot (default: day after the last transaction)",
    )
    local.add_argument(
        "--min-pr-auc",
        type=float,
        default=DEFAULT_MIN_PR_AUC,
        help="quality gate on test pr_auc (default: %(default)s)",
    )
    local.add_argument(
        "--approve", action="store_true", help="approve the new model version before deploying it"
    )
    local.add_argument(
        "--no-stream", action="store_true", help="skip the streaming replay of the test window"
    )
    local.add_argument(
        "--replay-events",
        type=int,
        default=200_000,
        help="at most this many test-window events replayed (default: %(default)s)",
    )
    local.add_argument(
        "--endpoint-port",
        type=int,
        default=0,
        help="local endpoint port (default: the previous one, else a free one)",
    )
    local.set_defaults(handler=cmd_local)

    endpoint = commands.add_parser(
        "endpoint", help="show, stop or (re)deploy the local endpoint of a work dir"
    )
    endpoint.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    endpoint.add_argument("--stop", action="store_true", help="stop the running local endpoint")
    endpoint.add_argument("--deploy-latest", action="store_true", help="deploy the newest approved version")
    endpoint.add_argument("--port", type=int, default=0)
    endpoint.set_defaults(handler=cmd_endpoint)
