"""Flink SQL of the streaming job, generated from the feature specification.

Pure string generation (no PyFlink import) so the main venv can test it and the
infra helper can render it. The job (streaming/job.py) executes these statements.

Semantics (DESIGN.md "Feature semantics", "Streaming path"):
- the source reads each record as one raw STRING (format `raw`) and extracts the fields with
  JSON_VALUE/JSON_QUERY + TRY_CAST, strictly typed: a record that is not a JSON object, has a
  wrong-typed field, or fails `features.spec.valid_event_sql()` is not dropped (as
  `json.ignore-parse-errors` would) but forwarded with its raw text in `raw` and NULL aggregates,
  so the Lambdas reject it to the failure destination with the reason;
- event time = `trans_ts` (epoch seconds, float) as TIMESTAMP_LTZ(3), rounded to the millisecond;
- bounded out-of-orderness watermark `rowtime - N seconds`;
- an event is *late* when its rowtime <= CURRENT_WATERMARK at arrival: Flink's OVER operator
  would silently drop it, so it is routed around the OVER window and emitted with `late = TRUE`
  and features from what the job knows about it for sure: the event itself (count 1, average =
  its amount). On-time events get the exact window `[ts - 10 min, ts]`, peers included.
- the window sum is accumulated as DECIMAL: the OVER operator adds and *retracts* rows, and a
  DOUBLE running sum drifts by rounding residue over a card's lifetime (enough to break the
  1e-9 relative parity with Spark for small amounts); a DECIMAL sum is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from features import spec

SOURCE_TABLE = "transactions"
EVENTS_VIEW = "events"
SINK_TABLE = "card_features"
ROWTIME = "rowtime"
LATE = "late"
RAW = spec.REJECTED_RAW_FIELD
"""Source column holding the record's text; in the output, set only on rejected records."""
VALID = "valid"
SUM_TYPE = "DECIMAL(38, 12)"
"""Exact running sum (amounts up to 1e26 with 12 decimals) — see the module docstring."""
MAX_EPOCH_SECONDS = 253_402_300_800
"""Year 10000: larger (valid but absurd) times get a placeholder rowtime instead of overflowing."""

DEFAULT_WATERMARK_SECONDS = 5
"""Bounded out-of-orderness of the event-time watermark (Managed Flink property `watermark.seconds`)."""

# Input fields of an event and their Flink types; output = these + aggregates + `late` + `raw`.
INPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tid", "STRING"),
    (spec.CARD_ID, "BIGINT"),
    (spec.AMOUNT, "DOUBLE"),
    (spec.EVENT_TIME, "DOUBLE"),
    *((field, "STRING") for field in spec.OPTIONAL_EVENT_FIELDS),
    (spec.LABEL, "INT"),
)
"""`fraud_label` is optional and only carried through (replays use it for precision/recall)."""

STRICT_STRING_FIELDS: frozenset[str] = frozenset({"tid"})
"""STRING fields that must be JSON strings (the Lambdas' rule); other STRING fields take any scalar."""

OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    *INPUT_COLUMNS,
    (spec.SHORT_WINDOW.count_name, "BIGINT"),
    (spec.SHORT_WINDOW.avg_name, "DOUBLE"),
    (LATE, "BOOLEAN"),
    (RAW, "STRING"),
)


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


# --- strict field extraction from the raw JSON text ----------------------------------------------
# The JSON functions parse the text on every call and Flink does not share common subexpressions,
# so each is called once per record, as a computed column of the source table: those are evaluated
# below the (shared) watermark assigner, once for all three branches. The branches only apply cheap
# string tests and casts to them. (Calling them inside the view instead made the job ~8x slower.)
def _wrapped_col(name: str) -> str:
    return f"_q_{name}"


def _text_col(name: str) -> str:
    return f"_v_{name}"


def _is_strict(name: str, flink_type: str) -> bool:
    """Fields whose JSON type is checked (all but the optional free-text ones)."""
    return flink_type != "STRING" or name in STRICT_STRING_FIELDS


