"""Local endpoint: SageMaker container protocol, exact scores, 4xx handling, client error mapping, CLI."""

from __future__ import annotations

import functools
import http.client
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from botocore.exceptions import ClientError

from features import spec
from training.endpoint_client import LocalSageMakerRuntime, parse_scores, ping, wait_until_ready
from training.model_artifact import ArtifactError, read_model_bytes, write_model_archive
from training.serve import MAX_PAYLOAD_BYTES, LocalEndpointServer

REPO = Path(__file__).resolve().parents[1]
NAMES = ["amount", "amt_ratio1", "amt_ratio2", "count_ratio"]
"""The server takes its feature names and count from the model, whatever the specification declares:
these tests use a fixed four-feature model so they do not change when the specification grows."""


def _booster(seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.exponential(1, (800, len(NAMES)))
    y = (x[:, 3] + rng.normal(0, 0.5, 800) > 1.5).astype(float)
    return xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=NAMES),
        10 + seed,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "a": write_model_archive(_booster(0), root / "a" / "model.tar.gz"),
        "b": write_model_archive(_booster(1), root / "b" / "model.tar.gz"),
    }


@pytest.fixture(scope="module")
def server(models):
    srv = LocalEndpointServer(models["a"]).start()
    wait_until_ready(srv.url, timeout=10)
    yield srv
    srv.stop()


@pytest.fixture
def rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.exponential(1, (25, len(NAMES)))
    x[0] = [12.5, 0.0, 1.0, 3.0]
    return x


def _csv(x: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in x)


