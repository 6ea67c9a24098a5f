"""The PyFlink 1.20 streaming job: every streaming feature of the specification, per card, in keyed state.

Locally (bounded JSON-lines file in, JSON-lines directory out; terminates at end of input):
    .venv-flink/bin/python streaming/job.py --source-path IN.jsonl --sink-path OUT_DIR \
        [--watermark-seconds N] [--allowed-lateness-seconds S] [--emit on-watermark|on-arrival] \
        [--feature-spec SPEC.json] [--max-event-time EPOCH_S] [--operator-jar JAR]
On Managed Service for Apache Flink (no arguments): Kinesis in/out, configured by the property
group `FraudFeatures` in /etc/flink/application_properties.json (`PROPERTY_KEYS` below).

Pipeline, all in the JVM (Python only builds it): SQL source (raw text + `rowtime` + watermark;
the event time read by a Java scalar function, streaming/sql.py) -> `fraud.streaming.ParseEvents`
in the source's task (parsing and validation as streaming/parse.py) -> keyed by the parsed card
-> the Java `KeyedProcessFunction` `fraud.streaming.CardFeatures` (streaming/java: the per-card
rules as streaming/keyed.py over features/compute.py; those Python modules are the tests'
oracles) -> SQL sink (streaming/sql.py).
The operator receives the feature specification as JSON (`operator_config`) and loops over it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # script mode: make the repo root importable
    sys.path.insert(0, str(REPO_ROOT))

from features import spec  # noqa: E402
from streaming import keyed, operator_jar, sql  # noqa: E402

PROPERTIES_FILE = "/etc/flink/application_properties.json"
PROPERTY_GROUP = "FraudFeatures"
DEFAULT_WATERMARK_SECONDS = sql.DEFAULT_WATERMARK_SECONDS
DEFAULT_EXECUTION_MODE = "thread"
"""PyFlink's `python.execution-mode`. No Python function runs in the job since the operator moved
to Java, so it has no effect today; it is still set (and read from the property group, which
infra/streaming.yaml sets) so that a Python function added later runs embedded in the JVM, ~30x
faster than `process` mode here (docs/streaming.md)."""

PROPERTY_KEYS: dict[str, str] = {
    "transactions.stream.arn": "source stream ARN (required)",
    "card-features.stream.arn": "sink stream ARN (required)",
    "aws.region": "default: the source ARN's region",
    "stream.initpos": "LATEST | TRIM_HORIZON (default LATEST)",
    "watermark.seconds": f"bounded out-of-orderness (default {DEFAULT_WATERMARK_SECONDS})",
    "allowed.lateness.seconds": f"default {keyed.DEFAULT_ALLOWED_LATENESS_SECONDS}",
    "emit.mode": f"{' | '.join(keyed.EMIT_MODES)} (default {keyed.EMIT_ON_WATERMARK})",
    "future.skew.seconds": f"reject events further ahead of the wall clock (default {spec.FUTURE_SKEW_SECONDS})",
    "feature.spec": "FeatureSpec JSON (FeatureSpec.to_json) or a file in the application; default spec.SPEC",
    "python.execution-mode": f"thread | process (default {DEFAULT_EXECUTION_MODE}; no Python function runs today)",
    "source.idle-timeout.seconds": "an idle shard stops holding the watermark after this (default 30)",
}
"""Every key of the `FraudFeatures` group the job reads (infra/streaming.yaml sets them)."""

IDLE_TIMEOUT_SECONDS = 30
"""A Kinesis shard without traffic must not hold the watermark (and every emission) back forever."""


def load_application_properties(path: str = PROPERTIES_FILE) -> dict[str, str] | None:
    """The `FraudFeatures` property group of Managed Flink, or None when not running there."""
    p = Path(os.environ.get("FLINK_APPLICATION_PROPERTIES", path))
    if not p.exists():
        return None
    for group in json.loads(p.read_text()):
        if group.get("PropertyGroupId") == PROPERTY_GROUP:
            return {str(k): str(v) for k, v in group.get("PropertyMap", {}).items()}
    return None


def load_feature_spec(value: str | None, base: Path = REPO_ROOT) -> spec.FeatureSpec:
    """`spec.SPEC` (no value, or `default`), or a FeatureSpec from JSON text or from a JSON file."""
    if not value or value == "default":
        return spec.SPEC
    text = value if value.lstrip().startswith("{") else (base / value).read_text()
    return spec.FeatureSpec.from_json(text)


def config_from_properties(props: dict[str, str]) -> tuple[sql.ConnectorConfig, int]:
    """Kinesis connectors + watermark from the property group (names shared with infra).

    Streams are taken by ARN (`transactions.stream.arn`, `card-features.stream.arn`): the bundled
    `flink-sql-connector-kinesis` 5.x requires `stream.arn`; a bare stream name cannot be turned
    into one here (no account id), so its absence is a configuration error, not a fallback."""
    source, sink = props.get("transactions.stream.arn"), props.get("card-features.stream.arn")
    missing = [
        k for k, v in (("transactions.stream.arn", source), ("card-features.stream.arn", sink)) if not v
    ]
    if missing:
        raise ValueError(
            f"property group {PROPERTY_GROUP} lacks {', '.join(missing)} "
            "(flink-sql-connector-kinesis 5.x reads and writes streams by ARN)"
        )
    for key, arn in (("transactions.stream.arn", source), ("card-features.stream.arn", sink)):
        if not sql.is_stream_arn(arn):
            raise ValueError(f"{PROPERTY_GROUP}.{key} is not a Kinesis stream ARN: {arn!r}")
    conn = sql.ConnectorConfig(
        kind="kinesis",
        source=source,
        sink=sink,
        region=props.get("aws.region") or sql.arn_region(source),
        init_position=props.get("stream.initpos", "LATEST"),
    )
    return conn, int(float(props.get("watermark.seconds", DEFAULT_WATERMARK_SECONDS)))


def job_options_from_properties(props: dict[str, str]) -> dict[str, Any]:
    """The job's options (`run` keywords) from the property group, checked."""
    return {
        "settings": keyed.Settings(
            fs=load_feature_spec(props.get("feature.spec")),
            allowed_lateness_ms=int(
                float(props.get("allowed.lateness.seconds", keyed.DEFAULT_ALLOWED_LATENESS_SECONDS)) * 1000
            ),
            emit=props.get("emit.mode", keyed.EMIT_ON_WATERMARK),
        ),
        "future_skew_seconds": float(props.get("future.skew.seconds", spec.FUTURE_SKEW_SECONDS)),
        "execution_mode": props.get("python.execution-mode", DEFAULT_EXECUTION_MODE),
        "idle_timeout_seconds": int(float(props.get("source.idle-timeout.seconds", IDLE_TIMEOUT_SECONDS))),
    }


