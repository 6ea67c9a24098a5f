"""The PyFlink 1.20 streaming job: every streaming feature of the specification, per card, in keyed state.

Locally (bounded JSON-lines file in, JSON-lines directory out; terminates at end of input):
    .venv-flink/bin/python streaming/job.py --source-path IN.jsonl --sink-path OUT_DIR \
        [--watermark-seconds N] [--allowed-lateness-seconds S] [--emit on-watermark|on-arrival] \
        [--feature-spec SPEC.json] [--max-event-time EPOCH_S] [--execution-mode thread|process]
On Managed Service for Apache Flink (no arguments): Kinesis in/out, configured by the property
group `FraudFeatures` in /etc/flink/application_properties.json (`PROPERTY_KEYS` below).

Pipeline: SQL source (raw text + `rowtime` + watermark, streaming/sql.py) -> DataStream keyed by
card -> `CardFeatures` (a `KeyedProcessFunction`: parsing and validation, streaming/parse.py; the
per-card rules, streaming/keyed.py over features/compute.py) -> SQL sink (streaming/sql.py).
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
from streaming import keyed, sql  # noqa: E402
from streaming.keyed import event_time_ms  # noqa: E402

PROPERTIES_FILE = "/etc/flink/application_properties.json"
PROPERTY_GROUP = "FraudFeatures"
DEFAULT_WATERMARK_SECONDS = sql.DEFAULT_WATERMARK_SECONDS
DEFAULT_EXECUTION_MODE = "thread"
"""PyFlink runs the Python operator inside the JVM (pemja): ~30x the throughput of `process` here
(docs/streaming.md). Managed Service for Apache Flink lists `python.execution-mode` among the
properties an application may set in its code ("Programmatic Flink configuration properties");
the property `python.execution-mode` of the group switches back to `process`."""

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
    "python.execution-mode": f"thread | process (default {DEFAULT_EXECUTION_MODE})",
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


# --- the keyed function --------------------------------------------------------------------------
CACHE_MAX_CARDS = 200_000
"""Cards whose decoded state the function keeps in memory (write-through: Flink's state is always
current, so dropping the cache only costs reads); beyond this the cache is emptied."""


def _make_function(
    settings: keyed.Settings, max_event_time: float | None = None, future_skew_seconds: float | None = None
):
    """The `KeyedProcessFunction` (defined here so that importing this module needs no PyFlink).

    Input: the raw record (the key, the card read in SQL, travels beside it). The event time in ms
    is computed here from the parsed `trans_ts` exactly as the source's `rowtime` is
    (`keyed.event_time_ms`), and the far-future rule is the source's (`sql.time_bound_sql`): the
    stream record carries no timestamp (the rowtime column is not passed to Python, see `wire`). Per-card state: `history` (`ValueState`, pickled
    `CardState.history_stored()`) and `pending` (`ListState`: on-time events waiting for the
    watermark, one append per event). Decoded cards are cached in memory (write-through), so an
    event costs no state read; on-time events cost an append and at most one timer (the timer
    releases every pending event the watermark has passed)."""

    from pyflink.common import Row
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

    n_features = len(settings.fs.streaming_features)
    n_input = len(sql.INPUT_COLUMNS)
    on_arrival = settings.emit == keyed.EMIT_ON_ARRIVAL

    class CardFeatures(KeyedProcessFunction):
        """Parse + validate each record, then the card's rules (streaming/keyed.py)."""

        def __init__(self, settings_json: str, lateness_ms: int, emit: str, bound: float | None, skew: float):
            self.settings_json, self.lateness_ms, self.emit = settings_json, lateness_ms, emit
            self.bound, self.skew = bound, skew

        def open(self, runtime_context: RuntimeContext) -> None:
            from streaming.parse import card_of, parse

            self.parse, self.card_of = parse, card_of
            self.settings = keyed.Settings(
                spec.FeatureSpec.from_json(self.settings_json), self.lateness_ms, self.emit
            )
            self.history = runtime_context.get_state(
                ValueStateDescriptor("history", Types.PICKLED_BYTE_ARRAY())
            )
            self.pending = runtime_context.get_list_state(
                ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
            )
            self.cache: dict[int, keyed.CardState] = {}
            self.rejected_nulls = (None,) * (n_features + len(keyed.LATENESS_FLAGS))
            self.counters: dict[str, Any] = {}
            try:
                group = runtime_context.get_metrics_group()
                for name in ("late", "beyondLateness", "rejected"):
                    self.counters[name] = group.counter(name)
            except Exception:  # metrics are optional (not every execution mode offers them)
                self.counters = {}

        def _count(self, name: str) -> None:
            c = self.counters.get(name)
            if c is not None:
                c.inc()

        def _card(self, key: int) -> keyed.CardState:
            card = self.cache.get(key)
            if card is None:
                card = keyed.CardState.restore(self.settings, self.history.value(), list(self.pending.get()))
                if len(self.cache) >= CACHE_MAX_CARDS:
                    self.cache.clear()
                self.cache[key] = card
            return card

        def _reject(self, raw: str, reason: str):
            self._count("rejected")
            return Row(None, self.card_of(raw), *(None,) * (n_input - 2), *self.rejected_nulls, raw, reason)

        def process_element(self, value, ctx):
            raw = value
            fields, reason = self.parse(raw)
            if fields is not None and fields[3] > (
                self.bound if self.bound is not None else time.time() + self.skew
            ):  # the source gave it the placeholder time 0: it never moved the watermark
                fields, reason = (
                    None,
                    (
                        f"{spec.EVENT_TIME} {fields[3]!r} is beyond the accepted event time "
                        "(wall clock + future skew on a live stream, the data's end in a replay)"
                    ),
                )
            if fields is None:
                yield self._reject(raw, reason)
                return
            ts_ms = event_time_ms(fields[3])
            card = self._card(fields[1])  # == the stream's key (sql.card_key_sql reads the same number)
            timers = ctx.timer_service()
            wm = timers.current_watermark()
            if ts_ms > wm and not on_arrival:  # on time: wait for the watermark
                card.pending.append((ts_ms, fields))
                self.pending.add((ts_ms, fields))
                timer = card.emission_timer(ts_ms)
                if timer is not None:
                    timers.register_event_time_timer(timer)
                return
            out, _ = card.on_event(fields, fields[3], fields[2], ts_ms, wm)
            cleanup = card.tidy(wm)
            if cleanup is not None:
                timers.register_event_time_timer(cleanup)
            self.history.update(card.history_stored())
            for r in out:
                if r[-2]:
                    self._count("late")
                if r[-1]:
                    self._count("beyondLateness")
                yield Row(*r, None, None)

        def on_timer(self, timestamp, ctx):
            key = ctx.get_current_key()
            card = self._card(key)
            timers = ctx.timer_service()
            wm = timers.current_watermark()
            cleaning = card.cleanup_at is not None and timestamp >= card.cleanup_at
            # Every pending event the watermark has passed (this timer's and any later one's).
            out = card.on_watermark(max(timestamp, wm), _ts, _amount)
            if out:
                if card.pending:
                    self.pending.update(card.pending)
                else:
                    self.pending.clear()
                cleanup = card.tidy(wm)
                if cleanup is not None:
                    timers.register_event_time_timer(cleanup)
            nxt = card.next_emission_timer()
            if nxt is not None:
                timers.register_event_time_timer(nxt)
            if cleaning:
                cleanup = card.clean_up(timestamp, wm)
                if cleanup is not None:
                    timers.register_event_time_timer(cleanup)
            if out or cleaning:
                if card.is_empty():
                    self.history.clear()
                    del self.cache[key]
                else:
                    self.history.update(card.history_stored())
            for r in out:
                yield Row(*r, None, None)

    skew = spec.FUTURE_SKEW_SECONDS if future_skew_seconds is None else float(future_skew_seconds)
    bound = None if max_event_time is None else min(float(max_event_time), spec.MAX_EVENT_TIME)
    return CardFeatures(settings.fs.to_json(), settings.allowed_lateness_ms, settings.emit, bound, skew)


