"""Both stream Lambdas with Kinesis-shaped events: happy path, malformed input, throttling, partial failures."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from features import spec
from lambdas.decisions import DecisionDeduplicator, decision_id
from lambdas.failures import send_failures
from lambdas.ingest_aggregates import handler as ingest
from lambdas.records import KinesisItem, MalformedRecord, parse_event, validate_event
from lambdas.retries import RetryPolicy, with_retries
from lambdas.score_transaction import handler as score
from lambdas.settings import ConfigError
from lambdas.testing import kinesis_event
from pipeline.local.feature_store import LocalFeatureStoreRuntime

S = SimpleNamespace(count_name="num_trans_last_10m", avg_name="avg_amt_last_10m")
L = SimpleNamespace(count_name="num_trans_last_1w", avg_name="avg_amt_last_1w")
NO_SLEEP = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)
QUEUE = "https://sqs.us-east-1.amazonaws.com/000000000000/failures"


def streaming_values(n=1, avg=1.0) -> dict:
    """Every declared streaming feature: counts n, averages avg, recency the sentinel."""
    out = {}
    for name in spec.STREAMING_FEATURES:
        kind = spec.SPEC.kind_of(name)
        if kind == "recency":
            out[name] = spec.RECENCY_SENTINEL
        else:
            out[name] = n if spec.SPEC.feature_type(name) == "Integral" else avg
    return out


def study(features: dict) -> dict:
    """The study's four inputs of a decision's features (the rest are the event's own values)."""
    return {k: features[k] for k in spec.STUDY_FEATURES}


def enriched(tid, card, amount, ts, n=1, avg=None, late=False, **extra):
    return {
        "tid": tid,
        "cc_num": card,
        "amount": amount,
        "trans_ts": ts,
        **streaming_values(n, amount if avg is None else avg),
        "late": late,
        **extra,
    }


class FakeRuntime:
    """sagemaker-runtime stand-in: score = amount / 1000 per CSV row; records every call."""

    def __init__(self):
        self.calls = []

    def invoke_endpoint(self, *, EndpointName, Body, ContentType, Accept=None):
        text = Body.decode()
        self.calls.append((EndpointName, text, ContentType))
        scores = [float(line.split(",")[0]) / 1000 for line in text.splitlines()]
        body = "\n".join(repr(s) for s in scores).encode()
        return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "text/csv"}


class FakeKinesis:
    def __init__(self, fail_first: int = 0):
        self.calls, self.fail_first = [], fail_first

    def put_records(self, *, StreamName, Records):
        self.calls.append((StreamName, list(Records)))
        out, failed = [], 0
        for i, _ in enumerate(Records):
            if len(self.calls) == 1 and i < self.fail_first:
                out.append(
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
                )
                failed += 1
            else:
                out.append({"SequenceNumber": str(i), "ShardId": "shardId-0"})
        return {"FailedRecordCount": failed, "Records": out}

    def decisions(self):
        return [json.loads(r["Data"]) for _, recs in self.calls for r in recs]


