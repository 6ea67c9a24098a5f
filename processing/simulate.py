"""Transaction simulator: the original study's generative process, vectorised.

Default profile `study` (DESIGN "Data", docs/features.md): cards drawn uniformly per row,
timestamps uniform over [start, end) at second precision and sorted, amounts by exact band quotas
(each uniform over `[low, high + 1]`, cents, shuffled). Fraud as attack chains: a random unused row
is the chain's *origin* (keeps its time, card and amount, labelled fraud); the following rows by
index are rewritten as its members (origin's card, 30-120 s apart, small quota amounts), until the
fraud target. Profile `cashout` (a named option, never the default) keeps the first version's
variant: chains of new rows after an unlabelled legitimate seed, amounts mostly from the high bands.

    python processing/simulate.py --rows 5400000 --seed 42 --out work/transactions.parquet
"""

from __future__ import annotations

import argparse
import math
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
from shared.cli import ArgumentParser, run
from shared.errors import UserError

FULL_ROWS = 5_400_000
FULL_CARDS = 10_000
DEFAULT_START = "2020-01-01"
DEFAULT_END = "2020-06-01 00:01:00"
FRAUD_RATE = 0.0025
CHAIN_MIN, CHAIN_MAX = 3, 10
GAP_MIN_S, GAP_MAX_S = 30, 120
PROFILES = ("study", "cashout")
DEFAULT_PROFILE = "study"

# The study's bands: (low, high) drawn uniformly over [low, high + 1], with their row shares.
AMOUNT_BANDS: tuple[tuple[float, float], ...] = (
    (0.01, 1.01),
    (1, 11.01),
    (10, 100.01),
    (100, 1_000.01),
    (1_000, 10_000.01),
)
BAND_SHARES: tuple[float, ...] = (0.05, 0.075, 0.525, 0.25, 0.10)
LEGIT_BAND_P = BAND_SHARES
# `cashout` profile: attackers cash out, mostly $100-$10,000, occasionally a small "test" charge.
FRAUD_BAND_P: tuple[float, ...] = (0.02, 0.03, 0.10, 0.35, 0.50)


class SimulationError(UserError, ValueError):
    """Bad simulation parameters or an unwritable output (user error: one line, exit 2)."""


def default_cards(rows: int) -> int:
    """Cards scale with rows so per-card activity (~540 tx per card) matches the full data set."""
    return max(1, round(rows * FULL_CARDS / FULL_ROWS))


