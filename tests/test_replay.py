"""The local replay end to end (Flink job + both handlers + local store + local endpoint), no Spark."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import spec
from shared.cli import run
from streaming import events as events_mod
from streaming import replay
from tests.reference import lone_event_features

pytestmark = [pytest.mark.flink, pytest.mark.xdist_group("flink")]

ROOT = Path(__file__).resolve().parents[1]
DAY = spec.SNAPSHOT_PERIOD_SECONDS
D0 = 18_293 * DAY  # 2020-02-01


def study(features: dict) -> dict:
    """The study's four inputs of a decision's features."""
    return {k: features[k] for k in spec.STUDY_FEATURES}


def make_work_dir(root: Path, snapshots: list[tuple[int, int, int, float]]) -> Path:
    """A `local`-run layout: features/snapshots (Parquet) and endpoint/deployed.json with a small model."""
    import xgboost as xgb

    from training.model_artifact import write_model_archive

    snap = root / "features" / "snapshots"
    snap.mkdir(parents=True)
    cards, cutoffs, ns, avgs = zip(*snapshots, strict=True)
    pq.write_table(
        pa.table(
            {
                spec.CARD_ID: pa.array(cards, pa.int64()),
                "cutoff": pa.array(cutoffs, pa.int64()),
                "num_trans_last_1w": pa.array(ns, pa.int64()),
                "avg_amt_last_1w": pa.array(avgs, pa.float64()),
            }
        ),
        snap / "part-0.parquet",
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5, (400, len(spec.MODEL_FEATURES)))
    y = (x[:, 2] > 2.5).astype(int)  # "fraud" when amt_ratio2 is high
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(x, label=y), 10)
    model = write_model_archive(booster, root / "model" / "model.tar.gz")
    (root / "endpoint").mkdir()
    (root / "endpoint" / "deployed.json").write_text(
        json.dumps({"model_data": str(model), "version": 1, "endpoint_name": spec.ENDPOINT_NAME})
    )
    return root


def test_replay_decides_every_parsed_event_and_rejects_the_rest(tmp_path):
    if not (ROOT / ".venv-flink" / "bin" / "python").exists():
        pytest.skip("PyFlink environment .venv-flink missing")
    # Card 1's snapshot changes at midnight; card 2 has none the first day; card 9 never has one.
    work = make_work_dir(
        tmp_path / "work",
        [
            (1, D0, 10, 20.0),
            (1, D0 + DAY, 5, 40.0),
            (2, D0 + DAY, 4, 10.0),
        ],
    )
    warm = {"tid": "w", "cc_num": 1, "amount": 40.0, "trans_ts": D0 + 3500.0, "warmup": True}
    ev = [
        {"tid": "a", "cc_num": 1, "amount": 60.0, "trans_ts": D0 + 3600.0, "fraud_label": 1},
        {"tid": "b", "cc_num": 1, "amount": 20.0, "trans_ts": D0 + 3660.0, "fraud_label": 0},
        {"tid": "c", "cc_num": 2, "amount": 30.0, "trans_ts": D0 + 7200.0, "fraud_label": 0},
        {"tid": "d", "cc_num": 1, "amount": 80.0, "trans_ts": D0 + DAY + 60.0, "fraud_label": 1},  # next day
        {"tid": "e", "cc_num": 2, "amount": 30.0, "trans_ts": D0 + DAY + 120.0, "fraud_label": 0},
        {"tid": "f", "cc_num": 9, "amount": 5.0, "trans_ts": D0 + DAY + 130.0},
        {
            "tid": "late",
            "cc_num": 1,
            "amount": 1.0,
            "trans_ts": D0 + 3700.0,
            "fraud_label": 0,
        },  # a day behind
    ]
    lines = (
        [json.dumps(warm)]
        + [json.dumps(e) for e in ev]
        + [
            "{broken",
            json.dumps({"tid": "neg", "cc_num": 1, "amount": -1.0, "trans_ts": D0 + 5.0}),
            json.dumps({"tid": "nan", "cc_num": 1, "amount": float("nan"), "trans_ts": D0 + 5.0}),
            json.dumps({"tid": "str", "cc_num": 1, "amount": "12", "trans_ts": D0 + 5.0}),
            json.dumps({"tid": "nots", "cc_num": 1, "amount": 2.0}),
        ]
    )
    events_path = tmp_path / "events.jsonl"
    events_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "decisions.jsonl"
    s = replay.run_replay(work, events_path, out, progress=False)

    decisions = {d["tid"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert set(decisions) == {e["tid"] for e in ev}
    rejects = [json.loads(x) for x in (tmp_path / "decisions.rejects.jsonl").read_text().splitlines()]
    reasons = {r["data"][:12]: r["reason"] for r in rejects}
    assert len(rejects) == 5 and all(r["reason"] for r in rejects)
    assert "bad JSON" in reasons["{broken"]
    assert any("amount must be >= 0" in r for r in reasons.values())
    assert any("non-finite" in r for r in reasons.values())
    assert any("amount must be a number" in r for r in reasons.values())
    assert any("missing field(s): trans_ts" in r for r in reasons.values())

    f = {t: d["features"] for t, d in decisions.items()}
    assert list(f["a"]) == list(spec.MODEL_FEATURES)
    # Day 0 uses cut-off D0 (10, 20.0); the warm-up event w is in a's and b's windows but not decided.
    assert study(f["a"]) == {"amount": 60.0, "amt_ratio1": 50.0 / 20.0, "amt_ratio2": 3.0, "count_ratio": 0.2}
    assert study(f["b"]) == {"amount": 20.0, "amt_ratio1": 40.0 / 20.0, "amt_ratio2": 1.0, "count_ratio": 0.3}
    assert study(f["c"]) == {
        "amount": 30.0,
        "amt_ratio1": 0.0,
        "amt_ratio2": 0.0,
        "count_ratio": 0.0,
    }  # no snapshot yet
    # After midnight the next cut-off is published before day 1 is scored.
    assert study(f["d"]) == {"amount": 80.0, "amt_ratio1": 2.0, "amt_ratio2": 2.0, "count_ratio": 0.2}
    assert study(f["e"]) == {"amount": 30.0, "amt_ratio1": 3.0, "amt_ratio2": 3.0, "count_ratio": 0.25}
    assert study(f["f"]) == {"amount": 5.0, "amt_ratio1": 0.0, "amt_ratio2": 0.0, "count_ratio": 0.0}
    assert decisions["late"]["late"] is True and sum(d["late"] for d in decisions.values()) == 1
    assert all(0.0 <= d["score"] <= 1.0 and d["fraud"] == (d["score"] >= 0.5) for d in decisions.values())

    assert (s["events"], s["decisions"], s["rejects"], s["late"], s["warmup_events"]) == (12, 7, 5, 1, 1)
    assert s["fraud_flagged"] == sum(d["fraud"] for d in decisions.values())
    labels = {e["tid"]: e.get("fraud_label") for e in ev}
    tp = sum(d["fraud"] and labels[t] == 1 for t, d in decisions.items())
    fp = sum(d["fraud"] and labels[t] == 0 for t, d in decisions.items())
    fn = sum((not d["fraud"]) and labels[t] == 1 for t, d in decisions.items())
    assert s["precision"] == (tp / (tp + fp) if tp + fp else 0.0)
    assert s["recall"] == (tp / (tp + fn) if tp + fn else 0.0)
    assert s["snapshots_published"] == ["2020-02-01", "2020-02-02"]
    assert s["scoring_batch_latency_ms"]["p50"] > 0 and s["throughput_events_per_s"] > 0
    assert json.loads((work / "replay" / "summary.json").read_text())["decisions"] == 7
    # The streaming feature group got the on-time aggregates (event time = trans_ts), not the late one.
    from pipeline.local.feature_store import LocalFeatureStoreRuntime

    store = LocalFeatureStoreRuntime(work / "replay" / "online-store.sqlite")
    rec = store.get_record(
        FeatureGroupName=spec.STREAMING_FEATURE_GROUP.name, RecordIdentifierValueAsString="1"
    )
    assert {x["FeatureName"]: x["ValueAsString"] for x in rec["Record"]}["trans_time"] == repr(
        D0 + DAY + 60.0
    )
    assert "replay" in replay.format_summary(s) or "decisions" in replay.format_summary(s)


def test_replay_cli_user_errors(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    replay.add_commands(parser.add_subparsers())
    (tmp_path / "e.jsonl").write_text("{}\n")
    args = parser.parse_args(
        [
            "replay",
            "--work-dir",
            str(tmp_path / "nope"),
            "--events",
            str(tmp_path / "e.jsonl"),
            "--out",
            str(tmp_path / "d.jsonl"),
        ]
    )
    assert run(lambda: args.handler(args)) == 2  # ReplayError, caught once at the entry
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: snapshot table not found")
    args = parser.parse_args(
        [
            "replay",
            "--work-dir",
            str(tmp_path),
            "--events",
            str(tmp_path / "missing.jsonl"),
            "--out",
            str(tmp_path / "d.jsonl"),
        ]
    )
    assert run(lambda: args.handler(args)) == 2
    assert "events file not found" in capsys.readouterr().err


def test_transactions_to_events_window_and_bounded_shuffle(tmp_path):
    import pandas as pd

    df = pd.DataFrame(
        {
            "tid": [f"t{i}" for i in range(200)],
            "datetime": pd.to_datetime(D0 + np.arange(200) * 2, unit="s", utc=True).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "cc_num": np.arange(200) % 7 + 4_000_000_000_000_000,
            "amount": np.round(np.linspace(0.01, 999.0, 200), 2),
            "fraud_label": np.arange(200) % 2,
        }
    )
    out = tmp_path / "ev.jsonl"
    summary = events_mod.transactions_to_events(
        df, out, start=D0 + 100, end="2020-02-01 00:06:00", shuffle_within_seconds=4, seed=3
    )
    every = [json.loads(x) for x in out.read_text().splitlines()]
    rows = [r for r in every if not r.get("warmup")]
    warm = [r for r in every if r.get("warmup")]
    assert summary["events"] == len(rows) == 130  # [D0+100, D0+360)
    assert {r["tid"] for r in rows} == {f"t{i}" for i in range(50, 180)}
    # Warm-up: the 10 minutes before start (here back to D0, the data's first event), flagged.
    assert summary["warmup_events"] == len(warm) == 50 and {r["tid"] for r in warm} == {
        f"t{i}" for i in range(50)
    }
    assert isinstance(rows[0]["cc_num"], int) and rows[0]["trans_ts"] >= D0 + 100
    ts = [r["trans_ts"] for r in every]
    assert ts != sorted(ts)  # shuffled ...
    assert all(max(ts[: i + 1]) - t < 4 for i, t in enumerate(ts))  # ... but never 4 s behind the max
    assert events_mod.transactions_to_events(df, tmp_path / "all.jsonl")["events"] == 200
    capped = events_mod.transactions_to_events(
        df, tmp_path / "cap.jsonl", start=D0 + 100, max_events=7, warmup_seconds=0
    )
    every = [json.loads(x) for x in (tmp_path / "cap.jsonl").read_text().splitlines()]
    rows = [r for r in every if not r.get("warmup")]
    assert capped["events"] == 7 and [r["tid"] for r in rows] == [f"t{i}" for i in range(50, 57)]
    # Without a warm-up window, recency still needs each card's last events before the start.
    nth = spec.SPEC.max_recency_nth
    assert {r["tid"] for r in every if r.get("warmup")} == {f"t{i}" for i in range(50 - 7 * nth, 50)}


def test_max_events_cuts_on_a_timestamp_boundary(tmp_path):
    import pandas as pd

    # Card 5 has three same-second peers at D0+20 straddling the 4th position.
    ts = [D0, D0 + 10, D0 + 20, D0 + 20, D0 + 20, D0 + 30]
    df = pd.DataFrame(
        {
            "tid": [f"t{i}" for i in range(len(ts))],
            "datetime": pd.to_datetime(ts, unit="s", utc=True).strftime("%Y-%m-%d %H:%M:%S"),
            "cc_num": [5] * len(ts),
            "amount": [1.0] * len(ts),
        }
    )
    for cap, kept in ((3, 5), (2, 2), (5, 5), (6, 6), (0, 0)):
        out = tmp_path / f"cap{cap}.jsonl"
        s = events_mod.transactions_to_events(df, out, max_events=cap)
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert s["events"] == len(rows) == kept, cap
        assert {r["tid"] for r in rows} == {f"t{i}" for i in range(kept)}, cap


def _work_with_fake_flink(tmp_path, monkeypatch, rows: list[dict]) -> tuple[Path, Path]:
    """A work dir and events file; the Flink run is replaced by writing `rows` as its output."""
    work = make_work_dir(tmp_path / "work", [(1, D0, 10, 20.0)])

    def fake_flink(source: Path, sink: Path, watermark_seconds: int, log_path: Path) -> float:
        sink.mkdir(parents=True, exist_ok=True)
        (sink / "part-0").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return 0.0

    monkeypatch.setattr(replay, "run_flink", fake_flink)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"tid": "a", "cc_num": 1, "amount": 60.0, "trans_ts": D0 + 60.0}) + "\n")
    return work, events


def test_replay_rejects_flink_flagged_rows_once_with_the_reason(tmp_path, monkeypatch):
    ok = {"tid": "a", "cc_num": 1, "amount": 60.0, "trans_ts": D0 + 60.0}
    ok |= {**lone_event_features(60.0), "late": False, "raw": None}
    bad_raw = json.dumps({"tid": "b", "cc_num": 1, "amount": "12", "trans_ts": D0 + 61.0})
    strict_raw = json.dumps({"tid": "c", "cc_num": 1, "amount": 2.0, "trans_ts": D0 + 62.0})
    flagged = [
        {"tid": t, "cc_num": 0, **lone_event_features(None), "late": None, "raw": raw}
        for t, raw in (("b", bad_raw), ("c", strict_raw))
    ]
    work, events = _work_with_fake_flink(tmp_path, monkeypatch, [ok, *flagged])
    out = tmp_path / "d.jsonl"
    s = replay.run_replay(work, events, out, progress=False)
    assert [json.loads(x)["tid"] for x in out.read_text().splitlines()] == ["a"]
    rejects = [json.loads(x) for x in (tmp_path / "d.rejects.jsonl").read_text().splitlines()]
    assert [(r["data"], r["stage"]) for r in rejects] == [(bad_raw, "flink"), (strict_raw, "flink")]
    assert rejects[0]["reason"] == "rejected by the streaming job: amount must be a number, got '12'"
    assert "valid_event_sql" in rejects[1]["reason"]  # the Lambdas accept it; Flink's reading did not
    assert (s["decisions"], s["rejects"], s["flink_rejects"]) == (1, 2, 2)


def test_replay_unreadable_inputs_are_one_line_errors(tmp_path, monkeypatch, capsys):
    import argparse

    def _errors(capsys) -> list[str]:  # stderr without the progress lines
        return [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("[replay]")]

    parser = argparse.ArgumentParser()
    replay.add_commands(parser.add_subparsers())
    work, events = _work_with_fake_flink(tmp_path, monkeypatch, [])
    argv = ["replay", "--work-dir", str(work), "--events", str(events), "--out", str(tmp_path / "d.jsonl")]
    # A model that fails to load (the artifact is not a model archive).
    model = Path(json.loads((work / "endpoint" / "deployed.json").read_text())["model_data"])
    model.write_bytes(b"not a tar.gz")
    args = parser.parse_args(argv)
    assert run(lambda: args.handler(args)) == 2
    err = _errors(capsys)
    assert len(err) == 1 and err[0].startswith(f"error: cannot load the deployed model {model}: "), err
    # An unreadable snapshot Parquet file: reported before the (slow) Flink run.
    (work / "features" / "snapshots" / "part-0.parquet").write_bytes(b"PAR1 garbage")
    assert run(lambda: args.handler(args)) == 2
    err = _errors(capsys)
    assert len(err) == 1 and err[0].startswith("error: cannot read snapshot table"), err
    # A snapshot table without the needed columns.
    pq.write_table(pa.table({"x": [1]}), work / "features" / "snapshots" / "part-0.parquet")
    assert run(lambda: args.handler(args)) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "lacks column(s): cc_num, cutoff" in err[0], err


# --- issue 9: nothing lost, nothing counted twice, one-line errors, no Flink left behind ----------
def _echo_flink(source: Path, sink: Path, watermark_seconds: int, log_path: Path, **_: object) -> float:
    """Stands in for the Flink job: every input event comes out on time with a 1-event window."""
    sink.mkdir(parents=True, exist_ok=True)
    rows = []
    for line in source.read_text().splitlines():
        ev = json.loads(line)
        rows.append(ev | {**lone_event_features(ev["amount"]), "late": False, "raw": None})
    (sink / "part-0").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0.0


def _events(n: int, **extra: object) -> list[dict]:
    return [
        {"tid": f"t{i}", "cc_num": 1 + i % 3, "amount": 10.0 + i, "trans_ts": D0 + 60.0 + i} for i in range(n)
    ]


def _echo_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int) -> tuple[Path, Path]:
    """(work dir, events file of `n` events) for a replay whose Flink job is `_echo_flink`."""
    work = make_work_dir(tmp_path / "work", [(1, D0, 10, 20.0)])
    monkeypatch.setattr(replay, "run_flink", _echo_flink)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _events(n)))
    return work, events


def test_event_sharing_a_warmup_tid_is_decided_and_bom_is_accepted(tmp_path, monkeypatch):
    work = make_work_dir(tmp_path / "work", [(1, D0, 10, 20.0)])
    monkeypatch.setattr(replay, "run_flink", _echo_flink)
    warm = {"tid": "t0", "cc_num": 1, "amount": 5.0, "trans_ts": D0 + 1.0, "warmup": True}
    events = tmp_path / "events.jsonl"
    lines = [json.dumps(warm)] + [json.dumps(e) for e in _events(5)]
    events.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")  # BOM, as some editors write
    out = tmp_path / "d.jsonl"
    s = replay.run_replay(work, events, out, progress=False)
    tids = sorted(json.loads(x)["tid"] for x in out.read_text().splitlines())
    assert tids == ["t0", "t1", "t2", "t3", "t4"]  # t0 shares the warm-up line's tid: still decided
    assert (s["events"], s["decisions"], s["rejects"], s["warmup_events"]) == (5, 5, 0, 1)


class StickyFailingKinesis:
    """PutRecords where the decisions of some events fail every in-place retry of their first
    delivery (a throttled shard), so the handler reports them and the batch is re-delivered."""

    def __init__(self, inner, sticky_tids: set[str], attempts: int = 6) -> None:
        self.inner, self.sticky, self.attempts, self.tries = inner, sticky_tids, attempts, {}

    def put_records(self, *, StreamName, Records):
        out, ok = [], []
        for r in Records:
            tid = json.loads(r["Data"])["tid"]
            self.tries[tid] = self.tries.get(tid, 0) + 1
            if tid in self.sticky and self.tries[tid] <= self.attempts:
                out.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"})
            else:
                ok.append(r)
                out.append({"SequenceNumber": "1", "ShardId": "shardId-0"})
        self.inner.put_records(StreamName=StreamName, Records=ok)
        return {"FailedRecordCount": len(Records) - len(ok), "Records": out}


def test_redelivered_decisions_are_counted_once(tmp_path, monkeypatch):
    work, events = _echo_setup(tmp_path, monkeypatch, 300)
    out = tmp_path / "d.jsonl"

    def flaky(clients: dict) -> dict:
        return clients | {"kinesis": StickyFailingKinesis(clients["kinesis"], {"t10", "t160"})}

    s = replay.run_replay(work, events, out, progress=False, batch_size=50, wrap_clients=flaky)
    decided = [json.loads(x) for x in out.read_text().splitlines()]
    # Batches [0, 50) and [150, 200) were re-delivered from t10 and t160 on: 40 + 40 records.
    assert s["redelivered"] == 80 and s["duplicates_dropped"] == 78  # all but t10, t160 were decided twice
    assert len(decided) == len({d["decision_id"] for d in decided}) == s["decisions"] == 300
    assert sorted(d["tid"] for d in decided) == sorted(f"t{i}" for i in range(300))


def test_cli_output_folder_watermark_and_endpoint_url_errors(tmp_path, monkeypatch, capsys):
    import argparse

    work, events = _echo_setup(tmp_path, monkeypatch, 3)
    parser = argparse.ArgumentParser()
    replay.add_commands(parser.add_subparsers())
    base = ["replay", "--work-dir", str(work), "--events", str(events)]

    # --out into a folder that does not exist yet: created.
    out = tmp_path / "new" / "deeper" / "d.jsonl"
    args = parser.parse_args([*base, "--out", str(out)])
    assert args.handler(args) == 0 and len(out.read_text().splitlines()) == 3
    capsys.readouterr()
    # --out naming a directory: one line.
    args = parser.parse_args([*base, "--out", str(tmp_path / "new")])
    assert run(lambda: args.handler(args)) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("[replay]")]
    assert len(err) == 1 and "is a directory" in err[0]
    # A negative watermark is refused by the argument parser, before anything starts.
    with pytest.raises(SystemExit) as info:
        parser.parse_args([*base, "--out", str(out), "--watermark-seconds", "-1"])
    assert info.value.code == 2 and "must be >= 0" in capsys.readouterr().err
    # An unreachable --endpoint-url is an error, not a silent fallback to the deployed model.
    args = parser.parse_args([*base, "--out", str(out), "--endpoint-url", "http://127.0.0.1:9"])
    assert run(lambda: args.handler(args)) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("[replay]")]
    assert err == ["error: --endpoint-url http://127.0.0.1:9 does not answer GET /ping"]


def test_replay_does_not_score_with_another_servers_model_on_the_recorded_port(tmp_path, monkeypatch):
    """The record's port answered by someone else (another work dir's server): not used."""
    from training.serve import LocalEndpointServer

    work = make_work_dir(tmp_path / "work", [(1, D0, 10, 20.0)])
    monkeypatch.setattr(replay, "run_flink", _echo_flink)
    record_path = work / "endpoint" / "deployed.json"
    record = json.loads(record_path.read_text())
    other = LocalEndpointServer(record["model_data"], model_version="99").start()
    try:
        record |= {"url": other.url, "port": other.port, "pid": 1, "instance_id": "mine"}
        record_path.write_text(json.dumps(record))
        events = tmp_path / "events.jsonl"
        events.write_text("".join(json.dumps(e) + "\n" for e in _events(3)))
        s = replay.run_replay(work, events, tmp_path / "d.jsonl", progress=False)
    finally:
        other.stop()
    assert s["decisions"] == 3 and s["endpoint"] != other.url


def test_sigterm_during_replay_leaves_no_flink_process(tmp_path):
    """`replay` killed by SIGTERM while Flink runs: exit 143, one line, the Flink process group gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    work = make_work_dir(tmp_path / "work", [(1, D0, 10, 20.0)])
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _events(3)))
    pids = tmp_path / "pids"
    fake = tmp_path / "fake-flink-python"  # stands in for .venv-flink/bin/python: a job and its "JVM"
    fake.write_text(f"#!/bin/sh\nsleep 300 & echo $! >> {pids}\necho $$ >> {pids}\nwait\n")
    fake.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "replay", "--work-dir", str(work), "--events", str(events),
         "--out", str(tmp_path / "d.jsonl")],
        cwd=ROOT, env={**os.environ, "FLINK_PYTHON": str(fake)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = [int(p) for p in pids.read_text().split()]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    errors = [x for x in err.splitlines() if not x.startswith("[replay]")]
    assert len(errors) == 1 and errors[0].startswith("error: replay terminated (SIGTERM)"), err
    time.sleep(0.2)
    assert [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"] == []


class FailingPutsFor:
    """A feature store whose PutRecord always fails for one card (an error the handler does not
    retry in place: Kinesis re-delivers the batch)."""

    def __init__(self, inner, card: int) -> None:
        self.inner, self.card = inner, str(card)

    def put_record(self, *, FeatureGroupName, Record, **kw):
        from botocore.exceptions import ClientError

        if any(f["FeatureName"] == spec.CARD_ID and f["ValueAsString"] == self.card for f in Record):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutRecord")
        return self.inner.put_record(FeatureGroupName=FeatureGroupName, Record=Record, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_ingest_handler_beside_the_scorer_reports_its_failures_in_the_one_rejects_file(tmp_path, monkeypatch):
    """The ingest handler runs in its own process: its re-deliveries and its failed records reach
    the summary and the rejects file, and the scorer still decides every event."""
    work, events = _echo_setup(tmp_path, monkeypatch, 30)
    out = tmp_path / "d.jsonl"

    def failing(clients: dict) -> dict:
        return clients | {"featurestore": FailingPutsFor(clients["featurestore"], card=2)}

    s = replay.run_replay(work, events, out, progress=False, batch_size=10, wrap_clients=failing)
    assert s["decisions"] == 30  # the scorer never touches the streaming group
    assert s["failed_after_redelivery"] >= 10 and s["redelivered"] > 0  # card 2's 10 events at least
    rejects = [json.loads(x) for x in Path(s["rejects_path"]).read_text().splitlines()]
    lost = {
        json.loads(r["data"])["tid"] for r in rejects if r["reason"] == "processing failed after redeliveries"
    }
    assert {f"t{i}" for i in range(30) if 1 + i % 3 == 2} <= lost
    assert s["rejects"] == len(rejects) and s["ingest_handler_seconds"] > 0
    assert not Path(str(s["rejects_path"]) + ".ingest").exists()  # merged, then removed


# --- the routing and the consumer read rows without decoding them; same answers as decoding ------
def _flink_row(tid: object = "t1", ts: object = 1.5e9, late: object = False, **over: object) -> dict:
    """A row in the Flink sink's key order (streaming/sql.py)."""
    row = {"tid": tid, "cc_num": 4000000000000001, "amount": 12.5, "trans_ts": ts, "merchant": None,
           "zip_code": None, "fraud_label": 0, **lone_event_features(12.5), "late": late,
           "beyond_lateness": False, "raw": None, "reject_reason": None}  # fmt: skip
    return row | over


@pytest.mark.parametrize(
    "line",
    [
        json.dumps(_flink_row(), separators=(",", ":")),
        json.dumps(_flink_row(late=True, beyond_lateness=True), separators=(",", ":")),
        json.dumps(_flink_row(ts=1589484112), separators=(",", ":")),  # an integer: json gives an int
        json.dumps(_flink_row(ts=0.0), separators=(",", ":")),
        json.dumps(_flink_row(tid="warmup-ab12-3"), separators=(",", ":")),
        json.dumps(
            _flink_row(tid="naïve €", merchant='x","late":true,"raw":null}'),
            separators=(",", ":"),
            ensure_ascii=False,
        ),
        '{"tid":"t","cc_num":1,"amount":1.0,"trans_ts":1.589484112E9,"late":false,"beyond_lateness":false,'
        '"raw":null,"reject_reason":null}',
        '{"tid":"t","cc_num":1,"amount":1.0,"trans_ts":-1.5e-3,"late":true,"beyond_lateness":false,'
        '"raw":null,"reject_reason":null}',
    ],
)
def test_flink_row_fields_read_what_json_reads(line):
    row = json.loads(line)
    fields = replay.flink_row_fields(line)
    assert fields == (row["tid"], row["late"] is True, row["trans_ts"])
    assert type(fields[2]) is type(row["trans_ts"])


@pytest.mark.parametrize(
    "line",
    [
        json.dumps(_flink_row(tid='a"b\\c'), separators=(",", ":")),  # escapes: decoded instead
        json.dumps(_flink_row(tid="\u2028x")),  # default separators (spaces): not the sink's form
        json.dumps(_flink_row(raw='{"tid": 1}', reject_reason="bad"), separators=(",", ":")),
        json.dumps(_flink_row(ts=None), separators=(",", ":")),
        json.dumps(_flink_row(ts="1.5e9"), separators=(",", ":")),
        json.dumps(_flink_row(late=None), separators=(",", ":")),
        '{"tid":"t","cc_num":1,"amount":1.0,"trans_ts":01.5,"late":false,"beyond_lateness":false,'
        '"raw":null,"reject_reason":null}',  # not a JSON number
        '{"tid":"t","cc_num":1,"amount":1.0,"trans_ts":NaN,"late":false,"beyond_lateness":false,'
        '"raw":null,"reject_reason":null}',
        "not json",
        "",
    ],
)
def test_flink_row_fields_leave_every_other_line_to_the_decoder(line):
    assert replay.flink_row_fields(line) is None


def test_route_gives_the_decoded_answer_on_both_paths(tmp_path, monkeypatch):
    work, events = _echo_setup(tmp_path, monkeypatch, 1)
    r = replay.Replay(work, events, tmp_path / "d.jsonl", progress=False)
    r.prepare()
    r.warmup = {"warmup-x-1"}
    rows = [
        _flink_row(), _flink_row(late=True), _flink_row(tid="warmup-x-1"), _flink_row(tid="warmup-x-10"),
        _flink_row(tid='q"w'), _flink_row(ts=D0 + 3 * DAY + 5), _flink_row(ts=None),
    ]  # fmt: skip
    for row in rows:
        compact, spaced = json.dumps(row, separators=(",", ":")), json.dumps(row)
        assert replay.flink_row_fields(spaced) is None  # decoded
        assert r._route(compact, record_rejects=False) == r._route(spaced, record_rejects=False), row
    assert r._route(json.dumps(_flink_row(tid="warmup-x-1"), separators=(",", ":"))) == (False, None)
    r.sink.close()
    r.queue.close()


def test_kinesis_sink_reads_the_decision_id_off_the_handlers_text(tmp_path):
    from lambdas.decisions import decision_id

    ev = {"tid": "a", "cc_num": 1, "trans_ts": 1.0, "amount": 2.0}
    d = {"decision_id": decision_id(ev), "tid": "a", "score": 0.5}
    assert replay._decision_id_of(json.dumps(d)) == d["decision_id"]
    assert replay._decision_id_of(json.dumps({"tid": "a", "decision_id": "x"})) == "x"  # decoded
    assert replay._decision_id_of(json.dumps({"decision_id": "not a uuid at all, but long enough"})) == (
        "not a uuid at all, but long enough"
    )
    assert replay._decision_id_of(json.dumps({"tid": "a"})) is None
    assert replay._decision_id_of("not json") is None
    sink = replay.LocalKinesisSink(tmp_path / "d.jsonl")
    for _ in range(2):
        sink.put_records(StreamName="s", Records=[{"Data": json.dumps(d).encode()}, {"Data": b"other"}])
    sink.close()
    assert sink.duplicates_dropped == 1
    assert (tmp_path / "d.jsonl").read_text().splitlines() == [json.dumps(d), "other", "other"]


# --- the handlers follow the running Flink job's output ----------------------------------------
FAKE_JOB = """#!{python}
# Stands in for .venv-flink/bin/python running streaming/job.py: writes the echo output the way
# Flink's file sink does (in-progress part files, flushed mid-line, rolled once, renamed at the end).
import json, os, sys, time
sys.path.insert(0, os.getcwd())
from tests.reference import lone_event_features
args = sys.argv[2:]
src, sink = args[args.index("--source-path") + 1], args[args.index("--sink-path") + 1]
os.makedirs(sink, exist_ok=True)
rows = []
for line in open(src, encoding="utf-8"):
    ev = json.loads(line)
    late = ev["tid"].startswith("late")
    rows.append(json.dumps({{**ev, **lone_event_features(ev["amount"]), "late": late,
                             "beyond_lateness": False, "raw": None, "reject_reason": None}},
                           separators=(",", ":")) + "\\n")
cut = len(rows) // 2
parts = ["".join(rows[:cut]), "".join(rows[cut:])]
time.sleep(0.3)  # start-up: the handlers wait for the first part
for n, text in enumerate(parts):
    with open(f"{{sink}}/.part-abc-0-{{n}}.inprogress.x{{n}}", "w", encoding="utf-8") as f:
        for i in range(0, len(text), 5000):
            f.write(text[i : i + 5000])
            f.flush()
            time.sleep(0.005)
            if os.environ.get("FAKE_FLINK_FAIL") and i > len(text) // 2:
                sys.exit(1)
for n in range(len(parts)):
    os.rename(f"{{sink}}/.part-abc-0-{{n}}.inprogress.x{{n}}", f"{{sink}}/part-abc-0-{{n}}")
"""


def _three_day_setup(tmp_path: Path, n: int = 3000) -> tuple[Path, Path, Path]:
    """(work dir, events over three days with a warm-up and late rows, fake Flink python)."""
    import sys

    work = make_work_dir(
        tmp_path / "work",
        [(c, D0 + d * DAY, 1 + c + d, 10.0 * (c + d)) for c in range(1, 6) for d in range(3)],
    )
    events = [{"tid": "w", "cc_num": 1, "amount": 5.0, "trans_ts": D0 + 1.0, "warmup": True}]
    for i in range(n):
        tid = f"late{i}" if i % 97 == 5 else f"t{i}"
        events.append(
            {"tid": tid, "cc_num": 1 + i % 5, "amount": 1.0 + i % 50, "trans_ts": D0 + 60 + i * 80.0}
        )
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    fake = tmp_path / "fake-flink-python"
    fake.write_text(FAKE_JOB.format(python=sys.executable))
    fake.chmod(0o755)
    return work, path, fake


def test_handlers_following_the_running_job_decide_as_after_it(tmp_path, monkeypatch):
    """The overlapped replay (handlers read the job's in-progress output) writes the same decisions,
    in the same order, with the same snapshot days, as the replay that waits for the job to end."""
    import subprocess

    work, events, fake = _three_day_setup(tmp_path)
    monkeypatch.setenv("FLINK_PYTHON", str(fake))
    followed = replay.run_replay(work, events, tmp_path / "followed.jsonl", progress=False)

    def job_to_the_end(source: Path, sink: Path, watermark_seconds: int, log_path: Path) -> float:
        subprocess.run([str(fake), "job.py", "--source-path", str(source), "--sink-path", str(sink)],
                       cwd=ROOT, check=True)  # fmt: skip
        return 0.0

    monkeypatch.setattr(replay, "run_flink", job_to_the_end)
    waited = replay.run_replay(work, events, tmp_path / "waited.jsonl", progress=False)
    assert (tmp_path / "followed.jsonl").read_bytes() == (tmp_path / "waited.jsonl").read_bytes()
    same = ("events", "decisions", "late", "fraud_flagged", "snapshots_published", "flink_output_events")
    assert {k: followed[k] for k in same} == {k: waited[k] for k in same}
    assert followed["decisions"] == 3000 and len(followed["snapshots_published"]) == 3
    assert followed["flink_seconds"] > 0 and followed["handlers_after_flink_seconds"] >= 0
    assert followed["handler_seconds"] > followed["handlers_after_flink_seconds"]  # began while it ran


def test_a_replay_started_early_and_finished_later_decides_as_one_run(tmp_path, monkeypatch):
    """The `local` runner's split (start before training, finish after deploy) writes the same
    decisions as one run; the wait is reported apart, and Flink's time is the job's own: its exit
    is noted when it happens, not when the handlers first look."""
    work, events, fake = _three_day_setup(tmp_path)
    monkeypatch.setenv("FLINK_PYTHON", str(fake))
    whole = replay.run_replay(work, events, tmp_path / "whole.jsonl", progress=False)
    t0 = time.perf_counter()
    split = replay.Replay(work, events, tmp_path / "split.jsonl", progress=False)
    split.start()
    assert split.flink is not None
    deadline = time.monotonic() + 60
    while split.flink.exited_at is None and time.monotonic() < deadline:  # noted, not reaped
        time.sleep(0.01)
    time.sleep(1.0)  # the caller's own work (training) after the job ended
    s = split.finish()
    wall = time.perf_counter() - t0
    split.stop()  # idempotent
    assert (tmp_path / "split.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert s["decisions"] == whole["decisions"] == 3000
    assert s["snapshots_published"] == whole["snapshots_published"]
    assert s["waited_seconds"] >= 1.0
    assert 0 < s["flink_seconds"] < s["waited_seconds"]
    assert 0 <= s["handlers_after_flink_seconds"] <= s["handler_seconds"]  # the wait is not in it
    # the replay's time includes the job's, not the second of waiting after it had ended
    assert 1.0 <= wall - s["total_seconds"] <= s["waited_seconds"] + 0.2


def test_without_os_waitid_a_split_replay_still_decides_every_event(tmp_path, monkeypatch):
    """Python < 3.13 on macOS has no os.waitid: no exit-noting thread, the poll's time instead."""
    work, events, fake = _three_day_setup(tmp_path, n=300)
    monkeypatch.setenv("FLINK_PYTHON", str(fake))
    monkeypatch.delattr(os, "waitid")
    failed: list[BaseException | None] = []  # an exception in any thread, e.g. a waiter without waitid
    monkeypatch.setattr(threading, "excepthook", lambda args: failed.append(args.exc_value))
    split = replay.Replay(work, events, tmp_path / "d.jsonl", progress=False)
    split.start()
    assert split.flink is not None and split.flink.exited_at is None
    s = split.finish()
    assert s["decisions"] == 300 and s["flink_seconds"] > 0
    assert failed == []


def test_the_job_is_stopped_once_however_often_stop_is_called(tmp_path, monkeypatch):
    """Replay.run, finish and the pipeline runner's `finally` may each call stop: one signal round
    only, never again at a reaped leader's pid."""
    import subprocess

    stops: list[int] = []
    monkeypatch.setattr(replay.launch, "stop_job", lambda proc: stops.append(proc.pid))
    proc = subprocess.Popen(["true"], start_new_session=True)
    run = replay.FlinkRun(proc, tmp_path / "flink.log")
    proc.wait()
    run.stop()
    run.stop()
    assert stops == [proc.pid]


def test_a_missing_flink_environment_is_a_replay_error_before_anything_runs(tmp_path, monkeypatch):
    work, events, _ = _three_day_setup(tmp_path, n=10)
    monkeypatch.setenv("FLINK_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(replay.ReplayError, match="PyFlink environment not found"):
        replay.Replay(work, events, tmp_path / "d.jsonl", progress=False).start()


def test_a_job_failing_mid_run_fails_the_replay_and_leaves_nothing_running(tmp_path, monkeypatch):
    import multiprocessing

    work, events, fake = _three_day_setup(tmp_path)
    monkeypatch.setenv("FLINK_PYTHON", str(fake))
    monkeypatch.setenv("FAKE_FLINK_FAIL", "1")
    with pytest.raises(replay.ReplayError, match=r"Flink job failed \(exit 1"):
        replay.run_replay(work, events, tmp_path / "d.jsonl", progress=False)
    assert multiprocessing.active_children() == []  # the ingest handler's process is gone too
    # A rerun starts over and decides every event.
    monkeypatch.delenv("FAKE_FLINK_FAIL")
    assert replay.run_replay(work, events, tmp_path / "d.jsonl", progress=False)["decisions"] == 3000


def test_output_follower_reads_whole_lines_and_leaves_the_unusual_to_the_final_pass(tmp_path):
    sink = tmp_path / "out"
    sink.mkdir()
    state = {"done": False}
    follower = replay.OutputFollower(sink, lambda: state["done"])
    p0, p1 = sink / ".part-u-0-0.inprogress.a", sink / ".part-u-0-1.inprogress.b"
    assert follower._read_available() == []  # nothing written yet
    p0.write_bytes(b'{"a":1}\n\n{"b":')
    assert follower._read_available() == ['{"a":1}']  # the blank line is skipped, the partial kept
    with p0.open("ab") as f:
        f.write(b'2}\n{"c":3}\r\n{"d":4}\n')
    # A carriage return (text mode reads it as a line break): from there on, the final pass reads.
    assert follower._read_available() == [] and not follower._early
    p1.write_bytes(b'{"e":5}\n')
    assert follower._read_available() == []
    p0.rename(sink / "part-u-0-0")
    p1.rename(sink / "part-u-0-1")
    state["done"] = True
    rest = list(follower._rest())
    assert ['{"a":1}', *rest] == list(replay.enriched_lines(sink))
    assert rest == ['{"b":2}', '{"c":3}', '{"d":4}', '{"e":5}']


def test_output_follower_moves_to_the_next_part_only_once_it_exists(tmp_path):
    sink = tmp_path / "out"
    sink.mkdir()
    follower = replay.OutputFollower(sink, lambda: False)
    p0 = sink / ".part-u-0-0.inprogress.a"
    p0.write_bytes(b"1\n2\n")
    assert follower._read_available() == ["1", "2"]
    assert follower._read_available() == []
    with p0.open("ab") as f:
        f.write(b"3\n")
    (sink / ".part-u-0-1.inprogress.b").write_bytes(b"4\n")
    assert follower._read_available() == ["3"]  # part 0's last line, read once part 1 exists
    assert follower._read_available() == ["4"]
    (sink / ".part-v-0-0.inprogress.c").write_bytes(b"x\n")  # another prefix: not followed
    assert follower._read_available() == [] and not follower._early


def test_finished_parts_are_in_write_order_past_ten(tmp_path):
    for n in (0, 1, 2, 10, 11):
        (tmp_path / f"part-u-0-{n}").write_text(f"{n}\n")
    (tmp_path / ".part-u-0-12.inprogress.x").write_text("12\n")
    assert list(replay.enriched_lines(tmp_path)) == ["0", "1", "2", "10", "11"]


class RollsBackOnce:
    """A feature store whose transaction SQLite rolls back once, mid-batch (as on a full disk): the
    write that triggers it still succeeds, on its own."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.calls = inner, after, 0

    def put_record(self, **kw):
        self.calls += 1
        if self.calls == self.after:
            conn = self.inner._conn()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return self.inner.put_record(**kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _streaming_rows(work: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(work / "replay" / "online-store.sqlite") as conn:
        return conn.execute(
            "SELECT record_id, event_time, record FROM records WHERE feature_group = ? ORDER BY record_id",
            (spec.STREAMING_FEATURE_GROUP.name,),
        ).fetchall()


def test_ingest_batch_whose_transaction_was_rolled_back_is_redelivered_whole(tmp_path, monkeypatch):
    """The ingest process commits once per batch; a batch whose transaction SQLite rolled back
    (writes it had reported done are gone) is redelivered whole: the store ends as without it."""
    work, events = _echo_setup(tmp_path, monkeypatch, 60)
    clean = replay.run_replay(work, events, tmp_path / "a.jsonl", progress=False, batch_size=10)
    expected = _streaming_rows(work)
    assert len(expected) == 3 and clean["redelivered"] == 0

    def rolling_back(clients: dict) -> dict:
        return clients | {"featurestore": RollsBackOnce(clients["featurestore"], after=17)}

    s = replay.run_replay(
        work, events, tmp_path / "b.jsonl", progress=False, batch_size=10, wrap_clients=rolling_back
    )
    assert s["redelivered"] == 10 and s["failed_after_redelivery"] == 0  # the last batch, once more
    assert _streaming_rows(work) == expected
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_group_commit_is_one_transaction_and_says_when_writes_may_be_lost(tmp_path):
    import sqlite3

    from pipeline.local.feature_store import LocalFeatureStoreRuntime

    store = LocalFeatureStoreRuntime(tmp_path / "s.db")
    fg = spec.STREAMING_FEATURE_GROUP

    def put(card: int, t: float) -> None:
        values = {spec.CARD_ID: str(card), fg.event_time: repr(t)} | {
            n: "1" if k == "Integral" else "1.0"
            for n, k in fg.features
            if n not in (spec.CARD_ID, fg.event_time)
        }
        store.put_record(
            FeatureGroupName=fg.name,
            Record=[{"FeatureName": n, "ValueAsString": values[n]} for n, _ in fg.features],
        )

    other = sqlite3.connect(tmp_path / "s.db")
    with store.group_commit() as tx:
        put(1, 1.0)
        put(2, 1.0)
        assert other.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0  # not yet committed
    assert tx["committed"] and other.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 2
    with store.group_commit() as tx:
        put(3, 1.0)
        store._conn().execute("ROLLBACK")  # what SQLite does on its own after e.g. SQLITE_FULL
        put(4, 1.0)  # runs alone
    assert not tx["committed"]
    assert [r[0] for r in other.execute("SELECT record_id FROM records ORDER BY record_id")] == [
        "1",
        "2",
        "4",
    ]
    with pytest.raises(RuntimeError), store.group_commit():
        put(5, 1.0)
        raise RuntimeError("boom")
    assert other.execute("SELECT COUNT(*) FROM records WHERE record_id = '5'").fetchone()[0] == 0
    other.close()
    store.close()


# --- streaming/events.py writes what json.dumps wrote, ranks as groupby did ----------------------
@pytest.mark.parametrize("labelled", [True, False])
def test_event_lines_are_json_dumps_of_each_record(labelled):
    import pandas as pd

    out = pd.DataFrame(
        {
            "tid": ["a", 'q"\\', "naïve €\u2028", ""],
            spec.CARD_ID: np.array([1, 2**62, 0, 7], dtype="int64"),
            spec.AMOUNT: [1.5, float("nan"), float("inf"), 1e-300],
            spec.EVENT_TIME: [1589846400.0, -0.0, 1.0e15, float("-inf")],
        }
    )
    if labelled:
        out[spec.LABEL] = np.array([0, 1, 0, 1], dtype="int64")
    warm = np.array([True, False, False, True])
    expected = []
    for i, w in enumerate(warm):
        rec = {c: out[c].iloc[i] for c in out.columns}
        rec = {
            k: (v if k == "tid" else int(v) if k in (spec.CARD_ID, spec.LABEL) else float(v))
            for k, v in rec.items()
        }
        expected.append(json.dumps(rec | ({"warmup": True} if w else {})) + "\n")
    assert events_mod._event_lines(out, warm) == expected


def test_rank_from_end_is_groupby_cumcount_descending():
    import pandas as pd

    keys = np.sort(np.random.default_rng(3).integers(0, 50, 2000))
    expected = pd.Series(keys).groupby(keys).cumcount(ascending=False).to_numpy()
    assert (events_mod._rank_from_end(keys) == expected).all()
    assert events_mod._rank_from_end(np.array([5])).tolist() == [0]


def test_replay_jvm_options_reach_the_job_first_and_leave_our_environment(tmp_path, monkeypatch):
    """JVM_OPTIONS go first in the job's JVM_ARGS (the caller's flags come later and win); the
    parent's own environment is not touched."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$JVM_ARGS"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("FLINK_PYTHON", str(fake))
    monkeypatch.setenv("JVM_ARGS", "-Xmx1g")
    log = tmp_path / "flink.log"
    replay.run_flink(tmp_path / "events.jsonl", tmp_path / "out", 5, log)
    assert log.read_text().strip() == f"{replay.JVM_OPTIONS} -Xmx1g"
    assert os.environ["JVM_ARGS"] == "-Xmx1g"
