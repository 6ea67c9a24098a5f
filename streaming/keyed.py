"""Per-card keyed state of the Flink job: its settings, and its rules in plain Python (the oracle).

The job (streaming/job.py) runs the Java port of `CardState`, `fraud.streaming.CardFeatures`
(streaming/java), a `KeyedProcessFunction` keyed by `cc_num`: a Python operator cost ~120 us of
CPU per event at PyFlink's boundary (docs/streaming.md). This module is the executable
specification of that operator, run by tests/test_streaming_sql.py; its rules are
`features.compute.CardHistory` (the batch oracle), which the Java code follows step for step.
`Settings` and the constants here are what the job hands to the operator (`job.operator_config`).

What a card's state holds: a `ValueState` `history` (its events (time, amount) for the longest
streaming window + the allowed lateness behind the watermark, always at least the last
`fs.max_recency_nth` events whatever their age), a `ValueState` `cleanup_at` (the armed clean-up
timer) and, in `on-watermark` mode, a `ListState` of the on-time events still waiting for the
watermark (one append per arriving event: the history is not rewritten on arrival).

An event is classified on arrival against the operator's current watermark `wm` (ms):
- on time (`ts > wm`): in `on-watermark` mode it waits until the watermark passes its time (an
  event-time timer), then its features are exact: every event of the card at or before its time
  has arrived (the watermark's promise), and every late event that arrived before has been
  inserted. In `on-arrival` mode it is emitted at once over what has arrived (exact whenever the
  card's events arrive in time order, which Kinesis keeps with `cc_num` as partition key);
- late (`wm - allowed_lateness < ts <= wm`): emitted at once with features from every event of the
  card in state within its window (the state still holds all of them: retention covers the window
  + the lateness), flagged `late`, and inserted into the state, so every window emitted after its
  arrival counts it;
- beyond the allowed lateness (`ts <= wm - allowed_lateness`): emitted at once, flagged `late` and
  `beyond_lateness`, features from what the state still retains (older events may have been
  dropped), inserted like a late event (it stays until the next clean-up).
Every valid event is emitted exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from features import spec
from features.compute import CardHistory

EMIT_ON_WATERMARK = "on-watermark"
EMIT_ON_ARRIVAL = "on-arrival"
EMIT_MODES = (EMIT_ON_WATERMARK, EMIT_ON_ARRIVAL)

DEFAULT_ALLOWED_LATENESS_SECONDS = 3600
"""How far behind the watermark an event still gets complete features (Managed Flink property
`allowed.lateness.seconds`)."""

LATE = "late"
"""Output flag: the event was behind the watermark when it arrived (features not from a closed window)."""
BEYOND_LATENESS = "beyond_lateness"
"""Output flag: the event was more than the allowed lateness behind the watermark (features from
what the state still retained; also `late`)."""
LATENESS_FLAGS: tuple[str, ...] = (LATE, BEYOND_LATENESS)

CLEANUP_ROUND_MS = 60_000
"""Clean-up timers are rounded up to the minute: at most one per card per minute."""


@dataclass(frozen=True)
class Settings:
    fs: spec.FeatureSpec = spec.SPEC
    allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_SECONDS * 1000
    emit: str = EMIT_ON_WATERMARK

    def __post_init__(self) -> None:
        if self.emit not in EMIT_MODES:
            raise ValueError(f"emit mode must be one of {', '.join(EMIT_MODES)}, got {self.emit!r}")
        if self.allowed_lateness_ms < 0:
            raise ValueError(f"allowed lateness must be >= 0, got {self.allowed_lateness_ms} ms")

        # Derived once (the hot path reads them per event).
        object.__setattr__(self, "compiled", CompiledSpec(self.fs))
        object.__setattr__(
            self, "retention_ms", self.fs.longest_streaming_seconds * 1000 + self.allowed_lateness_ms
        )
        object.__setattr__(self, "keep_last", self.fs.max_recency_nth)

    compiled: CompiledSpec = field(init=False, repr=False, compare=False)
    retention_ms: int = field(init=False, compare=False)
    """How long an event stays in its card's state behind the watermark."""
    keep_last: int = field(init=False, compare=False)
    """Events kept whatever their age (recency needs them)."""


