"""The real Flink job (PyFlink 1.20, thread mode) on small inputs: one bounded run for the rules, one
restart from a retained checkpoint for continuity of the keyed state.

Every case of the bounded run is in one input (one JVM start): window bounds and ties, a card's
first transaction, a late event, one beyond the allowed lateness, a far-future event that must not
move the watermark, rejected records, pass-through fields, and a feature spec with one more window
given as a JSON file (nothing in features/ touched).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from features import spec
from features.compute import CardHistory
from streaming import keyed, sql
from streaming.launch import output_lines, run_job, start_job, stop_job

pytestmark = [pytest.mark.flink, pytest.mark.xdist_group("flink")]

ROOT = Path(__file__).resolve().parents[1]
FLINK_PY = ROOT / ".venv-flink" / "bin" / "python"
T0 = 1_580_515_200.0  # 2020-02-01 00:00 UTC
WATERMARK = 5
FS = spec.SPEC.with_(spec.Aggregation("max", "5m", spec.STREAMING))


def ev(tid: str, card: int, amount: float, ts: float, **extra) -> dict:
    return {"tid": tid, "cc_num": card, "amount": amount, "trans_ts": ts, **extra}


REJECTED: list[str] = [
    "not json at all",
    json.dumps({"tid": "nocard", "amount": 1.0, "trans_ts": T0 + 1400}),
    json.dumps(ev("neg", 6, -1.0, T0 + 1400)),
    json.dumps(ev("str", 6, "12", T0 + 1400)),
    json.dumps(ev("frac", 1.5, 3.0, T0 + 1400)),
    json.dumps(ev("huge", 6, 1e27, T0 + 1400)),  # issue 9: overflowed Flink's DECIMAL sum
    '{"tid": "nan", "cc_num": 6, "amount": NaN, "trans_ts": 1.0}',
    json.dumps(ev("future", 1, 5.0, 1.9e9)),  # 2030: beyond the wall clock + skew
    "[1, 2]",
]


def scenario() -> tuple[list, set[str], set[str]]:
    """Arrival-ordered events, the tids that must come out late, and those beyond the lateness."""
    e: list = [
        ev("a0", 1, 10.0, T0),
        ev("o0", 9, 1.0, T0 + 2),  # card 9's history before the event beyond the lateness
        ev("a1", 1, 20.0, T0 + 600),  # exactly 600 s later: a0 inside [ts - 10 min, ts]
        ev("a2", 1, 30.0, T0 + 600),  # same-time peer of a1
        REJECTED[7],  # far future: rejected, and the next events are still on time
        ev("a3", 1, 5.0, T0 + 1200),
        ev("a4", 1, 1.0, T0 + 1201),
        ev("b0", 2, 7.0, T0 + 1202),
        ev("b1", 2, 8.0, T0 + 1199),  # 3 s behind the newest: on time, in b0's window
        ev("late1", 1, 99.0, T0 + 900),  # behind the watermark: late, counted by later windows
        ev("a5", 1, 2.0, T0 + 1500),  # on time after late1: its 10 min / 1 h windows hold late1
        ev("c0", 3, 50.0, T0 + 1510, merchant="m1", zip_code="12345", fraud_label=1),
    ]
    e += [ev(f"burst{i}", 4, 1.0 + i, T0 + 1520 + i // 3) for i in range(30)]  # ties in a burst
    e += [ev(f"x{i}", 5, round(0.01 + 37.37 * i, 2), T0 + 1600 + 170 * i) for i in range(60)]
    e.append(ev("old", 9, 3.0, T0 + 1600 + 170 * 59 - 3 * 3600))  # 3 h behind: beyond 1 h lateness
    e += REJECTED[:7] + REJECTED[8:]
    return e, {"late1", "old"}, {"old"}


def expected(events: list[dict], tid: str) -> dict[str, float]:
    """Batch features of `tid` over every valid event of its card (features.compute)."""
    x = next(v for v in events if v["tid"] == tid)
    h = CardHistory()
    for v in events:
        if v["cc_num"] == x["cc_num"]:
            h.add(v["trans_ts"], v["amount"])
    return h.streaming(x["trans_ts"], FS)


@pytest.fixture(scope="module")
def job_output(tmp_path_factory) -> tuple[list, set[str], set[str], dict[str, dict]]:
    if not FLINK_PY.exists():
        pytest.skip("PyFlink environment .venv-flink missing (make install)")
    events, late, beyond = scenario()
    tmp = tmp_path_factory.mktemp("flink")
    src, out, spec_file = tmp / "in.jsonl", tmp / "out", tmp / "spec.json"
    src.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    spec_file.write_text(FS.to_json())
    args = ["--watermark-seconds", str(WATERMARK), "--feature-spec", str(spec_file)]
    run_job(src, out, tmp / "flink.log", args, timeout=300)
    rows = [json.loads(line) for line in output_lines(out)]
    return events, late, beyond, {r["tid"] if r["raw"] is None else r["raw"]: r for r in rows}


def test_every_record_comes_out_once(job_output):
    events, _, _, rows = job_output
    valid = [e["tid"] for e in events if isinstance(e, dict)]
    assert sorted(t for t in rows if t in set(valid)) == sorted(valid)
    assert len(rows) == len(valid) + len(REJECTED)
    assert sorted(r["raw"] for r in rows.values() if r["raw"] is not None) == sorted(REJECTED)


def test_features_equal_the_batch_rules(job_output):
    events, late, beyond, rows = job_output
    valid = [e for e in events if isinstance(e, dict)]
    names = FS.streaming_features
    assert "max_amt_last_5m" in names and set(names) <= set(rows["a0"])
    for x in valid:
        if x["tid"] in beyond:
            continue
        r, want = rows[x["tid"]], expected(valid, x["tid"])
        assert r["late"] is (x["tid"] in late) and r["beyond_lateness"] is False, x["tid"]
        for n in names:
            assert math.isclose(r[n], want[n], rel_tol=1e-9, abs_tol=0.0), (x["tid"], n, r[n], want[n])
    # Window bounds, ties, a card's first transaction, the late event counted after it arrived.
    # a3/a4 were still waiting for the watermark when late1 arrived: their windows count it.
    assert [rows[t]["num_trans_last_10m"] for t in ("a0", "a1", "a2", "a3", "a4")] == [1, 3, 3, 4, 3]
    assert rows["a1"]["secs_since_prev_trans"] == 0.0 and rows["a0"]["secs_since_prev_trans"] == -1.0
    assert rows["a5"]["num_trans_last_10m"] == 4  # a3, a4, a5 and late1 (exactly 600 s before)
    assert rows["b0"]["num_trans_last_10m"] == 2  # b1 arrived after b0 within the watermark


def test_beyond_lateness_flagged_and_still_decided(job_output):
    _, _, beyond, rows = job_output
    for tid in beyond:
        r = rows[tid]
        assert r["late"] is True and r["beyond_lateness"] is True
        assert r["num_trans_last_10m"] >= 1 and r["raw"] is None


def test_rejected_records_forwarded_never_decided(job_output):
    from lambdas.records import MalformedRecord, parse_event

    _, _, _, rows = job_output
    c0 = rows["c0"]
    assert (c0["merchant"], c0["zip_code"], c0["fraud_label"], c0["cc_num"]) == ("m1", "12345", 1, 3)
    rejected = [r for r in rows.values() if r["raw"] is not None]
    assert len(rejected) == len(REJECTED)
    for r in rejected:
        assert r["reject_reason"] and r["late"] is None and r["tid"] is None, r
        assert all(r[n] is None for n in FS.streaming_features)
        assert r["cc_num"] is not None  # the Kinesis partition key is never NULL
        with pytest.raises(MalformedRecord):
            parse_event(json.dumps(r), enriched=True)
    future = next(r for r in rejected if '"future"' in r["raw"])
    assert "beyond the accepted event time" in future["reject_reason"]


def test_output_schema_is_the_sql_modules():
    assert [n for n, _ in sql.output_columns(FS)][-4:] == [*keyed.LATENESS_FLAGS, sql.RAW, sql.REJECT_REASON]


def test_on_arrival_mode_emits_over_what_has_arrived(tmp_path):
    """`--emit on-arrival`: every valid event emitted once, at once, with the features of the
    events of its card that arrived before it (and itself): the batch rules over the arrived
    prefix, late or not (the event beyond the allowed lateness excepted: what was retained)."""
    if not FLINK_PY.exists():
        pytest.skip("PyFlink environment .venv-flink missing (make install)")
    events, _, beyond = scenario()
    src, out, spec_file = tmp_path / "in.jsonl", tmp_path / "out", tmp_path / "spec.json"
    src.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    spec_file.write_text(FS.to_json())
    args = ["--watermark-seconds", str(WATERMARK), "--feature-spec", str(spec_file), "--emit", "on-arrival"]
    run_job(src, out, tmp_path / "flink.log", args, timeout=300)
    rows = {r["tid"]: r for r in map(json.loads, output_lines(out)) if r["raw"] is None}
    valid = [e for e in events if isinstance(e, dict)]
    assert sorted(rows) == sorted(e["tid"] for e in valid)
    for i, x in enumerate(valid):
        if x["tid"] in beyond:
            continue
        want = expected(valid[: i + 1], x["tid"])
        for n in FS.streaming_features:
            got = rows[x["tid"]][n]
            assert math.isclose(got, want[n], rel_tol=1e-9, abs_tol=0.0), (x["tid"], n, got, want[n])
    assert rows["a1"]["num_trans_last_10m"] == 2  # a2 (same time) had not arrived yet
    assert rows["a5"]["num_trans_last_10m"] == 4  # late1 counted, whatever its flag


# --- restart -------------------------------------------------------------------------------------
def _wait_for(pred, timeout: float, what: str, proc=None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise AssertionError(f"job exited ({proc.returncode}) while waiting for {what}: {tail}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _latest_checkpoint(ck: Path) -> Path | None:
    done = [p.parent for p in ck.rglob("_metadata") if p.parent.name.startswith("chk-")]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def test_restart_from_checkpoint_keeps_card_state(tmp_path):
    """Run 1 reads file 1 from a watched directory and is killed (SIGKILL) after a checkpoint;
    run 2 restores that checkpoint, reads only the new file 2, and file 2's windows count file 1's
    events (keyed state restored), pending events included, and nothing of file 1 is re-emitted."""
    if not FLINK_PY.exists():
        pytest.skip("PyFlink environment .venv-flink missing (make install)")
    src, ck = tmp_path / "in", tmp_path / "ck"
    src.mkdir()
    first = [ev(f"p{i}", 7, 1.0 + i, T0 + 60 * i) for i in range(10)]
    first.append(ev("m1", 8, 1.0, T0 + 60 * 9 + 3))  # last p-events wait for the watermark (state)
    second = [ev(f"q{i}", 7, 100.0 + i, T0 + 600 + 60 * i) for i in range(5)]
    second.append(ev("m2", 8, 1.0, T0 + 3 * 3600))  # moves the watermark past everything
    (src / "f1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in first))
    args = ["--monitor-interval", "1 s", "--checkpoint-dir", str(ck), "--checkpoint-interval-ms", "1000"]
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    log1 = tmp_path / "run1.log"
    proc = start_job(src, out1, log1, args)
    try:
        # p0..p8 committed (m1's watermark released them); p9 and m1 wait for the watermark, in state.
        _wait_for(lambda: any('"p8"' in x for x in output_lines(out1)), 240, "run 1 output", proc, log1)
        seen = len(list(output_lines(out1)))
        _wait_for(lambda: _latest_checkpoint(ck), 30, "a checkpoint", proc, log1)
        time.sleep(2.5)  # one more completed checkpoint after the committed output
        checkpoint = _latest_checkpoint(ck)
    finally:
        stop_job(proc, grace=0)
    run1 = [json.loads(x) for x in output_lines(out1)]
    assert len(run1) >= seen and len({r["tid"] for r in run1}) == len(run1)
    (src / "f2.jsonl").write_text("".join(json.dumps(e) + "\n" for e in second))
    log2 = tmp_path / "run2.log"
    proc = start_job(src, out2, log2, [*args, "--restore-from", str(checkpoint)])
    try:
        _wait_for(
            lambda: sum('"q' in x for x in output_lines(out2)) == len(second) - 1,
            240,
            "run 2 output",
            proc,
            log2,
        )
        time.sleep(1)
    finally:
        stop_job(proc, grace=0)
    run2 = [json.loads(x) for x in output_lines(out2)]
    tids = [r["tid"] for r in run1 + run2]
    assert len(tids) == len(set(tids)), "an event was emitted twice across the restart"
    assert {f"p{i}" for i in range(10)} | {"m1"} <= set(tids), "an event pending at the checkpoint was lost"
    everything = [e for e in first + second if e["cc_num"] == 7]
    for r in run2:
        if r["tid"].startswith("q"):
            want = expected(everything, r["tid"])
            for n in FS.streaming_features:
                if n in r:
                    assert math.isclose(r[n], want[n], rel_tol=1e-9), (r["tid"], n, r[n], want[n])
    assert next(r for r in run2 if r["tid"] == "q0")["num_trans_last_1h"] == 11  # p0..p9 + q0
