"""Spark job: per-card aggregates, time-split training data and the batch feature-group snapshot.

One script for `spark-submit` on SageMaker Processing (existing session via getOrCreate, boto3
`sagemaker-featurestore-runtime`) and for local runs (`python processing/aggregate.py --local ...`
or in-process `main(argv) -> summary` with the caller's local SparkSession).

Feature semantics (docs/design.md; names and rules from features.spec, looped over, never named):
- streaming aggregations: RANGE frames per card over [ts - w, ts], same-timestamp peers included;
  recency from lags over the same sort.
- snapshot aggregations for every daily cut-off T: the card's transactions in [T - w, T), on a dense
  card x day grid (first day .. day after the last), 0 for cards without history.
- a training row at ts carries the grid's values for T = floor_day(ts) (broadcast join after the
  windows); ratios via spec.ratio_sql.
`main` is a short sequence of named steps (one pass for the input statistics and the daily
partials, calendar, snapshots, the duplicate-tid count, features and splits, ingestion,
summary). Ingestion of the cut-off's snapshot (one record per card, event time = T) lives in
processing/ingest.py, Hadoop file-system calls in processing/hadoop_fs.py.
Invalid rows (spec.valid_event_sql: a missing/unparsable field, an out-of-range or non-finite card,
amount or time; plus, batch-only, a label other than 0/1) are dropped before any window and
counted, with the reasons, in the summary (`rows_invalid_dropped`, `rows_invalid_reasons`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ is None:  # `python processing/aggregate.py` / spark-submit
    _root = Path(__file__).resolve().parents[1]
    if (_root / "features").is_dir():
        sys.path.insert(0, str(_root))

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

from features import spec
from processing import hadoop_fs, ingest
from shared.cli import ArgumentParser, report
from shared.errors import UserError

DAY = spec.SNAPSHOT_PERIOD_SECONDS
SPLITS = ("train", "validation", "test")
BROADCAST_GRID_ROWS = 8_000_000
"""Up to this many snapshot rows (cards x training days) the grid is broadcast into the training
rows (no shuffle of the rows); beyond (e.g. 100x the study's cards) a shuffle join does it."""
BASE_COLUMNS = ("tid", "datetime", spec.EVENT_TIME, spec.CARD_ID, spec.AMOUNT, spec.LABEL)


def parquet_columns(fs: spec.FeatureSpec = spec.SPEC) -> tuple[str, ...]:
    """Columns of the features Parquet: the transaction, every declared feature, the ratios."""
    return (*BASE_COLUMNS, *fs.streaming_features, *fs.snapshot_features, *(r.name for r in fs.ratios))


HISTORY_DAYS = 14
"""First days kept out of the training data: their 1-week snapshots are still filling up."""
TEST_DAYS = 14
VALIDATION_DAYS = 14
MIN_TRAIN_DAYS = 14
"""Below history + validation + test + this many days, all four shrink in proportion."""


def split_days(days: int, history: int, validation: int, test: int) -> tuple[int, int, int, str | None]:
    """(history, validation, test, notice) for `days` of data; train gets the rest.

    When the data is shorter than the requested lengths plus MIN_TRAIN_DAYS, every period shrinks by
    the same factor (at least one day each) and the notice says so; fewer than 4 days cannot be
    split (one day per period) and are refused."""
    wanted = history + validation + test + MIN_TRAIN_DAYS
    if days >= wanted:
        return history, validation, test, None
    if days < 4:
        raise JobInputError(f"the data spans {days} day(s): a time-based split needs at least 4")
    scale = days / wanted
    h, v, t = (max(1, int(x * scale)) if x else 0 for x in (history, validation, test))
    while h + v + t > days - 1:  # rounding up to one day each may leave no train day
        h, v, t = (max(1, x - 1) if x == max(h, v, t) else x for x in (h, v, t))
    notice = (
        f"the data spans {days} days, less than {wanted} ({history} history + {validation} validation + "
        f"{test} test + {MIN_TRAIN_DAYS} train): using {h} history, {days - h - v - t} train, "
        f"{v} validation, {t} test days"
    )
    return h, v, t, notice


class JobInputError(UserError, ValueError):
    """A user error (bad input or arguments): the CLI prints it as one line, no traceback."""


# --- arguments ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--input", required=True, help="transactions: CSV with header or Parquet; file, dir or S3 URI"
    )
    p.add_argument("--input-format", choices=("auto", "csv", "parquet"), default="auto")
    p.add_argument(
        "--output", required=True, help="output directory (train/, validation/, test/, parquet/, ...)"
    )
    p.add_argument(
        "--snapshot-date", default="", help="cut-off to ingest, YYYY-MM-DD (empty: run day / --local)"
    )
    p.add_argument(
        "--history-days",
        type=int,
        default=HISTORY_DAYS,
        help="first days kept out of training data (warm-up)",
    )
    p.add_argument("--test-days", type=int, default=TEST_DAYS)
    p.add_argument("--validation-days", type=int, default=VALIDATION_DAYS)
    p.add_argument("--feature-group", default=spec.BATCH_FEATURE_GROUP.name)
    p.add_argument("--feature-store", choices=("sagemaker", "local"), default="sagemaker")
    p.add_argument("--feature-store-db", default="", help="SQLite file of the local online store")
    p.add_argument("--region", default="", help="AWS region of the feature store (default: boto3's)")
    p.add_argument("--no-ingest", action="store_true", help="skip the feature-group ingestion")
    p.add_argument("--ingest-workers", type=int, default=8, help="put_record threads per partition")
    p.add_argument("--ingest-partitions", type=int, default=0, help="default: Spark default parallelism")
    p.add_argument(
        "--local", action="store_true", help="local mode: local Spark, day after the data as cut-off"
    )
    p.add_argument("--feature-spec", default="", help="FeatureSpec JSON file (default: features/spec.py)")
    return p