class FakeSqs:
    def __init__(self):
        self.messages = []

    def send_message_batch(self, *, QueueUrl, Entries):
        assert len(Entries) <= 10
        self.messages += [json.loads(e["MessageBody"]) for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


@pytest.fixture
def store(tmp_path):
    fs = LocalFeatureStoreRuntime(tmp_path / "store.sqlite")
    fg = spec.BATCH_FEATURE_GROUP
    for card, n, avg in ((1, 10, 50.0), (2, 4, 0.0)):
        fs.put_record(
            FeatureGroupName=fg.name,
            Record=[
                {"FeatureName": spec.CARD_ID, "ValueAsString": str(card)},
                {"FeatureName": L.count_name, "ValueAsString": str(n)},
                {"FeatureName": L.avg_name, "ValueAsString": repr(avg)},
                {"FeatureName": fg.event_time, "ValueAsString": "1580515200.0"},
            ],
        )
    return fs


def score_cfg(**kw):
    return score.Config(failure_queue_url=QUEUE, **kw)


def score_batch(event, **overrides):
    """`score.process_batch` with fresh fakes for the clients a test does not pass, no sleeping."""
    options = dict(
        runtime=FakeRuntime(), kinesis=FakeKinesis(), sqs=FakeSqs(), config=score_cfg(), policy=NO_SLEEP
    )
    return score.process_batch(event, **{**options, **overrides})


def ingest_batch(event, **overrides):
    """`ingest.process_batch` with a fake failure queue unless a test passes its own, no sleeping."""
    options = dict(sqs=FakeSqs(), config=ingest.Config(failure_queue_url=QUEUE), policy=NO_SLEEP)
    return ingest.process_batch(event, **{**options, **overrides})


def failing_every_attempt(service: str, operation: str, code: str, status: int) -> tuple[Any, Stubber]:
    """A boto3 client whose `operation` fails with `code` on each of NO_SLEEP's attempts."""
    client = boto3.client(service, region_name="us-east-1")
    stub = Stubber(client)
    for _ in range(NO_SLEEP.max_attempts):
        stub.add_client_error(operation, service_error_code=code, http_status_code=status)
    return client, stub


MALFORMED = [
    (b"{not json", "bad JSON"),
    (json.dumps({"tid": "m1", "amount": 1.0, "trans_ts": 1.0}).encode(), "missing field(s): cc_num"),
    (json.dumps(enriched("m2", "abc", 1.0, 1.0)).encode(), "cc_num must be"),
    (json.dumps(enriched("m3", 1, -3.0, 1.0)).encode(), "amount must be >= 0"),
    (b'{"tid": "m4", "cc_num": 1, "amount": Infinity, "trans_ts": 1.0}', "non-finite"),
    (json.dumps(enriched("m5", 1, 1.0, 1.0, n="3")).encode(), "must be an integer >= 1"),
    (json.dumps(enriched("m6", 1, 1.0, 1.0, late=None)).encode(), "late must be a boolean"),
    ("\udcff".encode("utf-8", "surrogatepass"), "not UTF-8"),
]


# --- score_transaction ----------------------------------------------------------------------
def test_score_batch_one_lookup_one_invoke_exact_features(store, capsys):
    runtime, kin, sqs = FakeRuntime(), FakeKinesis(), FakeSqs()
    events = [
        enriched("t1", 1, 100.0, 1.6e9, n=2, avg=80.0),
        enriched("t2", 2, 7.5, 1.6e9 + 1, late=True),
        enriched("t3", 3, 900.0, 1.6e9 + 2),
        enriched("t4", 1, 40.0, 1.6e9 + 3, n=3, avg=60.0),
    ]
    calls = []
    orig = store.batch_get_record
    store.batch_get_record = lambda **kw: (calls.append(kw), orig(**kw))[1]
    resp = score_batch(kinesis_event(events), featurestore=store, runtime=runtime, kinesis=kin, sqs=sqs)
    assert resp == {"batchItemFailures": []}
    assert len(calls) == 1 and calls[0]["Identifiers"][0]["RecordIdentifiersValueAsString"] == ["1", "2", "3"]
    assert len(runtime.calls) == 1 and runtime.calls[0][2] == "text/csv"
    assert len(runtime.calls[0][1].splitlines()) == 4
    decisions = {d["tid"]: d for d in kin.decisions()}
    assert set(decisions) == {"t1", "t2", "t3", "t4"}
    # t1: card 1 snapshot (10, 50.0): ratios from the spec formulas.
    assert study(decisions["t1"]["features"]) == {
        "amount": 100.0,
        "amt_ratio1": 80.0 / 50.0,
        "amt_ratio2": 2.0,
        "count_ratio": 0.2,
    }
    assert list(decisions["t1"]["features"]) == list(spec.MODEL_FEATURES)
    # t2: avg_1w 0 -> ratios on avg are 0; t3: no snapshot at all -> every ratio 0.
    assert study(decisions["t2"]["features"]) == {
        "amount": 7.5,
        "amt_ratio1": 0.0,
        "amt_ratio2": 0.0,
        "count_ratio": 0.25,
    }
    assert study(decisions["t3"]["features"]) == {
        "amount": 900.0,
        "amt_ratio1": 0.0,
        "amt_ratio2": 0.0,
        "count_ratio": 0.0,
    }
    assert decisions["t3"]["fraud"] is True and decisions["t1"]["fraud"] is False  # 0.9 >= 0.5 > 0.1
    assert decisions["t2"]["late"] is True and decisions["t2"]["score"] == 7.5 / 1000
    assert {d["cc_num"] for d in decisions.values()} == {1, 2, 3}
    # Structured logs + EMF document.
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    emf = next(d for d in docs if "_aws" in d)
    names = {m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Decisions", "FraudRate", "LateEvents", "BatchLatency"} <= names
    assert (emf["Decisions"], emf["FraudFlagged"], emf["LateEvents"], emf["FraudRate"]) == (4, 1, 1, 0.25)


def test_csv_body_is_bit_exact():
    values = [0.1, 1 / 3, 1e-300, 2.0, 5e-324, 1e300][: len(spec.MODEL_FEATURES)]
    values += [float(i) / 7 for i in range(len(spec.MODEL_FEATURES) - len(values))]
    line = score.to_csv([dict(zip(spec.MODEL_FEATURES, values, strict=True))])
    assert [float(x) for x in line.split(",")] == values


def test_malformed_records_go_to_failure_queue_not_retried(store):
    runtime, kin, sqs = FakeRuntime(), FakeKinesis(), FakeSqs()
    good = [enriched(f"g{i}", 1, 10.0 * i, 1.6e9 + i) for i in range(3)]
    payloads = [
        json.dumps(good[0]).encode(),
        *(m for m, _ in MALFORMED),
        json.dumps(good[1]).encode(),
        json.dumps(good[2]).encode(),
    ]
    event = kinesis_event(payloads, partition_keys=["k"] * len(payloads))
    event["Records"].append(
        {"kinesis": {"sequenceNumber": "999", "partitionKey": "k", "data": "%%%notbase64"}}
    )
    resp = score_batch(event, featurestore=store, runtime=runtime, kinesis=kin, sqs=sqs)
    assert resp == {"batchItemFailures": []}  # malformed records are never retried
    assert [d["tid"] for d in kin.decisions()] == ["g0", "g1", "g2"]
    assert len(sqs.messages) == len(MALFORMED) + 1
    for msg, (_, reason) in zip(sqs.messages, [*MALFORMED, (None, "not base64")], strict=True):
        assert reason in msg["reason"], (msg["reason"], reason)
        assert msg["source"] == "score_transaction" and msg["sequenceNumber"]
    assert sqs.messages[0]["data"] == "{not json"


def test_throttled_feature_store_is_retried_with_backoff(store):
    client = boto3.client("sagemaker-featurestore-runtime", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("batch_get_record", service_error_code="ThrottlingException", http_status_code=400)
    stub.add_client_error("batch_get_record", service_error_code="ThrottlingException", http_status_code=400)
    stub.add_response(
        "batch_get_record",
        {
            "Records": [
                {
                    "FeatureGroupName": "cc-agg-batch-fg",
                    "RecordIdentifierValueAsString": "1",
                    "Record": [
                        {"FeatureName": L.count_name, "ValueAsString": "4"},
                        {"FeatureName": L.avg_name, "ValueAsString": "25.0"},
                    ],
                }
            ],
            "Errors": [],
            "UnprocessedIdentifiers": [],
        },
        {"Identifiers": ANY},
    )
    sleeps = []
    kin = FakeKinesis()
    with stub:
        resp = score.process_batch(
            kinesis_event([enriched("t", 1, 50.0, 1.6e9)]),
            featurestore=client,
            runtime=FakeRuntime(),
            kinesis=kin,
            sqs=FakeSqs(),
            config=score_cfg(),
            policy=RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=1.0),
            sleep=sleeps.append,
        )
        stub.assert_no_pending_responses()
    assert resp == {"batchItemFailures": []}
    assert len(sleeps) == 2 and all(0 <= s <= 0.02 for s in sleeps)
    assert kin.decisions()[0]["features"]["amt_ratio2"] == 2.0


def test_endpoint_throttling_exhausted_reports_whole_batch(store):
    client, stub = failing_every_attempt("sagemaker-runtime", "invoke_endpoint", "ThrottlingException", 429)
    events = [enriched("a", 1, 1.0, 1.0), enriched("b", 2, 2.0, 2.0)]
    sqs = FakeSqs()
    payloads = [json.dumps(events[0]), "garbage", json.dumps(events[1])]
    with stub:
        resp = score_batch(
            kinesis_event(payloads, partition_keys=["1", "x", "2"]),
            featurestore=store,
            runtime=client,
            sqs=sqs,
        )
        stub.assert_no_pending_responses()
    seqs = [f"{i:056d}" for i in (1, 3)]
    assert resp == {"batchItemFailures": [{"itemIdentifier": s} for s in seqs]}
    assert len(sqs.messages) == 1  # the malformed one is NOT in the retry set


def test_model_error_is_not_retried_in_place(store):
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424)
    with stub:
        resp = score_batch(kinesis_event([enriched("a", 1, 1.0, 1.0)]), featurestore=store, runtime=client)
    assert resp["batchItemFailures"] == [{"itemIdentifier": f"{1:056d}"}]


def test_put_records_partial_failure_resends_only_failed_entries(store):
    kin = FakeKinesis(fail_first=2)
    events = [enriched(f"t{i}", 1, float(i), float(i)) for i in range(5)]
    resp = score_batch(kinesis_event(events), featurestore=store, kinesis=kin)
    assert resp == {"batchItemFailures": []}
    assert [len(recs) for _, recs in kin.calls] == [5, 2]
    assert [json.loads(r["Data"])["tid"] for r in kin.calls[1][1]] == ["t0", "t1"]
    assert all(r["PartitionKey"] == "1" for _, recs in kin.calls for r in recs)


def test_put_records_never_delivered_reports_source_sequence_numbers(store):
    class AlwaysFailing(FakeKinesis):
        def put_records(self, *, StreamName, Records):
            self.calls.append((StreamName, list(Records)))
            recs = [
                {"ErrorCode": "InternalFailure"}
                if json.loads(r["Data"])["tid"] == "b"
                else {"SequenceNumber": "1"}
                for r in Records
            ]
            return {"FailedRecordCount": sum("ErrorCode" in r for r in recs), "Records": recs}

    kin = AlwaysFailing()
    events = [enriched("a", 1, 1.0, 1.0), enriched("b", 1, 2.0, 2.0), enriched("c", 1, 3.0, 3.0)]
    resp = score_batch(kinesis_event(events, start_sequence=41), featurestore=store, kinesis=kin)
    # Retries re-send only entry "b"; once retries run out its source record is reported.
    assert [json.loads(r["Data"])["tid"] for r in kin.calls[1][1]] == ["b"]
    assert resp["batchItemFailures"] == [{"itemIdentifier": f"{42:056d}"}]


def test_failure_queue_partial_failure_resends_only_transient_entries(capsys):
    """SendMessageBatch answers per entry: a service-side failure is re-sent alone, a sender fault
    is not re-sent, and what never got in is returned to be reported as batch item failures."""

    class PartlyFailing(FakeSqs):
        def __init__(self):
            super().__init__()
            self.calls = []

        def send_message_batch(self, *, QueueUrl, Entries):
            self.calls.append([e["Id"] for e in Entries])
            bodies = {e["Id"]: json.loads(e["MessageBody"]) for e in Entries}
            failed = []
            for k, body in bodies.items():
                if body["sequenceNumber"] == "s1" and len(self.calls) == 1:
                    failed.append({"Id": k, "SenderFault": False, "Code": "InternalError"})
                elif body["sequenceNumber"] == "s2":
                    failed.append({"Id": k, "SenderFault": True, "Code": "InvalidMessageContents"})
                else:
                    self.messages.append(body)
            return {"Successful": [], "Failed": failed}

    sqs = PartlyFailing()
    items = [
        KinesisItem(sequence_number=f"s{i}", partition_key="1", raw=b"x", reason="bad") for i in range(12)
    ]
    unsent = send_failures(
        sqs, QUEUE, items, source="t", stage="validate", policy=NO_SLEEP, sleep=lambda s: None
    )
    assert [it.sequence_number for it in unsent] == ["s2"]
    # Two chunks (10 + 2); the first re-sends only its failed entries: s1 (transient) and s2 (kept pending).
    assert sqs.calls == [[str(i) for i in range(10)], ["1", "2"], ["0", "1"]]
    assert sorted(m["sequenceNumber"] for m in sqs.messages) == sorted(f"s{i}" for i in range(12) if i != 2)
    assert capsys.readouterr().out.count("failure destination rejected message") == 2


def test_failure_queue_down_reports_malformed_as_failures(store):
    client, stub = failing_every_attempt("sqs", "send_message_batch", "ServiceUnavailable", 503)
    with stub:
        resp = score_batch(kinesis_event(["bad json"], partition_keys=["x"]), featurestore=store, sqs=client)
    assert resp["batchItemFailures"] == [{"itemIdentifier": f"{1:056d}"}]


def test_config_from_env():
    cfg = score.Config.from_env(
        {
            "ENDPOINT_NAME": "ep",
            "BATCH_FEATURE_GROUP_NAME": "fg",
            "DECISIONS_STREAM_NAME": "ds",
            "FAILURE_QUEUE_URL": "q",
            "FRAUD_THRESHOLD": "0.7",
            "METRICS_NAMESPACE": "ns",
        }
    )
    assert (
        cfg.endpoint_name,
        cfg.batch_feature_group,
        cfg.decisions_stream,
        cfg.failure_queue_url,
        cfg.threshold,
        cfg.metrics_namespace,
    ) == ("ep", "fg", "ds", "q", 0.7, "ns")
    icfg = ingest.Config.from_env({"FEATURE_GROUP_NAME": "agg", "FAILURE_QUEUE_URL": ""})
    assert icfg.feature_group == "agg" and icfg.failure_queue_url is None


# --- ingest_aggregates ----------------------------------------------------------------------
def test_ingest_writes_event_time_and_skips_late(store):
    sqs = FakeSqs()
    events = [
        enriched("a", 7, 10.0, 1000.0, n=2, avg=15.0),
        enriched("b", 7, 99.0, 500.0, late=True),
        enriched("c", 8, 1.0, 2000.0),
    ]
    resp = ingest_batch(
        kinesis_event([*events, "nope"], partition_keys=["7", "7", "8", "x"]), featurestore=store, sqs=sqs
    )
    assert resp == {"batchItemFailures": []}
    fg = spec.STREAMING_FEATURE_GROUP.name
    rec = {
        f["FeatureName"]: f["ValueAsString"]
        for f in store.get_record(FeatureGroupName=fg, RecordIdentifierValueAsString="7")["Record"]
    }
    assert set(rec) == set(spec.STREAMING_FEATURE_GROUP.feature_names)
    assert {k: rec[k] for k in ("cc_num", S.count_name, S.avg_name, "trans_time")} == {
        "cc_num": "7",
        S.count_name: "2",
        S.avg_name: "15.0",
        "trans_time": "1000.0",
    }
    assert len(sqs.messages) == 1 and "bad JSON" in sqs.messages[0]["reason"]
    # An older (redelivered / reordered) event never replaces the newer record.
    ingest_batch(kinesis_event([enriched("z", 7, 5.0, 900.0, n=9, avg=1.0)]), featurestore=store, sqs=sqs)
    rec = {
        f["FeatureName"]: f["ValueAsString"]
        for f in store.get_record(FeatureGroupName=fg, RecordIdentifierValueAsString="7")["Record"]
    }
    assert rec[S.count_name] == "2"


def test_ingest_throttling_retried_then_partial_failure(store):
    client = boto3.client("sagemaker-featurestore-runtime", region_name="us-east-1")
    stub = Stubber(client)
    # record 1: throttled once then OK; record 2: throttled until retries run out; record 3: validation error.
    stub.add_client_error("put_record", service_error_code="ThrottlingException", http_status_code=400)
    stub.add_response("put_record", {}, {"FeatureGroupName": "cc-agg-fg", "Record": ANY})
    for _ in range(NO_SLEEP.max_attempts):
        stub.add_client_error("put_record", service_error_code="ServiceUnavailable", http_status_code=503)
    stub.add_client_error("put_record", service_error_code="ValidationError", http_status_code=400)
    sqs = FakeSqs()
    events = [enriched("a", 1, 1.0, 1.0), enriched("b", 2, 1.0, 2.0), enriched("c", 3, 1.0, 3.0)]
    with stub:
        resp = ingest_batch(kinesis_event(events), featurestore=client, sqs=sqs)
        stub.assert_no_pending_responses()
    assert resp == {"batchItemFailures": [{"itemIdentifier": f"{2:056d}"}]}
    assert len(sqs.messages) == 1 and "rejected by the feature store" in sqs.messages[0]["reason"]


# --- shared plumbing: retries, validation, test events --------------------------------------
def test_retry_policy_full_jitter_bounds():
    p = RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=0.5)
    assert [p.delay(a, rng=lambda: 1.0) for a in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert p.delay(3, rng=lambda: 0.0) == 0.0


def test_with_retries_only_retries_throttling():
    from botocore.exceptions import ClientError

    calls = []

    def boom(code):
        def f():
            calls.append(code)
            raise ClientError({"Error": {"Code": code, "Message": "x"}}, "Op")

        return f

    with pytest.raises(ClientError):
        with_retries(boom("ValidationError"), policy=NO_SLEEP, sleep=lambda s: None)
    assert calls == ["ValidationError"]
    calls.clear()
    with pytest.raises(ClientError):
        with_retries(boom("ProvisionedThroughputExceededException"), policy=NO_SLEEP, sleep=lambda s: None)
    assert len(calls) == NO_SLEEP.max_attempts


def test_kinesis_event_shape():
    ev = kinesis_event([{"cc_num": 5, "x": 1}], start_sequence=7)
    rec = ev["Records"][0]["kinesis"]
    assert rec["partitionKey"] == "5" and rec["sequenceNumber"] == f"{7:056d}"
    assert json.loads(base64.b64decode(rec["data"])) == {"cc_num": 5, "x": 1}


def test_handlers_read_env_and_use_the_client_factory(store, monkeypatch):
    runtime, kin, sqs = FakeRuntime(), FakeKinesis(), FakeSqs()
    services = {
        "sagemaker-featurestore-runtime": store,
        "sagemaker-runtime": runtime,
        "kinesis": kin,
        "sqs": sqs,
    }
    monkeypatch.setattr(score, "aws_client", services.__getitem__)
    monkeypatch.setattr(ingest, "aws_client", services.__getitem__)
    monkeypatch.setenv("ENDPOINT_NAME", "my-endpoint")
    monkeypatch.setenv("DECISIONS_STREAM_NAME", "my-decisions")
    monkeypatch.setenv("FRAUD_THRESHOLD", "0.05")
    monkeypatch.setenv("FAILURE_QUEUE_URL", QUEUE)
    monkeypatch.setenv("FEATURE_GROUP_NAME", spec.STREAMING_FEATURE_GROUP.name)
    event = kinesis_event([enriched("t", 1, 100.0, 5.0), "broken"], partition_keys=["1", "x"])
    assert score.handler(event, None) == {"batchItemFailures": []}
    assert runtime.calls[0][0] == "my-endpoint" and kin.calls[0][0] == "my-decisions"
    assert kin.decisions()[0]["fraud"] is True  # 0.1 >= 0.05
    assert ingest.handler(event, None) == {"batchItemFailures": []}
    assert store.get_record(
        FeatureGroupName=spec.STREAMING_FEATURE_GROUP.name, RecordIdentifierValueAsString="1"
    )
    assert [m["source"] for m in sqs.messages] == ["score_transaction", "ingest_aggregates"]


def test_aws_clients_are_created_once_per_container(monkeypatch):
    import boto3

    from lambdas.clients import aws_client

    created = []
    monkeypatch.setattr(boto3, "client", lambda service: created.append(service) or object())
    aws_client.cache_clear()
    try:
        assert aws_client("sqs") is aws_client("sqs") and aws_client("kinesis") is not aws_client("sqs")
        assert created == ["sqs", "kinesis"]
    finally:
        aws_client.cache_clear()


def test_ingest_writes_only_each_cards_newest_event(store):
    calls = []

    class Counting:
        def put_record(self, **kw):
            calls.append({f["FeatureName"]: f["ValueAsString"] for f in kw["Record"]})
            return store.put_record(**kw)

    events = [
        enriched("a", 5, 1.0, 10.0, n=1),
        enriched("b", 5, 2.0, 30.0, n=3, avg=7.0),
        enriched("c", 5, 3.0, 20.0, n=2),
        enriched("d", 6, 4.0, 15.0),
    ]
    resp = ingest_batch(kinesis_event(events), featurestore=Counting())
    assert resp == {"batchItemFailures": []}
    assert sorted((c["cc_num"], c["trans_time"], c[S.count_name]) for c in calls) == [
        ("5", "30.0", "3"),
        ("6", "15.0", "1"),
    ]

    class Down:
        def put_record(self, **kw):
            from botocore.exceptions import ClientError

            if kw["Record"][0]["ValueAsString"] == "5":
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "x"}}, "PutRecord")
            return {}

    resp = ingest_batch(kinesis_event(events), featurestore=Down())
    # Every record of the card whose write failed is retried (Kinesis resumes from the lowest).
    assert resp == {"batchItemFailures": [{"itemIdentifier": f"{i:056d}"} for i in (1, 2, 3)]}