def _epoch(moment: str) -> int:
    """Epoch seconds of 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(moment, fmt).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    raise SimulationError(f"time must be YYYY-MM-DD or 'YYYY-MM-DD HH:MM:SS', got {moment!r}")


def _band_draw(rng: np.random.Generator, band: np.ndarray) -> np.ndarray:
    """One amount per band index: uniform over [low, high + 1], rounded to cents (the study's rule)."""
    bands = np.asarray(AMOUNT_BANDS)
    lo, hi = bands[band, 0], bands[band, 1] + 1.0
    return np.round(lo + rng.random(band.size) * (hi - lo), 2)


def quota_counts(n: int) -> np.ndarray:
    """Rows per band by exact quotas (`int(n * share)`), the remainder to the largest fractions."""
    exact = np.asarray(BAND_SHARES) * n
    counts = np.floor(exact).astype(np.int64)
    rest = n - int(counts.sum())
    if rest:
        counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def _quota_amounts(rng: np.random.Generator, n: int) -> np.ndarray:
    """n amounts by band quota, shuffled over the rows."""
    band = np.repeat(np.arange(len(BAND_SHARES)), quota_counts(n))
    return _band_draw(rng, rng.permutation(band))


def member_bands(m: int) -> np.ndarray:
    """Bands of a chain's m member amounts: ceil(m * share) per band in band order, first m kept."""
    per_band = [math.ceil(m * share) for share in BAND_SHARES]
    return np.repeat(np.arange(len(BAND_SHARES)), per_band)[:m]


def _amounts(rng: np.random.Generator, n: int, band_p: tuple[float, ...]) -> np.ndarray:
    """Amounts with bands sampled by probability (`cashout` profile only)."""
    return _band_draw(rng, rng.choice(len(band_p), size=n, p=np.asarray(band_p)))


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


def attack_chains(rng: np.random.Generator, rows: int, target: int) -> list[tuple[int, list[int]]]:
    """The study's chain selection: (origin, members) by row index, until `target` fraud rows.

    Repeatedly an unused random row i and a length L in 3..10; rows i+1 .. i+L-1 not used yet become
    members. A chain counts origin + members; an origin that found no free member stays legitimate.
    Sequential by nature (each chain sees the rows used before it), but only ~2,000 chains at full
    scale, so a plain loop is fast."""
    used = np.zeros(rows, dtype=bool)
    chains: list[tuple[int, list[int]]] = []
    size = 0
    while size < target:
        i = int(rng.integers(0, rows))
        if used[i]:
            continue
        length = int(rng.integers(CHAIN_MIN, CHAIN_MAX + 1))
        members: list[int] = []
        for j in range(i + 1, min(i + length, rows)):
            if used[j]:
                continue
            if size + (len(members) + 1 if members else 0) == target:
                break
            members.append(j)
            used[j] = True
        used[i] = True
        if members:
            chains.append((i, members))
            size += len(members) + 1
    return chains


def _study_rows(
    rng: np.random.Generator, ts: np.ndarray, card: np.ndarray, amount: np.ndarray, target: int
) -> np.ndarray:
    """Rewrite chain members in place (card, time, amount) as the study does; returns the labels."""
    label = np.zeros(ts.size, np.int32)
    chains = attack_chains(rng, ts.size, target)
    if not chains:
        return label
    members = np.concatenate([np.asarray(m, dtype=np.int64) for _, m in chains])
    origins = np.asarray([i for i, _ in chains], dtype=np.int64)
    sizes = np.asarray([len(m) for _, m in chains], dtype=np.int64)
    gaps = rng.integers(GAP_MIN_S, GAP_MAX_S + 1, size=members.size)
    first = np.cumsum(sizes) - sizes
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], sizes)
    base = np.repeat(origins, sizes)
    ts[members] = ts[base] + offset
    card[members] = card[base]
    bands = np.concatenate([rng.permutation(member_bands(int(m))) for m in sizes])
    amount[members] = _band_draw(rng, bands)
    label[origins] = 1
    label[members] = 1
    return label


