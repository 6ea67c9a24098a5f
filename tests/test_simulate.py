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
    assert df["amount"].dtype == np.float64 and df["amount"].between(0.01, 10_001.01).all()
    assert (df["amount"] * 100).round().sub(df["amount"] * 100).abs().max() < 1e-6  # whole cents
    assert set(df["fraud_label"].unique()) == {0, 1}
    dt = df["datetime"]
    assert str(dt.dt.tz) == "UTC"
    assert (dt.dt.microsecond == 0).all()
    assert dt.min() >= pd.Timestamp("2020-01-01", tz="UTC")
    assert dt.max() < pd.Timestamp("2020-06-01 00:01:00", tz="UTC") + pd.Timedelta(minutes=20)
    assert dt.is_monotonic_increasing


def test_fraud_rate(df):
    n_fraud = int(df["fraud_label"].sum())
    target = int(ROWS * sim.FRAUD_RATE)
    assert target <= n_fraud <= target + 1


# Upper edges of the study's five bands as drawn ([low, high + 1]): how docs/features.md measures the shares.
BAND_EDGES = [0, 2.01, 12.01, 101.01, 1001.01, np.inf]
STUDY_FRAUD_SHARES = [0.175, 0.163, 0.530, 0.117, 0.015]  # measured on the study's own output
STUDY_LEGIT_SHARES = [0.057, 0.080, 0.514, 0.250, 0.100]


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    """The default data set at full scale: the properties below are stated for it."""
    return sim.simulate_table(seed=123).drop_columns(["tid"]).to_pandas()


def _chains(frame: pd.DataFrame) -> pd.DataFrame:
    """Fraud rows with their chain id (per card, consecutive fraud rows <= 120 s apart) and position."""
    fraud = frame[frame["fraud_label"] == 1].assign(
        ts=lambda f: f["datetime"].dt.as_unit("s").astype("int64")
    )
    fraud = fraud.sort_values(["cc_num", "ts"], kind="stable")
    gap = fraud.groupby("cc_num")["ts"].diff()
    chain = (gap.isna() | (gap > sim.GAP_MAX_S)).cumsum()
    return fraud.assign(gap=gap, chain=chain.to_numpy(), pos=fraud.groupby(chain).cumcount().to_numpy())


def test_study_process_properties(full):
    """The study's data model (docs/design.md; the simulator in docs/features.md), with tolerances: fraud count, chains, gaps, amount shares per band."""
    assert len(full) == 5_400_000 and full["cc_num"].nunique() == 10_000
    n_fraud = int(full["fraud_label"].sum())
    assert 13_500 <= n_fraud <= 13_501  # the last chain may be cut short (or add its first member)
    chains = _chains(full)
    lengths = chains.groupby("chain").size()
    # Origin + 1..9 members (a member may be skipped); two chains of one card may touch (rare).
    assert lengths.between(2, sim.CHAIN_MAX).mean() > 0.995
    assert lengths.between(sim.CHAIN_MIN, sim.CHAIN_MAX).mean() > 0.98
    assert lengths.mean() == pytest.approx(6.5, abs=0.2)  # uniform 3..10
    inner = chains.loc[chains["pos"] > 0, "gap"]
    assert inner.between(sim.GAP_MIN_S, sim.GAP_MAX_S).all()
    assert inner.mean() == pytest.approx(75, abs=2)  # uniform 30..120
    fraud_share = pd.cut(full.loc[full["fraud_label"] == 1, "amount"], BAND_EDGES, right=False)
    legit_share = pd.cut(full.loc[full["fraud_label"] == 0, "amount"], BAND_EDGES, right=False)
    got_fraud = fraud_share.value_counts(normalize=True, sort=False).to_numpy()
    got_legit = legit_share.value_counts(normalize=True, sort=False).to_numpy()
    assert np.allclose(got_fraud, STUDY_FRAUD_SHARES, atol=0.015), got_fraud
    assert np.allclose(got_legit, STUDY_LEGIT_SHARES, atol=0.003), got_legit
    # Members never come from the top band; origins keep legitimate-looking amounts (~10 % >= $1000).
    members, origins = chains[chains["pos"] > 0], chains[chains["pos"] == 0]
    assert (members["amount"] >= 1001.01).sum() == 0
    assert (origins["amount"] >= 1000).mean() == pytest.approx(0.10, abs=0.03)
    assert len(origins) / n_fraud == pytest.approx(1 / 6.5, abs=0.02)


def test_amount_quotas_are_exact():
    assert sim.quota_counts(5_400_000).tolist() == [270_000, 405_000, 2_835_000, 1_350_000, 540_000]
    assert sim.quota_counts(7).sum() == 7
    assert sim.member_bands(2).tolist() == [0, 1]
    assert sim.member_bands(9).tolist() == [0, 1, 2, 2, 2, 2, 2, 3, 3]  # ceil quotas, first 9 kept


def test_cashout_profile_is_a_named_option(df):
    cash = sim.simulate(ROWS, seed=7, profile="cashout")
    assert len(cash) == ROWS and cash["fraud_label"].sum() > 0
    fraud = cash.loc[cash["fraud_label"] == 1, "amount"]
    assert (fraud >= 100).mean() > 0.75  # attackers cash out
    with pytest.raises(ValueError, match="fraud profile"):
        sim.simulate(1000, profile="easy")


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