# --- connection errors (botocore BotoCoreError: Stubber cannot raise them, so tiny fakes do) --------
def _conn_errors():
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    url = "https://runtime.sagemaker.us-east-1.amazonaws.com"
    return [
        EndpointConnectionError(endpoint_url=url),
        ReadTimeoutError(endpoint_url=url),
        ConnectionClosedError(endpoint_url=url),
    ]


class Unreachable:
    """Every AWS method raises `exc` (a connection error) for the first `times` calls, then delegates."""

    def __init__(self, exc, times=10**9, inner=None):
        self.exc, self.times, self.inner, self.calls = exc, times, inner, 0

    def _call(self, name, **kw):
        self.calls += 1
        if self.calls <= self.times:
            raise self.exc
        return getattr(self.inner, name)(**kw)

    def invoke_endpoint(self, **kw):
        return self._call("invoke_endpoint", **kw)

    def batch_get_record(self, **kw):
        return self._call("batch_get_record", **kw)

    def put_record(self, **kw):
        return self._call("put_record", **kw)

    def put_records(self, **kw):
        return self._call("put_records", **kw)

    def send_message_batch(self, **kw):
        return self._call("send_message_batch", **kw)


@pytest.mark.parametrize("exc", _conn_errors(), ids=lambda e: type(e).__name__)
def test_with_retries_retries_connection_errors_with_backoff(exc):
    flaky = Unreachable(exc, times=2, inner=FakeSqs())
    sleeps = []
    policy = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=1.0)
    resp = with_retries(
        lambda: flaky.send_message_batch(QueueUrl=QUEUE, Entries=[{"Id": "1", "MessageBody": "{}"}]),
        policy=policy,
        sleep=sleeps.append,
    )
    assert resp["Successful"] == [{"Id": "1"}] and flaky.calls == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.01 and 0 <= sleeps[1] <= 0.02
    dead = Unreachable(exc)
    with pytest.raises(type(exc)):
        with_retries(lambda: dead.put_record(), policy=NO_SLEEP, sleep=lambda s: None)
    assert dead.calls == NO_SLEEP.max_attempts