# --- the keyed operator (Java) ---------------------------------------------------------------------
def _bound_text(value: float) -> str:
    return f"{value:g}"


def operator_config(
    settings: keyed.Settings, max_event_time: float | None = None, future_skew_seconds: float | None = None
) -> str:
    """The JSON the Java operator (`fraud.streaming.CardFeatures`, streaming/java) is built from:
    the spec's streaming aggregations and recency values (the operator loops over them), the event's
    fields and validity bounds (spec.BOUNDS, with the rendered forms spec.value_problem prints), the
    output columns (sql.output_columns), the allowed lateness, emit mode, retention and the
    far-future bound (a replay's fixed end, else wall clock + skew)."""
    fs = settings.fs
    skew = spec.FUTURE_SKEW_SECONDS if future_skew_seconds is None else float(future_skew_seconds)
    bound = None if max_event_time is None else min(float(max_event_time), spec.MAX_EVENT_TIME)
    return json.dumps(
        {
            "fields": {
                "tid": "tid",
                "card": spec.CARD_ID,
                "amount": spec.AMOUNT,
                "event_time": spec.EVENT_TIME,
                "label": spec.LABEL,
            },
            "event_fields": list(spec.EVENT_FIELDS),
            "optional_fields": list(spec.OPTIONAL_EVENT_FIELDS),
            "bounds": {
                name: {
                    "low": float(lo),
                    "high": float(hi),
                    "low_text": _bound_text(lo),
                    "high_text": _bound_text(hi),
                }
                for name, (lo, hi) in spec.BOUNDS.items()
            },
            "aggregations": [
                {"name": a.name, "operation": a.operation, "seconds": a.seconds} for a in fs.streaming
            ],
            "recency": [{"name": r.name, "nth": r.nth} for r in fs.recency],
            "recency_sentinel": spec.RECENCY_SENTINEL,
            "allowed_lateness_ms": settings.allowed_lateness_ms,
            "emit": settings.emit,
            "retention_ms": settings.retention_ms,
            "keep_last": settings.keep_last,
            "cleanup_round_ms": keyed.CLEANUP_ROUND_MS,
            "max_event_time": bound,
            "future_skew_seconds": skew,
            "output_columns": [list(c) for c in sql.output_columns(fs)],
        }
    )