@functools.cache
def _reference(model: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(bytearray(read_model_bytes(model)))
    return booster


def _expected(model: Path, x: np.ndarray) -> np.ndarray:
    """What xgboost itself predicts for these rows (DMatrix path, not the server's inplace_predict)."""
    return _reference(model).predict(xgb.DMatrix(x), validate_features=False)


def _raw(server: LocalEndpointServer, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return conn, resp.status, resp.read(), resp


def test_ping(server: LocalEndpointServer) -> None:
    _, status, body, _ = _raw(server, "GET", "/ping")
    assert status == 200 and body == b""
    empty = LocalEndpointServer(None).start()
    try:
        assert _raw(empty, "GET", "/ping")[1] == 503
        assert not ping(empty.url)
        _, status, body, _ = _raw(empty, "POST", "/invocations", b"1,2,3,4", {"Content-Type": "text/csv"})
        assert status == 503 and b"no model" in body
    finally:
        empty.stop()


def test_csv_multi_row_scores_equal_booster_predictions(server, models, rows) -> None:
    runtime = LocalSageMakerRuntime({spec.ENDPOINT_NAME: server.url})
    resp = runtime.invoke_endpoint(EndpointName=spec.ENDPOINT_NAME, Body=_csv(rows), ContentType="text/csv")
    assert resp["ContentType"] == "text/csv"
    text = resp["Body"].read().decode()
    assert len(text.splitlines()) == len(rows)
    scores = np.array(parse_scores(text))
    np.testing.assert_array_equal(scores.astype(np.float32), _expected(models["a"], rows))
    # Missing values (empty fields) are accepted, as the built-in container does.
    resp = runtime.invoke_endpoint(
        EndpointName=spec.ENDPOINT_NAME, Body="1.0,,2.0,0\n", ContentType="text/csv"
    )
    missing = np.array([[1.0, np.nan, 2.0, 0.0]])
    assert parse_scores(resp["Body"].read())[0] == pytest.approx(
        float(_expected(models["a"], missing)[0]), abs=0
    )


def test_json_shapes(server, models, rows) -> None:
    runtime = LocalSageMakerRuntime(server.url)  # a single URL serves any endpoint name
    expected = _expected(models["a"], rows).tolist()

    def call(doc, accept="application/json"):
        resp = runtime.invoke_endpoint(
            EndpointName="any", Body=json.dumps(doc), ContentType="application/json", Accept=accept
        )
        return resp["ContentType"], resp["Body"].read()

    content_type, body = call({"instances": rows.tolist()})
    assert content_type == "application/json"
    predictions = json.loads(body)["predictions"]
    assert [p["score"] for p in predictions] == pytest.approx(expected, abs=0)
    _, body = call({"instances": [{"features": r} for r in rows.tolist()]})
    assert [p["score"] for p in json.loads(body)["predictions"]] == pytest.approx(expected, abs=0)
    _, body = call({"instances": [dict(zip(NAMES, r, strict=True)) for r in rows.tolist()]})
    assert [p["score"] for p in json.loads(body)["predictions"]] == pytest.approx(expected, abs=0)
    _, body = call({"features": dict(zip(reversed(NAMES), reversed(rows[0].tolist()), strict=True))})
    assert json.loads(body) == {"predictions": [{"score": expected[0]}]}
    content_type, body = call({"features": rows[0].tolist()}, accept="text/csv")
    assert content_type == "text/csv" and parse_scores(body) == pytest.approx([expected[0]], abs=0)
    _, body = call(rows[:2].tolist())
    assert len(json.loads(body)["predictions"]) == 2
    # CSV in, JSON out.
    resp = runtime.invoke_endpoint(
        EndpointName="x", Body=_csv(rows[:3]), ContentType="text/csv", Accept="application/json"
    )
    assert [p["score"] for p in json.loads(resp["Body"].read())["predictions"]] == pytest.approx(
        expected[:3], abs=0
    )


BAD_REQUESTS = [
    ("text/csv", b"1,2,3\n", 400, "has 3 columns, the model expects 4"),
    ("text/csv", b"1,2,3,4\n1,2,3,4,5\n", 400, "row 2 has 5 columns"),
    ("text/csv", b"amount,amt_ratio1,amt_ratio2,count_ratio\n", 400, "non-numeric"),
    ("text/csv", b"1,2,x,4", 400, "non-numeric"),
    ("text/csv", b"1,2,inf,4", 400, "non-finite value 'inf'"),
    # Issue 9: nan is refused as the docs say (an empty field is the missing value), and numbers
    # beyond a double or JSON nested 100k deep are the client's error (400), not the server's (500).
    ("text/csv", b"1,2,nan,4", 400, "non-finite value 'nan'"),
    ("text/csv", b"1,,NaN,4", 400, "non-finite value 'NaN'"),
    ("text/csv", b"1,2," + b"9" * 5000 + b",4", 400, "non-finite value"),
    ("application/json", b'{"instances": [[1, 2, NaN, 4]]}', 400, "non-finite JSON literal NaN"),
    ("application/json", b'{"instances": [[1, 2, Infinity, 4]]}', 400, "non-finite JSON literal"),
    ("application/json", b'{"instances": [[1, 2, ' + b"9" * 5000 + b", 4]]}", 400, "malformed JSON"),
    ("application/json", b'{"instances": [[1, 2, ' + b"9" * 400 + b", 4]]}", 400, "beyond a double"),
    ("application/json", b'{"instances": [[1, 2, 1e999, 4]]}', 400, "beyond a double"),
    ("application/json", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("text/csv", b"", 400, "empty body"),
    ("text/csv", b"\n\n", 400, "empty CSV body"),
    ("text/csv", b"\xff\xfe", 400, "UTF-8"),
    ("application/json", b"{not json", 400, "malformed JSON"),
    ("application/json", b'{"instances": [[1, 2]]}', 400, "expects 4"),
    ("application/json", b'{"instances": [[1, 2, "a", 4]]}', 400, "non-numeric"),
    ("application/json", b'{"instances": [{"amount": 1}]}', 400, "missing features"),
    ("application/json", b'{"rows": []}', 400, "JSON body must be"),
    ("application/json", b'{"instances": []}', 400, "no rows"),
    ("application/x-recordio-protobuf", b"1,2,3,4", 415, "unsupported Content-Type"),
]


@pytest.mark.parametrize(("content_type", "body", "status", "message"), BAD_REQUESTS)
def test_bad_payloads_get_4xx_and_server_keeps_serving(
    server, models, rows, content_type, body, status, message
):
    conn, got, text, _ = _raw(server, "POST", "/invocations", body, {"Content-Type": content_type})
    assert got == status and message in text.decode()
    assert text.decode().count("\n") == 1  # one-line reason
    # Same keep-alive connection still serves a valid request.
    conn.request("POST", "/invocations", body=_csv(rows[:2]).encode(), headers={"Content-Type": "text/csv"})
    resp = conn.getresponse()
    assert resp.status == 200
    np.testing.assert_array_equal(np.float32(parse_scores(resp.read())), _expected(models["a"], rows[:2]))


def test_protocol_edges(server) -> None:
    assert (
        _raw(server, "POST", "/invocations", b"1,2,3,4", {"Content-Type": "text/csv", "Accept": "text/html"})[
            1
        ]
        == 406
    )
    assert _raw(server, "GET", "/invocations")[1] == 404
    assert _raw(server, "POST", "/predict", b"1,2,3,4", {"Content-Type": "text/csv"})[1] == 404
    # text/csv with parameters, and no Content-Type at all (SageMaker's default is CSV).
    assert (
        _raw(server, "POST", "/invocations", b"1,2,3,4", {"Content-Type": "text/csv; charset=utf-8"})[1]
        == 200
    )
    assert _raw(server, "POST", "/invocations", b"1,2,3,4")[1] == 200
    # Too large: 413, and the connection remains usable.
    big = b"1,2,3,4\n" * (MAX_PAYLOAD_BYTES // 8 + 1)
    conn, status, text, _ = _raw(server, "POST", "/invocations", big, {"Content-Type": "text/csv"})
    assert status == 413 and b"exceeds" in text
    conn.request("GET", "/ping")
    assert conn.getresponse().status == 200


def test_client_error_mapping(server) -> None:
    runtime = LocalSageMakerRuntime({"ep": server.url})
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="ep", Body="1,2,3", ContentType="text/csv")
    r = err.value.response
    assert r["Error"]["Code"] == "ModelError" and r["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert r["OriginalStatusCode"] == 400 and "expects 4" in r["OriginalMessage"]
    assert err.value.operation_name == "InvokeEndpoint"
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="ep", Body=b"x", ContentType="image/png")
    assert err.value.response["OriginalStatusCode"] == 415
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="missing", Body="1,2,3,4")
    assert err.value.response["Error"]["Code"] == "ValidationError" and "missing" in str(err.value)
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="ep", Body=b"0" * (MAX_PAYLOAD_BYTES + 1))
    assert err.value.response["Error"]["Code"] == "ValidationError"
    # Still fine afterwards, file-like bodies too.
    import io

    resp = runtime.invoke_endpoint(EndpointName="ep", Body=io.BytesIO(b"1,2,3,4"))
    assert len(parse_scores(resp["Body"].read())) == 1


def test_unreachable_endpoint_is_a_service_unavailable_client_error(models) -> None:
    srv = LocalEndpointServer(models["a"]).start()
    url = srv.url
    runtime = LocalSageMakerRuntime({"ep": url}, timeout=2)
    assert (
        runtime.invoke_endpoint(EndpointName="ep", Body="1,2,3,4")["ResponseMetadata"]["HTTPStatusCode"]
        == 200
    )
    srv.stop()  # also closes the kept-alive connection
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="ep", Body="1,2,3,4")
    assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
    with pytest.raises(TimeoutError):
        wait_until_ready(url, timeout=0.3)