def test_with_retries_does_not_retry_client_side_botocore_errors():
    from botocore.exceptions import ParamValidationError

    calls = []

    def bad():
        calls.append(1)
        raise ParamValidationError(report="Missing required parameter")

    with pytest.raises(ParamValidationError):
        with_retries(bad, policy=NO_SLEEP, sleep=lambda s: None)
    assert calls == [1]


def _emf(out: str) -> dict:
    return next(d for d in map(json.loads, out.splitlines()) if "_aws" in d)


def test_score_endpoint_unreachable_reports_batch_and_still_emits_metrics(store, capsys):
    from botocore.exceptions import EndpointConnectionError

    runtime = Unreachable(EndpointConnectionError(endpoint_url="https://runtime.sagemaker"))
    sqs, kin, sleeps = FakeSqs(), FakeKinesis(), []
    payloads = [json.dumps(enriched("a", 1, 1.0, 1.0)), "garbage", json.dumps(enriched("b", 2, 2.0, 2.0))]
    event = kinesis_event(payloads, partition_keys=["1", "x", "2"])
    for _ in range(2):  # Kinesis re-delivers the batch: the malformed record is not re-sent
        resp = score_batch(
            event, featurestore=store, runtime=runtime, kinesis=kin, sqs=sqs, sleep=sleeps.append
        )
        assert resp == {"batchItemFailures": [{"itemIdentifier": f"{i:056d}"} for i in (1, 3)]}
        emf = _emf(capsys.readouterr().out)
        assert (emf["Decisions"], emf["FailedRecords"], emf["MalformedRecords"]) == (0, 2, 1)
    assert runtime.calls == 2 * NO_SLEEP.max_attempts  # retried in place with backoff each time
    assert len(sleeps) == 2 * (NO_SLEEP.max_attempts - 1)
    assert kin.calls == [] and len(sqs.messages) == 2 and sqs.messages[0]["reason"].startswith("bad JSON")


