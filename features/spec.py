"""The single feature specification: per-card aggregations and derived features, declared as data.

Spark (batch), Flink (streaming), the Lambdas (serving), the replay, the feature-group templates and
docs/features.md all loop over the declarations below, the way Chronon's
`GroupBy(aggregations=[Aggregation(..., windows=[...])])` and Feast's `Aggregation(column, function,
time_window)` do. Adding a window is one line in `AGGREGATIONS`; a new model input is one name in
`MODEL_FEATURES`. Semantics (docs/design.md "Feature semantics"):

- streaming aggregation over window w: the card's transactions with time in [ts - w, ts], the event
  itself and same-time peers included (`RANGE BETWEEN w PRECEDING AND CURRENT ROW`);
- daily-snapshot aggregation over w: [T - w, T), T = the snapshot cut-off (00:00 UTC); a training row
  at ts uses T = floor_day(ts); a card without transactions there has count 0 and 0 for the others;
- recency (`Recency(nth=k)`): ts minus the time of the card's k-th latest *other* transaction at or
  before ts (0 when enough others share ts), `RECENCY_SENTINEL` when the card has fewer than k;
- ratios: numerator / denominator, 0 when the denominator is 0.
The pure-Python evaluation of these rules (the test oracle, the Flink keyed state, the Lambdas)
lives in features/compute.py; this module holds no computation beyond renderings of the rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property
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

# --- Validity rule (one rule, every path) --------------------------------------
MAX_AMOUNT = 1e9
"""Largest accepted amount (dollars). A card's window sums stay below 2^53 cents, so double sums are
exact to the cent in Spark, Python and Flink alike (the first version let 1e27 overflow Flink's
DECIMAL sum and 1.7e308 turn a ratio infinite)."""
MAX_CARD_ID = 2**63 - 1
"""Card numbers are BIGINT in every engine."""
MAX_EVENT_TIME = 4_102_444_800.0
"""2100-01-01 UTC: a larger event time is a typo or a unit error (ms), never a transaction."""
FUTURE_SKEW_SECONDS = 300
"""Live streams also reject events more than this far ahead of the wall clock (a far-future event
would otherwise advance the watermark and make everything after it late)."""

BOUNDS: dict[str, tuple[float, float]] = {
    CARD_ID: (0, MAX_CARD_ID),
    AMOUNT: (0, MAX_AMOUNT),
    EVENT_TIME: (0, MAX_EVENT_TIME),
}
"""Numeric fields and their inclusive [low, high] range; `cc_num` must also be integral."""
NON_NEGATIVE_FIELDS: tuple[str, ...] = tuple(BOUNDS)


def value_problem(field: str, value: float) -> str | None:
    """Why a required numeric value is invalid, or None: the validity rule in Python."""
    if not math.isfinite(value):
        return f"{field} must be finite, got {value!r}"
    low, high = BOUNDS.get(field, (0, math.inf))
    if value < low:
        return f"{field} must be >= {low:g}, got {value!r}"
    if value > high:
        return f"{field} must be <= {high:g}, got {value!r}"
    if field == CARD_ID and value != int(value):
        return f"{field} must be an integer, got {value!r}"
    return None


def valid_event_sql(quote: str = "`") -> str:
    """The same validity rule as a SQL predicate (Spark SQL and Flink SQL).

    `x >= low AND x <= high` also rejects NaN and infinities in both engines (Flink: every NaN
    comparison is false; Spark: NaN sorts above +Infinity, beyond every finite bound)."""
    required = [f"{quote}{f}{quote} IS NOT NULL" for f in EVENT_FIELDS]
    ranges = [
        f"CAST({quote}{f}{quote} AS DOUBLE) >= {lo!r} AND CAST({quote}{f}{quote} AS DOUBLE) <= {float(hi)!r}"
        for f, (lo, hi) in BOUNDS.items()
    ]
    return "(" + " AND ".join(required + ranges) + ")"


# --- Aggregations ----------------------------------------------------------------
STREAMING = "streaming"
SNAPSHOT = "snapshot"
OPERATIONS: dict[str, str] = {
    "count": "num_trans",
    "sum": "sum_amt",
    "avg": "avg_amt",
    "min": "min_amt",
    "max": "max_amt",
}
"""Operation -> feature-name prefix (`count` counts transactions; the others read `column`)."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SNAPSHOT_PERIOD_SECONDS = 24 * 3600
"""Snapshots are published once a day at 00:00 UTC, so snapshot windows are whole days."""


def window_seconds(window: str) -> int:
    """'10m' -> 600; units s, m, h, d, w."""
    number, unit = window[:-1], window[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"window must be a positive integer with a unit in s/m/h/d/w, got {window!r}")
    return int(number) * _UNITS[unit]


