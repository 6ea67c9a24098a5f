"""Flink SQL of the streaming job (source and sink tables), generated from the feature specification.

Pure string generation (no PyFlink import) so the main venv can test it and the infra helper can
render it. The job (streaming/job.py) executes these statements; the per-card features are computed
by a Java `KeyedProcessFunction` (streaming/java, the rules of streaming/keyed.py), not in SQL.

Semantics (docs/streaming.md):
- the source reads each record as one raw STRING (format `raw`): nothing is dropped at decoding;
  the record's text goes to the Java operator, which parses and validates it (the rules of
  streaming/parse.py) and forwards a record it cannot accept with `raw` and `reject_reason`;
- event time `rowtime` = `trans_ts` (epoch seconds, float) as TIMESTAMP_LTZ(3), rounded to the
  millisecond, *only when it is a plausible time*: within [0, spec.MAX_EVENT_TIME] and not beyond
  the accepted bound — wall clock + `spec.FUTURE_SKEW_SECONDS` on a live stream, or a fixed
  `max_event_time` (the end of a replay's data). Any other record gets the placeholder epoch 0, so
  a far-future or unreadable time never advances the watermark; the operator rejects
  such an event with its reason (`rowtime` 0 and `trans_ts` > 0);
- bounded out-of-orderness watermark `rowtime - N seconds`;
- the sink holds the input fields, every `fs.streaming_features`, the lateness flags, `raw` and
  `reject_reason` (the last two NULL on valid events).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from features import spec
from streaming import keyed

SOURCE_TABLE = "transactions"
SINK_TABLE = "card_features"
ROWTIME = "rowtime"
REJECT_REASON = "reject_reason"
"""Why the job set a record aside (NULL on valid events)."""
RAW = spec.REJECTED_RAW_FIELD
"""Source column holding the record's text; in the output, set only on rejected records."""

DEFAULT_WATERMARK_SECONDS = 5
"""Bounded out-of-orderness of the event-time watermark (Managed Flink property `watermark.seconds`)."""

# Input fields of an event and their Flink types (the operator's row order too).
INPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tid", "STRING"),
    (spec.CARD_ID, "BIGINT"),
    (spec.AMOUNT, "DOUBLE"),
    (spec.EVENT_TIME, "DOUBLE"),
    *((field, "STRING") for field in spec.OPTIONAL_EVENT_FIELDS),
    (spec.LABEL, "INT"),
)
"""`fraud_label` is optional and only carried through (replays use it for precision/recall)."""

LATENESS_FLAGS = keyed.LATENESS_FLAGS
"""Boolean output flags (streaming/keyed.py): `late` = behind the watermark on arrival;
`beyond_lateness` = more than the allowed lateness behind it (also `late`)."""


def feature_columns(fs: spec.FeatureSpec = spec.SPEC) -> tuple[tuple[str, str], ...]:
    """Every streaming feature of `fs` with its Flink type (counts BIGINT, the rest DOUBLE)."""
    counts = {a.name for a in fs.streaming if a.operation == "count"}
    return tuple((n, "BIGINT" if n in counts else "DOUBLE") for n in fs.streaming_features)


def output_columns(fs: spec.FeatureSpec = spec.SPEC) -> tuple[tuple[str, str], ...]:
    """The sink's columns: input fields + `fs.streaming_features` + lateness flags + raw + reason."""
    return (
        *INPUT_COLUMNS,
        *feature_columns(fs),
        *((flag, "BOOLEAN") for flag in LATENESS_FLAGS),
        (RAW, "STRING"),
        (REJECT_REASON, "STRING"),
    )


OUTPUT_COLUMNS = output_columns()
"""The product's output columns (`spec.SPEC`)."""


def interval_literal(seconds: int) -> str:
    """A Flink day-time interval literal, `INTERVAL 'd hh:mm:ss' DAY TO SECOND`.

    One form for every length: `INTERVAL 'N' SECOND(p)` fails for N >= 1000 (Flink 1.20 supports
    SECOND precision up to 3), e.g. a one-hour watermark."""
    seconds = int(seconds)
    if not 0 <= seconds < 100 * 86400:
        raise ValueError(f"interval must be within [0, 100 days), got {seconds} s")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{secs:02d}' DAY TO SECOND"


def is_stream_arn(value: str) -> bool:
    """`arn:<partition>:kinesis:<region>:<account>:stream/<name>`."""
    parts = value.split(":", 5)
    return len(parts) == 6 and parts[0] == "arn" and parts[2] == "kinesis" and parts[5].startswith("stream/")


def arn_region(arn: str) -> str:
    return arn.split(":", 5)[3]