def test_score_feature_store_read_timeout_once_is_retried(store):
    from botocore.exceptions import ReadTimeoutError

    fs = Unreachable(ReadTimeoutError(endpoint_url="https://featurestore"), times=1, inner=store)
    kin = FakeKinesis()
    resp = score_batch(kinesis_event([enriched("t", 1, 100.0, 1.6e9)]), featurestore=fs, kinesis=kin)
    assert resp == {"batchItemFailures": []} and fs.calls == 2
    assert kin.decisions()[0]["features"]["amt_ratio2"] == 2.0  # card 1 snapshot avg 50.0


def test_score_decisions_stream_and_failure_queue_unreachable(store, capsys):
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    kin = Unreachable(ConnectionClosedError(endpoint_url="https://kinesis"))
    sqs = Unreachable(EndpointConnectionError(endpoint_url="https://sqs"))
    event = kinesis_event([json.dumps(enriched("a", 1, 1.0, 1.0)), "garbage"], partition_keys=["1", "x"])
    resp = score_batch(event, featurestore=store, kinesis=kin, sqs=sqs)
    # Scored but undelivered, and malformed but unsent: both are retried by Kinesis, nothing is lost.
    assert resp == {"batchItemFailures": [{"itemIdentifier": f"{i:056d}"} for i in (2, 1)]}
    assert kin.calls == NO_SLEEP.max_attempts and sqs.calls == NO_SLEEP.max_attempts
    assert _emf(capsys.readouterr().out)["FailedRecords"] == 2