@dataclass(frozen=True)
class _Agg:
    name: str
    operation: str
    seconds: int


class CompiledSpec:
    """The two views of a FeatureSpec that `CardHistory.streaming` reads (`streaming`, `recency`),
    computed once: FeatureSpec derives them (and parses each window length) on every access, which
    was most of the per-event cost in the job's hot path. Same rules, same code (features/compute.py)."""

    __slots__ = ("recency", "streaming", "streaming_features")

    def __init__(self, fs: spec.FeatureSpec) -> None:
        self.streaming = tuple(_Agg(a.name, a.operation, a.seconds) for a in fs.streaming)
        self.recency = tuple(fs.recency)
        self.streaming_features = tuple(fs.streaming_features)


Row = Sequence[Any]
"""An input row: the event's fields in `streaming.sql.INPUT_COLUMNS` order."""


class CardState:
    """One card's state and the job's rules for it (what the Java operator keeps in Flink state:
    `history` = (times, amounts), `pending`, `cleanup_at`, `timer_at`).

    `row_ts(row)` and `row_amount(row)` read the event time (seconds) and amount of a row; the
    outputs are `row + features (fs.streaming_features order) + (late, beyond_lateness)`."""

    __slots__ = ("cleanup_at", "compiled", "history", "pending", "settings", "timer_at")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.compiled = settings.compiled
        self.timer_at: int | None = None
        """Earliest emission timer registered and not fired yet (the Java operator keeps it in a
        `ValueState` `timer_at`)."""
        self.history = CardHistory()
        self.pending: list[tuple[int, tuple]] = []
        self.cleanup_at: int | None = None

    def emission_timer(self, ts_ms: int) -> int | None:
        """After an on-time event at `ts_ms` became pending: the timer to register, or None when an
        earlier registered timer will release it (the timer releases everything the watermark
        has passed, not only its own time, so one timer per card and watermark step suffices)."""
        if self.timer_at is not None and self.timer_at <= ts_ms:
            return None
        self.timer_at = ts_ms
        return ts_ms

    def cleanup_timer(self, ts_ms: int) -> int | None:
        """The clean-up timer to register after an event at `ts_ms`, if the card has none pending
        (one per card at a time: the timer re-arms itself while the card holds old events)."""
        if self.cleanup_at is not None:
            return None
        self.cleanup_at = cleanup_timer_ms(ts_ms, self.settings)
        return self.cleanup_at

    def tidy(self, watermark_ms: int) -> int | None:
        """After the card changed (the job calls it after emitting): forget events older than the
        retention behind the watermark now, as the clean-up timer would (keeping the last
        `keep_last`), and return a clean-up timer only when the card still holds more than
        `keep_last` events and none is armed: one timer for the whole excess, when its newest event
        leaves the retention (a card that is touched again is tidied then, without a timer)."""
        s = self.settings
        self.history.drop_before((watermark_ms - s.retention_ms) / 1000.0, keep_last=s.keep_last)
        times = self.history.times
        if self.cleanup_at is not None or len(times) <= s.keep_last:
            return None
        self.cleanup_at = cleanup_timer_ms(math.ceil(times[-s.keep_last - 1] * 1000), s)
        return self.cleanup_at

    def _features(self, ts: float) -> tuple:
        values = self.history.streaming(ts, self.compiled)  # type: ignore[arg-type]
        return tuple(values[name] for name in self.compiled.streaming_features)

    def on_event(
        self, row: tuple, ts: float, amount: float, ts_ms: int, watermark_ms: int
    ) -> tuple[list[tuple], int | None]:
        """Handle one arriving event: (rows to emit now, event-time timer to register or None)."""
        s = self.settings
        if ts_ms > watermark_ms:  # on time
            if s.emit == EMIT_ON_ARRIVAL:
                self.history.add(ts, amount)
                return [(*row, *self._features(ts), False, False)], None
            self.pending.append((ts_ms, row))
            return [], ts_ms
        beyond = ts_ms <= watermark_ms - s.allowed_lateness_ms
        self.history.add(ts, amount)
        return [(*row, *self._features(ts), True, beyond)], None

    def on_watermark(self, timer_ms: int, ts_of, amount_of) -> list[tuple]:
        """The watermark reached `timer_ms`: emit every pending event at or before it, exactly.

        The job passes the operator's current watermark (>= the timer's time): every event due
        then is complete (each event of the card at or before its time has arrived)."""
        if self.timer_at is not None and self.timer_at <= timer_ms:
            self.timer_at = None
        due = [(t, r) for t, r in self.pending if t <= timer_ms]
        if not due:
            return []
        self.pending = [(t, r) for t, r in self.pending if t > timer_ms]
        for _, r in due:  # peers first: every due event is in every due window
            self.history.add(ts_of(r), amount_of(r))
        return [(*r, *self._features(ts_of(r)), False, False) for _, r in due]

    def next_emission_timer(self) -> int | None:
        """After `on_watermark`: the timer covering the events still pending, if none is armed."""
        if not self.pending or self.timer_at is not None:
            return None
        self.timer_at = min(t for t, _ in self.pending)
        return self.timer_at

    def clean_up(self, timer_ms: int, watermark_ms: int) -> int | None:
        """At a timer: forget events older than the retention behind the watermark (keeping the
        last `keep_last`); returns the next clean-up timer when older events remain to drop."""
        if self.cleanup_at is None or timer_ms < self.cleanup_at:
            return None
        cut = (watermark_ms - self.settings.retention_ms) / 1000.0
        self.history.drop_before(cut, keep_last=self.settings.keep_last)
        self.cleanup_at = None
        times = self.history.times
        if len(times) > self.settings.keep_last:
            # drop_before left either only the last `keep_last` or events at/after the cut: the
            # whole excess is droppable when its newest event leaves the retention (> now).
            self.cleanup_at = cleanup_timer_ms(
                math.ceil(times[-self.settings.keep_last - 1] * 1000), self.settings
            )
        return self.cleanup_at

    def is_empty(self) -> bool:
        return not self.history.times and not self.pending and self.cleanup_at is None


