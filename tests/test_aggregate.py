"""Spark job: features vs a brute-force reference, splits, layouts, errors, ingestion."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import spec
from pipeline.local.feature_store import LocalFeatureStoreRuntime
from processing import aggregate
from tests.reference import brute_force

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

DAY = 86_400
W10 = 600
W1W = 7 * DAY
START = int(datetime(2020, 3, 1, tzinfo=UTC).timestamp())
N_DAYS = 30


# Rows every path rejects (spec.valid_event_sql, plus the batch-only label rule), on a busy card and
# inside the training days: if one slipped through, card a's windows would differ from the reference.
_CARD_A, _WHEN = "4000000000000000", "2020-03-12 01:00:00"
_RANGE = "out-of-range or non-finite cc_num/amount/trans_ts"
INVALID_ROWS = [
    ("bad-row,not-a-date,4000000000000000,1.0,0", "trans_ts (from datetime) missing or unparsable"),
    (f",{_WHEN},{_CARD_A},10.0,0", "tid missing or unparsable"),
    (f"inv-nocard,{_WHEN},,10.0,0", "cc_num missing or unparsable"),
    (f"inv-noamount,{_WHEN},{_CARD_A},,0", "amount missing or unparsable"),
    (f"inv-neg-amount,{_WHEN},{_CARD_A},-5.0,0", _RANGE),
    (f"inv-nan-amount,{_WHEN},{_CARD_A},NaN,0", _RANGE),
    (f"inv-inf-amount,{_WHEN},{_CARD_A},Infinity,1", _RANGE),
    (f"inv-neg-card,{_WHEN},-{_CARD_A},10.0,0", _RANGE),
    (f"inv-1969,1969-12-31 23:59:59,{_CARD_A},10.0,0", _RANGE),
    (f"inv-huge-amount,{_WHEN},{_CARD_A},1e27,0", _RANGE),
    (f"inv-2100,2100-01-01 00:00:01,{_CARD_A},10.0,0", _RANGE),
    (f"inv-card-fraction,{_WHEN},{_CARD_A}.5,10.0,0", "cc_num missing or unparsable"),
    (f"inv-label-2,{_WHEN},{_CARD_A},10.0,2", "fraud_label not 0 or 1"),
    (f"inv-label-half,{_WHEN},{_CARD_A},10.0,0.5", "fraud_label not 0 or 1"),
    (f"inv-label-none,{_WHEN},{_CARD_A},10.0,", "fraud_label missing or unparsable"),
]


def make_transactions(seed: int = 11) -> pd.DataFrame:
    """Random traffic plus hand-made edge cases (ties, bursts, 600 s and 7-day boundaries)."""
    rng = np.random.default_rng(seed)
    cards = [4000000000000000 + i for i in range(6)]
    rows: list[tuple[int, int, float]] = []
    for _ in range(1200):
        rows.append((int(rng.choice(cards[:5])), START + int(rng.integers(0, N_DAYS * DAY)), 0.0))
    a, b = cards[0], cards[1]
    t = START + 10 * DAY + 5000
    rows += [(a, t, 0), (a, t + W10, 0), (a, t + W10 + 1, 0)]  # exactly 600 s apart, then 601
    rows += [(a, t + 2 * DAY, 0)] * 3  # same-second ties
    rows += [(b, t + 100 + 20 * k, 0) for k in range(8)]  # burst
    cut = START + 20 * DAY  # a cut-off: midnight
    rows += [(b, cut - W1W, 0), (b, cut, 0), (b, cut - 1, 0)]  # exactly 7 days before, at, just before
    rows += [(cards[5], START + 25 * DAY + 77, 0), (cards[5], START + 25 * DAY + 99, 0)]  # card w/o history
    df = pd.DataFrame(rows, columns=["cc_num", "ts", "_"])
    df["amount"] = np.round(rng.uniform(0.01, 2000, len(df)), 2)
    df["fraud_label"] = (rng.random(len(df)) < 0.05).astype(int)
    df["tid"] = [f"t{i:06d}" for i in range(len(df))]
    df["datetime"] = pd.to_datetime(df["ts"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


def reference(df: pd.DataFrame, fs: spec.FeatureSpec = spec.SPEC):
    """Brute force (tests/reference.py): features by tid, snapshots by (card, cut-off)."""
    rows = zip(df["tid"], df["cc_num"], df["ts"], df["amount"], strict=True)
    return brute_force(rows, fs)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return make_transactions()


@pytest.fixture(scope="module")
def run(spark, data, tmp_path_factory):
    """One local run on CSV input with ingestion into the local store (default cut-off)."""
    base = tmp_path_factory.mktemp("agg")
    data[list(spec.TRANSACTION_COLUMNS)].to_csv(base / "tx.csv", index=False)
    with (base / "tx.csv").open("a") as fh:  # invalid rows: dropped and counted, not fatal
        fh.writelines(f"{row}\n" for row, _ in INVALID_ROWS)
    db = base / "fs.db"
    argv = [
        "--input", str(base / "tx.csv"), "--output", str(base / "out"), "--local",
        "--history-days", "3", "--validation-days", "5", "--test-days", "4",
        "--feature-store", "local", "--feature-store-db", str(db), "--ingest-workers", "3",
    ]  # fmt: skip
    progress = io.StringIO()
    with contextlib.redirect_stderr(progress):
        summary = aggregate.main(argv)
    (base / "progress.log").write_text(progress.getvalue())
    return base / "out", summary, db


def read_parquet_dir(path) -> pd.DataFrame:
    files = sorted(glob.glob(f"{path}/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_features_equal_brute_force_reference(run, data):
    out, _, _ = run
    feats, _ = reference(data)
    got = pd.concat([read_parquet_dir(out / "parquet" / s) for s in aggregate.SPLITS], ignore_index=True)
    assert list(got.columns) == list(aggregate.parquet_columns())
    train_start = START // DAY * DAY + 3 * DAY
    expected_tids = set(data.loc[data["ts"] >= train_start, "tid"])
    assert set(got["tid"]) == expected_tids and got["tid"].is_unique
    names = [*spec.STREAMING_FEATURES, *spec.SNAPSHOT_FEATURES, *(r.name for r in spec.RATIOS), "amount"]
    for row in got.itertuples(index=False):
        exp = feats[row.tid]
        for name in names:
            assert getattr(row, name) == pytest.approx(exp[name], rel=1e-12, abs=1e-12), (row.tid, name)
    src = data.set_index("tid").loc[got["tid"]]
    assert np.array_equal(got["trans_ts"].to_numpy(), src["ts"].to_numpy(dtype=float))
    assert np.array_equal(got["fraud_label"].to_numpy(), src["fraud_label"].to_numpy())
    assert (got["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy() == src["datetime"].to_numpy()).all()


def test_edge_cases_explicitly(run, data):
    """The hand-made cases, spelled out, so a semantic slip shows up by name."""
    out, _, _ = run
    got = pd.concat([read_parquet_dir(out / "parquet" / s) for s in aggregate.SPLITS]).set_index("tid")
    feats, _ = reference(data)
    a = 4000000000000000
    t = START + 10 * DAY + 5000
    mine = data[(data["cc_num"] == a) & data["ts"].isin([t, t + W10, t + W10 + 1])].set_index("ts")
    # A transaction exactly 600 s earlier is inside the window, 601 s earlier is not.
    at600 = got.loc[mine.loc[t + W10, "tid"], "num_trans_last_10m"]
    at601 = got.loc[mine.loc[t + W10 + 1, "tid"], "num_trans_last_10m"]
    assert at600 - feats[mine.loc[t + W10, "tid"]]["num_trans_last_10m"] == 0
    assert at601 == at600  # loses t, gains t+600 itself
    ties = data[(data["cc_num"] == a) & (data["ts"] == t + 2 * DAY)]["tid"]
    assert got.loc[ties, "num_trans_last_10m"].nunique() == 1  # peers see each other
    assert (got.loc[ties, "num_trans_last_10m"] >= 3).all()
    new_card = data[data["cc_num"] == 4000000000000005]["tid"]
    row = got.loc[new_card]
    assert (row["num_trans_last_1w"] == 0).all() and (row["avg_amt_last_1w"] == 0).all()
    assert (row[["amt_ratio1", "amt_ratio2", "count_ratio"]] == 0).all().all()


def test_snapshot_table_every_cutoff(run, data):
    out, _summary, _ = run
    _, snaps = reference(data)
    got = read_parquet_dir(out / "snapshots")
    assert list(got.columns) == ["cc_num", "cutoff", *spec.SNAPSHOT_FEATURES]
    assert len(got) == len(snaps) == 6 * (N_DAYS + 1)  # dense grid: every card, first day .. day after last
    for row in got.itertuples(index=False):
        want = snaps[(row.cc_num, row.cutoff)]
        for name in spec.SNAPSHOT_FEATURES:
            assert getattr(row, name) == pytest.approx(want[name], rel=1e-12, abs=1e-12)
    b, cut = 4000000000000001, START + 20 * DAY
    at_cut = got[(got["cc_num"] == b) & (got["cutoff"] == cut)].iloc[0]
    expected = snaps[(b, cut)]["num_trans_last_1w"]
    assert at_cut["num_trans_last_1w"] == expected  # includes cut - 7 d, excludes cut itself


def test_time_based_splits(run, data):
    out, summary, _ = run
    day0 = START // DAY
    end = day0 + N_DAYS
    assert summary["splits"] == {
        "train_start": aggregate._day_str(day0 + 3),
        "validation_start": aggregate._day_str(end - 9),
        "test_start": aggregate._day_str(end - 4),
        "end": aggregate._day_str(end),
    }
    for name, lo, hi in (
        ("train", day0 + 3, end - 9),
        ("validation", end - 9, end - 4),
        ("test", end - 4, end),
    ):
        part = read_parquet_dir(out / "parquet" / name)
        days = part["trans_ts"] // DAY
        assert days.between(lo, hi - 1).all(), name
        expected = int(((data["ts"] // DAY >= lo) & (data["ts"] // DAY < hi)).sum())
        assert len(part) == expected == summary["rows_out"][name]
    assert summary["rows_in"] == len(data) and summary["rows_invalid_dropped"] == len(INVALID_ROWS)
    assert summary["rows_history_dropped"] == int((data["ts"] // DAY < day0 + 3).sum())
    assert summary["cards"] == 6
    assert json.loads((out / "summary.json").read_text()) == summary
    assert set(summary["timings_s"]) >= {
        "read",
        "features_parquet",
        "training_csv",
        "snapshots",
        "ingest",
        "total",
    }


def test_invalid_rows_dropped_counted_and_explained(run, data):
    out, summary, _ = run
    expected: dict[str, int] = defaultdict(int)
    for _, reason in INVALID_ROWS:
        expected[reason] += 1
    assert summary["rows_invalid_dropped"] == len(INVALID_ROWS)
    assert summary["rows_invalid_reasons"] == dict(expected)
    got = pd.concat([read_parquet_dir(out / "parquet" / s) for s in aggregate.SPLITS], ignore_index=True)
    assert not got["tid"].isna().any() and not got["tid"].str.startswith("inv-").any()
    assert (got["amount"] >= 0).all() and np.isfinite(got["amount"]).all()
    assert summary["first_day"] == aggregate._day_str(START // DAY)  # the 1969 row did not widen the grid
    progress = (out.parent / "progress.log").read_text()
    line = next(ln for ln in progress.splitlines() if "invalid" in ln)
    assert line.startswith(
        f"[aggregate] dropping {len(INVALID_ROWS)} invalid row(s) of {len(data) + len(INVALID_ROWS):,} ("
    )
    for reason, n in expected.items():
        assert f"{reason}: {n}" in line


def test_valid_row_is_the_spec_rule(spark):
    """valid_row == spec.value_problem (the Lambdas' rule) + label in {0, 1}, row by row."""
    inf, nan = float("inf"), float("nan")
    cases = [
        ("t", 1, 1.0, 1.0, 0), ("t", 0, 0.0, 0.0, 1), (None, 1, 1.0, 1.0, 0), ("t", None, 1.0, 1.0, 0),
        ("t", -1, 1.0, 1.0, 0), ("t", 1, -0.01, 1.0, 0), ("t", 1, inf, 1.0, 0), ("t", 1, nan, 1.0, 0),
        ("t", 1, 1.0, -1.0, 0), ("t", 1, 1.0, inf, 0), ("t", 1, 1.0, nan, 0), ("t", 1, -inf, 1.0, 0),
        ("t", 1, 1.0, 1.0, 2), ("t", 1, 1.0, 1.0, None), ("t", 1, None, 1.0, 0),
    ]  # fmt: skip
    cols = ["tid", spec.CARD_ID, spec.AMOUNT, spec.EVENT_TIME, spec.LABEL]
    df = spark.createDataFrame(
        cases, "tid string, cc_num long, amount double, trans_ts double, fraud_label int"
    )
    got = [r["ok"] for r in df.select(aggregate.valid_row().alias("ok")).collect()]

    def python_rule(row: tuple) -> bool:
        values = dict(zip(cols, row, strict=True))
        if any(values[f] is None for f in (*spec.EVENT_FIELDS, spec.LABEL)):
            return False
        numeric_ok = all(spec.value_problem(f, values[f]) is None for f in spec.NON_NEGATIVE_FIELDS)
        return numeric_ok and values[spec.LABEL] in (0, 1)

    assert [bool(g) for g in got] == [python_rule(c) for c in cases]
    assert sum(bool(g) for g in got) == 2


def test_training_csv_layout(run):
    out, summary, _ = run
    for name in aggregate.SPLITS:
        files = sorted(glob.glob(str(out / name / "part-*.csv")))
        assert files, name
        lines = [ln for f in files for ln in Path(f).read_text().splitlines()]
        assert len(lines) == summary["rows_out"][name]
        first = lines[0].split(",")
        assert len(first) == 1 + len(spec.MODEL_FEATURES)
        assert first[0] in ("0", "1")  # label first, no header
        csv = pd.read_csv(files[0], header=None, names=[spec.LABEL, *spec.MODEL_FEATURES])
        pq = read_parquet_dir(out / "parquet" / name)
        merged = pd.concat([pd.read_csv(f, header=None) for f in files], ignore_index=True)
        merged.columns = csv.columns
        key = [spec.LABEL, *spec.MODEL_FEATURES]
        a = merged.sort_values(key).to_numpy()
        b = pq[key].sort_values(key).to_numpy()
        assert np.array_equal(a, b)  # full float precision survives the CSV


def test_ingests_latest_snapshot_into_local_store(run, data):
    _out, summary, db = run
    _, snaps = reference(data)
    cutoff = (int(data["ts"].max()) // DAY + 1) * DAY
    assert summary["snapshot_cutoff"] == cutoff and summary["records_ingested"] == 6
    store = LocalFeatureStoreRuntime(db)
    fg = spec.BATCH_FEATURE_GROUP.name
    assert store.count(fg) == 6
    for cc in data["cc_num"].unique():
        rec = store.get_record(FeatureGroupName=fg, RecordIdentifierValueAsString=str(cc))["Record"]
        got = {f["FeatureName"]: f["ValueAsString"] for f in rec}
        want = snaps[(int(cc), cutoff)]
        assert float(got["trans_time"]) == cutoff
        assert set(got) == set(spec.BATCH_FEATURE_GROUP.feature_names)
        for name in spec.SNAPSHOT_FEATURES:
            assert float(got[name]) == pytest.approx(want[name], rel=1e-12)


def test_explicit_snapshot_date_outside_data_and_parquet_input(spark, data, tmp_path):
    """Parquet input; a cut-off after the data's grid is computed directly and ingested. One tid is
    given to a second, distinct transaction (another card or time): counted in the summary."""
    src = data[list(spec.TRANSACTION_COLUMNS)].copy()
    src.loc[src.index[1], "tid"] = src["tid"].iloc[0]
    src["datetime"] = pd.to_datetime(src["datetime"]).dt.tz_localize("UTC")
    src.to_parquet(tmp_path / "tx.parquet")
    last_day = int(data["ts"].max()) // DAY
    snap_day = last_day + 4
    snap_date = aggregate._day_str(snap_day)
    summary = aggregate.main(
        [
            "--input", str(tmp_path / "tx.parquet"), "--output", str(tmp_path / "out"),
            "--snapshot-date", snap_date, "--feature-store", "local",
            "--feature-store-db", str(tmp_path / "fs.db"),
        ]
    )  # fmt: skip
    cutoff = snap_day * DAY
    assert summary["snapshot_cutoff"] == cutoff and summary["records_ingested"] == 6
    assert summary["rows_duplicate_tid"] == 1
    snaps = read_parquet_dir(tmp_path / "out" / "snapshots")
    at = snaps[snaps["cutoff"] == cutoff].set_index("cc_num")
    store = LocalFeatureStoreRuntime(tmp_path / "fs.db")
    for cc, grp in data.groupby("cc_num"):
        vals = grp.loc[(grp["ts"] >= cutoff - W1W) & (grp["ts"] < cutoff), "amount"]
        assert at.loc[cc, "num_trans_last_1w"] == len(vals)
        assert at.loc[cc, "avg_amt_last_1w"] == pytest.approx(vals.mean() if len(vals) else 0.0, rel=1e-12)
        rec = store.get_record(
            FeatureGroupName=spec.BATCH_FEATURE_GROUP.name, RecordIdentifierValueAsString=str(cc)
        )
        assert float({f["FeatureName"]: f["ValueAsString"] for f in rec["Record"]}["trans_time"]) == cutoff


def test_missing_column_fails_with_clear_reason(spark, data, tmp_path):
    data[["tid", "datetime", "cc_num", "fraud_label"]].to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(aggregate.JobInputError, match="missing column 'amount'"):
        aggregate.main(["--input", str(tmp_path / "bad.csv"), "--output", str(tmp_path / "o"), "--no-ingest"])


def test_only_invalid_rows_fail_with_the_reasons(spark, tmp_path):
    rows = "\n".join(row for row, _ in INVALID_ROWS[4:7])  # three out-of-range amounts
    (tmp_path / "bad.csv").write_text(",".join(spec.TRANSACTION_COLUMNS) + "\n" + rows + "\n")
    with pytest.raises(aggregate.JobInputError, match=f"has no valid transactions \\({_RANGE}: 3\\)$"):
        aggregate.main(["--input", str(tmp_path / "bad.csv"), "--output", str(tmp_path / "o"), "--no-ingest"])


def test_cli_user_error_is_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "processing/aggregate.py", "--input", str(tmp_path / "nope.csv"), "--output", "x",
         "--snapshot-date", "2020-13-01", "--no-ingest"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == "aggregate: error: --snapshot-date must be YYYY-MM-DD, got '2020-13-01'"


def test_duplicate_tids_counted_exactly(spark, run):
    """rows - distinct tids, whatever the cards and times (re-deliveries and tids of distinct
    transactions that collide alike), hash collisions never counted; 0 on the fixture's data."""
    _, summary, _ = run
    assert summary["rows_duplicate_tid"] == 0
    rows = [
        ("a", 1, 10.0), ("a", 1, 10.0), ("a", 1, 10.0),  # delivered three times: 2
        ("b", 1, 10.0), ("c", 1, 10.0), ("b", 1, 10.0),  # ties at 10.0, b repeated out of order: 1
        ("a", 2, 10.0), ("a", 1, 11.0),  # the same tid on another card, at another time: 2 more
        ("d", 3, 5.0), ("e", 3, 5.0),
    ]  # fmt: skip
    df = spark.createDataFrame(rows, f"tid string, {spec.CARD_ID} long, {spec.EVENT_TIME} double")
    assert aggregate.duplicate_tids(df) == 5
    assert aggregate.duplicate_tids(df.where("tid in ('c', 'd', 'e')")) == 0
