"""Local endpoint: an HTTP server speaking the SageMaker inference container protocol.

    GET  /ping          200 when a model is loaded, 503 otherwise
    POST /invocations   score rows; one vectorised `inplace_predict` per request

Request bodies (Content-Type):
- `text/csv` (the built-in XGBoost format, and what the scoring Lambda sends): one row per
  line, no header, columns = spec.MODEL_FEATURES in order; an empty field is a missing value.
- `application/json`, any of the usual SageMaker shapes:
  `{"instances": [[...], ...]}`, `{"instances": [{"features": [...]}, ...]}`,
  `{"instances": [{name: value, ...}, ...]}`, `{"features": [...]}` or `{"features": {name: value}}`
  (one row), or a bare `[[...], ...]` / `[...]`. Named features are ordered by the model's feature names.

Response (Accept; absent or `*/*` means "like the request"):
- `text/csv`: one score per line. (The built-in container answers a real-time CSV request with
  the scores comma-separated on one line; `lambdas.scores.parse_scores` reads both.)
- `application/json`: `{"predictions": [{"score": s}, ...]}`.

Errors never stop the server: empty body, wrong column count, non-numeric or non-finite
values (`nan`, `inf`, `Infinity`, a number beyond a double such as a 5,000-digit integer; an
*empty* CSV field or a JSON `null` is a missing value, which XGBoost handles), malformed or
over-nested JSON -> 400; unsupported Content-Type -> 415; unsupported Accept -> 406; body over
6 MiB (the SageMaker real-time payload limit) -> 413; no model -> 503. Error bodies are one line
of text saying why.

Local conveniences, not part of the SageMaker protocol:
- `GET /info` -> `{"pid", "instance_id", "owner", "model", "model_version", "url", "started_at"}`: who is
  answering. The local deployment (pipeline/local/endpoint.py) checks that *its* server (this
  PID, this instance id, this model version) holds the port before it switches traffic to it.
- `POST /admin/reload` with `{"model": PATH, "model_version": N}` hot-swaps the model
  (`LocalEndpointServer(..., admin=False)` / `--no-admin` turns it off).

SIGTERM/SIGINT drain: the server stops accepting, lets requests already being read or scored
finish (up to `--drain-seconds`, default 30) with `Connection: close`, then exits 0.

    python -m training.serve --model work/model.tar.gz --port 8080
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from features import spec
from training.model_artifact import ArtifactError, load_booster

log = logging.getLogger("training.serve")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""SageMaker real-time InvokeEndpoint payload limit."""
_MAX_DRAIN_BYTES = 8 * MAX_PAYLOAD_BYTES
IDLE_TIMEOUT_SECONDS = 60.0
DRAIN_SECONDS = 30.0
"""How long a stopping server waits for requests in flight (SageMaker gives a container 30 s)."""
CSV = "text/csv"
JSON = "application/json"


class RequestError(Exception):
    """A bad request: status and a one-line reason for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoadedModel:
    """An immutable (booster, metadata) pair; a hot swap replaces the whole object."""

    def __init__(self, path: str | Path, version: str | None = None) -> None:
        self.path = str(path)
        self.version = version
        self.booster = load_booster(path, nthread=1)
        self.n_features = self.booster.num_features()
        names = self.booster.feature_names
        self.feature_names: list[str] = list(names) if names else list(spec.MODEL_FEATURES[: self.n_features])
        self.loaded_at = time.time()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        # inplace_predict is thread safe and lock free when it is the only method used concurrently.
        return self.booster.inplace_predict(rows, validate_features=False)


# --- payload parsing ------------------------------------------------------------
def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def parse_csv(body: bytes, n_features: int) -> np.ndarray:
    """Rows of a header-less CSV body; empty fields are missing values (NaN)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "CSV body is not UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty CSV body: send one row per line")
    for i, line in enumerate(lines):
        if line.count(",") != n_features - 1:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"CSV row {i + 1} has {line.count(',') + 1} columns, the model expects {n_features} "
                f"({', '.join(spec.MODEL_FEATURES) if n_features == len(spec.MODEL_FEATURES) else 'features'}), "
                "no header, no label",
            )
    tokens = ",".join(lines).split(",")
    missing: np.ndarray | None = None
    try:
        values = np.array(tokens, dtype=np.float64)  # fast path: every field is a number
    except ValueError:
        stripped = [t.strip() for t in tokens]
        missing = np.array([not t for t in stripped])
        try:
            values = np.array([t or "nan" for t in stripped], dtype=np.float64)
        except ValueError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"non-numeric CSV value: {exc}") from None
    bad = ~np.isfinite(values) if missing is None else ~(np.isfinite(values) | missing)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"CSV row {i // n_features + 1}: non-finite value {tokens[i].strip()[:40]!r} "
            "(nan, inf or beyond a double); leave the field empty for a missing value",
        )
    return values.reshape(len(lines), n_features)


