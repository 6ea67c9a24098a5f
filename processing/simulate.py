"""Transaction simulator following the original study's data model, fully vectorised.

Legitimate traffic: cards drawn uniformly, timestamps uniform over [start, end) at second precision,
amounts from the study's five bands. Fraud: attack chains of 3-10 transactions on one card, 30-120 s
apart, each chain starting right after a random legitimate transaction of that card, with amounts
drawn mostly from the high bands (what makes bursts of unusual amounts learnable from the
10-minute/1-week ratios). The generative choices are documented in docs/features.md.

    python processing/simulate.py --rows 5400000 --seed 42 --out work/transactions.parquet
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if __name__ == "__main__" and __package__ is None:  # `python processing/simulate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.spec import TRANSACTION_COLUMNS

FULL_ROWS = 5_400_000
FULL_CARDS = 10_000
DEFAULT_START = "2020-01-01"
DEFAULT_END = "2020-06-01"
FRAUD_RATE = 0.0025
CHAIN_MIN, CHAIN_MAX = 3, 10
GAP_MIN_S, GAP_MAX_S = 30, 120

# (low, high, probability) — the study's bands for legitimate transactions.
AMOUNT_BANDS: tuple[tuple[float, float], ...] = ((0.01, 1), (1, 10), (10, 100), (100, 1_000), (1_000, 10_000))
LEGIT_BAND_P: tuple[float, ...] = (0.05, 0.075, 0.525, 0.25, 0.10)
# Attackers cash out: mostly $100-$10,000, occasionally a small "test" charge.
FRAUD_BAND_P: tuple[float, ...] = (0.02, 0.03, 0.10, 0.35, 0.50)


def default_cards(rows: int) -> int:
    """Cards scale with rows so per-card activity (~540 tx per card) matches the full data set."""
    return max(1, round(rows * FULL_CARDS / FULL_ROWS))


def _epoch(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


def _amounts(rng: np.random.Generator, n: int, band_p: tuple[float, ...]) -> np.ndarray:
    """Amounts in dollars (cents), uniform within a band chosen by `band_p`."""
    bands = np.asarray(AMOUNT_BANDS)
    idx = rng.choice(len(bands), size=n, p=np.asarray(band_p))
    lo, hi = bands[idx, 0], bands[idx, 1]
    return np.maximum(np.round(lo + rng.random(n) * (hi - lo), 2), 0.01)


def _card_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct 16-digit card numbers."""
    cards = np.empty(0, dtype=np.int64)
    while cards.size < n:
        draw = rng.integers(4_000_000_000_000_000, 5_000_000_000_000_000, size=2 * n, dtype=np.int64)
        cards = np.unique(np.concatenate([cards, draw]))
    return rng.permutation(cards)[:n]


def _tids(n: int, seed: int) -> pa.Array:
    """Unique 32-hex-digit ids: an odd multiplier mod 2^64 is a bijection, so ids never collide."""
    i = np.arange(n, dtype=np.uint64)
    key = np.random.default_rng([seed, 7]).integers(0, 2**63, size=2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        lo = (i * np.uint64(0x9E3779B97F4A7C15)) ^ key[0]
        hi = ((i + key[1]) * np.uint64(0xBF58476D1CE4E5B9)) ^ (lo >> np.uint64(29))
    words = np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(n, 16)
    pairs = np.frombuffer(b"".join(b"%02x" % b for b in range(256)), dtype="<u2")  # byte -> 2 hex chars
    hexed = pairs[words]  # (n, 16) uint16 = (n, 32) ASCII bytes
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * 32).tobytes())
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(hexed.tobytes()))


def _chain_lengths(rng: np.random.Generator, n_fraud: int) -> np.ndarray:
    """Chain lengths in [3, 10] summing to about `n_fraud` (a remainder < 3 is left legitimate)."""
    if n_fraud < CHAIN_MIN:
        return np.zeros(0, dtype=np.int64)
    lengths = rng.integers(CHAIN_MIN, CHAIN_MAX + 1, size=n_fraud // CHAIN_MIN + 1)
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, n_fraud))  # first chain reaching the target
    lengths = lengths[: k + 1].copy()
    lengths[k] = n_fraud - (ends[k - 1] if k else 0)
    return lengths if lengths[-1] >= CHAIN_MIN else lengths[:-1]


