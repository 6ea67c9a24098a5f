"""`send` and `decisions` against moto's Kinesis (PutRecords, ListShards, GetShardIterator, GetRecords)
and botocore's Stubber (throttling, whole-call failures); `decisions --work-dir` on a local file."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import time

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from pipeline import aws_stream as s
from shared.cli import run

REGION = "us-east-1"


@pytest.fixture
def kinesis():
    with mock_aws():
        yield boto3.client("kinesis", region_name=REGION)


def _create(kinesis, name: str, shards: int) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=shards)


def _events(n: int, cards: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    card_numbers = [4000_0000_0000_0000 + rng.randrange(10**12) for _ in range(cards)]
    return [
        {
            "tid": f"t{i:05d}",
            "cc_num": card_numbers[rng.randrange(cards)],
            "amount": round(rng.uniform(1, 500), 2),
            "trans_ts": 1_700_000_000 + i,
        }
        for i in range(n)
    ]


def _records(events: list[dict]) -> list[s.OutgoingRecord]:
    return [s.OutgoingRecord(i, str(e["cc_num"]), event=dict(e)) for i, e in enumerate(events)]


class FlakyKinesis:
    """moto's client, except that chosen records fail once with ProvisionedThroughputExceeded
    (the call still writes the others, as Kinesis does). Records what each call carried."""

    def __init__(self, client, fail_once: set[str]):
        self.client, self.fail_once = client, set(fail_once)
        self.failed: set[str] = set()
        self.forwarded: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def put_records(self, *, StreamName: str, Records: list[dict]) -> dict:
        self.calls.append([r["PartitionKey"] for r in Records])
        results: list[dict | None] = [None] * len(Records)
        forward = []
        for i, record in enumerate(Records):
            tid = json.loads(record["Data"])["tid"]
            if tid in self.fail_once and tid not in self.failed:
                self.failed.add(tid)
                results[i] = {
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard shardId-000000000000",
                }
            else:
                self.forwarded[tid] = self.forwarded.get(tid, 0) + 1
                forward.append((i, record))
        if forward:
            response = self.client.put_records(StreamName=StreamName, Records=[r for _, r in forward])
            for (i, _), result in zip(forward, response["Records"], strict=True):
                results[i] = result
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def _read_all(client, stream: str) -> list[s.StreamRecord]:
    reader = s.StreamReader(client, stream, sleep=lambda _: None)
    out: list[s.StreamRecord] = []
    while True:
        batch = reader.poll()
        out += batch
        if not batch and reader.caught_up:
            return out


def test_ten_thousand_events_with_five_percent_failing_arrive_once_in_per_card_order(kinesis):
    """Contract of issue 12: 10,000 events, 5 % of the records failing on the first try."""
    _create(kinesis, "transactions", shards=4)
    events = _events(10_000, cards=400)
    failing = set(random.Random(2).sample([e["tid"] for e in events], 500))
    flaky = FlakyKinesis(kinesis, failing)
    sleeps: list[float] = []
    stats = s.send_records(flaky, "transactions", _records(events), rate=None, sleep=sleeps.append)
    assert (stats.sent, stats.retried, stats.failed) == (10_000, 500, 0)
    assert flaky.failed == failing  # every chosen record did fail once ...
    assert set(flaky.forwarded.values()) == {1}  # ... and each record was written exactly once
    assert all(len(keys) == len(set(keys)) <= 500 for keys in flaky.calls)  # one record per card per call
    assert sleeps and all(x >= 0 for x in sleeps)  # backed off after partial failures

    arrived = _read_all(kinesis, "transactions")
    tids = [json.loads(r.data)["tid"] for r in arrived]
    assert len(tids) == len(set(tids)) == 10_000
    per_card_sent: dict[int, list[str]] = {}
    for e in events:
        per_card_sent.setdefault(e["cc_num"], []).append(e["tid"])
    per_card_read: dict[int, list[str]] = {}
    shard_of_card: dict[int, str] = {}
    for r in arrived:  # the reader returns each shard's records in sequence order
        event = json.loads(r.data)
        per_card_read.setdefault(event["cc_num"], []).append(event["tid"])
        assert shard_of_card.setdefault(event["cc_num"], r.shard) == r.shard
    assert per_card_read == per_card_sent
    assert len(set(shard_of_card.values())) == 4  # the cards really spread over the shards


def test_without_the_one_record_per_card_rule_a_retry_would_break_the_order(kinesis):
    """Why the rule exists: a partly failed call has written the records behind the failed one."""
    _create(kinesis, "transactions", shards=1)
    events = [{"tid": f"t{i}", "cc_num": 42, "amount": 1.0, "trans_ts": i} for i in range(3)]
    flaky = FlakyKinesis(kinesis, {"t0"})
    # The naive producer: one call with all three, then re-send what failed.
    entries = [{"Data": json.dumps(e).encode(), "PartitionKey": "42"} for e in events]
    response = flaky.put_records(StreamName="transactions", Records=entries)
    failed = [e for e, r in zip(entries, response["Records"], strict=True) if "ErrorCode" in r]
    flaky.put_records(StreamName="transactions", Records=failed)
    naive = [json.loads(r.data)["tid"] for r in _read_all(kinesis, "transactions")]
    assert naive == ["t1", "t2", "t0"]
    # send_records keeps the card's order under the same failure.
    _create(kinesis, "transactions-2", shards=1)
    flaky = FlakyKinesis(kinesis, {"t0"})
    s.send_records(flaky, "transactions-2", _records(events), rate=None, sleep=lambda _: None)
    assert [json.loads(r.data)["tid"] for r in _read_all(kinesis, "transactions-2")] == ["t0", "t1", "t2"]


def _stubbed_kinesis():
    client = boto3.client("kinesis", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    return client, Stubber(client)


def test_throttled_calls_and_partial_failures_are_retried_with_backoff_exactly_for_the_failed_records():
    client, stub = _stubbed_kinesis()
    events = [{"tid": f"t{i}", "cc_num": 100 + i, "amount": 1.0, "trans_ts": i} for i in range(3)]  # 3 cards
    data = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    keys = [str(e["cc_num"]) for e in events]
    everything = {
        "StreamName": "transactions",
        "Records": [{"Data": d, "PartitionKey": k} for d, k in zip(data, keys, strict=True)],
    }
    # 1. the whole call is throttled: nothing written, all three re-sent.
    stub.add_client_error(
        "put_records", "ProvisionedThroughputExceededException", "Rate exceeded", expected_params=everything
    )
    # 2. the second record fails.
    ok = {"SequenceNumber": "1" * 21, "ShardId": "shardId-000000000000"}
    stub.add_response(
        "put_records",
        {
            "FailedRecordCount": 1,
            "Records": [ok, {"ErrorCode": "InternalFailure", "ErrorMessage": "internal"}, ok],
        },
        expected_params=everything,
    )
    # 3. exactly that record, byte for byte.
    stub.add_response(
        "put_records",
        {"Records": [ok]},  # FailedRecordCount is omitted when 0 (shape: min 1)
        expected_params={
            "StreamName": "transactions",
            "Records": [{"Data": data[1], "PartitionKey": keys[1]}],
        },
    )
    sleeps: list[float] = []
    with stub:
        stats = s.send_records(
            client, "transactions", _records(events), rate=None, sleep=sleeps.append, rng=lambda: 1.0
        )
    stub.assert_no_pending_responses()
    assert (stats.sent, stats.retried, stats.failed, stats.calls, stats.throttled_calls) == (3, 4, 0, 3, 1)
    assert sleeps == [0.1, 0.2]  # full jitter upper bounds (rng=1): base * 2**attempt


def test_give_up_after_max_attempts_and_missing_stream_is_one_line():
    client, stub = _stubbed_kinesis()
    events = _events(1, cards=1)
    for _ in range(3):
        stub.add_client_error("put_records", "ProvisionedThroughputExceededException", "Rate exceeded")
    with stub:
        stats = s.send_records(
            client, "transactions", _records(events), rate=None, max_attempts=3, sleep=lambda _: None
        )
    assert (stats.sent, stats.failed) == (0, 1) and "after 3 attempts" in stats.failures[0]
    client, stub = _stubbed_kinesis()
    stub.add_client_error(
        "put_records", "ResourceNotFoundException", "Stream transactions under account 1 not found."
    )
    with stub, pytest.raises(s.StreamError, match="stream 'transactions' not found"):
        s.send_records(client, "transactions", _records(events), rate=None)


def test_rate_is_held_steady_by_spacing_calls(kinesis):
    _create(kinesis, "transactions", shards=1)
    clock = [0.0]
    call_times: list[float] = []

    class Timed:
        def put_records(self, **kwargs):
            call_times.append(clock[0])
            return kinesis.put_records(**kwargs)

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    stats = s.send_records(
        Timed(),
        "transactions",
        _records(_events(1000, cards=1000)),
        rate=100.0,
        sleep=sleep,
        clock=lambda: clock[0],
    )
    assert stats.sent == 1000 and len(call_times) == 50  # 20 events per call at 100 events/s
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(call_times)}
    assert gaps == {0.2}  # steady: one call of 20 every 0.2 s
    assert stats.seconds == pytest.approx(9.8)


def test_oversized_record_fails_alone():
    client, stub = _stubbed_kinesis()
    big = s.OutgoingRecord(0, "1", raw=b"x" * (s.MAX_BYTES_PER_RECORD + 1))
    small = s.OutgoingRecord(1, "2", raw=b'{"tid":"a"}')
    stub.add_response(
        "put_records",
        {
            "Records": [{"SequenceNumber": "1" * 21, "ShardId": "shardId-000000000000"}],
        },
        expected_params={"StreamName": "t", "Records": [{"Data": small.raw, "PartitionKey": "2"}]},
    )
    with stub:
        stats = s.send_records(client, "t", [big, small], rate=None)
    assert (stats.sent, stats.failed) == (1, 1) and "1 MiB" in stats.failures[0]


# --------------------------------------------------------------------------- decisions
def _decision(
    tid: str, card: int, score: float, trans_ts: float, decision_id: str | None = "auto", **extra
) -> dict:
    d = {
        "tid": tid,
        "cc_num": card,
        "trans_ts": trans_ts,
        "features": {"amount": 12.5, "amt_ratio1": 1.0},
        "score": score,
        "fraud": score >= 0.5,
        "late": False,
        **extra,
    }
    if decision_id:
        d["decision_id"] = f"id-{tid}" if decision_id == "auto" else decision_id
    return d


def test_decisions_across_shards_are_deduplicated_and_summarised(kinesis):
    _create(kinesis, "fraud-decisions", shards=3)
    now = time.time()
    decisions = [_decision(f"t{i}", 1000 + i, 0.9 if i % 10 == 0 else 0.1, now - 2.0) for i in range(100)]
    redelivered = decisions[:7]  # the Lambda retried a batch: same decision ids again
    no_id = [_decision("legacy", 5, 0.2, now - 2.0, decision_id=None)] * 2  # de-duplicated by tid
    for d in [*decisions, *redelivered, *no_id]:
        kinesis.put_record(
            StreamName="fraud-decisions", Data=json.dumps(d).encode(), PartitionKey=str(d["cc_num"])
        )
    kinesis.put_record(StreamName="fraud-decisions", Data=b"not json", PartitionKey="x")
    out = io.StringIO()
    view = s.DecisionView(out)
    reader = s.StreamReader(kinesis, "fraud-decisions")
    s.watch_stream(reader, view, sleep=lambda _: None)
    assert len(reader.shards) == 3
    assert (view.count, view.duplicates, view.flagged, view.unreadable) == (101, 8, 10, 1)
    summary = view.summary()
    assert "decisions 101" in summary and "flagged 10" in summary and "fraud rate 9.90%" in summary
    assert "duplicates dropped 8" in summary
    assert 1.5 < s._percentile(view.latencies, 0.5) < 30  # arrival (moto: put time) - trans_ts
    table = out.getvalue().splitlines()
    assert table[0].split()[:4] == ["event", "time", "(UTC)", "card"]
    assert len(table) == 1 + 101 and any("FRAUD" in row for row in table)


def test_decisions_since_reads_only_recent_arrivals(kinesis):
    _create(kinesis, "fraud-decisions", shards=1)
    kinesis.put_record(
        StreamName="fraud-decisions", Data=json.dumps(_decision("old", 1, 0.1, 0)), PartitionKey="1"
    )
    later = time.time() + 3600  # reader's clock one hour ahead: everything already there is "old"
    reader = s.StreamReader(kinesis, "fraud-decisions", since_seconds=60, now=lambda: later)
    view = s.DecisionView(io.StringIO())
    s.watch_stream(reader, view, sleep=lambda _: None)
    assert view.count == 0
    assert s.parse_duration("15m") == 900 and s.parse_duration("2h") == 7200 and s.parse_duration("30") == 30
    with pytest.raises(s.StreamError, match="duration"):
        s.parse_duration("yesterday")


def test_get_records_throttling_is_retried_with_backoff():
    client, stub = _stubbed_kinesis()
    stub.add_response(
        "list_shards",
        {"Shards": [{"ShardId": "shardId-000000000000", "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                     "SequenceNumberRange": {"StartingSequenceNumber": "1"}}]},
        {"StreamName": "fraud-decisions"},
    )  # fmt: skip
    stub.add_response(
        "get_shard_iterator",
        {"ShardIterator": "it-1" * 10},
        {
            "StreamName": "fraud-decisions",
            "ShardId": "shardId-000000000000",
            "ShardIteratorType": "TRIM_HORIZON",
        },
    )
    stub.add_client_error("get_records", "ProvisionedThroughputExceededException", "Rate exceeded for shard")
    record = {
        "SequenceNumber": "4" * 21,
        "ApproximateArrivalTimestamp": time.time(),
        "Data": json.dumps(_decision("t1", 1, 0.7, time.time() - 1)).encode(),
        "PartitionKey": "1",
    }
    stub.add_response(
        "get_records", {"Records": [record], "NextShardIterator": "it-2" * 10, "MillisBehindLatest": 0}
    )
    stub.add_response(
        "get_records", {"Records": [], "NextShardIterator": "it-3" * 10, "MillisBehindLatest": 0}
    )
    sleeps: list[float] = []
    with stub:
        reader = s.StreamReader(client, "fraud-decisions", sleep=sleeps.append, rng=lambda: 1.0)
        view = s.DecisionView(io.StringIO())
        s.watch_stream(reader, view, sleep=lambda _: None)
    stub.assert_no_pending_responses()
    assert view.count == 1 and view.flagged == 1 and reader.throttled == 1 and sleeps == [0.2]


def test_expect_checks_every_event_was_decided_once_and_gives_up_with_a_reason(kinesis, tmp_path):
    _create(kinesis, "fraud-decisions", shards=1)
    sent = tmp_path / "sent.jsonl"
    sent.write_text("".join(json.dumps({"tid": t, "cc_num": 1}) + "\n" for t in ("a", "b", "c")))
    expect = s.Expectation.load(sent)
    now = time.time()
    for d in (
        _decision("a", 1, 0.1, now),
        _decision("b", 1, 0.1, now),
        _decision("b", 1, 0.1, now, "other-id"),
    ):
        kinesis.put_record(StreamName="fraud-decisions", Data=json.dumps(d), PartitionKey="1")
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    view = s.DecisionView(io.StringIO(), table=False)
    reader = s.StreamReader(kinesis, "fraud-decisions")
    with pytest.raises(
        s.StreamError, match="gave up after 5 s: check FAILED: 3 events sent, 2 decided, 1 missing, 1"
    ):
        s.watch_stream(
            reader, view, expect=expect, timeout=5, sleep=sleep, clock=lambda: clock[0], err=io.StringIO()
        )
    kinesis.put_record(
        StreamName="fraud-decisions", Data=json.dumps(_decision("c", 1, 0.1, now)), PartitionKey="1"
    )
    s.watch_stream(
        reader, view, expect=expect, timeout=5, sleep=sleep, clock=lambda: clock[0], err=io.StringIO()
    )
    ok, line = expect.check(view)
    assert not ok and "0 missing, 1 decided more than once" in line  # b has two different decision ids


# --------------------------------------------------------------------------- CLI
def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    s.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return run(lambda: args.handler(args))  # as run_pipeline.py's entry: user errors caught once


def test_send_rows_cli_puts_simulated_events_stamped_now_and_writes_what_it_sent(kinesis, tmp_path, capsys):
    _create(kinesis, "transactions", shards=2)
    out = tmp_path / "sent.jsonl"
    before = time.time()
    assert _cli("send", "--rows", "300", "--rate", "5000", "--region", REGION, "--out", str(out)) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sent 300 of 300 events to transactions") and "retried 0, failed 0" in line
    arrived = [json.loads(r.data) for r in _read_all(kinesis, "transactions")]
    assert len(arrived) == 300 and {e["tid"] for e in arrived} == {
        json.loads(x)["tid"] for x in out.read_text().splitlines()
    }
    assert all(before - 1 <= e["trans_ts"] <= time.time() + 1 for e in arrived)  # live event times
    assert all(set(e) >= {"tid", "cc_num", "amount", "trans_ts"} for e in arrived)
    sent = [json.loads(x) for x in out.read_text().splitlines()]
    times = [e["trans_ts"] for e in sent]
    assert times == sorted(times)  # stamped when sent, in the simulator's order


def test_send_and_decisions_cli_errors_are_one_line(kinesis, tmp_path, capsys):
    assert _cli("send", "--rows", "10", "--region", REGION, "--stream", "missing", "--rate", "1000") == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: stream 'missing' not found: deploy infra/streaming.yaml or pass --stream"
    assert _cli("send", "--events", str(tmp_path / "none.jsonl"), "--region", REGION) == 2
    assert "events file not found" in capsys.readouterr().err
    assert _cli("send", "--rows", "10", "--rate", "0", "--region", REGION) == 2
    assert _cli("decisions", "--region", REGION, "--stream", "missing") == 1
    assert capsys.readouterr().err.count("\n") == 2  # one line per failing command
    with pytest.raises(SystemExit):
        _cli("send", "--rows", "1", "--events", "x")  # mutually exclusive


def test_send_events_file_keeps_lines_and_restamps_on_request(kinesis, tmp_path, capsys):
    _create(kinesis, "transactions", shards=1)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"tid": "a", "cc_num": 7, "amount": 1.0, "trans_ts": 5}) + "\nnot json\n\n")
    assert _cli("send", "--events", str(events), "--region", REGION, "--rate", "1000") == 0
    data = [r.data for r in _read_all(kinesis, "transactions")]
    assert data == [b'{"tid": "a", "cc_num": 7, "amount": 1.0, "trans_ts": 5}', b"not json"]
    assert _cli("send", "--events", str(events), "--region", REGION, "--restamp", "--rate", "1000") == 0
    stamped = json.loads(_read_all(kinesis, "transactions")[2].data)
    assert stamped["tid"] == "a" and stamped["trans_ts"] > time.time() - 60


def test_decisions_work_dir_reads_the_local_replay_file(tmp_path, capsys):
    work = tmp_path / "run"
    (work / "replay").mkdir(parents=True)
    rows = [
        _decision("t1", 11, 0.91, 1_590_000_000.0),
        _decision("t2", 12, 0.10, 1_590_000_100.0),
        _decision("t1", 11, 0.91, 1_590_000_000.0),  # same decision id: dropped
        _decision("t3", 13, 0.20, 1_590_000_200.0, decision_id=None),
        _decision("t3", 13, 0.20, 1_590_000_200.0, decision_id=None),  # no id: by tid
    ]
    (work / "replay" / "decisions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _cli("decisions", "--work-dir", str(work)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == s.DecisionView.HEADER
    assert out[1].startswith("2020-05-20 18:40:00.000") and "FRAUD" in out[1] and "12.50" in out[1]
    assert out[-1].startswith("decisions 3  flagged 1  fraud rate 33.33%  late 0  duplicates dropped 2")
    assert _cli("decisions", "--work-dir", str(work), "--since", "150s", "--summary-only") == 0
    assert capsys.readouterr().out.startswith("decisions 2 ")  # t2 and t3: within 150 s of the newest
    assert _cli("decisions", "--work-dir", str(tmp_path / "nothing")) == 2
    assert "no decisions file" in capsys.readouterr().err
