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

Exit codes: 0 done; 1 a step failed (one line: quality gate, deploy refused); 2 bad input; 130 Ctrl-C,
143 SIGTERM, both after stopping what the step started (Spark JVM, Flink job, a half-started
endpoint); rerunning the same command starts over (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features import spec
from pipeline.local.signals import is_endpoint_server, stop_descendants
from pipeline.parameters import DEFAULT_MIN_PR_AUC
from processing.aggregate import HISTORY_DAYS, TEST_DAYS, VALIDATION_DAYS
from processing.simulate import DEFAULT_PROFILE, FULL_ROWS, PROFILES
from shared.cli import non_negative_int
from shared.errors import EXIT_USAGE, RunFailed, UserError, one_line
from shared.signals import INTERRUPTS, Interrupted, describe

DEFAULT_WORK_DIR = Path("work/local")
DEPLOYED_FILE = "deployed.json"


class StepFailed(RunFailed, RuntimeError):
    """A step failed for a reason the user can act on (printed as one line, exit 1)."""


class BadInput(StepFailed):
    """A step refused the user's input or arguments (one line, exit 2 like every bad input)."""

    exit_code = EXIT_USAGE


class StepInterrupted(BaseException):
    """Ctrl-C or SIGTERM during a step (after the step's own clean-up ran)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.cause = cause


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


# --- Local endpoint lifecycle (pipeline/local/endpoint.py) ----------------------
def read_deployment(work_dir: Path) -> dict[str, Any] | None:
    """The deployment record of a previous `local` run, or None."""
    from pipeline.local import endpoint

    return endpoint.read_deployment(work_dir)


def stop_endpoint(work_dir: Path) -> int:
    """Stop every local endpoint server of the work dir (the deployed one and any leftover)."""
    from pipeline.local import endpoint

    return endpoint.stop(work_dir)


def deploy_local(work_dir: Path, model_data: Path, version: int, port: int) -> dict[str, Any]:
    """Atomic deploy (new server, identity check, record, old server stopped); StepFailed on failure."""
    from pipeline.local import endpoint

    try:
        return endpoint.deploy(work_dir, model_data, version, port)
    except endpoint.DeployError as exc:
        raise StepFailed(f"local endpoint not deployed: {exc}") from None


# --- Input checks -------------------------------------------------------------
_COLUMN_KINDS: dict[str, tuple[str, ...]] = {
    "tid": ("string", "integer"),
    "datetime": ("string", "timestamp", "date"),
    spec.CARD_ID: ("integer", "string"),
    spec.AMOUNT: ("integer", "floating", "decimal", "string"),
    spec.LABEL: ("integer", "floating", "boolean", "string"),
}


def _arrow_kind(t: Any) -> str:
    import pyarrow as pa

    checks = (
        ("integer", pa.types.is_integer),
        ("floating", pa.types.is_floating),
        ("decimal", pa.types.is_decimal),
        ("boolean", pa.types.is_boolean),
        ("string", lambda x: pa.types.is_string(x) or pa.types.is_large_string(x)),
        ("timestamp", pa.types.is_timestamp),
        ("date", pa.types.is_date),
    )
    for kind, test in checks:
        if test(t):
            return kind
    return str(t)


def _csv_header(path: Path) -> list[str] | None:
    """The header of a single CSV file; None for anything else (a folder: the Spark job reads it)."""
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # the Spark job reports what it cannot read


def _refuse_missing(path: Path, names: Sequence[str]) -> None:
    missing = [c for c in spec.TRANSACTION_COLUMNS if c not in names]
    if missing:
        raise BadInput(
            f"--transactions {path} is missing column(s) {', '.join(map(repr, missing))} "
            f"(required: {', '.join(spec.TRANSACTION_COLUMNS)}; found: {', '.join(names) or 'none'})"
        )


def _is_parquet(path: Path) -> bool:
    """A .parquet file or a folder holding some: what the pre-checks read with pyarrow."""
    return path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet")))


def check_input_columns(path: Path) -> None:
    """Refuse, before Spark starts, an input that lacks a required column (CSV header or Parquet
    schema) or whose Parquet columns are nested or binary: Spark would need ~30 s to start and then
    fail deep inside the job (for the nested case with a 40-line AnalysisException)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not _is_parquet(path):
        header = _csv_header(path)
        if header is not None:
            _refuse_missing(path, header)
        return
    try:
        schema = ds.dataset(path, format="parquet").schema
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise BadInput(f"--transactions {path}: not readable as Parquet: {one_line(exc, 200)}") from None
    _refuse_missing(path, schema.names)
    for name, kinds in _COLUMN_KINDS.items():
        kind = _arrow_kind(schema.field(name).type)
        if kind not in kinds:
            raise BadInput(
                f"--transactions {path}: column {name!r} has type {schema.field(name).type}, "
                f"expected {' or '.join(kinds)}"
            )


def check_time_span(path: Path) -> None:
    """Refuse, before Spark starts, data whose whole span is shorter than the 4 days any split
    needs (processing.aggregate.split_days). Only that case: the Spark job measures the span of the
    valid rows, which is never longer, and decides everything else. A `datetime` column this cheap
    reading cannot type (odd formats, a folder of CSVs) is left to the Spark job."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.dataset as ds

    parquet = _is_parquet(path)
    if not parquet and not (path.suffix == ".csv" and path.is_file()):
        return

    def read(kind: Any) -> Any:
        if parquet:
            return ds.dataset(path, format="parquet").to_table(columns=["datetime"]).column("datetime")
        options = pcsv.ConvertOptions(include_columns=["datetime"], column_types={"datetime": kind})
        return pcsv.read_csv(path, convert_options=options).column("datetime")

    seconds = None
    for kind in (pa.timestamp("s", tz="UTC"), pa.timestamp("s")):  # with or without a UTC offset
        try:
            seconds = pc.min_max(read(kind).cast(pa.timestamp("s"), safe=False).cast(pa.int64())).as_py()
            break
        except (OSError, ValueError, pa.ArrowException):
            continue
    if seconds is None:
        return
    if seconds["min"] is None:  # no timestamps at all: the Spark job says so
        return
    day = spec.SNAPSHOT_PERIOD_SECONDS
    days = seconds["max"] // day - seconds["min"] // day + 1
    if days < 4:
        raise BadInput(
            f"--transactions {path}: the data spans {days} day(s): a time-based split needs at least 4"
        )


def _spark_reason(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    causes = [ln.removeprefix("Caused by: ") for ln in lines if ln.startswith("Caused by:")]
    return one_line(Exception(causes[-1] if causes else lines[0] if lines else type(exc).__name__), 300)


# --- The steps ----------------------------------------------------------------
def check_quality_gate(metrics: dict[str, Any], test_positives: int | None, min_pr_auc: float) -> str:
    """The local quality gate on evaluation.json's `binary_classification_metrics`; StepFailed if not met.

    Two conditions, because pr_auc alone can pass a model that decides nothing:
    - `pr_auc >= min_pr_auc`: ranking quality over all thresholds;
    - `recall > 0` at the decision threshold (spec.DECISION_THRESHOLD, the `threshold` metric):
      serving flags a transaction only when its score reaches that threshold, so a model whose
      scores never reach it flags no fraud at all, however well it ranks (seen: validation
      without fraud, early stopping kept round 0, test pr_auc 0.754 with recall 0).
    Without fraud in the test split neither can be measured; the gate says so instead of
    reporting a stand-in pr_auc of 0.0. The pipeline's condition step reads the same keys
    (`pr_auc`, `recall`) of the same file.
    """
    threshold = (metrics.get("threshold") or {}).get("value", spec.DECISION_THRESHOLD)
    if test_positives == 0:
        raise StepFailed(
            "quality gate: no fraud in the test split, so the model cannot be measured: "
            "use more data (more rows or days) or another --seed"
        )
    pr_auc = (metrics.get("pr_auc") or {}).get("value")
    recall = (metrics.get("recall") or {}).get("value")
    if pr_auc is None:
        raise StepFailed("quality gate: test pr_auc is undefined: use more data")
    if pr_auc < min_pr_auc:
        raise StepFailed(f"quality gate: test pr_auc {pr_auc:.4f} is under --min-pr-auc {min_pr_auc}")
    if not recall:
        raise StepFailed(
            f"quality gate: recall 0 at the decision threshold {threshold}: the model flags no fraud "
            f"of the test split (pr_auc {pr_auc:.4f} ranks, but no score reaches the threshold)"
        )
    return f"pr_auc {pr_auc:.4f} >= {min_pr_auc}, recall {recall:.4f} > 0 at threshold {threshold}"


def _timed(report: RunReport, index: int, total: int, name: str, step: Callable[[], str]) -> None:
    _log(f"[{index}/{total}] {name} ...")
    start = time.perf_counter()
    try:
        detail = step()
    except UserError as exc:  # the step's own user error: keep its exit code (2 bad input, 1 run failed)
        if isinstance(exc, StepFailed):
            raise
        failed = BadInput if exc.exit_code == EXIT_USAGE else StepFailed
        raise failed(f"{name}: {one_line(exc)}") from exc
    except (ValueError, LookupError, OSError) as exc:  # bad input or data: the step's own message says what
        raise BadInput(f"{name}: {one_line(exc)}") from exc
    except INTERRUPTS as exc:
        raise StepInterrupted(name, exc) from None
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
                raise BadInput(f"--transactions {path}: no such file or directory")
            check_input_columns(path)
            check_time_span(path)
            state["transactions"] = path
            return f"using {path}"
        from processing.simulate import simulate, write_transactions

        out = work_dir / "data" / "transactions.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        frame = simulate(rows=args.rows, seed=args.seed, profile=args.fraud_profile)
        write_transactions(frame, out)
        state["transactions"] = out
        return f"{len(frame):,} transactions, {frame['cc_num'].nunique():,} cards -> {out}"

    def aggregate_and_ingest() -> str:
        from processing import aggregate
        from processing.spark_session import input_rows_hint, local_spark_session

        local_spark_session("fraud-local", input_rows=input_rows_hint(state["transactions"]))
        argv = [
            "--input", str(state["transactions"]),
            "--output", str(features_dir),
            "--feature-store", "local",
            "--feature-store-db", str(store_db),
            "--local",
        ]  # fmt: skip
        if args.snapshot_date:
            argv += ["--snapshot-date", args.snapshot_date]
        argv += [
            f"--history-days={args.history_days}",
            f"--validation-days={args.validation_days}",
            f"--test-days={args.test_days}",
        ]
        try:
            summary = aggregate.main(argv)
        except Exception as exc:
            # Spark's own errors (AnalysisException, Py4JJavaError, ...) on the user's data: one line.
            if type(exc).__module__.split(".")[0] not in ("pyspark", "py4j"):
                raise
            raise StepFailed(f"aggregate+ingest: Spark failed on the input: {_spark_reason(exc)}") from None
        state["aggregate"] = summary
        if summary.get("split_notice"):
            print(f"  notice: {summary['split_notice']}", flush=True)
        rows = summary["rows_out"]
        empty = [split for split in ("train", "validation", "test") if not rows.get(split)]
        if empty:
            raise StepFailed(
                f"the {'/'.join(empty)} split is empty: data from {summary.get('first_day')} to {summary.get('last_day')} is too "
                f"short for the time-based split (first {args.history_days} days are history, last {args.test_days} test, {args.validation_days} before them validation)"
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
        return check_quality_gate(state["metrics"], state["test_positives"], args.min_pr_auc)

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

    def replay_events() -> Path:
        """The test window's transactions as Kinesis-shaped events (streaming/events.py)."""
        from streaming.events import transactions_to_events

        replay_dir = work_dir / "replay"
        replay_dir.mkdir(parents=True, exist_ok=True)
        events = replay_dir / "events.jsonl"
        test_rows = state["aggregate"].get("test_window", {})
        transactions_to_events(
            state["transactions"], events, start=test_rows.get("start"), end=test_rows.get("end"),
            max_events=args.replay_events, seed=args.seed,
        )  # fmt: skip
        return events

    def start_replay() -> Any:
        """The replay's first half (events, the Flink job started), recorded before it starts so the
        run's `finally` stops whatever it started."""
        from streaming.replay import Replay, ReplayError

        replay = Replay(work_dir, replay_events(), work_dir / "replay" / "decisions.jsonl")
        state["replay_run"] = replay
        try:
            replay.start()
        except ReplayError as exc:
            raise StepFailed(f"streaming replay: {exc}") from exc
        return replay

    def stream_start() -> str:
        """Events and the Flink job need the transactions and the test window, not the model: they
        start here and the job runs while the model trains; `stream-replay` runs the handlers."""
        replay = start_replay()
        return (
            f"{replay.n_lines:,} events; the Flink job runs beside training (log {replay.rdir / 'flink.log'})"
        )

    def stream_replay() -> str:
        if "deployment" not in state:
            return "skipped: no deployed model (pass --approve, or approve a version and run `replay`)"
        from streaming.replay import ReplayError

        replay = state.get("replay_run") or start_replay()
        try:
            summary = replay.finish(endpoint_url=state["deployment"]["url"])
        except ReplayError as exc:
            raise StepFailed(f"streaming replay: {exc}") from exc
        state["replay"] = summary
        return (
            f"{summary['events']:,} events -> {summary['decisions']:,} decisions, {summary['rejects']} rejects, "
            f"{summary['late']} late, {summary['fraud_flagged']} flagged"
        )

    steps = [("data", prepare_data), ("aggregate+ingest", aggregate_and_ingest)]
    if not args.no_stream and args.approve:  # the model will be deployed unless the gate fails
        steps.append(("stream-start", stream_start))
    steps += [
        ("train", train),
        ("evaluate", evaluate),
        ("quality-gate", quality_gate),
        ("register", register),
        ("deploy", deploy),
    ]
    if not args.no_stream:
        steps.append(("stream-replay", stream_replay))
    try:
        for index, (name, step) in enumerate(steps, start=1):
            _timed(report, index, len(steps), name, step)
    finally:  # a run that fails or is stopped before the replay ends leaves no Flink job behind
        if "replay_run" in state:
            state["replay_run"].stop()

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
    """Exit 0; through `shared.cli.run`, 1 (a step failed), 2 (bad input), 130 (Ctrl-C) or 143 (SIGTERM)."""
    try:
        report = run_local(args)
    except StepInterrupted as exc:
        stop_descendants(keep=is_endpoint_server)  # the Spark JVM and its workers; Flink is stopped by replay
        raise Interrupted(
            exc.cause,
            f"{describe(exc.cause)} during step {exc.step}; nothing half-done is kept running: "
            "rerun the same command to start over",
        ) from None
    except INTERRUPTS as exc:  # between steps
        stop_descendants(keep=is_endpoint_server)
        raise Interrupted(exc, f"{describe(exc)}; rerun the same command to start over") from None
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
        raise UserError("--version is required with --work-dir")
    try:
        package = LocalModelRegistry(Path(args.work_dir) / "registry").set_status(
            spec.MODEL_PACKAGE_GROUP, args.version, args.status
        )
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise RunFailed(str(exc)) from exc
    print(f"{spec.MODEL_PACKAGE_GROUP} version {package.version}: {package.status}")
    return 0


def cmd_endpoint(args: argparse.Namespace) -> int:
    """`endpoint --work-dir DIR [--stop | --deploy-latest]`: inspect or manage the local endpoint."""
    try:
        return _endpoint_command(args)
    except INTERRUPTS as exc:
        from pipeline.local import endpoint

        record = endpoint.read_deployment(Path(args.work_dir)) or {}
        now = (
            f"version {record.get('version')} serving at {record.get('url')}"
            if endpoint.is_live(record)
            else "no local endpoint serving"
        )
        raise Interrupted(exc, f"{describe(exc)}; deployment now: {now}") from None


def _endpoint_command(args: argparse.Namespace) -> int:
    from pipeline.local.registry import LocalModelRegistry

    work_dir = Path(args.work_dir)
    if args.stop:
        n = stop_endpoint(work_dir)
        print(f"stopped {n} local endpoint server(s)" if n else "no local endpoint running")
        return 0
    if args.deploy_latest:
        approved = LocalModelRegistry(work_dir / "registry").latest_approved(spec.MODEL_PACKAGE_GROUP)
        if approved is None:
            raise StepFailed("no approved model version in the registry")
        record = deploy_local(work_dir, Path(approved.model_data), approved.version, args.port)
        print(f"version {approved.version} serving at {record['url']}")
        return 0
    from pipeline.local import endpoint

    print(json.dumps(endpoint.status(work_dir), indent=2))
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
    for name, default in (("history", HISTORY_DAYS), ("validation", VALIDATION_DAYS), ("test", TEST_DAYS)):
        local.add_argument(
            f"--{name}-days",
            type=non_negative_int,
            default=default,
            help=f"{name} period of the time-based split in days (default: %(default)s; shrinks with short data)",
        )
    local.add_argument(
        "--fraud-profile",
        choices=PROFILES,
        default=DEFAULT_PROFILE,
        help="simulator fraud process: study (default, the original study's) or cashout (easier)",
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
        help="local endpoint port (default: a free one, new at each deploy; the URL is in endpoint/deployed.json)",
    )
    local.set_defaults(handler=cmd_local)

    endpoint = commands.add_parser(
        "endpoint",
        help="show, stop or (re)deploy the local endpoint of a work dir",
        description="Without flags: show the endpoint a `local` run deployed (URL, model version, pid).\n"
        "--stop ends it; --deploy-latest swaps in the newest approved registry version atomically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    endpoint.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help=f"the local run's folder (default {DEFAULT_WORK_DIR})",
    )
    endpoint.add_argument("--stop", action="store_true", help="stop the running local endpoint")
    endpoint.add_argument("--deploy-latest", action="store_true", help="deploy the newest approved version")
    endpoint.add_argument(
        "--port", type=int, default=0, help="port for --deploy-latest (default 0: any free port)"
    )
    endpoint.set_defaults(handler=cmd_endpoint)