def test_ingest_connection_errors_become_batch_item_failures(store, capsys):
    from botocore.exceptions import EndpointConnectionError

    class HalfDown:
        """Card 5's writes never connect; card 6's go through."""

        def __init__(self):
            self.calls = 0

        def put_record(self, **kw):
            self.calls += 1
            if kw["Record"][0]["ValueAsString"] == "5":
                raise EndpointConnectionError(endpoint_url="https://featurestore-runtime")
            return store.put_record(**kw)

    fs = HalfDown()
    events = [enriched("a", 5, 1.0, 10.0), enriched("b", 6, 2.0, 11.0), enriched("c", 5, 3.0, 12.0)]
    resp = ingest_batch(
        kinesis_event([*events, "nope"], partition_keys=["5", "6", "5", "x"]), featurestore=fs
    )
    assert resp == {"batchItemFailures": [{"itemIdentifier": f"{i:056d}"} for i in (1, 3)]}
    assert fs.calls == NO_SLEEP.max_attempts + 1  # card 5 retried in place, card 6 written once
    got = store.get_record(
        FeatureGroupName=spec.STREAMING_FEATURE_GROUP.name, RecordIdentifierValueAsString="6"
    )
    assert {f["FeatureName"]: f["ValueAsString"] for f in got["Record"]}["trans_time"] == "11.0"
    emf = _emf(capsys.readouterr().out)
    assert (emf["RecordsWritten"], emf["FailedRecords"], emf["MalformedRecords"]) == (1, 2, 1)


# --- validation: the spec's value rule ------------------------------------------------------------
@pytest.mark.parametrize("field", spec.NON_NEGATIVE_FIELDS)
@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("-inf"), float("nan")])
def test_validate_event_value_rule_is_the_spec_rule(field, value):
    ev = enriched("t", 1, 1.0, 1.0)
    ev[field] = value
    expected = spec.value_problem(field, value if field == spec.CARD_ID else float(value))
    if field == spec.CARD_ID and not float(value).is_integer():
        expected = f"cc_num must be an integer, got {value!r}"  # a type error before any value rule
    with pytest.raises(MalformedRecord) as err:
        validate_event(ev, enriched=True)
    assert str(err.value) == expected


