"""Turn a window of the transactions table into streaming events (JSON lines) for a replay.

The events are what producers put on the `transactions` stream: tid, cc_num, amount, trans_ts
(epoch seconds) and, for evaluation only, fraud_label. Arrival order is event time, optionally
shuffled: each event gets an arrival delay drawn from U(0, shuffle_within_seconds), so with a
shuffle no larger than the Flink watermark no event arrives behind the watermark.

A window that starts mid-stream gets a warm-up, looping over the feature declarations: the
transactions of the longest streaming window (+ the allowed lateness) before `start`, and each
card's last `fs.max_recency_nth` transactions before `start` whatever their age (recency), come
first, flagged `"warmup": true`. The replay runs them through Flink (so the first windows and
recencies of the replayed period hold the same history as the batch job's) but does not decide them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import spec


def _load(df_or_path: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(df_or_path, pd.DataFrame):
        return df_or_path
    p = Path(df_or_path)
    if p.is_dir() or p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p)


def _epoch_seconds(df: pd.DataFrame) -> pd.Series:
    if spec.EVENT_TIME in df.columns:
        return df[spec.EVENT_TIME].astype("float64")
    dt = pd.to_datetime(df["datetime"], utc=True)
    return (dt - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)


def _bound(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    t = pd.Timestamp(value)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).timestamp()


def _rank_from_end(sorted_keys: np.ndarray) -> np.ndarray:
    """Per row of a key-sorted array, how many rows of its key follow it (0 for the key's last):
    `groupby(keys).cumcount(ascending=False)` for contiguous groups, without the groupby."""
    n = len(sorted_keys)
    new_key = sorted_keys[1:] != sorted_keys[:-1]
    ends = np.append(np.flatnonzero(new_key), n - 1)  # last row of each key
    group = np.concatenate(([0], np.cumsum(new_key)))
    return ends[group] - np.arange(n)


def _json_float(x: float) -> str:
    """A float as json.dumps writes it."""
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def _event_lines(out: pd.DataFrame, is_warm: np.ndarray) -> list[str]:
    """`json.dumps(record) + "\\n"` per row (tid, cc_num, amount, trans_ts[, fraud_label][, warmup]),
    written directly: the same text, without a dict and an encoder call per row."""
    string = json.encoder.encode_basestring_ascii  # what json.dumps uses for str (ensure_ascii)
    tids = out["tid"].tolist()
    cards = out[spec.CARD_ID].astype("int64").tolist()
    amounts = [_json_float(float(a)) for a in out[spec.AMOUNT].tolist()]
    times = [_json_float(float(t)) for t in out[spec.EVENT_TIME].tolist()]
    labels = out[spec.LABEL].astype("int64").tolist() if spec.LABEL in out.columns else None
    lines = []
    for i, w in enumerate(is_warm.tolist()):
        line = (
            f'{{"tid": {string(tids[i])}, "{spec.CARD_ID}": {cards[i]}, "{spec.AMOUNT}": {amounts[i]}, '
            f'"{spec.EVENT_TIME}": {times[i]}'
        )
        if labels is not None:
            line += f', "{spec.LABEL}": {labels[i]}'
        lines.append(line + (', "warmup": true}\n' if w else "}\n"))
    return lines


def transactions_to_events(
    df_or_path: pd.DataFrame | str | Path,
    out_path: str | Path,
    start: Any = None,
    end: Any = None,
    shuffle_within_seconds: float = 0,
    seed: int = 0,
    max_events: int | None = None,
    warmup_seconds: float | None = None,
    fs: spec.FeatureSpec = spec.SPEC,
    allowed_lateness_seconds: float = 0,
) -> dict[str, Any]:
    """Write the transactions with start <= time < end as events JSONL; return a small summary.

    `start`/`end`: epoch seconds, or anything pandas reads as a UTC timestamp. `max_events` keeps
    the earliest events of the window (a contiguous stretch of time, so its windows stay whole),
    cut on a timestamp boundary: every event at the last kept time is kept, so the result may hold
    a few more than `max_events` events.
    `warmup_seconds` (default: `fs.longest_streaming_seconds` + `allowed_lateness_seconds` when
    `start` is given, else 0) adds the preceding transactions as `"warmup": true` events (history
    for the windows, not decided by the replay), plus each card's last `fs.max_recency_nth`
    transactions before `start` (history for recency)."""
    df = _load(df_or_path)
    ts = _epoch_seconds(df).to_numpy()
    lo, hi = _bound(start), _bound(end)
    if warmup_seconds is None:
        warmup_seconds = fs.longest_streaming_seconds + allowed_lateness_seconds if lo is not None else 0
    in_window = np.ones(len(df), dtype=bool)
    if lo is not None:
        in_window &= ts >= lo
    if hi is not None:
        in_window &= ts < hi
    warm = np.zeros(len(df), dtype=bool)
    if lo is not None and warmup_seconds > 0:
        warm = (ts >= lo - warmup_seconds) & (ts < lo)
    if lo is not None and fs.max_recency_nth > 0:
        before = np.flatnonzero(ts < lo)
        if len(before):
            cards = df[spec.CARD_ID].to_numpy()[before]
            order = np.lexsort((ts[before], cards))  # by card, then time
            warm[before[order[_rank_from_end(cards[order]) < fs.max_recency_nth]]] = True
    if max_events is not None and in_window.sum() > max_events:
        # Cut on a timestamp boundary: all events at the last kept time stay (a card's same-time
        # peers are in each other's windows; splitting them would change their features).
        idx = np.flatnonzero(in_window)
        in_window = np.zeros(len(df), dtype=bool)
        if max_events > 0:
            last = np.sort(ts[idx])[max_events - 1]
            in_window[idx[ts[idx] <= last]] = True
    mask = in_window | warm
    tids = df["tid"].iloc[np.flatnonzero(mask)].astype(str).to_numpy()  # only the rows written
    out = pd.DataFrame(
        {
            "tid": tids,
            spec.CARD_ID: df[spec.CARD_ID].astype("int64").to_numpy()[mask],
            spec.AMOUNT: df[spec.AMOUNT].astype("float64").to_numpy()[mask],
            spec.EVENT_TIME: ts[mask],
        }
    )
    if spec.LABEL in df.columns:
        out[spec.LABEL] = df[spec.LABEL].astype("int64").to_numpy()[mask]
    is_warm = warm[mask]
    arrival = out[spec.EVENT_TIME].to_numpy().copy()
    if shuffle_within_seconds > 0:
        arrival += np.random.default_rng(seed).uniform(0, shuffle_within_seconds, len(out))
    order = np.lexsort((out["tid"].to_numpy(), arrival))
    out, is_warm = out.iloc[order], is_warm[order]
    p = Path(out_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as f:
        f.writelines(_event_lines(out, is_warm))
    decided = out[spec.EVENT_TIME].to_numpy()[~is_warm]
    return {
        "events": int((~is_warm).sum()),
        "warmup_events": int(is_warm.sum()),
        "path": str(p),
        "start": float(decided.min()) if len(decided) else None,
        "end": float(decided.max()) if len(decided) else None,
    }