def _parse_day(value: str, flag: str) -> int:
    """Day index (days since epoch) of a YYYY-MM-DD string."""
    try:
        d = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise JobInputError(f"{flag} must be YYYY-MM-DD, got {value!r}") from None
    return int(d.timestamp()) // DAY


def _day_str(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=int(day))).isoformat()


# --- input ----------------------------------------------------------------------------------------
def _detect_format(path: str) -> str:
    lower = path.lower().rstrip("/")
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    local = Path(path)
    if local.is_dir():
        names = [
            p.name.lower() for p in local.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))
        ]
        if names and all(n.endswith(".parquet") for n in names):
            return "parquet"
        if names and all(".csv" in n for n in names):
            return "csv"
        if not names:
            raise JobInputError(f"--input {path} contains no data files")
    elif "://" not in path and not local.exists():
        raise JobInputError(f"--input {path} does not exist")
    return "unknown"


def read_transactions(spark: SparkSession, path: str, fmt: str = "auto") -> DataFrame:
    """Typed transactions plus `trans_ts` (epoch seconds, double); fails naming a missing column."""
    fmt = _detect_format(path) if fmt == "auto" else fmt
    try:
        if fmt == "csv":
            raw = spark.read.option("header", True).csv(path)
        elif fmt == "parquet":
            raw = spark.read.parquet(path)
        else:  # e.g. an S3 prefix: Parquet first, then CSV
            try:
                raw = spark.read.parquet(path)
            except Exception:
                raw = spark.read.option("header", True).csv(path)
    except Exception as exc:  # Spark's own message, first line only: the user's error, not a crash
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        causes = [ln.removeprefix("Caused by: ") for ln in lines if ln.startswith("Caused by:")]
        reason = (causes[-1] if causes else lines[0] if lines else type(exc).__name__)[:300]
        raise JobInputError(f"cannot read --input {path} as {fmt}: {reason}") from exc
    for column in spec.TRANSACTION_COLUMNS:
        if column not in raw.columns:
            raise JobInputError(
                f"input {path} is missing column {column!r} (required: {', '.join(spec.TRANSACTION_COLUMNS)}; "
                f"found: {', '.join(raw.columns) or 'none'})"
            )
    for f in raw.schema.fields:
        if f.name in spec.TRANSACTION_COLUMNS and f.dataType.typeName() in (
            "struct",
            "array",
            "map",
            "binary",
        ):
            raise JobInputError(
                f"input {path}: column {f.name!r} has type {f.dataType.simpleString()}, "
                "expected a string or number"
            )
    ts = F.col("datetime").cast("timestamp")
    # A fractional card number is invalid (a plain cast to long would truncate it to a valid one).
    if isinstance(raw.schema[spec.CARD_ID].dataType, IntegralType):
        card = F.col(spec.CARD_ID).cast("long")  # whole already: no decimal round trip per row
    else:
        card = F.col(spec.CARD_ID).cast("decimal(38, 9)")
        card = F.when(card == card.cast("long"), card.cast("long"))
    # Through double so 0.7 or 1.5 is not truncated to a valid-looking 0/1: any other value is -1,
    # which the validity rule drops as "not 0 or 1" (unparsable stays null: "missing or unparsable").
    label = F.col(spec.LABEL).cast("double")
    label = F.when(label.isNull() | label.isin(0.0, 1.0), label.cast("int")).otherwise(F.lit(-1))
    return raw.select(
        F.col("tid").cast("string").alias("tid"),
        ts.alias("datetime"),
        ts.cast("double").alias(spec.EVENT_TIME),
        card.alias(spec.CARD_ID),
        F.col(spec.AMOUNT).cast("double").alias(spec.AMOUNT),
        label.alias(spec.LABEL),
    )


