"""Simulator: determinism, size, fraud rate, attack-chain structure, columns and files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.spec import TRANSACTION_COLUMNS
from processing import simulate as sim

ROWS = 300_000


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return sim.simulate(ROWS, seed=7)


def test_deterministic_under_seed(df):
    again = sim.simulate(ROWS, seed=7)
    pd.testing.assert_frame_equal(df, again)
    other = sim.simulate(ROWS, seed=8)
    assert not df["amount"].equals(other["amount"])
    assert not df["tid"].equals(other["tid"])


def test_size_cards_and_columns(df):
    assert len(df) == ROWS
    assert tuple(df.columns) == TRANSACTION_COLUMNS
    assert df["cc_num"].nunique() == sim.default_cards(ROWS) == round(ROWS * 10_000 / 5_400_000)
    assert sim.default_cards(1) == 1 and sim.default_cards(5_400_000) == 10_000
    assert df["tid"].is_unique and df["tid"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert df["cc_num"].dtype == np.int64
    assert df["cc_num"].between(10**15, 10**16 - 1).all()
    assert df["amount"].dtype == np.float64 and df["amount"].between(0.01, 10_000).all()
    assert (df["amount"] * 100).round().sub(df["amount"] * 100).abs().max() < 1e-6  # whole cents
    assert set(df["fraud_label"].unique()) == {0, 1}
    dt = df["datetime"]
    assert str(dt.dt.tz) == "UTC"
    assert (dt.dt.microsecond == 0).all()
    assert dt.min() >= pd.Timestamp("2020-01-01", tz="UTC") and dt.max() < pd.Timestamp(
        "2020-06-01", tz="UTC"
    )
    assert dt.is_monotonic_increasing


def test_fraud_rate(df):
    n_fraud = int(df["fraud_label"].sum())
    target = round(ROWS * sim.FRAUD_RATE)
    assert target - sim.CHAIN_MIN < n_fraud <= target


def test_legit_amount_bands_follow_the_study(df):
    legit = df.loc[df["fraud_label"] == 0, "amount"]
    edges = [0, 1, 10, 100, 1_000, 10_001]
    share = pd.cut(legit, edges, right=False).value_counts(normalize=True, sort=False).to_numpy()
    assert np.allclose(share, sim.LEGIT_BAND_P, atol=0.005)
    fraud = df.loc[df["fraud_label"] == 1, "amount"]
    assert (fraud >= 100).mean() > 0.75  # attackers cash out


def test_attack_chains(df):
    ts = df["datetime"].dt.as_unit("s").astype("int64")
    frame = df.assign(ts=ts)
    fraud = frame[frame["fraud_label"] == 1].sort_values(["cc_num", "ts"])
    gap = fraud.groupby("cc_num")["ts"].diff()
    new_chain = gap.isna() | (gap > sim.GAP_MAX_S)
    chain_id = new_chain.cumsum()
    lengths = fraud.groupby(chain_id).size()
    assert lengths.between(sim.CHAIN_MIN, sim.CHAIN_MAX).all()
    assert set(lengths.unique()) >= {3, 10}
    inner = gap[~new_chain]
    assert inner.between(sim.GAP_MIN_S, sim.GAP_MAX_S).all()
    # Each chain starts 30-120 s after a legitimate transaction of the same card.
    legit = frame[frame["fraud_label"] == 0]
    firsts = fraud[new_chain.to_numpy()]
    for cc, t0 in zip(firsts["cc_num"].head(200), firsts["ts"].head(200), strict=True):
        before = legit[(legit["cc_num"] == cc) & (legit["ts"] < t0) & (legit["ts"] >= t0 - sim.GAP_MAX_S)]
        assert ((t0 - before["ts"]) >= sim.GAP_MIN_S).any()


def test_small_runs_and_errors():
    tiny = sim.simulate(10, seed=1)
    assert len(tiny) == 10 and tiny["fraud_label"].sum() == 0 and tiny["cc_num"].nunique() == 1
    custom = sim.simulate(5_000, seed=1, cards=3, start="2021-02-01", end="2021-02-10")
    assert custom["cc_num"].nunique() == 3
    assert custom["datetime"].min() >= pd.Timestamp("2021-02-01", tz="UTC")
    with pytest.raises(ValueError):
        sim.simulate(0)


def test_cli_writes_csv_and_parquet(tmp_path):
    csv_path, pq_path = tmp_path / "t.csv", tmp_path / "t.parquet"
    for path in (csv_path, pq_path):
        run = subprocess.run(
            [sys.executable, "processing/simulate.py", "--rows", "20000", "--seed", "3", "--out", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert "20,000" in run.stderr
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(TRANSACTION_COLUMNS)
    assert len(lines) == 20_001
    tid, dt, cc, _amount, label = lines[1].split(",")
    assert len(tid) == 32 and len(cc) == 16 and label in ("0", "1")
    assert pd.Timestamp(dt).strftime("%Y-%m-%d %H:%M:%S") == dt
    expected = sim.simulate(20_000, seed=3)
    from_csv = pd.read_csv(csv_path)
    assert from_csv["tid"].tolist() == expected["tid"].tolist()
    assert np.array_equal(from_csv["amount"].to_numpy(), expected["amount"].to_numpy())
    from_pq = pq.read_table(pq_path).to_pandas()
    assert from_pq["tid"].tolist() == expected["tid"].tolist()
    assert (from_pq["datetime"].dt.as_unit("s") == expected["datetime"].dt.as_unit("s")).all()


def test_cli_rejects_bad_output_suffix(tmp_path):
    run = subprocess.run(
        [sys.executable, "processing/simulate.py", "--rows", "10", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and ".csv or .parquet" in run.stderr
