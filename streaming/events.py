"""Turn a window of the transactions table into streaming events (JSON lines) for a replay.

The events are what producers put on the `transactions` stream: tid, cc_num, amount, trans_ts
(epoch seconds) and, for evaluation only, fraud_label. Arrival order is event time, optionally
shuffled: each event gets an arrival delay drawn from U(0, shuffle_within_seconds), so with a
shuffle no larger than the Flink watermark no event arrives behind the watermark.
"""

from __future__ import annotations

import json
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


def transactions_to_events(
    df_or_path: pd.DataFrame | str | Path,
    out_path: str | Path,
    start: Any = None,
    end: Any = None,
    shuffle_within_seconds: float = 0,
    seed: int = 0,
    max_events: int | None = None,
) -> dict[str, Any]:
    """Write the transactions with start <= time < end as events JSONL; return a small summary.

    `start`/`end`: epoch seconds, or anything pandas reads as a UTC timestamp. `max_events` keeps
    the earliest events of the window (a contiguous stretch of time, so its windows stay whole)."""
    df = _load(df_or_path)
    ts = _epoch_seconds(df)
    lo, hi = _bound(start), _bound(end)
    mask = np.ones(len(df), dtype=bool)
    if lo is not None:
        mask &= (ts >= lo).to_numpy()
    if hi is not None:
        mask &= (ts < hi).to_numpy()
    out = pd.DataFrame(
        {
            "tid": df["tid"].astype(str)[mask].to_numpy(),
            spec.CARD_ID: df[spec.CARD_ID].astype("int64")[mask].to_numpy(),
            spec.AMOUNT: df[spec.AMOUNT].astype("float64")[mask].to_numpy(),
            spec.EVENT_TIME: ts[mask].to_numpy(),
        }
    )
    if spec.LABEL in df.columns:
        out[spec.LABEL] = df[spec.LABEL].astype("int64")[mask].to_numpy()
    if max_events is not None and len(out) > max_events:
        first = np.lexsort((out["tid"].to_numpy(), out[spec.EVENT_TIME].to_numpy()))[: max(0, max_events)]
        out = out.iloc[np.sort(first)].reset_index(drop=True)
    arrival = out[spec.EVENT_TIME].to_numpy().copy()
    if shuffle_within_seconds > 0:
        arrival += np.random.default_rng(seed).uniform(0, shuffle_within_seconds, len(out))
    order = np.lexsort((out["tid"].to_numpy(), arrival))
    out = out.iloc[order]
    p = Path(out_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    cols = list(out.columns)
    with p.open("w") as f:
        for row in out.itertuples(index=False, name=None):
            rec = dict(zip(cols, row, strict=True))
            rec[spec.CARD_ID] = int(rec[spec.CARD_ID])
            rec[spec.AMOUNT] = float(rec[spec.AMOUNT])
            rec[spec.EVENT_TIME] = float(rec[spec.EVENT_TIME])
            if spec.LABEL in rec:
                rec[spec.LABEL] = int(rec[spec.LABEL])
            f.write(json.dumps(rec) + "\n")
    return {
        "events": len(out),
        "path": str(p),
        "start": float(out[spec.EVENT_TIME].min()) if len(out) else None,
        "end": float(out[spec.EVENT_TIME].max()) if len(out) else None,
    }