def _label_ok() -> Column:
    return F.col(spec.LABEL).isin(0, 1)


def valid_row() -> Column:
    """The one validity rule of every path (spec.valid_event_sql) plus the label in {0, 1} (batch only)."""
    return F.expr(spec.valid_event_sql()) & _label_ok()


def invalid_reasons() -> dict[str, Column]:
    """Diagnostic counts of why rows are invalid (a row may count under several reasons).

    Validity itself is decided by `valid_row` only; the range reason is the rest of the spec rule
    once the nulls are accounted for, so the rule is not written a second time here."""
    fields = dict.fromkeys((*spec.EVENT_FIELDS, spec.LABEL))  # NON_NEGATIVE_FIELDS are among them
    no_nulls = F.lit(True)
    reasons: dict[str, Column] = {}
    for f in fields:
        what = f"{f} (from datetime)" if f == spec.EVENT_TIME else f
        reasons[f"{what} missing or unparsable"] = F.count(F.when(F.col(f).isNull(), 1))
        no_nulls = no_nulls & F.col(f).isNotNull()
    in_range = F.expr(spec.valid_event_sql())
    reasons[f"out-of-range or non-finite {'/'.join(spec.BOUNDS)}"] = F.count(F.when(no_nulls & ~in_range, 1))
    reasons[f"{spec.LABEL} not 0 or 1"] = F.count(F.when(no_nulls & ~_label_ok(), 1))
    return reasons


# --- features -------------------------------------------------------------------------------------
def safe_avg(total: Column, count: Column) -> Column:
    """total / count, and 0 when the count is 0 (DESIGN: a card without transactions has average 0)."""
    return F.when(count > 0, total / count).otherwise(F.lit(0.0))


_SPARK_OPS: dict[str, Callable[[Column], Column]] = {
    "count": lambda c: F.count(c),
    "sum": lambda c: F.sum(c),
    "avg": lambda c: F.avg(c),
    "min": lambda c: F.min(c),
    "max": lambda c: F.max(c),
}


def streaming_columns(fs: spec.FeatureSpec = spec.SPEC) -> list[Column]:
    """Every streaming aggregation and recency value of `fs` as window expressions over the card.

    Aggregations: RANGE frames [ts - w, ts], peers included, one sort for all of them.
    Recency (nth = k): the k-th latest *other* transaction at or before ts. With g rows sharing ts,
    k <= g - 1 gives 0; otherwise it is the (k - g + 1)-th latest time strictly before ts. Read
    from row offsets only (no frame over the peers): with b of the row's peers before it and a
    after it in the row order (each counted up to k by comparing `lag(ts, j)` / `lead(ts, j)` with
    ts, j <= k), b + a >= k gives 0, else g = b + a + 1 and the wanted time is k - a rows back,
    `lag(ts, k - a)`. The offsets run over the frames' own (card, time) order, one sort for the
    whole pass: which tied row comes first does not change a value, and lag and lead read the
    same sorted rows."""
    ts = F.col(spec.EVENT_TIME)
    by_card = Window.partitionBy(spec.CARD_ID).orderBy(spec.EVENT_TIME)
    cols = [
        _SPARK_OPS[a.operation](F.col(a.column)).over(by_card.rangeBetween(-a.seconds, 0)).alias(a.name)
        for a in fs.streaming
    ]
    if fs.recency:
        offsets = range(1, fs.max_recency_nth + 1)
        lag = {j: F.lag(ts, j).over(by_card) for j in offsets}
        lead = {j: F.lead(ts, j).over(by_card) for j in offsets}

        def peers(side: dict[int, Column], k: int) -> Column:
            """How many of the k rows on that side share ts (they are contiguous: rows sorted by ts)."""
            return sum(
                (F.coalesce(side[j] == ts, F.lit(False)).cast("int") for j in range(1, k + 1)), F.lit(0)
            )

        sentinel = F.lit(spec.RECENCY_SENTINEL)
        for r in fs.recency:
            k = r.nth
            after = peers(lead, k)
            expr = F.lit(0.0)  # k or more others share ts: the k-th other is a peer
            for a in range(k - 1, -1, -1):  # a peers after the row: the wanted time is k - a rows back
                expr = F.when(after == a, F.coalesce(ts - lag[k - a], sentinel)).otherwise(expr)
            expr = F.when(peers(lag, k) + after >= k, F.lit(0.0)).otherwise(expr)
            cols.append(expr.cast("double").alias(r.name))
    return cols