@dataclass(frozen=True)
class ConnectorConfig:
    """Where the job reads and writes: local JSON-lines files or Kinesis streams (by ARN).

    Kinesis options are those of `flink-sql-connector-kinesis` 5.x, the release line for Flink 1.20
    that infra/package.py bundles: its `kinesis` source and sink need `stream.arn` and `aws.region`
    (the 4.x `stream` / `scan.stream.initpos` options belong to `kinesis-legacy` and are not used)."""

    kind: str  # "filesystem" | "kinesis"
    source: str  # file/directory path or stream ARN
    sink: str
    region: str = "us-east-1"
    init_position: str = "LATEST"
    extra_source: dict[str, str] = field(default_factory=dict)
    extra_sink: dict[str, str] = field(default_factory=dict)

    def _kinesis(self, arn: str) -> dict[str, str]:
        if not is_stream_arn(arn):
            raise ValueError(
                f"Kinesis stream must be given by ARN (flink-sql-connector-kinesis 5.x), got {arn!r}"
            )
        return {"connector": "kinesis", "stream.arn": arn, "aws.region": self.region}

    def source_options(self) -> dict[str, str]:
        # Format `raw`: every record becomes one STRING row, so nothing is dropped at decoding.
        if self.kind == "filesystem":
            opts = {"connector": "filesystem", "path": self.source}
        elif self.kind == "kinesis":
            opts = self._kinesis(self.source) | {"source.init.position": self.init_position}
        else:
            raise ValueError(f"unknown connector kind {self.kind!r}")
        return opts | {"format": "raw", "raw.charset": "UTF-8"} | self.extra_source

    def sink_options(self) -> dict[str, str]:
        if self.sink == "print":  # local latency measurement: rows to the job's stdout
            return {"connector": "print"}
        if self.kind == "filesystem":
            opts = {"connector": "filesystem", "path": self.sink}
        elif self.kind == "kinesis":
            opts = self._kinesis(self.sink)
        else:
            raise ValueError(f"unknown connector kind {self.kind!r}")
        return opts | {"format": "json"} | self.extra_sink


def _with(options: dict[str, str]) -> str:
    body = ",\n  ".join(f"'{k}' = '{v}'" for k, v in options.items())
    return f"WITH (\n  {body}\n)"


def _columns(cols: tuple[tuple[str, str], ...]) -> str:
    return ",\n  ".join(f"`{n}` {t}" for n, t in cols)


def time_bound_sql(max_event_time: float | None = None, future_skew_seconds: float | None = None) -> str:
    """The largest accepted event time (seconds): a replay's fixed bound, else wall clock + skew
    (evaluated per record), never beyond `spec.MAX_EVENT_TIME`."""
    if max_event_time is not None:
        return repr(float(min(max_event_time, spec.MAX_EVENT_TIME)))
    skew = spec.FUTURE_SKEW_SECONDS if future_skew_seconds is None else future_skew_seconds
    return f"LEAST({spec.MAX_EVENT_TIME!r}, CAST(UNIX_TIMESTAMP() AS DOUBLE) + {float(skew)!r})"


EVENT_TIME_FUNCTION = "EVENT_TIME_MS"
SOURCE_FUNCTIONS: dict[str, tuple[str, str]] = {
    EVENT_TIME_FUNCTION: ("fraud.streaming.SourceFields$EventTimeMs", spec.EVENT_TIME),
}
"""The source's Java scalar function (streaming/java, registered by the job before the DDL):
name -> (class, the top-level field it reads). One streaming pass over the record's top-level
fields, instead of Flink's JSON_VALUE (which parsed the whole record into a map per call: five
calls per record with the card key, about half of the source task's CPU, docs/streaming.md)."""


def rowtime_sql(max_event_time: float | None = None, future_skew_seconds: float | None = None) -> str:
    """Event time from `trans_ts` when it is a plausible time (a top-level JSON number within
    [0, bound]), rounded half up to the ms, else the placeholder epoch 0 (never NULL, never ahead
    of the accepted bound: such a record cannot move the watermark)."""
    bound = time_bound_sql(max_event_time, future_skew_seconds)
    return f"TO_TIMESTAMP_LTZ({EVENT_TIME_FUNCTION}(`{RAW}`, CAST({bound} AS DOUBLE)), 3)"


def source_ddl(
    conn: ConnectorConfig,
    watermark_seconds: int,
    max_event_time: float | None = None,
    future_skew_seconds: float | None = None,
) -> str:
    """Source table: the raw record, rowtime from `trans_ts`, bounded out-of-orderness watermark."""
    return (
        f"CREATE TEMPORARY TABLE {SOURCE_TABLE} (\n  `{RAW}` STRING,\n"
        f"  `{ROWTIME}` AS {rowtime_sql(max_event_time, future_skew_seconds)},\n"
        f"  WATERMARK FOR `{ROWTIME}` AS `{ROWTIME}` - {interval_literal(watermark_seconds)}\n"
        f") {_with(conn.source_options())}"
    )


def sink_ddl(conn: ConnectorConfig, fs: spec.FeatureSpec = spec.SPEC) -> str:
    """Sink table: the enriched transaction; on Kinesis partitioned by card (order per card)."""
    partition = f"PARTITIONED BY (`{spec.CARD_ID}`) " if conn.kind == "kinesis" else ""
    return (
        f"CREATE TEMPORARY TABLE {SINK_TABLE} (\n  {_columns(output_columns(fs))}\n) "
        f"{partition}{_with(conn.sink_options())}"
    )


def source_query() -> str:
    """What the Java pipeline receives: the raw text (it parses the record, keys by the parsed
    card and recomputes the event time; the watermark comes from the source's `rowtime`)."""
    return f"SELECT `{RAW}` FROM {SOURCE_TABLE}"


def statements(
    conn: ConnectorConfig,
    watermark_seconds: int,
    fs: spec.FeatureSpec = spec.SPEC,
    max_event_time: float | None = None,
    future_skew_seconds: float | None = None,
) -> list[str]:
    """The DDL of the job, in execution order (source, sink)."""
    return [source_ddl(conn, watermark_seconds, max_event_time, future_skew_seconds), sink_ddl(conn, fs)]
