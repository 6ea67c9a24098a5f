"""The feature specification: ratio rule, model order, and the SQL rendering agree."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from features import spec


def test_windows_match_design() -> None:
    assert spec.SHORT_WINDOW.seconds == 600
    assert spec.LONG_WINDOW.seconds == 7 * 86400
    assert spec.SHORT_WINDOW.count_name == "num_trans_last_10m"
    assert spec.LONG_WINDOW.avg_name == "avg_amt_last_1w"


def test_model_input_order_and_ratios() -> None:
    row = {
        "amount": 50.0,
        "num_trans_last_10m": 3,
        "avg_amt_last_10m": 30.0,
        "num_trans_last_1w": 12,
        "avg_amt_last_1w": 20.0,
    }
    got = spec.model_input(row)
    assert list(got) == ["amount", "amt_ratio1", "amt_ratio2", "count_ratio"]
    assert got == {"amount": 50.0, "amt_ratio1": 1.5, "amt_ratio2": 2.5, "count_ratio": 0.25}


def test_zero_denominator_gives_zero() -> None:
    row = {
        "amount": 50.0,
        "num_trans_last_10m": 1,
        "avg_amt_last_10m": 50.0,
        "num_trans_last_1w": 0,
        "avg_amt_last_1w": 0.0,
    }
    assert spec.ratio_features(row) == {"amt_ratio1": 0.0, "amt_ratio2": 0.0, "count_ratio": 0.0}


@pytest.mark.parametrize("ratio", spec.RATIOS, ids=lambda r: r.name)
def test_sql_rendering_equals_python(ratio: spec.Ratio) -> None:
    """The SQL string used by Spark computes exactly what the serving code computes."""
    rng = np.random.default_rng(1)
    values = [
        (float(a), float(b))
        for a, b in zip(rng.uniform(0, 1e4, 50), rng.choice([0.0, 1.0, 3.0, 123.456], 50), strict=True)
    ]
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t ({ratio.numerator} REAL, {ratio.denominator} REAL)")
    db.executemany("INSERT INTO t VALUES (?, ?)", values)
    sql = spec.ratio_sql(ratio).replace("AS DOUBLE", "AS REAL")  # SQLite's name for DOUBLE
    got = [r[0] for r in db.execute(f"SELECT {sql} FROM t")]
    want = [spec.safe_ratio(n, d) for n, d in values]
    assert all(math.isclose(g, w, rel_tol=0, abs_tol=0) for g, w in zip(got, want, strict=True))


def test_feature_group_schemas() -> None:
    fg = spec.FEATURE_GROUPS["cc-agg-batch-fg"]
    assert fg.record_identifier == "cc_num" and fg.event_time == "trans_time"
    assert fg.feature_definitions()[1] == {"FeatureName": "num_trans_last_1w", "FeatureType": "Integral"}
    assert spec.STREAMING_FEATURE_GROUP.feature_names == (
        "cc_num",
        "num_trans_last_10m",
        "avg_amt_last_10m",
        "trans_time",
    )
