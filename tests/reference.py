"""Brute-force feature reference, straight from the definitions in features/spec.py.

Deliberately naive (a scan of the card's events per feature, no sorting tricks) so it checks the
optimised paths (Spark windows, features/compute.py's bisects, the Flink keyed state) independently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from features import spec

DAY = 86_400


def _op(operation: str, values: list[float]) -> float:
    if operation == "count":
        return len(values)
    if not values:
        return 0.0
    return {"sum": sum, "min": min, "max": max, "avg": lambda v: sum(v) / len(v)}[operation](values)


def brute_force(
    rows: Iterable[tuple[str, int, float, float]], fs: spec.FeatureSpec = spec.SPEC
) -> tuple[dict[str, dict[str, float]], dict[tuple[int, int], dict[str, float]]]:
    """(features by tid, snapshots by (card, cut-off)) of (tid, card, ts, amount) rows."""
    rows = list(rows)
    by_card: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    for tid, card, ts, amount in rows:
        by_card[int(card)].append((tid, float(ts), float(amount)))

    def snapshot(card: int, cutoff: int) -> dict[str, float]:
        return {
            a.name: _op(a.operation, [x for _, t, x in by_card[card] if cutoff - a.seconds <= t < cutoff])
            for a in fs.snapshot
        }

    feats: dict[str, dict[str, float]] = {}
    for tid, card, ts, amount in rows:
        events = by_card[int(card)]
        row: dict[str, float] = {spec.AMOUNT: float(amount)}
        for a in fs.streaming:
            row[a.name] = _op(a.operation, [x for _, t, x in events if ts - a.seconds <= t <= ts])
        others = sorted((t for other, t, _ in events if other != tid and t <= ts), reverse=True)
        for r in fs.recency:
            row[r.name] = ts - others[r.nth - 1] if len(others) >= r.nth else spec.RECENCY_SENTINEL
        row.update(snapshot(int(card), int(ts) // DAY * DAY))
        row.update(spec.ratio_features(row, fs))
        feats[tid] = row
    times = [ts for _, _, ts, _ in rows]
    first, last = int(min(times)) // DAY, int(max(times)) // DAY
    snaps = {(c, d * DAY): snapshot(c, d * DAY) for c in by_card for d in range(first, last + 2)}
    return feats, snaps


def lone_event_features(amount: float | None, fs: spec.FeatureSpec = spec.SPEC) -> dict[str, float | None]:
    """Streaming features of a card's only event (count 1, every amount aggregate = its amount,
    recency the sentinel); all None for a rejected record (amount None)."""
    if amount is None:
        return dict.fromkeys(fs.streaming_features)
    out: dict[str, float | None] = {a.name: 1 if a.operation == "count" else amount for a in fs.streaming}
    out.update({r.name: spec.RECENCY_SENTINEL for r in fs.recency})
    return out
