"""The feature rules of features/spec.py evaluated in plain Python, one card at a time.

The oracle of the tests: Spark's window functions and the Flink job must agree with it to 1e-9
(relative); streaming/keyed.py (the Flink operator's state machine in Python) runs it, and the job's
Java operator (streaming/java/fraud/streaming/CardFeatures.java) follows it step for step. A card's
history is a time-sorted list; each feature is a bisect plus a slice.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from features.spec import RECENCY_SENTINEL, SPEC, Aggregation, FeatureSpec


def _aggregate(op: str, values: Sequence[float]) -> float:
    """One operation over the amounts of a window (a window always holds the event itself)."""
    if op == "count":
        return float(len(values))
    if not values:
        return 0.0
    if op == "sum":
        return float(sum(values))
    if op == "avg":
        return float(sum(values)) / len(values)
    if op == "min":
        return float(min(values))
    if op == "max":
        return float(max(values))
    raise ValueError(f"unknown operation {op!r}")


def _value(agg: Aggregation, values: Sequence[float]) -> float | int:
    v = _aggregate(agg.operation, values)
    return int(v) if agg.operation == "count" else v


@dataclass
class CardHistory:
    """One card's events as parallel time-sorted lists (ties keep arrival order)."""

    times: list[float] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)

    def add(self, ts: float, amount: float) -> None:
        i = bisect.bisect_right(self.times, ts)
        self.times.insert(i, ts)
        self.amounts.insert(i, amount)

    def drop_before(self, ts: float, keep_last: int = 0) -> None:
        """Forget events older than `ts`, but keep at least `keep_last` events (recency needs them)."""
        cut = min(bisect.bisect_left(self.times, ts), max(0, len(self.times) - keep_last))
        if cut > 0:
            del self.times[:cut], self.amounts[:cut]

    def _windows(self, aggregations: tuple[Aggregation, ...], end: float, hi: int) -> dict[str, float | int]:
        """Each aggregation over the events in [end - w, self.times[hi - 1]]."""
        out: dict[str, float | int] = {}
        for agg in aggregations:
            lo = bisect.bisect_left(self.times, end - agg.seconds, 0, hi)
            out[agg.name] = _value(agg, self.amounts[lo:hi])
        return out

    def streaming(self, ts: float, fs: FeatureSpec = SPEC) -> dict[str, float | int]:
        """Streaming aggregates and recency of an event at `ts` already added to the history."""
        hi = bisect.bisect_right(self.times, ts)  # [ts - w, ts]: peers at ts included
        out = self._windows(fs.streaming, ts, hi)
        for rec in fs.recency:
            pos = hi - 1 - rec.nth  # the others at or before ts are [0, hi) less one copy of ts
            out[rec.name] = ts - self.times[pos] if pos >= 0 else RECENCY_SENTINEL
        return out

    def snapshot(self, cutoff: float, fs: FeatureSpec = SPEC) -> dict[str, float | int]:
        """Daily-snapshot aggregates over [cutoff - w, cutoff)."""
        return self._windows(fs.snapshot, cutoff, bisect.bisect_left(self.times, cutoff))


def reference_features(
    rows: Iterable[tuple[int, float, float]], fs: FeatureSpec = SPEC, day: int = 86400
) -> list[dict[str, float | int]]:
    """Brute-force batch features of (card, ts, amount) rows, in input order: streaming values over
    the whole data (every event known), snapshot values at T = floor_day(ts), then the ratios."""
    from features.spec import ratio_features

    rows = list(rows)
    cards: dict[int, CardHistory] = {}
    for card, ts, amount in rows:
        cards.setdefault(card, CardHistory()).add(ts, amount)
    out = []
    for card, ts, amount in rows:
        h = cards[card]
        values: dict[str, float | int] = {"amount": amount, **h.streaming(ts, fs)}
        values.update(h.snapshot((ts // day) * day, fs))
        values.update(ratio_features(values, fs))
        out.append(values)
    return out
