"""Flink SQL of the streaming job, generated from the feature specification.

Pure string generation (no PyFlink import) so the main venv can test it and the
infra helper can render it. The job (streaming/job.py) executes these statements.

Semantics (DESIGN.md "Feature semantics", "Streaming path"):
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
SINK_TABLE = "card_features"
ROWTIME = "rowtime"
LATE = "late"
SUM_TYPE = "DECIMAL(38, 12)"
"""Exact running sum (amounts up to 1e26 with 12 decimals) — see the module docstring."""

# Input fields of an event and their Flink types; output = these + aggregates + `late`.
INPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tid", "STRING"),
    (spec.CARD_ID, "BIGINT"),
    (spec.AMOUNT, "DOUBLE"),
    (spec.EVENT_TIME, "DOUBLE"),
    ("merchant", "STRING"),
    ("zip_code", "STRING"),
    (spec.LABEL, "INT"),
)
"""`fraud_label` is optional and only carried through (replays use it for precision/recall)."""

OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    *INPUT_COLUMNS,
    (spec.SHORT_WINDOW.count_name, "BIGINT"),
    (spec.SHORT_WINDOW.avg_name, "DOUBLE"),
    (LATE, "BOOLEAN"),
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


@dataclass(frozen=True)
class ConnectorConfig:
    """Where the job reads and writes: local JSON-lines files or Kinesis streams."""

    kind: str  # "filesystem" | "kinesis"
    source: str  # file/directory path or stream name
    sink: str
    region: str = "us-east-1"
    init_position: str = "LATEST"
    extra_source: dict[str, str] = field(default_factory=dict)
    extra_sink: dict[str, str] = field(default_factory=dict)

    def source_options(self) -> dict[str, str]:
        if self.kind == "filesystem":
            opts = {"connector": "filesystem", "path": self.source, "format": "json"}
        elif self.kind == "kinesis":
            opts = {"connector": "kinesis", **_kinesis_stream(self.source), "aws.region": self.region}
            key = "source.init.position" if _is_arn(self.source) else "scan.stream.initpos"
            opts |= {key: self.init_position, "format": "json"}
        else:
            raise ValueError(f"unknown connector kind {self.kind!r}")
        # Absent optional fields are NULL. Undecodable records cannot be carried (no field
        # survives), so they are skipped here; upstream producers validate (see docs/streaming.md).
        opts |= {"json.fail-on-missing-field": "false", "json.ignore-parse-errors": "true"}
        return opts | self.extra_source

    def sink_options(self) -> dict[str, str]:
        if self.kind == "filesystem":
            opts = {"connector": "filesystem", "path": self.sink, "format": "json"}
        elif self.kind == "kinesis":
            opts = {
                "connector": "kinesis",
                **_kinesis_stream(self.sink),
                "aws.region": self.region,
                "format": "json",
            }
        else:
            raise ValueError(f"unknown connector kind {self.kind!r}")
        return opts | self.extra_sink


def _is_arn(stream: str) -> bool:
    return stream.startswith("arn:")


def _kinesis_stream(stream: str) -> dict[str, str]:
    """A stream ARN selects the 5.x connector options (`flink-sql-connector-kinesis` 5.x, the one for
    Flink 1.20); a bare name the 4.x ones (`stream`, `scan.stream.initpos`)."""
    return {"stream.arn": stream} if _is_arn(stream) else {"stream": stream}


def _with(options: dict[str, str]) -> str:
    body = ",\n  ".join(f"'{k}' = '{v}'" for k, v in options.items())
    return f"WITH (\n  {body}\n)"


def _columns(cols: tuple[tuple[str, str], ...]) -> str:
    return ",\n  ".join(f"`{n}` {t}" for n, t in cols)


def source_ddl(conn: ConnectorConfig, watermark_seconds: int) -> str:
    """Source table: raw fields, rowtime from `trans_ts`, bounded out-of-orderness watermark."""
    ts = spec.EVENT_TIME
    return (
        f"CREATE TEMPORARY TABLE {SOURCE_TABLE} (\n  {_columns(INPUT_COLUMNS)},\n"
        f"  `{ROWTIME}` AS TO_TIMESTAMP_LTZ(CAST(ROUND(`{ts}` * 1000) AS BIGINT), 3),\n"
        f"  WATERMARK FOR `{ROWTIME}` AS `{ROWTIME}` - {interval_literal(watermark_seconds)}\n"
        f") {_with(conn.source_options())}"
    )


def sink_ddl(conn: ConnectorConfig) -> str:
    """Sink table: the enriched transaction; on Kinesis partitioned by card (order per card)."""
    partition = f"PARTITIONED BY (`{spec.CARD_ID}`) " if conn.kind == "kinesis" else ""
    return f"CREATE TEMPORARY TABLE {SINK_TABLE} (\n  {_columns(OUTPUT_COLUMNS)}\n) {partition}{_with(conn.sink_options())}"


def valid_predicate() -> str:
    """Rows the window can place: required fields present, finite non-negative amount.

    Anything else is forwarded unchanged (no aggregates) so the Lambdas' validation sends it to
    the failure destination with a reason instead of it vanishing here."""
    a = f"`{spec.AMOUNT}`"
    req = " AND ".join(f"`{f}` IS NOT NULL" for f in spec.EVENT_FIELDS)
    # NaN <> NaN and +-Infinity fail the bound, so this also rejects non-finite amounts.
    return f"({req} AND {a} >= 0 AND {a} < CAST('Infinity' AS DOUBLE))"


def late_predicate() -> str:
    """Behind the watermark at arrival: the OVER operator would drop it."""
    r = f"`{ROWTIME}`"
    return f"(CURRENT_WATERMARK({r}) IS NOT NULL AND {r} <= CURRENT_WATERMARK({r}))"


def insert_sql() -> str:
    """One INSERT: on-time rows through the OVER window, late and invalid rows around it."""
    w = spec.SHORT_WINDOW
    passthrough = ", ".join(f"`{n}`" for n, _ in INPUT_COLUMNS)
    over = (
        f"PARTITION BY `{spec.CARD_ID}` ORDER BY `{ROWTIME}` "
        f"RANGE BETWEEN {interval_literal(w.seconds)} PRECEDING AND CURRENT ROW"
    )
    amount = f"`{spec.AMOUNT}`"
    on_time = (
        f"SELECT {passthrough},\n"
        f"    COUNT(*) OVER w AS `{w.count_name}`,\n"
        f"    CAST(SUM(CAST({amount} AS {SUM_TYPE})) OVER w AS DOUBLE) / COUNT(*) OVER w AS `{w.avg_name}`,\n"
        f"    FALSE AS `{LATE}`\n"
        f"  FROM {SOURCE_TABLE}\n"
        f"  WHERE {valid_predicate()} AND NOT {late_predicate()}\n"
        f"  WINDOW w AS ({over})"
    )
    late = (
        f"SELECT {passthrough},\n"
        f"    CAST(1 AS BIGINT) AS `{w.count_name}`,\n"
        f"    {amount} AS `{w.avg_name}`,\n"
        f"    TRUE AS `{LATE}`\n"
        f"  FROM {SOURCE_TABLE}\n"
        f"  WHERE {valid_predicate()} AND {late_predicate()}"
    )
    invalid = (
        f"SELECT {passthrough},\n"
        f"    CAST(NULL AS BIGINT) AS `{w.count_name}`,\n"
        f"    CAST(NULL AS DOUBLE) AS `{w.avg_name}`,\n"
        f"    CAST(NULL AS BOOLEAN) AS `{LATE}`\n"
        f"  FROM {SOURCE_TABLE}\n"
        f"  WHERE {valid_predicate()} IS NOT TRUE"
    )
    return f"INSERT INTO {SINK_TABLE}\n{on_time}\nUNION ALL\n{late}\nUNION ALL\n{invalid}"


def statements(conn: ConnectorConfig, watermark_seconds: int) -> list[str]:
    """Every statement of the job, in execution order (DDL..., INSERT)."""
    return [source_ddl(conn, watermark_seconds), sink_ddl(conn), insert_sql()]