def _row_from(item: Any, names: list[str], where: str) -> list[Any]:
    if isinstance(item, dict):
        if "features" in item:
            return _row_from(item["features"], names, where)
        missing = [n for n in names if n not in item]
        if missing:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{where}: missing features {missing}")
        return [item[n] for n in names]
    if isinstance(item, list):
        return item
    raise RequestError(
        HTTPStatus.BAD_REQUEST, f"{where}: expected a list of numbers or an object of features"
    )


def _no_constants(name: str) -> Any:
    raise RequestError(
        HTTPStatus.BAD_REQUEST, f"non-finite JSON literal {name}: use null for a missing value"
    )


_JSON = json.JSONDecoder(parse_constant=_no_constants)
"""Strict decoder: NaN/Infinity literals are refused (they are not JSON)."""


def parse_json(body: bytes, names: list[str]) -> np.ndarray:
    """Rows of a JSON body in one of the shapes the module doc lists."""
    try:
        doc = _JSON.decode(body.decode("utf-8"))
    except RequestError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # an integer literal over Python's 4,300-digit conversion limit
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None
    if isinstance(doc, dict) and "instances" in doc:
        items = doc["instances"]
        if not isinstance(items, list):
            raise RequestError(HTTPStatus.BAD_REQUEST, '"instances" must be a list')
        rows = [_row_from(item, names, f"instance {i}") for i, item in enumerate(items)]
    elif isinstance(doc, dict) and "features" in doc:
        rows = [_row_from(doc["features"], names, "features")]
    elif isinstance(doc, list) and doc and all(isinstance(r, list | dict) for r in doc):
        rows = [_row_from(item, names, f"row {i}") for i, item in enumerate(doc)]
    elif isinstance(doc, list) and doc:
        rows = [doc]
    else:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            'JSON body must be {"instances": [[...], ...]}, {"features": ...} or a list of rows',
        )
    if not rows:
        raise RequestError(HTTPStatus.BAD_REQUEST, "no rows to score")
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"row {i} has {len(row)} values, the model expects {len(names)} ({', '.join(names)})",
            )
        for value in row:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"row {i}: non-numeric value {value!r}")
    try:
        values = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    except OverflowError:  # an integer beyond a double
        raise RequestError(HTTPStatus.BAD_REQUEST, "non-finite value: a number beyond a double") from None
    given = np.array([[v is not None for v in row] for row in rows], dtype=bool)
    if (given & ~np.isfinite(values)).any():
        raise RequestError(HTTPStatus.BAD_REQUEST, "non-finite value: a number beyond a double")
    return values


def format_scores(scores: np.ndarray, accept: str) -> tuple[bytes, str]:
    values = [float(s) for s in scores]
    if accept == JSON:
        return json.dumps({"predictions": [{"score": v} for v in values]}).encode(), JSON
    return ("\n".join(repr(v) for v in values) + "\n").encode(), CSV


