"""The Flink job on a small replay file: window bounds, peers, late routing, exact sums.

Runs the real PyFlink job (subprocess in .venv-flink, one JVM for the whole module) and checks
every on-time row against a brute-force reference of DESIGN.md's window [ts - 600 s, ts].
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

from features import spec
from streaming import sql
from streaming.replay import enriched_lines, run_flink

pytestmark = [pytest.mark.flink, pytest.mark.xdist_group("flink")]

ROOT = Path(__file__).resolve().parents[1]
FLINK_PY = ROOT / ".venv-flink" / "bin" / "python"
W = spec.SHORT_WINDOW
T0 = 1_580_515_200.0  # 2020-02-01 00:00 UTC
WATERMARK = 5


def run_job(events: list, tmp: Path, watermark: int = WATERMARK) -> list[dict]:
    """Run the job on arrival-ordered events; rows keyed later by `tid`, or by `raw` when rejected."""
    if not FLINK_PY.exists():
        pytest.skip("PyFlink environment .venv-flink missing (make install)")
    src, out = tmp / "in.jsonl", tmp / "out"
    src.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    run_flink(src, out, watermark, tmp / "flink.log", timeout=240)  # raises ReplayError with the log tail
    return [json.loads(line) for line in enriched_lines(out) if line.strip()]


def ev(tid: str, card: int, amount: float, ts: float, **extra) -> dict:
    return {"tid": tid, "cc_num": card, "amount": amount, "trans_ts": ts, **extra}


REJECTED: list[str] = [
    "not json at all",
    json.dumps({"tid": "nocard", "amount": 1.0, "trans_ts": T0 + 1400}),
    json.dumps(ev("neg", 6, -1.0, T0 + 1400)),
    json.dumps(ev("str", 6, "12", T0 + 1400)),  # wrong type: must not become 12.0
    json.dumps(ev("frac", 1.5, 3.0, T0 + 1400)),  # card 1.5 must not be truncated to 1
    json.dumps(ev("bool", 6, True, T0 + 1400)),
    '{"tid": "nan", "cc_num": 6, "amount": NaN, "trans_ts": 1.0}',  # not strict JSON
    json.dumps({"tid": "nots", "cc_num": 6, "amount": 2.0}),  # no event time at all
    json.dumps({"tid": 7, "cc_num": 6, "amount": 2.0, "trans_ts": T0 + 1400}),  # tid not a string
    json.dumps(ev("tsstr", 6, 2.0, str(T0 + 1400))),
    "[1, 2]",
]
"""Records the job cannot place: forwarded with `raw` and NULL aggregates, never dropped."""


def scenario() -> tuple[list, set[str]]:
    """Arrival-ordered events and the tids that must come out late."""
    e: list = [
        ev("a0", 1, 10.0, T0),
        ev("a1", 1, 20.0, T0 + 600),  # exactly 600 s later: a0 is inside (inclusive lower bound)
        ev("a2", 1, 30.0, T0 + 600),  # peer of a1: both see each other
        ev("a3", 1, 5.0, T0 + 1200),  # sees a1, a2 (600 s) but not a0
        ev("a4", 1, 1.0, T0 + 1201),  # 601 s after a1/a2: excluded
        ev("b0", 2, 7.0, T0 + 1202),
        ev("b1", 2, 8.0, T0 + 1199),  # 3 s behind the max (watermark 5 s): on time, in b0's window
        ev("b2", 2, 9.0, T0 + 1198),  # 4 s behind: on time
        ev("late1", 1, 99.0, T0 + 300),  # far behind the watermark
        ev("late2", 2, 3.0, T0 + 1202 - WATERMARK),  # exactly at the watermark: late (ts <= watermark)
        ev("c0", 3, 50.0, T0 + 1300, merchant="m1", zip_code="12345", fraud_label=1),
    ]
    # A burst of 40 transactions on one card within a minute, with same-second ties.
    for i in range(40):
        e.append(ev(f"burst{i}", 4, 1.0 + i, T0 + 1310 + i // 3))
    # Exactness: one card, 300 values 200 s apart spanning 0.01..9999.99 (many add/retract cycles).
    rng = random.Random(7)
    for i in range(300):
        e.append(
            ev(
                f"x{i}",
                5,
                round(rng.choice([0.01, 0.5, 37.25, 9999.99, rng.uniform(0, 10000)]), 2),
                T0 + 1400 + 200 * i,
            )
        )
    e += REJECTED
    return e, {"late1", "late2"}


def reference(events: list[dict], late: set[str]) -> dict[str, tuple[int, float]]:
    """Brute force over on-time events: count and exact-sum average over [ts - 600, ts]."""
    on_time = [x for x in events if x["tid"] not in late]
    out = {}
    for x in on_time:
        win = [
            y["amount"]
            for y in on_time
            if y["cc_num"] == x["cc_num"] and x["trans_ts"] - W.seconds <= y["trans_ts"] <= x["trans_ts"]
        ]
        out[x["tid"]] = (len(win), math.fsum(win) / len(win))
    return out


@pytest.fixture(scope="module")
def job_output(tmp_path_factory) -> tuple[list, set[str], dict[str, dict]]:
    events, late = scenario()
    rows = run_job(events, tmp_path_factory.mktemp("flink"))
    return events, late, {r["tid"] if r["raw"] is None else r["raw"]: r for r in rows}


def test_every_record_comes_out_once(job_output):
    events, _, rows = job_output
    valid = [e["tid"] for e in events if isinstance(e, dict)]
    assert sorted(t for t in rows if t in set(valid)) == sorted(valid)
    assert all(rows[t]["raw"] is None for t in valid)  # valid rows carry no raw text
    assert len(rows) == len(valid) + len(REJECTED)
    # Every rejected record is forwarded once, its text unchanged in `raw`.
    assert sorted(r["raw"] for r in rows.values() if r["raw"] is not None) == sorted(REJECTED)


def test_on_time_windows_match_brute_force(job_output):
    events, late, rows = job_output
    valid = [e for e in events if isinstance(e, dict)]
    ref = reference(valid, late)
    assert len(ref) == len(valid) - len(late)
    for tid, (n, avg) in ref.items():
        r = rows[tid]
        assert r["late"] is False, tid
        assert r[W.count_name] == n, tid
        assert math.isclose(r[W.avg_name], avg, rel_tol=1e-12, abs_tol=0.0), (tid, r[W.avg_name], avg)


def test_window_bounds_and_peers(job_output):
    _, _, rows = job_output
    assert [rows[t][W.count_name] for t in ("a0", "a1", "a2", "a3", "a4")] == [1, 3, 3, 3, 2]
    assert rows["a1"][W.avg_name] == rows["a2"][W.avg_name] == 20.0
    assert rows["b0"][W.count_name] == 3  # b1, b2 arrived after b0 but within the watermark


def test_late_events_flagged_and_kept(job_output):
    _, late, rows = job_output
    for tid in late:
        r = rows[tid]
        assert r["late"] is True
        assert r[W.count_name] == 1 and r[W.avg_name] == r["amount"]
    # A late event is not added to windows computed after it either (documented semantics).
    assert rows["a3"][W.count_name] == 3


def test_passthrough_and_invalid_rows(job_output):
    from lambdas import common

    _, _, rows = job_output
    c0 = rows["c0"]
    assert (c0["merchant"], c0["zip_code"], c0["fraud_label"], c0["cc_num"]) == ("m1", "12345", 1, 3)
    assert c0["trans_ts"] == T0 + 1300
    rejected = [r for r in rows.values() if r["raw"] is not None]
    assert len(rejected) == len(REJECTED)
    for r in rejected:
        assert r[W.count_name] is None and r[W.avg_name] is None and r["late"] is None, r
        assert r["cc_num"] is not None  # the Kinesis partition key is never NULL
        # The Lambdas' validator (same code on AWS and locally) rejects every one of them.
        with pytest.raises(common.MalformedRecord):
            common.parse_event(json.dumps(r), enriched=True)
        with pytest.raises(common.MalformedRecord):
            common.parse_event(r["raw"])  # ... and so does it on the original record
    by_raw = {r["raw"]: r for r in rejected}
    assert by_raw[json.dumps(ev("neg", 6, -1.0, T0 + 1400))]["amount"] == -1.0  # typed as far as it parsed
    assert by_raw[json.dumps(ev("str", 6, "12", T0 + 1400))]["amount"] is None
    assert by_raw["not json at all"]["cc_num"] == 0


def test_sql_module_is_what_the_job_runs():
    # The job imports streaming.sql; make sure the script and module agree on the sink schema.
    names = [n for n, _ in sql.OUTPUT_COLUMNS]
    assert names[-4:] == [W.count_name, W.avg_name, "late", sql.RAW]
    assert sys.version_info[:2] == (3, 11)