def test_hot_swap_and_admin_reload(models, rows, tmp_path: Path) -> None:
    with LocalEndpointServer(models["a"]) as srv:
        runtime = LocalSageMakerRuntime({"ep": srv.url})

        def score() -> np.ndarray:
            return np.float32(
                parse_scores(runtime.invoke_endpoint(EndpointName="ep", Body=_csv(rows))["Body"].read())
            )

        np.testing.assert_array_equal(score(), _expected(models["a"], rows))
        srv.load_model(models["b"])
        np.testing.assert_array_equal(score(), _expected(models["b"], rows))
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(b"garbage")
        with pytest.raises(ArtifactError):
            srv.load_model(bad)
        np.testing.assert_array_equal(score(), _expected(models["b"], rows))  # old model keeps serving
        _, status, _, _ = _raw(srv, "POST", "/admin/reload", json.dumps({"model": str(models["a"])}).encode())
        assert status == 200 and srv.model_path == str(models["a"])
        np.testing.assert_array_equal(score(), _expected(models["a"], rows))
        _, status, text, _ = _raw(srv, "POST", "/admin/reload", json.dumps({"model": str(bad)}).encode())
        assert status == 400 and b"not reloaded" in text
    with LocalEndpointServer(models["a"], admin=False) as srv:
        assert _raw(srv, "POST", "/admin/reload", json.dumps({"model": str(models["b"])}).encode())[1] == 404