@dataclass(frozen=True)
class Aggregation:
    """A per-card aggregation: `operation` of `column` over `window`, streaming or daily snapshot."""

    operation: str
    window: str
    kind: str
    column: str = AMOUNT

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r} (known: {', '.join(OPERATIONS)})")
        if self.kind not in (STREAMING, SNAPSHOT):
            raise ValueError(f"kind must be {STREAMING!r} or {SNAPSHOT!r}, got {self.kind!r}")
        seconds = window_seconds(self.window)
        if self.kind == SNAPSHOT and seconds % SNAPSHOT_PERIOD_SECONDS:
            raise ValueError(f"a snapshot window must be whole days, got {self.window!r}")

    @cached_property
    def seconds(self) -> int:
        return window_seconds(self.window)

    @cached_property
    def name(self) -> str:
        return f"{OPERATIONS[self.operation]}_last_{self.window}"

    @property
    def feature_type(self) -> str:
        """SageMaker FeatureType."""
        return "Integral" if self.operation == "count" else "Fractional"


@dataclass(frozen=True)
class Recency:
    """Seconds since the card's `nth` latest other transaction at or before the event (ties give 0)."""

    name: str
    nth: int = 1


@dataclass(frozen=True)
class Ratio:
    """`numerator / denominator`, defined as 0 when the denominator is 0."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class FeatureSpec:
    """A whole feature set: aggregations, recency, ratios and the model input order.

    `SPEC` below is the product's; a copy with one more `Aggregation` (`spec.SPEC.with_(...)`) is a
    complete new feature set that every engine accepts (Spark and the Python oracle take it as an
    argument, the Flink job as a JSON file: `to_json` / `from_json`)."""

    aggregations: tuple[Aggregation, ...]
    recency: tuple[Recency, ...]
    ratios: tuple[Ratio, ...]
    model_features: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [a.name for a in self.aggregations] + [r.name for r in self.recency]
        names += [r.name for r in self.ratios]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names declared twice: {dupes}")
        for ratio in self.ratios:
            for ref in (ratio.numerator, ratio.denominator):
                self.kind_of(ref)
        for name in self.model_features:
            self.kind_of(name)
        if len(set(self.model_features)) != len(self.model_features):
            raise ValueError("model_features lists a name twice")
        if any(r.nth < 1 for r in self.recency):
            raise ValueError("Recency.nth must be >= 1")

    def kind_of(self, name: str) -> str:
        """'raw', 'streaming', 'snapshot', 'recency' or 'ratio' for a declared name."""
        if name in (AMOUNT, CARD_ID, EVENT_TIME):
            return "raw"
        for a in self.aggregations:
            if a.name == name:
                return a.kind
        if any(r.name == name for r in self.recency):
            return "recency"
        if any(r.name == name for r in self.ratios):
            return "ratio"
        raise ValueError(f"{name!r} is not declared in the feature specification")

    @cached_property
    def streaming(self) -> tuple[Aggregation, ...]:
        return tuple(a for a in self.aggregations if a.kind == STREAMING)

    @cached_property
    def snapshot(self) -> tuple[Aggregation, ...]:
        return tuple(a for a in self.aggregations if a.kind == SNAPSHOT)

    @cached_property
    def streaming_features(self) -> tuple[str, ...]:
        """What the Flink job adds to each event (and `cc-agg-fg` stores), in this order."""
        return (*(a.name for a in self.streaming), *(r.name for r in self.recency))

    @cached_property
    def snapshot_features(self) -> tuple[str, ...]:
        """What the daily snapshot holds per card (and `cc-agg-batch-fg` stores)."""
        return tuple(a.name for a in self.snapshot)

    @cached_property
    def longest_streaming_seconds(self) -> int:
        """How much of a card's past the streaming path keeps (plus the allowed lateness)."""
        return max((a.seconds for a in self.streaming), default=0)

    @cached_property
    def max_recency_nth(self) -> int:
        """How many earlier events per card recency needs, whatever their age."""
        return max((r.nth for r in self.recency), default=0)

    def feature_type(self, name: str) -> str:
        """SageMaker FeatureType of a declared feature (counts are Integral)."""
        for a in self.aggregations:
            if a.name == name:
                return a.feature_type
        return "Fractional"

    def with_(self, *aggregations: Aggregation, model_features: tuple[str, ...] = ()) -> FeatureSpec:
        """A copy with more aggregations (and, optionally, more model inputs)."""
        return replace(
            self,
            aggregations=(*self.aggregations, *aggregations),
            model_features=(*self.model_features, *model_features),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        d = json.loads(text)
        return cls(
            aggregations=tuple(Aggregation(**a) for a in d["aggregations"]),
            recency=tuple(Recency(**r) for r in d["recency"]),
            ratios=tuple(Ratio(**r) for r in d["ratios"]),
            model_features=tuple(d["model_features"]),
        )


STUDY_FEATURES: tuple[str, ...] = (AMOUNT, "amt_ratio1", "amt_ratio2", "count_ratio")
"""The original study's model input (the ablation baseline in docs/features.md)."""

SPEC = FeatureSpec(
    aggregations=(
        Aggregation("count", "2m", STREAMING),
        Aggregation("count", "10m", STREAMING),
        Aggregation("avg", "10m", STREAMING),
        Aggregation("count", "1h", STREAMING),
        Aggregation("avg", "1h", STREAMING),
        Aggregation("count", "1w", SNAPSHOT),
        Aggregation("avg", "1w", SNAPSHOT),
    ),
    recency=(
        Recency("secs_since_prev_trans", 1),
        Recency("secs_since_prev2_trans", 2),
    ),
    ratios=(
        Ratio("amt_ratio1", "avg_amt_last_10m", "avg_amt_last_1w"),
        Ratio("amt_ratio2", AMOUNT, "avg_amt_last_1w"),
        Ratio("count_ratio", "num_trans_last_10m", "num_trans_last_1w"),
    ),
    model_features=(
        *STUDY_FEATURES,
        "num_trans_last_10m",
        "avg_amt_last_10m",
        "secs_since_prev_trans",
        "secs_since_prev2_trans",
        "num_trans_last_2m",
        "num_trans_last_1h",
        "avg_amt_last_1h",
    ),
)
"""The product's feature set. Chosen by measurement on study-faithful data (docs/features.md)."""

RECENCY_SENTINEL = -1.0
"""Recency of a card with too few earlier transactions: one value, outside every real one (>= 0)."""

# Module-level views of SPEC, for readers that only need the product's feature set.
AGGREGATIONS = SPEC.aggregations
RECENCY = SPEC.recency
RATIOS = SPEC.ratios
MODEL_FEATURES = SPEC.model_features
"""Model input, in this order (training CSV columns after the label; endpoint CSV columns)."""
STREAMING_AGGREGATIONS = SPEC.streaming
SNAPSHOT_AGGREGATIONS = SPEC.snapshot
STREAMING_FEATURES = SPEC.streaming_features
SNAPSHOT_FEATURES = SPEC.snapshot_features

DECISION_THRESHOLD = 0.5
"""Score at or above which a transaction is flagged as fraud (evaluation and serving)."""


# --- Ratios and model input ---------------------------------------------------------
def safe_ratio(numerator: float, denominator: float) -> float:
    """Scalar ratio with the 0-denominator rule (serving path)."""
    return float(numerator) / float(denominator) if denominator != 0 else 0.0


def ratio_sql(ratio: Ratio) -> str:
    """SQL expression of a ratio (Spark SQL and Flink SQL both accept it)."""
    num, den = ratio.numerator, ratio.denominator
    return f"CASE WHEN {den} = 0 THEN CAST(0.0 AS DOUBLE) ELSE CAST({num} AS DOUBLE) / {den} END"


def ratio_features(row: Mapping[str, Any], fs: FeatureSpec = SPEC) -> dict[str, float]:
    """All ratios of one row holding the raw aggregates and the amount."""
    return {r.name: safe_ratio(row[r.numerator], row[r.denominator]) for r in fs.ratios}


def model_input(row: Mapping[str, Any], fs: FeatureSpec = SPEC) -> dict[str, float]:
    """The model input by name, in model order, from aggregates + amount (ratios computed here)."""
    values = {**row, **ratio_features(row, fs)}
    return {name: float(values[name]) for name in fs.model_features}


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

    @property
    def value_names(self) -> tuple[str, ...]:
        """The features proper: everything but the record identifier and the event time."""
        return tuple(n for n in self.feature_names if n not in (self.record_identifier, self.event_time))

    def feature_definitions(self) -> list[dict[str, str]]:
        """`FeatureDefinitions` as the CreateFeatureGroup API and CloudFormation take them."""
        return [{"FeatureName": n, "FeatureType": t} for n, t in self.features]


FEATURE_GROUP_EVENT_TIME = "trans_time"


def feature_group(name: str, values: tuple[str, ...], fs: FeatureSpec = SPEC) -> FeatureGroup:
    """A card-keyed online group of `values`, with the event time last."""
    return FeatureGroup(
        name=name,
        record_identifier=CARD_ID,
        event_time=FEATURE_GROUP_EVENT_TIME,
        features=(
            (CARD_ID, "Integral"),
            *((n, fs.feature_type(n)) for n in values),
            (FEATURE_GROUP_EVENT_TIME, "Fractional"),
        ),
    )


STREAMING_FEATURE_GROUP = feature_group("cc-agg-fg", SPEC.streaming_features)
"""Streaming aggregates and recency of each card's newest on-time event (`ingest_aggregates`);
event time = the transaction's `trans_ts`."""

BATCH_FEATURE_GROUP = feature_group("cc-agg-batch-fg", SPEC.snapshot_features)
"""Daily snapshot per card published by the Spark job; event time = snapshot cut-off T."""

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