def _snapshot_partials(fs: spec.FeatureSpec) -> list[Column]:
    """Per card and day: the count, and the sum / min / max of a column only where a declared
    snapshot aggregation needs it (count and avg need the count and the sum)."""
    out = [F.count(F.lit(1)).alias("n")]
    for c in sorted({a.column for a in fs.snapshot if a.operation in ("sum", "avg")}):
        out.append(F.sum(c).alias(f"s_{c}"))
    for c in sorted({a.column for a in fs.snapshot if a.operation == "min"}):
        out.append(F.min(c).alias(f"mn_{c}"))
    for c in sorted({a.column for a in fs.snapshot if a.operation == "max"}):
        out.append(F.max(c).alias(f"mx_{c}"))
    return out


def _snapshot_value(a: spec.Aggregation, frame: Window) -> Column:
    """One snapshot aggregation over a frame of daily partial rows; 0 when the frame is empty."""
    n = F.coalesce(F.sum("n").over(frame), F.lit(0)).cast("long")
    if a.operation == "count":
        return n.alias(a.name)
    if a.operation == "avg":
        return safe_avg(F.coalesce(F.sum(f"s_{a.column}").over(frame), F.lit(0.0)), n).alias(a.name)
    part = {"sum": ("s", F.sum), "min": ("mn", F.min), "max": ("mx", F.max)}[a.operation]
    return F.coalesce(part[1](f"{part[0]}_{a.column}").over(frame), F.lit(0.0)).cast("double").alias(a.name)


def daily_partials(tx: DataFrame, fs: spec.FeatureSpec = spec.SPEC) -> DataFrame:
    """Per card and day (`day` column): the partial aggregates the snapshot windows combine."""
    return tx.groupBy(spec.CARD_ID, "day").agg(*_snapshot_partials(fs))