def test_validate_event_delegates_ranges_to_spec(monkeypatch):
    ev = enriched("t", 1, 150.0, 1.0)
    assert validate_event(ev)["amount"] == 150.0
    monkeypatch.setattr(
        spec, "value_problem", lambda f, v: f"{f} over 100" if f == spec.AMOUNT and v > 100 else None
    )
    with pytest.raises(MalformedRecord, match=r"^amount over 100$"):
        validate_event(ev)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (json.dumps(enriched("t", 1, 10**400, 1.0)), "amount must be finite"),
        ('{"tid": "t", "cc_num": 1, "amount": 1e999, "trans_ts": 1}', "amount must be finite"),
        (json.dumps(enriched("t", 2**64, 1.0, 1.0)), "cc_num must fit in a signed 64-bit integer"),
        (json.dumps(enriched("t", 1, "1.0", 1.0)), "amount must be a number, got '1.0'"),
        (json.dumps(enriched("t", 1, 1.0, True)), "trans_ts must be a number, got True"),
        (
            json.dumps(enriched("t", 1, 1.0, 1.0, avg=-2.0)),
            "avg_amt_last_10m must be a finite number >= 0, got -2.0",
        ),
        ("1" * 5000, "bad JSON"),
        ("[" * 100_000, "bad JSON: nested too deeply"),
    ],
)
def test_parse_event_rejects_edge_values_without_crashing(raw, reason):
    with pytest.raises(MalformedRecord) as err:
        parse_event(raw, enriched=True)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"tid": "t1", "cc_num": 4000000000000001, "amount": "12", "trans_ts": 1.0}', "amount"),
        ("not json at all", "rejected by the streaming job: "),
        ('{"tid": "t1", "cc_num": 4e15, "amount": 1.0, "trans_ts": 1.0}', "typed reading"),
    ],
)
def test_record_flagged_by_flink_is_rejected_with_the_reason(raw: str, reason: str) -> None:
    """Flink forwards what it cannot read with the original text; the reason names the real problem."""
    flagged = {"tid": None, "cc_num": 0, "amount": None, "trans_ts": None, spec.REJECTED_RAW_FIELD: raw}
    with pytest.raises(MalformedRecord) as excinfo:
        validate_event(flagged, enriched=True)
    message = str(excinfo.value)
    assert message.startswith("rejected by the streaming job: ") and reason in message
    assert "missing field" not in message


# --- issue 9: one record never blocks the shard; one decision per event ------------------------
class RefusingRuntime(FakeRuntime):
    """Refuses (as SageMaker reports a container 400) any request holding a row with amount 666."""

    def invoke_endpoint(self, *, EndpointName, Body, ContentType, Accept=None):
        text = Body.decode()
        if any(line.split(",")[0] == "666.0" for line in text.splitlines()):
            self.calls.append((EndpointName, text, ContentType))
            from botocore.exceptions import ClientError

            raise ClientError(
                {
                    "Error": {"Code": "ModelError", "Message": "Received client error (400) from primary"},
                    "ResponseMetadata": {"HTTPStatusCode": 424},
                    "OriginalStatusCode": 400,
                    "OriginalMessage": "row refused by the model",
                },
                "InvokeEndpoint",
            )
        return super().invoke_endpoint(EndpointName=EndpointName, Body=Body, ContentType=ContentType)


def test_a_row_the_endpoint_refuses_is_isolated_and_the_rest_decided(store):
    runtime, kin, sqs = RefusingRuntime(), FakeKinesis(), FakeSqs()
    events = [enriched(f"t{i}", 1, 666.0 if i == 37 else float(i + 1), 1.6e9 + i) for i in range(100)]
    resp = score_batch(kinesis_event(events), featurestore=store, runtime=runtime, kinesis=kin, sqs=sqs)
    assert resp == {"batchItemFailures": []}  # nothing retried: the shard moves on
    assert sorted(d["tid"] for d in kin.decisions()) == sorted(f"t{i}" for i in range(100) if i != 37)
    assert [(m["stage"], json.loads(m["data"])["tid"]) for m in sqs.messages] == [("score", "t37")]
    assert sqs.messages[0]["reason"] == "endpoint refused the record: row refused by the model"
    assert len(runtime.calls) <= 2 + 2 * 7  # bisection: about 2 log2(100) calls, not one per row


def test_refusal_is_read_from_the_boto3_modeled_error():
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "bad row"},
    )
    stub.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 500, "OriginalMessage": "oom"},
    )
    with stub:
        for expected in ("bad row", None):
            with pytest.raises(client.exceptions.ModelError) as info:
                client.invoke_endpoint(EndpointName="e", Body=b"1")
            assert score.refused_by_model(info.value) == expected


def test_non_finite_model_input_is_rejected_before_the_endpoint_call(store, tmp_path):
    """the largest valid amount (1e9) over a tiny weekly average makes amt_ratio2 infinite: that record goes to the
    failure queue with the reason, the real endpoint never sees it, the rest of the batch is decided."""
    import numpy as np
    import xgboost as xgb

    from training.endpoint_client import LocalSageMakerRuntime
    from training.model_artifact import write_model_archive
    from training.serve import LocalEndpointServer

    fg = spec.BATCH_FEATURE_GROUP
    store.put_record(
        FeatureGroupName=fg.name,
        Record=[
            {"FeatureName": spec.CARD_ID, "ValueAsString": "5"},
            {"FeatureName": L.count_name, "ValueAsString": "1"},
            {"FeatureName": L.avg_name, "ValueAsString": "1e-300"},
            {"FeatureName": fg.event_time, "ValueAsString": "1580515200.0"},
        ],
    )
    x = np.random.default_rng(0).uniform(0, 5, (200, len(spec.MODEL_FEATURES)))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=x[:, 2] > 2.5), 3)
    server = LocalEndpointServer(write_model_archive(booster, tmp_path / "m.tar.gz")).start()
    kin, sqs = FakeKinesis(), FakeSqs()
    try:
        events = [enriched("ok1", 1, 10.0, 1.6e9), enriched("huge", 5, 1e9, 1.6e9 + 1, avg=1.0)]
        events.append(enriched("ok2", 2, 20.0, 1.6e9 + 2))
        resp = score_batch(
            kinesis_event(events),
            featurestore=store,
            runtime=LocalSageMakerRuntime(server.url),
            kinesis=kin,
            sqs=sqs,
        )
    finally:
        server.stop()
    assert resp == {"batchItemFailures": []}
    assert sorted(d["tid"] for d in kin.decisions()) == ["ok1", "ok2"]
    assert [json.loads(m["data"])["tid"] for m in sqs.messages] == ["huge"]
    assert sqs.messages[0]["reason"].startswith("non-finite model input (amt_ratio2=inf")