def json_columns() -> list[tuple[str, str]]:
    """(column, expression) of the JSON calls, one per field (two for type-checked fields):
    `JSON_VALUE` gives a scalar's text, `JSON_QUERY ... WITH ARRAY WRAPPER` its JSON text in an
    array (`["12"]` vs `[12]`, NULL when absent, JSON null, or the record is not JSON)."""
    cols = []
    for name, typ in INPUT_COLUMNS:
        cols.append((_text_col(name), f"JSON_VALUE(`{RAW}`, '$.{name}')"))
        if _is_strict(name, typ):
            cols.append((_wrapped_col(name), f"JSON_QUERY(`{RAW}`, '$.{name}' WITH ARRAY WRAPPER)"))
    return cols


def field_sql(name: str, flink_type: str) -> str:
    """Typed value of a field from its JSON columns, NULL when absent *or* of the wrong JSON type.

    Never `JSON_VALUE ... RETURNING DOUBLE`: on a JSON string it throws (ClassCastException, the
    job fails). Numbers must be JSON numbers (`"12"` is rejected, as the Lambdas do); integers must
    be integral (TRY_CAST alone truncates 1.5 to 1)."""
    t = f"`{_text_col(name)}`"
    if not _is_strict(name, flink_type):
        return t
    q = f"`{_wrapped_col(name)}`"
    not_string = f"{q} NOT LIKE '[\"%'"
    if flink_type == "STRING":
        return f"CASE WHEN {q} LIKE '[\"%' THEN {t} END"
    if flink_type == "DOUBLE":
        return f"CASE WHEN {not_string} THEN TRY_CAST({t} AS DOUBLE) END"
    if flink_type in ("BIGINT", "INT"):
        integral = f"TRY_CAST({t} AS DECIMAL(38, 12)) = TRY_CAST({t} AS BIGINT)"
        return f"CASE WHEN {not_string} AND {integral} THEN TRY_CAST({t} AS {flink_type}) END"
    raise ValueError(f"no extraction for type {flink_type}")


def parsed_sql() -> str:
    """Every present field has its JSON type (a record that is not a JSON object has no field, so
    the required-field part of the rule rejects it)."""
    checks = [
        f"(`{_wrapped_col(n)}` IS NULL OR {field_sql(n, t)} IS NOT NULL)"
        for n, t in INPUT_COLUMNS
        if _is_strict(n, t)
    ]
    return "(" + " AND ".join(checks) + ")"


def rowtime_sql() -> str:
    """Event time from `trans_ts`; a placeholder (epoch 0) when there is none or it is beyond year
    9999, so no row carries a NULL time attribute (rejected rows bypass the window anyway)."""
    ts = f"TRY_CAST(JSON_VALUE(`{RAW}`, '$.{spec.EVENT_TIME}') AS DOUBLE)"
    return (
        f"CASE WHEN {ts} >= 0 AND {ts} < {MAX_EPOCH_SECONDS} "
        f"THEN TO_TIMESTAMP_LTZ(CAST(ROUND({ts} * 1000) AS BIGINT), 3) "
        f"ELSE TO_TIMESTAMP_LTZ(0, 3) END"
    )


def source_ddl(conn: ConnectorConfig, watermark_seconds: int) -> str:
    """Source table: the raw record, its JSON columns, rowtime from `trans_ts`, bounded
    out-of-orderness watermark."""
    json_cols = "".join(f"  `{c}` AS {expr},\n" for c, expr in json_columns())
    return (
        f"CREATE TEMPORARY TABLE {SOURCE_TABLE} (\n  `{RAW}` STRING,\n{json_cols}"
        f"  `{ROWTIME}` AS {rowtime_sql()},\n"
        f"  WATERMARK FOR `{ROWTIME}` AS `{ROWTIME}` - {interval_literal(watermark_seconds)}\n"
        f") {_with(conn.source_options())}"
    )


def events_view_sql() -> str:
    """Typed fields, the raw text, rowtime and the validity flag of every source record: parsed and
    `features.spec.valid_event_sql()` (the rule Spark and the Lambdas apply too)."""
    fields = ",\n  ".join(f"{field_sql(n, t)} AS `{n}`" for n, t in INPUT_COLUMNS)
    typed = ", ".join(f"`{n}`" for n, _ in INPUT_COLUMNS)
    return (
        f"CREATE TEMPORARY VIEW {EVENTS_VIEW} AS\n"
        f"SELECT {typed}, `{RAW}`, `{ROWTIME}`,\n"
        f"  {spec.valid_event_sql()} IS TRUE AND `_parsed` AS `{VALID}`\n"
        f"FROM (SELECT\n  {fields},\n  {parsed_sql()} IS TRUE AS `_parsed`,\n  `{RAW}`, `{ROWTIME}`\n"
        f"  FROM {SOURCE_TABLE})"
    )