def event_time_ms(ts: float) -> int:
    """An event's time in ms, as the source's `rowtime` has it (streaming/sql.py:
    `CAST(ROUND(trans_ts * 1000) AS BIGINT)`: the same double product, rounded half up as Flink
    rounds a DOUBLE, on its decimal form, which is on the same side of k + 0.5 as the double
    itself; `x - floor(x)` is exact, so no second rounding)."""
    x = ts * 1000.0
    k = math.floor(x)
    return k + 1 if x - k >= 0.5 else k


def cleanup_timer_ms(ts_ms: int, settings: Settings) -> int:
    """When an event at `ts_ms` may leave the state: its time + retention, rounded up to the minute."""
    t = ts_ms + settings.retention_ms + 1
    return -(-t // CLEANUP_ROUND_MS) * CLEANUP_ROUND_MS


def replay_in_order(
    events: Sequence[tuple[tuple, float, float, int]], settings: Settings, watermarks: Sequence[int]
) -> Iterator[tuple]:
    """Drive one card's `CardState` like Flink would (for tests in the main venv): `events[i]` =
    (row, ts, amount, ts_ms) arriving when the watermark is `watermarks[i]`; pending events are
    released when a later watermark passes them, the rest at the end (final watermark)."""
    state = CardState(settings)
    for (row, ts, amount, ts_ms), wm in zip(events, watermarks, strict=True):
        for t in sorted({t for t, _ in state.pending if t <= wm}):
            yield from state.on_watermark(t, lambda r: r[3], lambda r: r[2])
        out, _ = state.on_event(row, ts, amount, ts_ms, wm)
        yield from out
    for t in sorted({t for t, _ in state.pending}):
        yield from state.on_watermark(t, lambda r: r[3], lambda r: r[2])