# --- environment -------------------------------------------------------------------------------
def _embedded_pythonpath() -> str:
    """Thread mode runs Python inside the JVM (pemja): it sees PYTHONPATH, not this venv's sys.path,
    so the venv's site-packages and the repository root are put there before the JVM starts."""
    parts = [str(REPO_ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    old = os.environ.get("PYTHONPATH")
    return os.pathsep.join(dict.fromkeys([*parts, *([old] if old else [])]))


def build_envs(
    parallelism: int | None,
    execution_mode: str,
    idle_timeout_seconds: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_interval_ms: int | None = None,
    restore_from: str | None = None,
    jars: tuple[Path, ...] = (),
):
    """StreamExecutionEnvironment + StreamTableEnvironment in UTC, with `jars` (the operator's,
    locally) on the job's and the client's classpath."""
    if execution_mode not in ("thread", "process"):
        raise ValueError(f"python.execution-mode must be thread or process, got {execution_mode!r}")
    os.environ["PYTHONPATH"] = _embedded_pythonpath()
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    config = Configuration()
    config.set_string("python.execution-mode", execution_mode)
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    if checkpoint_dir:
        config.set_string("state.checkpoints.dir", Path(checkpoint_dir).resolve().as_uri())
        config.set_string(
            "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
        )
    if restore_from:
        config.set_string("execution.savepoint.path", restore_from)
    env = (
        _local_env_with_jars(config, jars)
        if jars
        else StreamExecutionEnvironment.get_execution_environment(config)
    )
    if parallelism:
        env.set_parallelism(parallelism)
    if checkpoint_interval_ms:
        env.enable_checkpointing(checkpoint_interval_ms)
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    if idle_timeout_seconds:
        conf.set("table.exec.source.idle-timeout", f"{idle_timeout_seconds} s")
    return env, t_env


def _local_env_with_jars(config, jars: tuple[Path, ...]):
    """A local environment whose user class loader holds `jars` (the operator's).

    `env.add_jars` alone puts them on `pipeline.jars` (the tasks see them) and on the py4j
    thread's context class loader (the lookups in `wire` see them), but the environment keeps the
    application class loader as its user class loader, and with checkpointing enabled the job
    graph generator compiles the source's generated code (which names `SourceFields`) with that
    one: "Cannot determine simple type name 'fraud'". So the environment is created with the
    context class loader that holds the jars. Managed Flink needs none of this: the application's
    `jarfile` is on its user class path."""
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    uris = [Path(j).resolve().as_uri() for j in jars]
    add_jars_to_context_class_loader(uris)
    config.set_string("pipeline.jars", ";".join(uris))
    config.set_string("execution.target", "local")
    config.set_string("execution.attached", "true")  # what LocalStreamEnvironment sets
    gateway = get_gateway()
    loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
    loader.loadClass(operator_jar.OPERATOR_CLASS)  # fails here, clearly, if the jar lacks it
    j_env_class = gateway.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
    return StreamExecutionEnvironment(j_env_class(config._j_configuration, loader))


def wire(
    t_env,
    settings: keyed.Settings,
    max_event_time: float | None = None,
    future_skew_seconds: float | None = None,
):
    """Source table -> parse -> keyed by card -> the Java operator `CardFeatures` -> the enriched Table.

    No record crosses into Python: the raw text is selected in SQL (`sql.source_query`), then
    `fraud.streaming.CardFeatures.apply` (reached through the py4j gateway, the operator's jar on
    the classpath: `_local_env_with_jars` locally, the application's `jarfile` on Managed Flink) parses it
    in the source's task (`ParseEvents`), keys by the parsed card and runs the per-card rules; the
    operator's rows (typed by `sql.output_columns(fs)`) go back to the Table API for the sink."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    source = t_env.to_append_stream(t_env.sql_query(sql.source_query()), Types.ROW([Types.STRING()]))
    operator = _operator_class(get_gateway())
    j_out = operator.apply(
        source._j_data_stream, operator_config(settings, max_event_time, future_skew_seconds)
    )
    return t_env.from_data_stream(DataStream(j_out))


def register_source_functions(t_env) -> None:
    """The source's Java scalar functions (`sql.SOURCE_FUNCTIONS`), before the DDL that uses them."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    for name, (class_name, field) in sql.SOURCE_FUNCTIONS.items():
        cls = _java_class(gateway, class_name)
        t_env._j_tenv.createTemporarySystemFunction(name, cls(field))


def _operator_class(gateway):
    return _java_class(gateway, operator_jar.OPERATOR_CLASS)


def _java_class(gateway, class_name: str):
    """A class of the operator jar (`fraud.streaming....`), looked up by py4j through the context
    class loader (which holds the user jars: `_local_env_with_jars` locally, the application's
    `jarfile` on Managed Flink, the way PyFlink loads Java UDFs)."""
    from py4j.java_gateway import JavaClass

    found = gateway.jvm
    for part in class_name.split("."):
        found = getattr(found, part)
    if not isinstance(found, JavaClass):  # py4j answers a JavaPackage for an unknown class
        raise RuntimeError(
            f"{class_name} not found: the operator jar is not on the classpath "
            "(locally: `make install`; on Managed Flink: the application jar, infra/package.py)"
        )
    return found


def run(
    conn: sql.ConnectorConfig,
    watermark_seconds: int,
    *,
    settings: keyed.Settings | None = None,
    parallelism: int | None = None,
    execution_mode: str = DEFAULT_EXECUTION_MODE,
    max_event_time: float | None = None,
    future_skew_seconds: float | None = None,
    idle_timeout_seconds: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_interval_ms: int | None = None,
    restore_from: str | None = None,
    wait: bool = True,
    operator_jar_path: Path | None = None,
):
    """Create the tables, wire source -> keyed operator -> sink and submit; wait for a bounded run.

    `operator_jar_path`: the Java operator's jar to put on the classpath (local runs); None when
    the runtime already has it (Managed Flink loads the application's `jarfile`)."""
    settings = settings or keyed.Settings()
    _env, t_env = build_envs(
        parallelism,
        execution_mode,
        idle_timeout_seconds,
        checkpoint_dir,
        checkpoint_interval_ms,
        restore_from,
        jars=(operator_jar_path,) if operator_jar_path else (),
    )
    register_source_functions(t_env)
    for stmt in sql.statements(conn, watermark_seconds, settings.fs, max_event_time, future_skew_seconds):
        t_env.execute_sql(stmt)
    result = wire(t_env, settings, max_event_time, future_skew_seconds).execute_insert(sql.SINK_TABLE)
    if wait:
        result.wait()
    return result


# --- command line --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source-path", help="input events, JSON lines (file or directory); local mode")
    p.add_argument("--sink-path", help="output directory for enriched events (JSON lines), or 'print'")
    p.add_argument("--watermark-seconds", type=int, default=None, help="bounded out-of-orderness (s)")
    p.add_argument("--parallelism", type=int, default=1, help="local parallelism (1 keeps file order)")
    p.add_argument("--feature-spec", default=None, help="FeatureSpec JSON file (default: features.spec.SPEC)")
    p.add_argument("--allowed-lateness-seconds", type=float, default=keyed.DEFAULT_ALLOWED_LATENESS_SECONDS)
    p.add_argument("--emit", choices=keyed.EMIT_MODES, default=keyed.EMIT_ON_WATERMARK)
    p.add_argument(
        "--max-event-time",
        type=float,
        default=None,
        help="reject events after this epoch second (a replay's data end); default wall clock + skew",
    )
    p.add_argument("--future-skew-seconds", type=float, default=spec.FUTURE_SKEW_SECONDS)
    p.add_argument("--execution-mode", choices=("thread", "process"), default=DEFAULT_EXECUTION_MODE)
    p.add_argument(
        "--monitor-interval", default=None, help="keep watching the source directory (unbounded), e.g. '1 s'"
    )
    p.add_argument("--checkpoint-dir", default=None, help="retain checkpoints here (local restart tests)")
    p.add_argument("--checkpoint-interval-ms", type=int, default=None)
    p.add_argument("--restore-from", default=None, help="a retained checkpoint or savepoint to start from")
    p.add_argument(
        "--operator-jar", default=None, help=f"the Java operator's jar (default {operator_jar.DEFAULT_JAR})"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source_path or args.sink_path:
        if not (args.source_path and args.sink_path):
            print("error: --source-path and --sink-path go together", file=sys.stderr)
            return 2
        if not Path(args.source_path).exists():
            print(f"error: no such input: {args.source_path}", file=sys.stderr)
            return 2
        try:
            settings = keyed.Settings(
                fs=load_feature_spec(args.feature_spec, Path.cwd()),
                allowed_lateness_ms=int(args.allowed_lateness_seconds * 1000),
                emit=args.emit,
            )
            jar = operator_jar.find_jar(args.operator_jar or os.environ.get("FRAUD_OPERATOR_JAR"))
        except (OSError, ValueError, KeyError, TypeError, operator_jar.BuildError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        extra = {"source.monitor-interval": args.monitor_interval} if args.monitor_interval else {}
        # Unbounded local run: roll part files every second, so each checkpoint commits the output.
        rolling = (
            {"sink.rolling-policy.rollover-interval": "1 s", "sink.rolling-policy.check-interval": "1 s"}
            if args.monitor_interval and args.sink_path != "print"
            else {}
        )
        conn = sql.ConnectorConfig(
            kind="filesystem",
            source=str(Path(args.source_path).resolve()),
            sink=args.sink_path if args.sink_path == "print" else str(Path(args.sink_path).resolve()),
            extra_source=extra,
            extra_sink=rolling,
        )
        wm = DEFAULT_WATERMARK_SECONDS if args.watermark_seconds is None else args.watermark_seconds
        t0 = time.perf_counter()
        run(
            conn,
            wm,
            settings=settings,
            parallelism=args.parallelism,
            execution_mode=args.execution_mode,
            max_event_time=args.max_event_time,
            future_skew_seconds=args.future_skew_seconds,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_interval_ms=args.checkpoint_interval_ms,
            restore_from=args.restore_from,
            operator_jar_path=jar,
        )
        print(json.dumps({"status": "finished", "seconds": round(time.perf_counter() - t0, 3)}), flush=True)
        return 0
    props = load_application_properties()
    if props is None:
        print(
            f"error: no --source-path/--sink-path and no {PROPERTY_GROUP} group in {PROPERTIES_FILE}",
            file=sys.stderr,
        )
        return 2
    try:
        conn, wm = config_from_properties(props)
        options = job_options_from_properties(props)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.watermark_seconds is not None:
        wm = args.watermark_seconds
    run(conn, wm, wait=False, **options)  # Managed Flink keeps the unbounded job running
    return 0


if __name__ == "__main__":
    sys.exit(main())