# --- HTTP -----------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as SageMaker's front end talks to the container
    server_version = "LocalSageMakerEndpoint/1.0"
    timeout = IDLE_TIMEOUT_SECONDS
    wbufsize = 1 << 16  # headers and body leave in one segment (the base class flushes after each request)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # per-request access logs would drown the output
        log.debug("%s " + format, self.address_string(), *args)

    def parse_request(self) -> bool:
        # A request line has arrived: from here until its response is written the request is in
        # flight, and a draining server waits for it (an idle keep-alive connection is not).
        self.server.request_started()
        self._in_flight = True
        return super().parse_request()

    def handle_one_request(self) -> None:
        self._in_flight = False
        try:
            super().handle_one_request()
        finally:
            if self._in_flight:
                self._in_flight = False
                self.server.request_finished()

    def _send(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        if self.server.draining.is_set():
            self.close_connection = True  # the client opens its next request elsewhere
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        message = " ".join(message.split())  # always one line
        log.warning("%s %s -> %d %s", self.command, self.path, status, message)
        self._send(status, (message + "\n").encode())

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported: send Content-Length"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length") from None
        if length > MAX_PAYLOAD_BYTES:
            if length <= _MAX_DRAIN_BYTES:
                # Read and drop it, so the client sees the 413 and keeps its connection.
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            else:
                # An unread body would corrupt the next request on this connection.
                self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"payload of {length} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit",
            )
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        if self.path == "/ping":
            if self.server.model is None:
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, "no model loaded")
            else:
                self._send(HTTPStatus.OK, b"")
        elif self.path == "/info":
            self._send(HTTPStatus.OK, json.dumps(self.server.owner.info()).encode(), JSON)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"unknown path {self.path}: use GET /ping or POST /invocations")

    def do_POST(self) -> None:
        try:
            body = self._read_body()
            if self.path == "/invocations":
                payload, content_type = self._invoke(body)
                self._send(HTTPStatus.OK, payload, content_type)
            elif self.path == "/admin/reload" and self.server.admin:
                self._reload(body)
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, f"unknown path {self.path}: use POST /invocations")
        except RequestError as exc:
            self._error(exc.status, exc.message)
        except Exception as exc:  # a bug must not kill the server thread silently
            log.exception("unexpected error on %s", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}")

    def _invoke(self, body: bytes) -> tuple[bytes, str]:
        model = self.server.model  # one read: a concurrent hot swap cannot mix two models in a request
        if model is None:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "no model loaded")
        content_type = _media_type(self.headers.get("Content-Type")) or CSV
        if content_type not in (CSV, JSON):
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {content_type!r}: use text/csv or application/json",
            )
        accept = _media_type(self.headers.get("Accept"))
        if accept in ("", "*/*"):
            accept = content_type
        if accept not in (CSV, JSON):
            raise RequestError(
                HTTPStatus.NOT_ACCEPTABLE, f"unsupported Accept {accept!r}: use text/csv or application/json"
            )
        if not body:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send rows to score")
        rows = (
            parse_csv(body, model.n_features)
            if content_type == CSV
            else parse_json(body, model.feature_names)
        )
        scores = model.predict(rows)
        return format_scores(scores, accept)

    def _reload(self, body: bytes) -> None:
        try:
            doc = json.loads(body or b"{}")
            path, version = doc.get("model"), doc.get("model_version")
        except (ValueError, AttributeError):
            path = version = None
        if not path:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'reload body must be {"model": PATH}')
        try:
            self.server.owner.load_model(path, None if version is None else str(version))
        except ArtifactError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"model not reloaded: {exc}") from None
        self._send(HTTPStatus.OK, json.dumps(self.server.owner.info()).encode(), JSON)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: LocalEndpointServer, admin: bool) -> None:
        self.owner = owner
        self.admin = admin
        self.model: LoadedModel | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._conn_lock)
        self.draining = threading.Event()
        super().__init__(address, _Handler)

    def request_started(self) -> None:
        with self._conn_lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._conn_lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no request is in flight (or `timeout` s); return how many still are."""
        with self._conn_lock:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)
            return self._in_flight

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._conn_lock:
            self._connections.add(request)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class LocalEndpointServer:
    """The endpoint in a background thread: `start()`, `url`, `load_model(path)` (hot swap), `stop()`."""

    def __init__(
        self,
        model_path: str | Path | None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        admin: bool = True,
        model_version: str | None = None,
        instance_id: str | None = None,
        owner: str | None = None,
    ) -> None:
        self._server = _Server((host, port), self, admin)
        self._thread: threading.Thread | None = None
        self.instance_id = instance_id
        self.owner = owner
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if model_path is not None:
            self.load_model(model_path, model_version)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def model_path(self) -> str | None:
        return self._server.model.path if self._server.model else None

    @property
    def model_version(self) -> str | None:
        return self._server.model.version if self._server.model else None

    def info(self) -> dict[str, Any]:
        """Who answers on this port: what `GET /info` returns."""
        return {
            "pid": os.getpid(),
            "instance_id": self.instance_id,
            "owner": self.owner,
            "model": self.model_path,
            "model_version": self.model_version,
            "url": self.url,
            "started_at": self.started_at,
        }

    def load_model(self, path: str | Path, version: str | None = None) -> None:
        """Load `path` and swap it in; the old model keeps serving if loading fails (ArtifactError)."""
        model = LoadedModel(path, version)
        self._server.model = model
        log.info("model loaded: %s (version %s, %d features)", model.path, version, model.n_features)

    def start(self) -> LocalEndpointServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="local-endpoint",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self, drain_seconds: float = 0.0) -> int:
        """Stop accepting, let requests in flight finish (up to `drain_seconds`), close keep-alive
        connections, release the port. Returns how many requests were still in flight (cut)."""
        self._server.draining.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.socket.close()  # refuse new connections at once (clients retry elsewhere)
        cut = self._server.wait_idle(drain_seconds) if drain_seconds > 0 else 0
        self._server.close_connections()
        self._server.server_close()
        return cut

    def __enter__(self) -> LocalEndpointServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local SageMaker-protocol endpoint for the XGBoost model.")
    parser.add_argument("--model", required=True, help="model.tar.gz, its directory or xgboost-model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (see --ready-file)")
    parser.add_argument("--ready-file", help="write the base URL here once the server accepts requests")
    parser.add_argument("--no-admin", action="store_true", help="disable POST /admin/reload")
    parser.add_argument("--model-version", help="reported by GET /info (the registry version)")
    parser.add_argument("--instance-id", help="reported by GET /info (who started this server)")
    parser.add_argument(
        "--owner", help="reported by GET /info: the deployment directory that manages this server"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=DRAIN_SECONDS,
        help="on SIGTERM, wait this long for requests in flight (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        server = LocalEndpointServer(
            args.model,
            args.host,
            args.port,
            admin=not args.no_admin,
            model_version=args.model_version,
            instance_id=args.instance_id,
            owner=args.owner,
        )
    except ArtifactError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"serve: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    log.info(
        "listening on %s (model %s, version %s, pid %d)",
        server.url,
        server.model_path,
        server.model_version,
        os.getpid(),
    )
    if args.ready_file:
        tmp = Path(args.ready_file).with_suffix(".tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(args.ready_file)
    while not stopping.wait(0.5):
        pass
    cut = server.stop(drain_seconds=args.drain_seconds)
    if cut:
        log.warning("%d request(s) still in flight after %.0f s were cut", cut, args.drain_seconds)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