def test_concurrent_clients_get_their_own_scores(server, models) -> None:
    rng = np.random.default_rng(11)
    batches = [rng.exponential(1, (int(rng.integers(1, 30)), 4)) for _ in range(120)]
    runtime = LocalSageMakerRuntime({"ep": server.url})
    results: dict[int, list[float]] = {}

    def worker(start: int) -> None:
        for i in range(start, len(batches), 4):
            body = runtime.invoke_endpoint(EndpointName="ep", Body=_csv(batches[i]))["Body"].read()
            results[i] = parse_scores(body)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.concatenate([np.float32(results[i]) for i in range(len(batches))])
    np.testing.assert_array_equal(got, _expected(models["a"], np.concatenate(batches)))


def test_parse_scores_reads_both_csv_layouts() -> None:
    assert parse_scores(b"0.1\n0.2\n") == [0.1, 0.2]
    assert parse_scores("0.1,0.2") == [0.1, 0.2]  # the built-in container's real-time layout


def test_cli_starts_serves_and_stops_on_sigterm(models, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training.serve",
            "--model",
            str(models["a"]),
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(2400):  # up to 120 s: a loaded machine imports xgboost slowly
            if ready.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.05)
        url = ready.read_text().strip()
        wait_until_ready(url, timeout=10, process=proc)
        body = (
            LocalSageMakerRuntime({"ep": url})
            .invoke_endpoint(EndpointName="ep", Body="1,2,3,4")["Body"]
            .read()
        )
        assert len(parse_scores(body)) == 1
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "listening on http://127.0.0.1:" in out and "SIGTERM" in out and "stopped" in out
    bad = subprocess.run(
        [sys.executable, "-m", "training.serve", "--model", str(tmp_path / "missing.tar.gz"), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "model not found" in bad.stderr and "Traceback" not in bad.stderr


def _start_cli(model: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.serve", "--model", str(model), "--port", "0",
         "--ready-file", str(ready), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for _ in range(2400):  # up to 120 s
        if ready.exists() or proc.poll() is not None:
            break
        threading.Event().wait(0.05)
    return proc, ready.read_text().strip()


def test_sigterm_drains_requests_in_flight(models, tmp_path: Path) -> None:
    """Issue 9: SIGTERM used to cut in-flight requests; now they finish, then the server exits 0."""
    proc, url = _start_cli(models["a"], tmp_path, "--drain-seconds", "10")
    try:
        wait_until_ready(url, timeout=10, process=proc)
        host, port = url.removeprefix("http://").split(":")
        body = b"1.5,2.0,0.5,1.0\n" * 50
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "text/csv")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:100])  # the request is in flight: headers and part of the body
        threading.Event().wait(0.3)
        proc.send_signal(signal.SIGTERM)
        threading.Event().wait(0.5)
        assert proc.poll() is None  # still draining
        conn.send(body[100:])
        resp = conn.getresponse()
        assert resp.status == 200 and len(parse_scores(resp.read())) == 50
        assert resp.getheader("Connection") == "close"
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "cut" not in out
    assert not ping(url)  # the port is released


def test_info_names_the_server_and_its_model_version(models, tmp_path: Path) -> None:
    srv = LocalEndpointServer(models["a"], model_version="7", instance_id="abc", owner="/x").start()
    try:
        _, status, body, _ = _raw(srv, "GET", "/info")
        info = json.loads(body)
        assert status == 200
        assert (info["model_version"], info["instance_id"], info["owner"]) == ("7", "abc", "/x")
        assert info["pid"] > 0 and info["model"] == str(models["a"]) and info["url"] == srv.url
        # The missing value is an empty CSV field (or JSON null), still scored.
        _, status, _, _ = _raw(srv, "POST", "/invocations", b"1,,2,4", {"Content-Type": "text/csv"})
        assert status == 200
        _, status, _, _ = _raw(
            srv, "POST", "/invocations", b"[[1, null, 2, 4]]", {"Content-Type": "application/json"}
        )
        assert status == 200
    finally:
        srv.stop()