def simulate_table(
    rows: int = FULL_ROWS,
    seed: int = 42,
    cards: int | None = None,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    fraud_rate: float = FRAUD_RATE,
) -> pa.Table:
    """The transactions as an Arrow table (sorted by time), columns `spec.TRANSACTION_COLUMNS`."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    start_s, end_s = _epoch(start), _epoch(end)
    if end_s - start_s <= 2 * CHAIN_MAX * GAP_MAX_S:
        raise ValueError(f"period {start}..{end} is too short")
    n_cards = cards or default_cards(rows)
    rng = np.random.default_rng(seed)
    card_numbers = _card_numbers(rng, n_cards)

    lengths = _chain_lengths(rng, round(rows * fraud_rate))
    n_fraud = int(lengths.sum())
    n_legit = rows - n_fraud
    if n_legit < max(1, lengths.size):
        raise ValueError("too few rows for the requested fraud rate")

    # Legitimate transactions.
    legit_card = rng.integers(0, n_cards, size=n_legit)
    # Sorted up front: cards and amounts are i.i.d. per row, so sorting only the times is the same
    # distribution as sorting the rows, and much cheaper than an argsort of 5 M rows.
    legit_ts = np.sort(rng.integers(start_s, end_s, size=n_legit))
    legit_amount = _amounts(rng, n_legit, LEGIT_BAND_P)

    # Attack chains: seeded by random legitimate transactions early enough for the chain to fit.
    last_seed = end_s - CHAIN_MAX * GAP_MAX_S
    eligible = np.flatnonzero(legit_ts < last_seed)
    seeds = eligible[rng.choice(eligible.size, size=lengths.size, replace=False)]
    chain = np.repeat(np.arange(lengths.size), lengths)
    gaps = rng.integers(GAP_MIN_S, GAP_MAX_S + 1, size=n_fraud)
    cum = np.cumsum(gaps)
    chain_start = np.cumsum(lengths) - lengths  # index of each chain's first fraud transaction
    offset = cum - np.repeat(cum[chain_start] - gaps[chain_start], lengths)
    fraud_ts = legit_ts[seeds][chain] + offset
    fraud_card = legit_card[seeds][chain]
    fraud_amount = _amounts(rng, n_fraud, FRAUD_BAND_P)

    # Merge the (few) fraud rows into the time-sorted legitimate rows; ties keep legit rows first.
    f_order = np.argsort(fraud_ts, kind="stable")
    at = np.searchsorted(legit_ts, fraud_ts[f_order], side="right")
    ts = np.insert(legit_ts, at, fraud_ts[f_order])
    card = np.insert(legit_card, at, fraud_card[f_order])
    amount = np.insert(legit_amount, at, fraud_amount[f_order])
    label = np.insert(np.zeros(n_legit, np.int32), at, np.ones(n_fraud, np.int32))

    return pa.table(
        {
            "tid": _tids(rows, seed),
            "datetime": pa.array(ts.astype("datetime64[s]"), type=pa.timestamp("s", tz="UTC")),
            "cc_num": pa.array(card_numbers[card], type=pa.int64()),
            "amount": pa.array(amount, type=pa.float64()),
            "fraud_label": pa.array(label, type=pa.int32()),
        }
    ).select(list(TRANSACTION_COLUMNS))


def simulate(
    rows: int = FULL_ROWS,
    seed: int = 42,
    cards: int | None = None,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    fraud_rate: float = FRAUD_RATE,
) -> pd.DataFrame:
    """The transactions as a DataFrame (`datetime` tz-aware UTC, second precision)."""
    return simulate_table(rows, seed, cards, start, end, fraud_rate).to_pandas()


def write_table(table: pa.Table, out: str | Path) -> Path:
    """Parquet or CSV (by suffix). CSV holds `datetime` as 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(
            table, out, compression="snappy", coerce_timestamps="ms", allow_truncated_timestamps=False
        )
    elif out.suffix == ".csv":
        import pyarrow.csv as pcsv

        naive = table["datetime"].cast(pa.timestamp("s"))  # naive UTC prints without a zone suffix
        table = table.set_column(table.schema.get_field_index("datetime"), "datetime", naive)
        with open(out, "wb") as f:  # plain header (pyarrow would quote it)
            f.write((",".join(table.column_names) + "\n").encode())
            pcsv.write_csv(table, f, pcsv.WriteOptions(include_header=False, quoting_style="none"))
    else:
        raise ValueError(f"--out must end with .csv or .parquet, got {out.name!r}")
    return out


def write_transactions(data: pd.DataFrame | pa.Table, out: str | Path) -> Path:
    """Write a simulated (or any) transactions frame as Parquet/CSV, the same way as the CLI."""
    if isinstance(data, pd.DataFrame):
        frame = data[list(TRANSACTION_COLUMNS)].copy()
        dt = pd.to_datetime(frame["datetime"], utc=True)
        frame["datetime"] = dt.dt.as_unit("s") if dt.dt.unit != "s" else dt
        data = pa.Table.from_pandas(frame, preserve_index=False).cast(
            pa.schema(
                [
                    ("tid", pa.string()),
                    ("datetime", pa.timestamp("s", tz="UTC")),
                    ("cc_num", pa.int64()),
                    ("amount", pa.float64()),
                    ("fraud_label", pa.int32()),
                ]
            )
        )
    return write_table(data, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate card transactions (original study's data model).")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="number of transactions (default 5.4 M)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="output file, .parquet or .csv")
    parser.add_argument(
        "--cards", type=int, default=None, help="default: scales with --rows (10,000 at 5.4 M)"
    )
    parser.add_argument("--start", default=DEFAULT_START, help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--end", default=DEFAULT_END, help="end day (exclusive), YYYY-MM-DD (UTC)")
    parser.add_argument("--fraud-rate", type=float, default=FRAUD_RATE)
    args = parser.parse_args(argv)
    try:
        if Path(args.out).suffix not in (".csv", ".parquet"):
            raise ValueError(f"--out must end with .csv or .parquet, got {Path(args.out).name!r}")
        t0 = time.perf_counter()
        print(f"simulating {args.rows:,} transactions (seed {args.seed}) ...", file=sys.stderr, flush=True)
        table = simulate_table(args.rows, args.seed, args.cards, args.start, args.end, args.fraud_rate)
        t1 = time.perf_counter()
        n_fraud = int(pc.sum(table["fraud_label"]).as_py() or 0)
        print(
            f"generated {table.num_rows:,} rows, {pc.count_distinct(table['cc_num']).as_py():,} cards, "
            f"{n_fraud:,} fraud in {t1 - t0:.1f}s; writing {args.out} ...",
            file=sys.stderr,
            flush=True,
        )
        write_table(table, args.out)
        print(f"wrote {args.out} in {time.perf_counter() - t1:.1f}s", file=sys.stderr, flush=True)
    except (ValueError, OSError) as exc:
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