def test_decisions_carry_a_deterministic_id_and_consumers_drop_redeliveries(store):
    kin = FakeKinesis()
    events = [enriched("a", 1, 10.0, 1.6e9), enriched("b", 1, 20.0, 1.6e9 + 1)]
    for _ in range(2):  # the same batch delivered twice (a Kinesis retry)
        score_batch(kinesis_event(events), featurestore=store, kinesis=kin)
    delivered = kin.decisions()
    assert len(delivered) == 4
    consumer = DecisionDeduplicator()
    kept = [d for d in delivered if consumer.accept(d)]
    assert [d["tid"] for d in kept] == ["a", "b"] and consumer.duplicates_dropped == 2
    # The id is the event's identity: the same tid on a different transaction is another decision.
    same_tid = enriched("a", 2, 10.0, 1.6e9)
    assert decision_id(same_tid) != kept[0]["decision_id"]
    assert decision_id(dict(events[0], late=True)) == kept[0]["decision_id"]


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "1.5", "-0.1"])
def test_bad_fraud_threshold_is_a_clear_error_naming_the_variable(value):
    with pytest.raises(ConfigError) as info:
        score.Config.from_env({"FRAUD_THRESHOLD": value})
    assert str(info.value) == (
        f"environment variable FRAUD_THRESHOLD={value!r} is not a finite number in [0.0, 1.0]"
    )
    assert score.Config.from_env({"FRAUD_THRESHOLD": " "}).threshold == spec.DECISION_THRESHOLD


def test_flink_flags_reach_the_decision_and_the_failure_reason():
    """`beyond_lateness` is carried into the decision; a Flink `reject_reason` is the failure reason."""
    ev = validate_event(enriched("t", 1, 5.0, 1.6e9, late=True, beyond_lateness=True), enriched=True)
    assert ev["late"] is True and ev["beyond_lateness"] is True
    with pytest.raises(MalformedRecord, match="beyond_lateness must be a boolean"):
        validate_event(enriched("t", 1, 5.0, 1.6e9, beyond_lateness="yes"), enriched=True)
    flagged = {"tid": None, "cc_num": 0, "raw": '{"tid": "x"}', "reject_reason": "trans_ts too far ahead"}
    with pytest.raises(MalformedRecord, match="rejected by the streaming job: trans_ts too far ahead"):
        validate_event(flagged, enriched=True)


# --- the hot paths' shortcuts give what the plain code gives ------------------------------------
def test_decision_id_is_the_rfc_4122_uuid5_of_the_event_identity():
    import uuid

    from lambdas.decisions import DECISION_NAMESPACE

    for ev in [
        enriched("a", 1, 10.0, 1.6e9),
        enriched('é"\\€ \u2028', 2**63 - 1, 0.0, 0.0),
        enriched("", 0, 1e9, 4.1e9),
    ]:
        key = json.dumps([str(ev["tid"]), int(ev["cc_num"]), float(ev["trans_ts"]), float(ev["amount"])])
        assert decision_id(ev) == str(uuid.uuid5(DECISION_NAMESPACE, key))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (S.count_name, 1), (S.count_name, 7), (S.count_name, 0), (S.count_name, -3), (S.count_name, True),
        (S.count_name, 2.0), (S.count_name, None), (S.count_name, "1"),
        (S.avg_name, 0.0), (S.avg_name, 12.5), (S.avg_name, 3), (S.avg_name, -1.0), (S.avg_name, -0.5),
        (S.avg_name, float("inf")), (S.avg_name, float("nan")), (S.avg_name, None), (S.avg_name, False),
        ("secs_since_prev_trans", -1.0), ("secs_since_prev_trans", -1), ("secs_since_prev_trans", -2.0),
        ("secs_since_prev_trans", 0.25),
    ],
)  # fmt: skip
def test_streaming_features_inline_check_is_the_rule(name, value):
    """validate_event checks the common cases inline; its result and its message are `_streaming_value`'s."""
    from lambdas import records

    assert name in spec.STREAMING_FEATURES
    try:
        expected: Any = records._streaming_value(name, value)
    except MalformedRecord as exc:
        expected = str(exc)
    ev = enriched("t", 1, 1.0, 1.0) | {name: value}
    try:
        got: Any = validate_event(ev, enriched=True)[name]
    except MalformedRecord as exc:
        got = str(exc)
    assert got == expected and type(got) is type(expected)


def test_ingest_record_is_the_feature_groups_schema_in_order():
    ev = validate_event(enriched("t", 4000000000000001, 12.5, 1.6e9 + 0.25, n=3, avg=7.0), enriched=True)
    fg = spec.STREAMING_FEATURE_GROUP
    record = ingest.record_of(ev)
    assert [f["FeatureName"] for f in record] == list(fg.feature_names)
    values = {f["FeatureName"]: f["ValueAsString"] for f in record}
    assert values[spec.CARD_ID] == "4000000000000001" and values[fg.event_time] == repr(1.6e9 + 0.25)
    for name, kind in fg.features:
        if name not in (spec.CARD_ID, fg.event_time):
            assert values[name] == (str(int(ev[name])) if kind == "Integral" else repr(float(ev[name])))
