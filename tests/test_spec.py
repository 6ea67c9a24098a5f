"""The feature specification: ratio rule, model order, and the SQL rendering agree."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from features import compute, spec
from tests.reference import brute_force


def test_declarations_match_design() -> None:
    names = {a.name: a for a in spec.AGGREGATIONS}
    assert names["num_trans_last_10m"].seconds == 600 and names["num_trans_last_10m"].kind == spec.STREAMING
    assert names["avg_amt_last_1w"].seconds == 7 * 86400 and names["avg_amt_last_1w"].kind == spec.SNAPSHOT
    assert (
        spec.MODEL_FEATURES[:4]
        == spec.STUDY_FEATURES
        == ("amount", "amt_ratio1", "amt_ratio2", "count_ratio")
    )
    assert {"num_trans_last_10m", "secs_since_prev_trans"} <= set(spec.MODEL_FEATURES)
    assert (
        *(a.name for a in spec.STREAMING_AGGREGATIONS),
        *(r.name for r in spec.RECENCY),
    ) == spec.STREAMING_FEATURES


def test_model_input_order_and_ratios() -> None:
    row = {"amount": 50.0, "num_trans_last_10m": 3, "avg_amt_last_10m": 30.0}
    row |= {"num_trans_last_1w": 12, "avg_amt_last_1w": 20.0}
    row |= {n: 7.0 for n in spec.STREAMING_FEATURES if n not in row}
    got = spec.model_input(row)
    assert list(got) == list(spec.MODEL_FEATURES)
    assert {k: got[k] for k in spec.STUDY_FEATURES} == {
        "amount": 50.0,
        "amt_ratio1": 1.5,
        "amt_ratio2": 2.5,
        "count_ratio": 0.25,
    }


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: spec.Aggregation("median", "10m", spec.STREAMING), "unknown operation"),
        (lambda: spec.Aggregation("count", "10x", spec.STREAMING), "unit in s/m/h/d/w"),
        (lambda: spec.Aggregation("count", "90m", spec.SNAPSHOT), "whole days"),
        (lambda: spec.Aggregation("count", "1h", "hourly"), "kind must be"),
        (lambda: spec.SPEC.with_(spec.Aggregation("count", "10m", spec.STREAMING)), "declared twice"),
        (lambda: spec.SPEC.with_(model_features=("num_trans_last_3m",)), "not declared"),
    ],
)
def test_bad_declarations_fail_at_definition(build, message) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_spec_json_round_trip_and_adding_a_window_is_one_declaration() -> None:
    assert spec.FeatureSpec.from_json(spec.SPEC.to_json()) == spec.SPEC
    wider = spec.SPEC.with_(
        spec.Aggregation("max", "5m", spec.STREAMING), model_features=("max_amt_last_5m",)
    )
    assert wider.streaming_features[-3:] == (
        "max_amt_last_5m",
        "secs_since_prev_trans",
        "secs_since_prev2_trans",
    )
    assert wider.model_features[-1] == "max_amt_last_5m"
    group = spec.feature_group("g", wider.streaming_features, wider)
    assert {"FeatureName": "max_amt_last_5m", "FeatureType": "Fractional"} in group.feature_definitions()


def test_validity_bounds() -> None:
    assert spec.value_problem("amount", 1e9) is None
    assert "<= 1e+09" in spec.value_problem("amount", 1.0000001e9)
    assert "integer" in spec.value_problem("cc_num", 12.5)
    assert "<=" in spec.value_problem("trans_ts", 1.9e13)  # milliseconds, not seconds
    assert "finite" in spec.value_problem("amount", float("nan"))


def test_zero_denominator_gives_zero() -> None:
    row = {"amount": 50.0, "num_trans_last_10m": 1, "avg_amt_last_10m": 50.0}
    row |= {"num_trans_last_1w": 0, "avg_amt_last_1w": 0.0}
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
    assert spec.STREAMING_FEATURE_GROUP.feature_names == ("cc_num", *spec.STREAMING_FEATURES, "trans_time")
    assert spec.BATCH_FEATURE_GROUP.feature_names == ("cc_num", *spec.SNAPSHOT_FEATURES, "trans_time")


def _random_events(seed: int, n: int = 400) -> list[tuple[str, int, float, float]]:
    """Bursts, ties and gaps on a few cards, times within a few days."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        card = int(rng.integers(0, 4))
        ts = float(rng.choice([rng.integers(0, 4 * 86400), 3600 + rng.integers(0, 20) * 30]))
        rows.append((f"t{i}", card, ts, float(np.round(rng.uniform(0, 500), 2))))
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_compute_equals_brute_force(seed: int) -> None:
    """features/compute.py (bisects over a sorted history) = the naive definitions, ties included,
    for the product's spec and a wider one (every operation)."""
    rows = _random_events(seed)
    wider = spec.SPEC.with_(
        spec.Aggregation("min", "5m", spec.STREAMING),
        spec.Aggregation("max", "5m", spec.STREAMING),
        spec.Aggregation("sum", "1d", spec.STREAMING),
        spec.Aggregation("max", "2d", spec.SNAPSHOT),
    )
    for fs in (spec.SPEC, wider):
        want, _ = brute_force(rows, fs)
        got = compute.reference_features([(c, t, a) for _, c, t, a in rows], fs)
        for (tid, *_), values in zip(rows, got, strict=True):
            for name, v in want[tid].items():
                assert values[name] == pytest.approx(v, rel=1e-12, abs=1e-12), (tid, name)


def test_docs_feature_table_is_generated_from_the_spec() -> None:
    from features import docs

    text = docs.DOC.read_text()
    assert docs.render(text) == text, "docs/features.md is stale: run python -m features.docs"
    wider = spec.SPEC.with_(spec.Aggregation("max", "5m", spec.STREAMING))
    assert "`max_amt_last_5m` | streaming | largest amount in [ts - 5m, ts]" in docs.feature_table(wider)