def snapshot_grid(
    tx: DataFrame,
    first_day: int,
    last_cutoff_day: int,
    fs: spec.FeatureSpec = spec.SPEC,
    partials: DataFrame | None = None,
) -> DataFrame:
    """Snapshot aggregations [T - w, T) for every card and every cut-off day in [first_day, last_cutoff_day].

    Dense: every card gets a row for every cut-off, an explicit 0 snapshot without recent activity
    (replay overwrites stale values). The daily partial rows and the dense (card, day) keys are
    stacked and go through one window per card over the day (a RANGE frame [T - w, T - 1 day]),
    so no join; the dense keys' rows are kept. `partials` (daily_partials of tx), when the caller
    already has them, saves a pass over tx.
    """
    daily = daily_partials(tx, fs) if partials is None else partials
    value_columns = [c for c in daily.columns if c not in (spec.CARD_ID, "day")]
    cards = daily.select(spec.CARD_ID).distinct()
    days = F.sequence(F.lit(first_day).cast("long"), F.lit(last_cutoff_day).cast("long"))
    keys = cards.select(spec.CARD_ID, F.explode(days).alias("day")).select(  # no broadcast job
        spec.CARD_ID,
        "day",
        F.lit(True).alias("_key"),
        *(F.lit(None).cast(daily.schema[c].dataType).alias(c) for c in value_columns),
    )
    stacked = daily.select(spec.CARD_ID, "day", F.lit(False).alias("_key"), *value_columns).unionByName(keys)
    by_day = Window.partitionBy(spec.CARD_ID).orderBy("day")
    return (
        stacked.select(
            spec.CARD_ID,
            "day",
            "_key",
            *(_snapshot_value(a, by_day.rangeBetween(-(a.seconds // DAY), -1)) for a in fs.snapshot),
        )
        .where(F.col("_key"))
        .drop("_key")
    )


def training_rows(
    tx: DataFrame,
    fs: spec.FeatureSpec = spec.SPEC,
    grid: DataFrame | None = None,
    broadcast: bool = True,
) -> DataFrame:
    """Transactions (with `day`) plus every declared feature of `fs` and its ratios.

    Streaming windows and recency: one sort by (card, time), every frame over it. Snapshot values:
    the row of the snapshot grid (card, T = floor_day(ts)), joined by a broadcast hash join after
    the windows, so the training row carries exactly the numbers serving publishes for that day
    (and no second sort by day). `grid` is `snapshot_grid` covering tx's days (built from tx when
    not given).
    """
    if grid is None:
        span = tx.agg(F.min("day").alias("lo"), F.max("day").alias("hi")).first()
        if span is None or span["lo"] is None:
            grid = tx.sparkSession.createDataFrame([], f"{spec.CARD_ID} long, day long").select(
                "*", *(F.lit(None).cast("double").alias(n) for n in fs.snapshot_features)
            )
        else:
            grid = snapshot_grid(tx, int(span["lo"]), int(span["hi"]), fs)
    # `day` is re-derived after the windows: one column less through the shuffle and the sort.
    rows = tx.drop("day").select("*", *streaming_columns(fs)).withColumn("day", _day_column())
    snap = grid.select(spec.CARD_ID, "day", *fs.snapshot_features)
    if broadcast:  # the grid is small next to the rows (cards x days); a shuffle join otherwise
        snap = F.broadcast(snap)
    rows = rows.join(snap, [spec.CARD_ID, "day"], "left")
    return rows.select("*", *(F.expr(spec.ratio_sql(r)).alias(r.name) for r in fs.ratios))


def duplicate_tids(tx: DataFrame) -> int:
    """Rows whose `tid` an earlier row already has (rows - distinct tids, whatever the cards), exactly.

    Whatever the cards and times: tids of distinct transactions collide in brought data, and a
    re-delivery is one case of it. Cheap: a 64-bit hash per row is grouped (8 bytes a row through
    the shuffle, not the string); only tids whose hash occurs more than once (normally none) are
    then compared as strings, so a hash collision is never counted as a duplicate. Its own pass
    (~13 CPU-s at 5.4 M rows): a count within the feature pass's card sort would miss a tid shared
    by two cards."""
    h = F.xxhash64("tid").alias("_h")
    twice = tx.select(h).groupBy("_h").count().where(F.col("count") > 1).select("_h")
    candidates = [r["_h"] for r in twice.collect()]
    if not candidates:
        return 0
    suspects = tx.where(F.xxhash64("tid").isin(candidates)).groupBy("tid").count()
    row = suspects.agg(F.sum(F.col("count") - 1).alias("dups")).first()
    return int(row["dups"] or 0) if row else 0


# --- job ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputStats:
    """What one aggregate over the input found: row counts, invalid reasons, the day range."""

    rows_all: int
    rows_in: int
    invalid_reasons: dict[str, int]
    first_day: int
    last_day: int

    @property
    def rows_invalid(self) -> int:
        return self.rows_all - self.rows_in


@dataclass(frozen=True)
class Calendar:
    """The run's days: data range, split starts, the cut-off to ingest."""

    first_day: int
    last_day: int
    history: int
    validation: int
    test: int
    notice: str | None
    snapshot_day: int

    @property
    def end_day(self) -> int:
        """The day after the last transaction (the newest snapshot cut-off of the grid)."""
        return self.last_day + 1

    @property
    def train_start(self) -> int:
        return self.first_day + self.history

    @property
    def test_start(self) -> int:
        return self.end_day - self.test

    @property
    def validation_start(self) -> int:
        return self.test_start - self.validation


@dataclass
class Timings:
    """Wall seconds per named step (the summary's `timings_s`)."""

    started: float = field(default_factory=time.perf_counter)
    steps: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, since: float) -> float:
        self.steps[name] = round(time.perf_counter() - since, 3)
        return time.perf_counter()

    def total(self) -> dict[str, float]:
        return {**self.steps, "total": round(time.perf_counter() - self.started, 3)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for flag in ("history_days", "test_days", "validation_days"):
        if getattr(args, flag) < 0:
            raise JobInputError(f"--{flag.replace('_', '-')} must be >= 0")
    if args.ingest_workers < 1:
        raise JobInputError("--ingest-workers must be >= 1")
    if args.snapshot_date:
        _parse_day(args.snapshot_date, "--snapshot-date")
    return args


def start_spark(local: bool, input_path: str | None = None) -> SparkSession:
    """The caller's session, else a local one (--local, JIT sized to the input) or SageMaker's
    (getOrCreate), UTC."""
    spark = SparkSession.getActiveSession()
    if spark is None and local:
        from processing.spark_session import input_rows_hint, local_spark_session

        rows = input_rows_hint(input_path) if input_path else None
        spark = local_spark_session("aggregate", input_rows=rows)
    elif spark is None:
        spark = SparkSession.builder.appName("cc-fraud-aggregate").getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # No `_SUCCESS` markers: the built-in XGBoost container reads every file of a channel and sniffs
    # the CSV delimiter from whichever comes first; an empty `_SUCCESS` fails it intermittently.
    spark.sparkContext._jsc.hadoopConfiguration().set(
        "mapreduce.fileoutputcommitter.marksuccessfuljobs", "false"
    )
    return spark


def _day_column() -> Column:
    return F.floor(F.col(spec.EVENT_TIME) / DAY).cast("long")


def valid_rows(tx: DataFrame) -> DataFrame:
    """The rows every window sees: valid ones (`valid_row`), with their `day` index."""
    return tx.where(valid_row()).withColumn("day", _day_column())


def scan_input(tx: DataFrame, source: str, fs: spec.FeatureSpec) -> tuple[InputStats, DataFrame]:
    """Input statistics and the cached daily partials (`daily_partials`) from one pass over the input.

    The statistics (row counts, invalid reasons, the valid rows' day range) are observed on the
    typed input while the partials' aggregation reads it (`DataFrame.observe`: no second scan, no
    separate query). Fails (JobInputError, with the reasons) when no row is valid."""
    ok = F.coalesce(valid_row(), F.lit(False))
    reasons = invalid_reasons()
    columns = [
        F.count(F.lit(1)).alias("all"),
        F.count(F.when(ok, 1)).alias("rows"),
        F.min(F.when(ok, _day_column())).alias("first"),
        F.max(F.when(ok, _day_column())).alias("last"),
        *(col.alias(f"reason_{i}") for i, col in enumerate(reasons.values())),
    ]
    observed = Observation("input")
    daily = daily_partials(valid_rows(tx.observe(observed, *columns)), fs).persist()
    daily.count()  # builds the cache; the observation completes with it
    row = observed.get
    if not row:  # no valid row: adaptive execution replaced the empty plan, observation and all
        first = tx.agg(*columns).first()
        row = first.asDict() if first else {}
    why = {name: int(row[f"reason_{i}"]) for i, name in enumerate(reasons) if row[f"reason_{i}"]}
    text = ", ".join(f"{k}: {v:,}" for k, v in why.items())
    if not row["rows"]:
        daily.unpersist()
        raise JobInputError(f"input {source} has no valid transactions" + (f" ({text})" if text else ""))
    stats = InputStats(int(row["all"]), int(row["rows"]), why, int(row["first"]), int(row["last"]))
    if stats.rows_invalid:
        _progress(f"dropping {stats.rows_invalid:,} invalid row(s) of {stats.rows_all:,} ({text})")
    return stats, daily


def plan_calendar(stats: InputStats, args: argparse.Namespace) -> Calendar:
    """Split lengths for the data's span (shortened in proportion when short) and the cut-off."""
    end_day = stats.last_day + 1
    history, validation, test, notice = split_days(
        end_day - stats.first_day, args.history_days, args.validation_days, args.test_days
    )
    if notice:
        _progress(f"notice: {notice}")
    if args.snapshot_date:
        snapshot_day = _parse_day(args.snapshot_date, "--snapshot-date")
    elif args.local or args.feature_store == "local":  # historical data: the day after the last row
        snapshot_day = end_day
    else:
        snapshot_day = int(time.time()) // DAY
    return Calendar(stats.first_day, stats.last_day, history, validation, test, notice, snapshot_day)


def warn_duplicates(tx: DataFrame) -> int:
    rows = duplicate_tids(tx)
    if rows:
        _progress(
            f"warning: {rows:,} row(s) repeat the tid of an earlier row; kept as separate "
            "transactions (every window counts them): de-duplicate the input if they are re-deliveries"
        )
    return rows


@dataclass
class Snapshots:
    """The cached snapshot grid (every card x cut-off of the data) and the cut-off to ingest."""

    grid: DataFrame
    latest: DataFrame
    cards: int

    def unpersist(self) -> None:
        self.grid.unpersist()
        self.latest.unpersist()


def with_cutoff(frame: DataFrame, fs: spec.FeatureSpec) -> DataFrame:
    """Snapshot rows as published: card, cut-off (epoch seconds), the snapshot features."""
    cutoff = (F.col("day") * DAY).cast("long").alias("cutoff")
    return frame.select(spec.CARD_ID, cutoff, *fs.snapshot_features)


def build_snapshots(daily: DataFrame, days: Calendar, fs: spec.FeatureSpec, out: str) -> Snapshots:
    """The grid from the cached daily partials, written as the snapshot table (plus the cut-off's
    day when it lies outside the data, e.g. the run day on AWS: the same grid rule over one day).
    The cut-off's cards are counted during the write (observed, no counting pass)."""
    grid = snapshot_grid(daily, days.first_day, days.end_day, fs, partials=daily).persist()
    table, latest = grid, grid.where(F.col("day") == days.snapshot_day)
    if not days.first_day <= days.snapshot_day <= days.end_day:
        latest = snapshot_grid(daily, days.snapshot_day, days.snapshot_day, fs, partials=daily).persist()
        table = table.unionByName(latest)
    observed = Observation("snapshots")
    table = table.observe(observed, F.count(F.when(F.col("day") == days.snapshot_day, 1)).alias("cards"))
    with_cutoff(table, fs).write.mode("overwrite").parquet(f"{out}/snapshots")
    daily.unpersist()
    return Snapshots(grid, latest, int(observed.get["cards"]))


def feature_rows(tx: DataFrame, snaps: Snapshots, days: Calendar, fs: spec.FeatureSpec) -> DataFrame:
    """Every valid row with every feature and `split` (null in the warm-up days).

    Windows over all rows (the warm-up days feed them); `write_splits` drops the warm-up days."""
    day = F.col("day")
    split = (
        F.when(day >= days.test_start, "test")
        .when(day >= days.validation_start, "validation")
        .when(day >= days.train_start, "train")
    )
    grid = snaps.grid.where(day >= days.train_start)
    broadcast = snaps.cards * max(0, days.end_day - days.train_start + 1) <= BROADCAST_GRID_ROWS
    rows = training_rows(tx.drop("datetime"), fs, grid=grid, broadcast=broadcast)
    return rows.withColumn("split", split)


def write_splits(
    spark: SparkSession, rows: DataFrame, fs: spec.FeatureSpec, out: str, timings: Timings
) -> dict[str, int]:
    """features Parquet (`parquet/<split>/`) and the training CSV (`<split>/`: label first, no
    header), each one partitioned write. The row counts per split are observed during the first
    write (no counting pass).

    `datetime` is re-derived after the shuffle: one column less through the sort."""
    observed = Observation("rows_out")
    counts = [F.count(F.when(F.col("split") == s, 1)).alias(s) for s in SPLITS]
    rows = rows.observe(observed, *counts)
    rows = rows.where(F.col("split").isNotNull())
    rows = rows.withColumn("datetime", F.timestamp_seconds(spec.EVENT_TIME))
    rows = rows.select(*parquet_columns(fs), "split")
    # Not `_`-prefixed: Spark's reader ignores such paths, and the CSV pass reads this one back.
    tmp_parquet, tmp_csv = f"{out}/tmp-features-parquet", f"{out}/tmp-training-csv"
    csv_columns = [spec.LABEL, *fs.model_features]
    t = time.perf_counter()
    with _concurrent_writers(spark, len(SPLITS) + 1):  # no sort of 5 M rows by the split column
        # No dictionary pages: most columns are near-unique doubles and strings, where building a
        # dictionary until it overflows is wasted work (~4 of ~36 CPU-s of this pass, +5 % size).
        rows.write.mode("overwrite").option("parquet.enable.dictionary", False).partitionBy("split").parquet(
            tmp_parquet
        )
        split_rows = {s: int(observed.get.get(s) or 0) for s in SPLITS}
        t = timings.record("features_parquet", t)
        _progress(f"features written in {timings.steps['features_parquet']:.1f}s")
        if any(split_rows.values()):  # the model columns of the Parquet just written (columnar read)
            written = spark.read.parquet(tmp_parquet).select(*csv_columns, "split")
            written.write.mode("overwrite").option("header", False).partitionBy("split").csv(tmp_csv)
    empty = spark.createDataFrame([], rows.drop("split").schema)
    for name in SPLITS:
        if not hadoop_fs.move(spark, f"{tmp_parquet}/split={name}", f"{out}/parquet/{name}"):
            empty.write.mode("overwrite").parquet(f"{out}/parquet/{name}")  # an empty split keeps its schema
        if not hadoop_fs.move(spark, f"{tmp_csv}/split={name}", f"{out}/{name}"):
            empty.select(*csv_columns).write.mode("overwrite").option("header", False).csv(f"{out}/{name}")
    hadoop_fs.delete(spark, tmp_parquet)
    hadoop_fs.delete(spark, tmp_csv)
    timings.record("training_csv", t)
    _progress(f"training CSV written in {timings.steps['training_csv']:.1f}s: {json.dumps(split_rows)}")
    return split_rows


@contextmanager
def _concurrent_writers(spark: SparkSession, n: int) -> Iterator[None]:
    """`spark.sql.maxConcurrentOutputFileWriters` = n inside the block, restored afterwards."""
    key = "spark.sql.maxConcurrentOutputFileWriters"
    previous = spark.conf.get(key, "0")
    spark.conf.set(key, str(n))
    try:
        yield
    finally:
        spark.conf.set(key, previous)


def _feature_spec(path: str) -> spec.FeatureSpec:
    if not path:
        return spec.SPEC
    try:
        return spec.FeatureSpec.from_json(Path(path).read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobInputError(f"--feature-spec {path}: {exc}") from None


def _progress(message: str) -> None:
    print(f"[aggregate] {message}", file=sys.stderr, flush=True)


def store_factory(args: argparse.Namespace) -> Callable[[], Any] | None:
    """The picklable client factory of the chosen store, or None with --no-ingest."""
    if args.no_ingest:
        return None
    if args.feature_store == "local":
        if not args.feature_store_db:
            raise JobInputError("--feature-store local needs --feature-store-db PATH")
        Path(args.feature_store_db).parent.mkdir(parents=True, exist_ok=True)
        factory = ingest.LocalFeatureStoreFactory(str(Path(args.feature_store_db).resolve()))
        factory().close()  # create the store once on the driver, before concurrent writers
        return factory
    return ingest.SageMakerFeatureStoreFactory(args.region, max_pool_connections=max(10, args.ingest_workers))


def ship_partition_code() -> None:
    """Executors unpickle the partition functions by value: they need not import processing/."""
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(ingest)
    if __name__ != "__main__":  # `__main__` is pickled by value already
        cloudpickle.register_pickle_by_value(sys.modules[__name__])


def publish(
    snaps: Snapshots,
    factory: Callable[[], Any] | None,
    args: argparse.Namespace,
    days: Calendar,
    fs: spec.FeatureSpec,
) -> int:
    """Ingest the cut-off's snapshot into the feature group (0 with --no-ingest)."""
    if factory is None:
        return 0
    _progress(
        f"ingesting cut-off {_day_str(days.snapshot_day)} into {args.feature_group} ({args.feature_store})"
    )
    latest = with_cutoff(snaps.latest, fs)
    return ingest.ingest_snapshot(
        latest, factory, args.feature_group, args.ingest_workers, args.ingest_partitions, fs
    )


def build_summary(
    args: argparse.Namespace, stats: InputStats, days: Calendar, result: dict[str, Any]
) -> dict[str, Any]:
    """The job's summary (OUTPUT/summary.json)."""
    split_rows: dict[str, int] = result["rows_out"]
    windows = (("train", days.train_start, days.validation_start),
               ("validation", days.validation_start, days.test_start), ("test", days.test_start, days.end_day))  # fmt: skip
    return {
        "input": args.input,
        "output": args.output.rstrip("/"),
        "rows_in": stats.rows_in,
        "rows_invalid_dropped": stats.rows_invalid,
        "rows_invalid_reasons": stats.invalid_reasons,
        "rows_duplicate_tid": result["rows_duplicate_tid"],
        "rows_out": split_rows,
        "rows_history_dropped": stats.rows_in - sum(split_rows.values()),
        "cards": result["cards"],
        "first_day": _day_str(days.first_day),
        "last_day": _day_str(days.last_day),
        "split_days": {"history": days.history, "validation": days.validation, "test": days.test},
        "split_notice": days.notice,
        "model_features": list(result["model_features"]),
        "splits": {
            "train_start": _day_str(days.train_start),
            "validation_start": _day_str(days.validation_start),
            "test_start": _day_str(days.test_start),
            "end": _day_str(days.end_day),
        },
        **{f"{name}_window": {"start": lo * DAY, "end": hi * DAY} for name, lo, hi in windows},
        "snapshot_date": _day_str(days.snapshot_day),
        "snapshot_cutoff": days.snapshot_day * DAY,
        "feature_group": args.feature_group,
        "feature_store": None if args.no_ingest else args.feature_store,
        "records_ingested": result["records_ingested"],
        "timings_s": result["timings_s"],
    }


def write_summary(spark: SparkSession, out: str, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, indent=2) + "\n"
    if "://" in out:  # S3 (or any Hadoop FS): one object through Hadoop's FileSystem
        hadoop_fs.write_text(spark, f"{out}/summary.json", text)
    else:
        Path(out, "summary.json").write_text(text)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary (also written to OUTPUT/summary.json)."""
    args = parse_args(argv)
    fs = _feature_spec(args.feature_spec)
    factory = store_factory(args)
    ship_partition_code()
    out = args.output.rstrip("/")
    timings = Timings()
    spark = start_spark(args.local, args.input)
    t = timings.record("spark_session", timings.started)

    _progress(f"reading {args.input}")
    tx = read_transactions(spark, args.input, args.input_format)
    stats, daily = scan_input(tx, args.input, fs)
    days = plan_calendar(stats, args)
    t = timings.record("read", t)
    snaps = build_snapshots(daily, days, fs, out)
    t = timings.record("snapshots", t)
    _progress(f"{stats.rows_in:,} rows, {_day_str(days.first_day)}..{_day_str(days.last_day)}, "
              f"{snaps.cards:,} cards; computing features")  # fmt: skip

    valid = valid_rows(tx)
    duplicates = warn_duplicates(valid)
    t = timings.record("duplicates", t)
    split_rows = write_splits(spark, feature_rows(valid, snaps, days, fs), fs, out, timings)
    t = time.perf_counter()
    ingested = publish(snaps, factory, args, days, fs)
    if factory is not None:
        timings.record("ingest", t)
    snaps.unpersist()
    result = {"rows_out": split_rows, "rows_duplicate_tid": duplicates, "cards": snaps.cards,
              "model_features": fs.model_features, "records_ingested": ingested, "timings_s": timings.total()}  # fmt: skip
    summary = build_summary(args, stats, days, result)
    write_summary(spark, out, summary)
    _progress(
        f"done in {summary['timings_s']['total']:.1f}s: {json.dumps(split_rows)}; {ingested:,} records ingested"
    )
    return summary


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as exc:  # one line, exit 2 (shared.errors)
        sys.exit(report("aggregate", exc))
