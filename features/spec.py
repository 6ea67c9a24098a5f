"""The single feature specification: names, windows, ratio formulas, schemas.

Spark (batch), Flink (streaming), the Lambdas (serving) and training all import
this module, so a feature changes in one place and every path changes with it.
Ratios are data (numerator, denominator); the Python, NumPy and SQL renderings
below are generated from that data, never written out by hand elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# --- Raw data -----------------------------------------------------------------
TRANSACTION_COLUMNS: tuple[str, ...] = ("tid", "datetime", "cc_num", "amount", "fraud_label")
"""Columns of a transactions CSV/Parquet (batch input, bring your own data)."""

EVENT_FIELDS: tuple[str, ...] = ("tid", "cc_num", "amount", "trans_ts")
"""Required fields of a streaming event (JSON); `merchant`, `zip_code` are optional."""
OPTIONAL_EVENT_FIELDS: tuple[str, ...] = ("merchant", "zip_code")
REJECTED_RAW_FIELD = "raw"
"""Set by the Flink job on a record it could not read (the original text); the Lambdas reject it."""

LABEL = "fraud_label"
CARD_ID = "cc_num"
AMOUNT = "amount"
EVENT_TIME = "trans_ts"


NON_NEGATIVE_FIELDS: tuple[str, ...] = (CARD_ID, AMOUNT, EVENT_TIME)
"""Numeric fields that must be finite and >= 0 in every path (Spark drops and counts, Flink routes
around the window, the Lambdas reject to the failure destination with the reason)."""


def value_problem(field: str, value: float) -> str | None:
    """Why a required numeric value is invalid, or None: the validity rule in Python."""
    if value != value or value in (float("inf"), float("-inf")):
        return f"{field} must be finite, got {value!r}"
    if value < 0:
        return f"{field} must be >= 0, got {value!r}"
    return None


def valid_event_sql(quote: str = "`") -> str:
    """The same validity rule as a SQL predicate (Spark SQL and Flink SQL).

    `x >= 0 AND x < Infinity` also rejects NaN in both engines (Flink: every NaN comparison is
    false; Spark: NaN sorts above +Infinity)."""
    required = [f"{quote}{f}{quote} IS NOT NULL" for f in EVENT_FIELDS]
    ranges = [
        f"{quote}{f}{quote} >= 0 AND CAST({quote}{f}{quote} AS DOUBLE) < CAST('Infinity' AS DOUBLE)"
        for f in NON_NEGATIVE_FIELDS
    ]
    return "(" + " AND ".join(required + ranges) + ")"


# --- Windows and aggregates ---------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A per-card aggregate window: `count_name`/`avg_name` over `seconds`."""

    suffix: str
    seconds: int

    @property
    def count_name(self) -> str:
        return f"num_trans_last_{self.suffix}"

    @property
    def avg_name(self) -> str:
        return f"avg_amt_last_{self.suffix}"


SHORT_WINDOW = Window("10m", 10 * 60)
"""Streaming window: transactions of the card in [ts - 10 min, ts], inclusive, peers included."""
LONG_WINDOW = Window("1w", 7 * 24 * 3600)
"""Batch snapshot: transactions of the card in [T - 7 days, T), T = daily cut-off (00:00 UTC)."""
SNAPSHOT_PERIOD_SECONDS = 24 * 3600
"""Snapshots are published once a day at 00:00 UTC."""


# --- Ratios -------------------------------------------------------------------
@dataclass(frozen=True)
class Ratio:
    """`numerator / denominator`, defined as 0 when the denominator is 0."""

    name: str
    numerator: str
    denominator: str


RATIOS: tuple[Ratio, ...] = (
    Ratio("amt_ratio1", SHORT_WINDOW.avg_name, LONG_WINDOW.avg_name),
    Ratio("amt_ratio2", AMOUNT, LONG_WINDOW.avg_name),
    Ratio("count_ratio", SHORT_WINDOW.count_name, LONG_WINDOW.count_name),
)

MODEL_FEATURES: tuple[str, ...] = (AMOUNT, "amt_ratio1", "amt_ratio2", "count_ratio")
"""Model input, in this order (training CSV columns after the label; endpoint CSV columns)."""

DECISION_THRESHOLD = 0.5
"""Score at or above which a transaction is flagged as fraud (evaluation and serving)."""


def safe_ratio(numerator: float, denominator: float) -> float:
    """Scalar ratio with the 0-denominator rule (serving path)."""
    return float(numerator) / float(denominator) if denominator != 0 else 0.0


def ratio_sql(ratio: Ratio) -> str:
    """SQL expression of a ratio (Spark SQL and Flink SQL both accept it)."""
    num, den = ratio.numerator, ratio.denominator
    return f"CASE WHEN {den} = 0 THEN CAST(0.0 AS DOUBLE) ELSE CAST({num} AS DOUBLE) / {den} END"


def ratio_features(row: Mapping[str, Any]) -> dict[str, float]:
    """All ratios of one row holding the raw aggregates and the amount."""
    return {r.name: safe_ratio(row[r.numerator], row[r.denominator]) for r in RATIOS}


def model_input(row: Mapping[str, Any]) -> dict[str, float]:
    """The model input by name, in model order, from aggregates + amount (ratios computed here)."""
    values = {**row, **ratio_features(row)}
    return {name: float(values[name]) for name in MODEL_FEATURES}


# --- Feature groups -----------------------------------------------------------
@dataclass(frozen=True)
class FeatureGroup:
    """An online feature group: record identifier, event time and typed features."""

    name: str
    record_identifier: str
    event_time: str
    features: tuple[tuple[str, str], ...]
    """(name, SageMaker FeatureType) in definition order, record id and event time included."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.features)

    def feature_definitions(self) -> list[dict[str, str]]:
        """`FeatureDefinitions` as the CreateFeatureGroup API and CloudFormation take them."""
        return [{"FeatureName": n, "FeatureType": t} for n, t in self.features]


STREAMING_FEATURE_GROUP = FeatureGroup(
    name="cc-agg-fg",
    record_identifier=CARD_ID,
    event_time="trans_time",
    features=(
        (CARD_ID, "Integral"),
        (SHORT_WINDOW.count_name, "Integral"),
        (SHORT_WINDOW.avg_name, "Fractional"),
        ("trans_time", "Fractional"),
    ),
)
"""10-minute aggregates per card from `ingest_aggregates` (newest on-time event of each card in a
Lambda batch; older ones would lose to it under the event-time rule anyway); event time = `trans_ts`."""

BATCH_FEATURE_GROUP = FeatureGroup(
    name="cc-agg-batch-fg",
    record_identifier=CARD_ID,
    event_time="trans_time",
    features=(
        (CARD_ID, "Integral"),
        (LONG_WINDOW.count_name, "Integral"),
        (LONG_WINDOW.avg_name, "Fractional"),
        ("trans_time", "Fractional"),
    ),
)
"""1-week snapshot per card published by the Spark job; event time = snapshot cut-off T."""

FEATURE_GROUPS: dict[str, FeatureGroup] = {
    fg.name: fg for fg in (STREAMING_FEATURE_GROUP, BATCH_FEATURE_GROUP)
}

# --- Streams and names shared by infrastructure and code ----------------------
TRANSACTIONS_STREAM = "transactions"
CARD_FEATURES_STREAM = "card-features"
DECISIONS_STREAM = "fraud-decisions"
MODEL_PACKAGE_GROUP = "fraud-detection-models"
ENDPOINT_NAME = "fraud-detection-endpoint"
PIPELINE_NAME = "fraud-detection-pipeline"