def _ts(row: tuple) -> float:
    return row[3]


def _amount(row: tuple) -> float:
    return row[2]


_FLINK_TYPES = {"STRING": "STRING", "BIGINT": "LONG", "DOUBLE": "DOUBLE", "INT": "INT", "BOOLEAN": "BOOLEAN"}


def output_type_info(fs: spec.FeatureSpec):
    from pyflink.common.typeinfo import Types

    cols = sql.output_columns(fs)
    return Types.ROW_NAMED([n for n, _ in cols], [getattr(Types, _FLINK_TYPES[t])() for _, t in cols])


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
):
    """StreamExecutionEnvironment + StreamTableEnvironment in UTC, Python in the chosen mode."""
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
    env = StreamExecutionEnvironment.get_execution_environment(config)
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


def wire(
    t_env,
    settings: keyed.Settings,
    max_event_time: float | None = None,
    future_skew_seconds: float | None = None,
):
    """Source table -> keyed by card -> `CardFeatures` -> the enriched Table (for the sink).

    One Python operator per event: the card (the key) is read in SQL (`sql.card_key_sql`) and the
    stream is keyed on it in the JVM (`KeyByKeySelector`, the selector PyFlink's own `key_by` puts
    after a Python key function), so no Python key selector runs; the function receives only the
    raw text: passing `rowtime` to Python (a datetime per event) cost ~20 us per event
    (docs/streaming.md), so the function recomputes the event time from `trans_ts` with the
    source's rule; the watermark still comes from the source's `rowtime`."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    # Row type info (not to_data_stream's ExternalTypeInfo): the embedded keyed operator reads its
    # input as a RowTypeInfo (key, value).
    source = t_env.to_append_stream(
        t_env.sql_query(sql.source_query()), Types.ROW([Types.LONG(), Types.STRING()])
    )
    j_keyed = source._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.LONG()]).get_java_type_info()
    )
    keyed_stream = KeyedStream(j_keyed, Types.STRING(), source)
    enriched = (
        keyed_stream.process(
            _make_function(settings, max_event_time, future_skew_seconds),
            output_type=output_type_info(settings.fs),
        )
        .uid("card-features")
        .name("card-features")
    )
    return t_env.from_data_stream(enriched)


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
):
    """Create the tables, wire source -> keyed function -> sink and submit; wait for a bounded run."""
    settings = settings or keyed.Settings()
    _env, t_env = build_envs(
        parallelism,
        execution_mode,
        idle_timeout_seconds,
        checkpoint_dir,
        checkpoint_interval_ms,
        restore_from,
    )
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
        except (OSError, ValueError, KeyError, TypeError) as exc:
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