def _cashout_rows(
    rng: np.random.Generator, ts: np.ndarray, card: np.ndarray, amount: np.ndarray, target: int, end_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`cashout` profile: chains of new rows after an unlabelled legitimate seed, high-band amounts."""
    n = ts.size
    lengths = rng.integers(CHAIN_MIN, CHAIN_MAX + 1, size=target // CHAIN_MIN + 1)
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, target))
    lengths = lengths[: k + 1].copy()
    lengths[k] = target - (ends[k - 1] if k else 0)
    lengths = lengths if lengths[-1] >= CHAIN_MIN else lengths[:-1]
    n_fraud = int(lengths.sum())
    keep = n - n_fraud  # the total stays `rows`: fraud rows replace the tail of the legit draw
    ts, card, amount = ts[:keep], card[:keep], amount[:keep]
    order = np.argsort(ts, kind="stable")
    ts, card, amount = ts[order], card[order], amount[order]
    eligible = np.flatnonzero(ts < end_s - CHAIN_MAX * GAP_MAX_S)
    seeds = eligible[rng.choice(eligible.size, size=lengths.size, replace=False)]
    chain = np.repeat(np.arange(lengths.size), lengths)
    gaps = rng.integers(GAP_MIN_S, GAP_MAX_S + 1, size=n_fraud)
    cum = np.cumsum(gaps)
    first = np.cumsum(lengths) - lengths
    offset = cum - np.repeat(cum[first] - gaps[first], lengths)
    f_ts = ts[seeds][chain] + offset
    label = np.r_[np.zeros(keep, np.int32), np.ones(n_fraud, np.int32)]
    return (
        np.r_[ts, f_ts],
        np.r_[card, card[seeds][chain]],
        np.r_[amount, _amounts(rng, n_fraud, FRAUD_BAND_P)],
        label,
    )


def simulate_table(
    rows: int = FULL_ROWS,
    seed: int = 42,
    cards: int | None = None,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    fraud_rate: float = FRAUD_RATE,
    profile: str = DEFAULT_PROFILE,
) -> pa.Table:
    """The transactions as an Arrow table (sorted by time), columns `spec.TRANSACTION_COLUMNS`."""
    if rows < 1:
        raise SimulationError("rows must be >= 1")
    if profile not in PROFILES:
        raise SimulationError(f"fraud profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if not 0 <= fraud_rate < 1:
        raise SimulationError(f"fraud rate must be in [0, 1), got {fraud_rate}")
    start_s, end_s = _epoch(start), _epoch(end)
    if end_s - start_s <= 2 * CHAIN_MAX * GAP_MAX_S:
        raise SimulationError(f"period {start}..{end} is too short")
    n_cards = cards or default_cards(rows)
    rng = np.random.default_rng(seed)
    card_numbers = _card_numbers(rng, n_cards)
    target = int(rows * fraud_rate)

    ts = np.sort(rng.integers(start_s, end_s, size=rows))
    amount = _quota_amounts(rng, rows)
    card = rng.integers(0, n_cards, size=rows)
    if profile == "study":
        label = _study_rows(rng, ts, card, amount, target)
    else:
        ts, card, amount, label = _cashout_rows(rng, ts, card, amount, target, end_s)
    order = np.argsort(ts, kind="stable")  # members moved up to ~20 min forward: back to time order

    return pa.table(
        {
            "tid": _tids(rows, seed),
            "datetime": pa.array(ts[order].astype("datetime64[s]"), type=pa.timestamp("s", tz="UTC")),
            "cc_num": pa.array(card_numbers[card[order]], type=pa.int64()),
            "amount": pa.array(amount[order], type=pa.float64()),
            "fraud_label": pa.array(label[order], type=pa.int32()),
        }
    ).select(list(TRANSACTION_COLUMNS))


def simulate(
    rows: int = FULL_ROWS,
    seed: int = 42,
    cards: int | None = None,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    fraud_rate: float = FRAUD_RATE,
    profile: str = DEFAULT_PROFILE,
) -> pd.DataFrame:
    """The transactions as a DataFrame (`datetime` tz-aware UTC, second precision)."""
    return simulate_table(rows, seed, cards, start, end, fraud_rate, profile).to_pandas()


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
        raise SimulationError(f"--out must end with .csv or .parquet, got {out.name!r}")
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
    parser = ArgumentParser(description="Simulate card transactions (original study's data model).")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="number of transactions (default 5.4 M)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="output file, .parquet or .csv")
    parser.add_argument(
        "--cards", type=int, default=None, help="default: scales with --rows (10,000 at 5.4 M)"
    )
    parser.add_argument("--start", default=DEFAULT_START, help="start, YYYY-MM-DD[ HH:MM:SS] (UTC)")
    parser.add_argument("--end", default=DEFAULT_END, help="end (exclusive), YYYY-MM-DD[ HH:MM:SS] (UTC)")
    parser.add_argument("--fraud-rate", type=float, default=FRAUD_RATE)
    parser.add_argument(
        "--fraud-profile",
        choices=PROFILES,
        default=DEFAULT_PROFILE,
        help="study: the original study's process (default); cashout: high-amount chains (easier)",
    )
    args = parser.parse_args(argv)
    return run(lambda: _simulate_to_file(args), "simulate")


def _simulate_to_file(args: argparse.Namespace) -> int:
    try:
        if Path(args.out).suffix not in (".csv", ".parquet"):
            raise SimulationError(f"--out must end with .csv or .parquet, got {Path(args.out).name!r}")
        t0 = time.perf_counter()
        print(f"simulating {args.rows:,} transactions (seed {args.seed}) ...", file=sys.stderr, flush=True)
        table = simulate_table(
            args.rows, args.seed, args.cards, args.start, args.end, args.fraud_rate, args.fraud_profile
        )
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
    except OSError as exc:
        raise SimulationError(str(exc)) from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
