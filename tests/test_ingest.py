"""Feature-store ingestion of the Spark job (processing/ingest.py): payloads and the one retry layer.

The retry tests answer at botocore's HTTP layer (`before-send`), below its retry handler, so what
runs is botocore's own retry policy as the job configures it (a Stubber answers above it and would
bypass retries)."""

from __future__ import annotations

import pickle

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError

from features import spec
from processing import ingest

GROUP = spec.BATCH_FEATURE_GROUP
ROW = (4000000000000001, 12, 123.45678901234567, 1590969600)
RECORD = [
    {"FeatureName": "cc_num", "ValueAsString": "4000000000000001"},
    {"FeatureName": "num_trans_last_1w", "ValueAsString": "12"},
    {"FeatureName": "avg_amt_last_1w", "ValueAsString": "123.45678901234567"},
    {"FeatureName": "trans_time", "ValueAsString": "1590969600.0"},
]


class _Raw:
    """The raw body botocore's parser streams from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: object):
        yield self.body


def _response(status: int, code: str = "") -> AWSResponse:
    body = b"{}" if not code else f'{{"__type": "{code}", "message": "{code}"}}'.encode()
    headers = {"x-amzn-RequestId": "test", "Content-Type": "application/x-amz-json-1.1"}
    if code:
        headers["x-amzn-ErrorType"] = code
    return AWSResponse("https://featurestore-runtime.test", status, headers, _Raw(body))


@pytest.fixture
def client(monkeypatch, no_network):
    """The factory's real boto3 client (botocore retries as configured), fake credentials, no sleeps."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # Zero waits, same decisions: the backoff delay and the adaptive token bucket's wait.
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, ctx: 0)
    monkeypatch.setattr(
        "botocore.retries.bucket.TokenBucket.acquire", lambda self, amount=1, block=True: True
    )
    return ingest.SageMakerFeatureStoreFactory("eu-west-1")()


def _answer(client, answers: list) -> list[dict]:
    """Serve `answers` (an AWSResponse or an exception to raise) in order; returns the requests."""
    sent: list[dict] = []

    def handler(request, **_):
        sent.append({"url": request.url, "body": request.body})
        answer = answers[len(sent) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    client.meta.events.register("before-send.sagemaker-featurestore-runtime.PutRecord", handler)
    return sent


def test_factory_builds_the_configured_client(client):
    assert client.meta.service_model.service_name == "sagemaker-featurestore-runtime"
    assert client.meta.region_name == "eu-west-1"
    retries = client.meta.config.retries
    assert retries == {"total_max_attempts": ingest.MAX_ATTEMPTS, "mode": "adaptive"}


@pytest.mark.parametrize(
    "failure",
    [
        _response(400, "ThrottlingException"),
        _response(500, "InternalFailure"),
        _response(503, "ServiceUnavailable"),
        _response(429),
        EndpointConnectionError(endpoint_url="https://featurestore-runtime.test"),
    ],
    ids=["throttling", "internal-failure", "service-unavailable", "http-429", "connection"],
)
def test_botocore_retries_transient_failures(client, failure):
    sent = _answer(client, [failure, failure, _response(200)])
    run = ingest.ingest_partition(
        lambda: client, GROUP.name, GROUP.feature_names, (True, True, False, False), 2
    )
    assert list(run([ROW])) == [1]
    assert len(sent) == 3  # two failures retried by botocore, then the write


def test_exact_payload_sent(client):
    import json

    sent = _answer(client, [_response(200)])
    run = ingest.ingest_partition(
        lambda: client, GROUP.name, GROUP.feature_names, (True, True, False, False), 1
    )
    assert list(run([ROW])) == [1]
    assert sent[0]["url"].endswith(f"/FeatureGroup/{GROUP.name}")  # REST: the group is in the path
    assert json.loads(sent[0]["body"]) == {"Record": RECORD}


def test_validation_error_is_not_retried_and_fails_the_partition(client):
    sent = _answer(client, [_response(400, "ValidationError")])
    run = ingest.ingest_partition(
        lambda: client, GROUP.name, GROUP.feature_names, (True, True, False, False), 2
    )
    with pytest.raises(ClientError, match="ValidationError"):
        list(run([ROW]))
    assert len(sent) == 1


def test_gives_up_after_max_attempts(client):
    sent = _answer(client, [_response(400, "ThrottlingException")] * ingest.MAX_ATTEMPTS)
    run = ingest.ingest_partition(
        lambda: client, GROUP.name, GROUP.feature_names, (True, True, False, False), 1
    )
    with pytest.raises(ClientError, match="ThrottlingException"):
        list(run([ROW]))
    assert len(sent) == ingest.MAX_ATTEMPTS


def test_record_writer_types_values():
    write = ingest.record_writer(GROUP.feature_names, (True, True, False, False))
    assert write(ROW) == RECORD
    assert write((7, 0.0, 0.1, 86400))[1:3] == [
        {"FeatureName": "num_trans_last_1w", "ValueAsString": "0"},
        {"FeatureName": "avg_amt_last_1w", "ValueAsString": "0.1"},
    ]


def test_partition_counts_many_rows_with_bounded_queue():
    class Store:
        def __init__(self) -> None:
            self.records: list[list[dict[str, str]]] = []

        def put_record(self, FeatureGroupName: str, Record: list[dict[str, str]]) -> dict:
            self.records.append(Record)
            return {}

    store = Store()
    rows = [(i, i % 5, float(i), 86400) for i in range(100)]
    run = ingest.ingest_partition(lambda: store, "fg", GROUP.feature_names, (True, True, False, False), 3)
    assert list(run(rows)) == [100]
    assert sorted(int(r[0]["ValueAsString"]) for r in store.records) == list(range(100))


def test_factories_pickle():
    f = pickle.loads(pickle.dumps(ingest.SageMakerFeatureStoreFactory("eu-west-1")))
    assert f.region == "eu-west-1"
    g = pickle.loads(pickle.dumps(ingest.LocalFeatureStoreFactory("/tmp/x.db")))
    assert g.db_path == "/tmp/x.db"