def sink_ddl(conn: ConnectorConfig) -> str:
    """Sink table: the enriched transaction; on Kinesis partitioned by card (order per card)."""
    partition = f"PARTITIONED BY (`{spec.CARD_ID}`) " if conn.kind == "kinesis" else ""
    return f"CREATE TEMPORARY TABLE {SINK_TABLE} (\n  {_columns(OUTPUT_COLUMNS)}\n) {partition}{_with(conn.sink_options())}"


def late_predicate() -> str:
    """Behind the watermark at arrival: the OVER operator would drop it."""
    r = f"`{ROWTIME}`"
    return f"(CURRENT_WATERMARK({r}) IS NOT NULL AND {r} <= CURRENT_WATERMARK({r}))"


def insert_sql() -> str:
    """One INSERT: on-time rows through the OVER window, late and rejected rows around it."""
    w = spec.SHORT_WINDOW
    passthrough = ", ".join(f"`{n}`" for n, _ in INPUT_COLUMNS)
    over = (
        f"PARTITION BY `{spec.CARD_ID}` ORDER BY `{ROWTIME}` "
        f"RANGE BETWEEN {interval_literal(w.seconds)} PRECEDING AND CURRENT ROW"
    )
    amount = f"`{spec.AMOUNT}`"
    # NULL on valid rows; written as a function of `raw` so every branch reads the same source
    # columns and the three share one scan + JSON columns + watermark assigner (measured: with
    # `CAST(NULL AS STRING)` here the planner builds a second one for the rejected branch).
    no_raw = f"IF(`{VALID}`, CAST(NULL AS STRING), `{RAW}`) AS `{RAW}`"
    on_time = (
        f"SELECT {passthrough},\n"
        f"    COUNT(*) OVER w AS `{w.count_name}`,\n"
        f"    CAST(SUM(CAST({amount} AS {SUM_TYPE})) OVER w AS DOUBLE) / COUNT(*) OVER w AS `{w.avg_name}`,\n"
        f"    FALSE AS `{LATE}`, {no_raw}\n"
        f"  FROM {EVENTS_VIEW}\n"
        f"  WHERE `{VALID}` AND NOT {late_predicate()}\n"
        f"  WINDOW w AS ({over})"
    )
    late = (
        f"SELECT {passthrough},\n"
        f"    CAST(1 AS BIGINT) AS `{w.count_name}`,\n"
        f"    {amount} AS `{w.avg_name}`,\n"
        f"    TRUE AS `{LATE}`, {no_raw}\n"
        f"  FROM {EVENTS_VIEW}\n"
        f"  WHERE `{VALID}` AND {late_predicate()}"
    )
    # Rejected: typed fields as far as they parsed, the raw text, no aggregates. The card is
    # never NULL here: it is the Kinesis partition key (0 when the record has no usable card).
    rejected_fields = ", ".join(
        f"COALESCE(`{n}`, CAST(0 AS BIGINT)) AS `{n}`" if n == spec.CARD_ID else f"`{n}`"
        for n, _ in INPUT_COLUMNS
    )
    rejected = (
        f"SELECT {rejected_fields},\n"
        f"    CAST(NULL AS BIGINT) AS `{w.count_name}`,\n"
        f"    CAST(NULL AS DOUBLE) AS `{w.avg_name}`,\n"
        f"    CAST(NULL AS BOOLEAN) AS `{LATE}`, `{RAW}`\n"
        f"  FROM {EVENTS_VIEW}\n"
        f"  WHERE NOT `{VALID}`"
    )
    return f"INSERT INTO {SINK_TABLE}\n{on_time}\nUNION ALL\n{late}\nUNION ALL\n{rejected}"


def statements(conn: ConnectorConfig, watermark_seconds: int) -> list[str]:
    """Every statement of the job, in execution order (DDL..., INSERT)."""
    return [source_ddl(conn, watermark_seconds), events_view_sql(), sink_ddl(conn), insert_sql()]
