"""A `sagemaker-runtime`-shaped client for the local endpoint (training/serve.py).

`LocalSageMakerRuntime.invoke_endpoint(EndpointName=, Body=, ContentType=, Accept=)` returns
what boto3 returns (`Body` is a botocore StreamingBody) and fails the way boto3 fails, with
`botocore.exceptions.ClientError`, so Lambda handlers run unchanged against either:

- the container answered 4xx/5xx -> code `ModelError`, HTTP 424, with `OriginalStatusCode` and
  `OriginalMessage` (as SageMaker reports container errors);
- unknown endpoint name, or a payload over 6 MiB -> `ValidationError`, HTTP 400 (SageMaker's API
  rejects these before any container sees them);
- server unreachable or timed out -> `ServiceUnavailable`, HTTP 503 (retryable).

Connections are kept alive, one per thread and endpoint.
"""

from __future__ import annotations

import http.client
import io
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from lambdas.scores import parse_scores  # noqa: F401  (re-exported: one parser, the Lambda's)

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_OPERATION = "InvokeEndpoint"


def _client_error(code: str, message: str, http_status: int, **extra: Any) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": http_status},
        **extra,
    }
    return ClientError(response, _OPERATION)


class LocalSageMakerRuntime:
    """`endpoints` maps endpoint names to base URLs; a single URL string serves any endpoint name."""

    def __init__(self, endpoints: Mapping[str, str] | str, timeout: float = 30.0) -> None:
        self._any: str | None = endpoints.rstrip("/") if isinstance(endpoints, str) else None
        self._endpoints = (
            {} if isinstance(endpoints, str) else {k: v.rstrip("/") for k, v in endpoints.items()}
        )
        self.timeout = timeout
        self._local = threading.local()

    def _base_url(self, name: str) -> str:
        url = self._any or self._endpoints.get(name)
        if url is None:
            raise _client_error("ValidationError", f"Endpoint {name} of account local not found.", 400)
        return url

    def _connection(self, url: str, fresh: bool = False) -> http.client.HTTPConnection:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get(url)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            parts = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.timeout
            )
            pool[url] = conn
        return conn

    def _post(self, url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        for attempt in (0, 1):
            conn = self._connection(url, fresh=attempt > 0)
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                return resp.status, data, resp.getheader("Content-Type", "")
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()  # a kept-alive connection the server dropped: retry once on a new one
                if attempt:
                    raise _client_error(
                        "ServiceUnavailable", f"endpoint at {url} dropped the connection: {exc}", 503
                    ) from exc
            except TimeoutError as exc:
                conn.close()
                raise _client_error(
                    "ServiceUnavailable", f"endpoint at {url} timed out after {self.timeout} s", 503
                ) from exc
            except OSError as exc:
                conn.close()
                raise _client_error(
                    "ServiceUnavailable", f"endpoint at {url} unreachable: {exc}", 503
                ) from exc
        raise AssertionError("unreachable")

    def invoke_endpoint(
        self,
        *,
        EndpointName: str,
        Body: bytes | str | Any,
        ContentType: str = "text/csv",
        Accept: str | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        """Score `Body` on the endpoint; same request/response/error shapes as boto3."""
        url = self._base_url(EndpointName)
        if isinstance(Body, str):
            payload = Body.encode("utf-8")
        elif isinstance(Body, bytes | bytearray | memoryview):
            payload = bytes(Body)
        elif hasattr(Body, "read"):
            payload = Body.read()
            payload = payload.encode("utf-8") if isinstance(payload, str) else payload
        else:
            raise TypeError(f"Body must be bytes, str or a file object, not {type(Body).__name__}")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise _client_error(
                "ValidationError",
                f"Request payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes.",
                400,
            )
        headers = {"Content-Type": ContentType, "Content-Length": str(len(payload))}
        if Accept:
            headers["Accept"] = Accept
        status, data, content_type = self._post(url, "/invocations", payload, headers)
        if status != 200:
            message = data.decode("utf-8", "replace").strip()
            kind = "client" if status < 500 else "server"
            raise _client_error(
                "ModelError",
                f'Received {kind} error ({status}) from primary with message "{message}".',
                424,
                OriginalStatusCode=status,
                OriginalMessage=message,
            )
        return {
            "Body": StreamingBody(io.BytesIO(data), len(data)),
            "ContentType": content_type,
            "InvokedProductionVariant": "AllTraffic",
            "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {"content-type": content_type}},
        }

    def close(self) -> None:
        """Close this thread's connections."""
        for conn in self._local.__dict__.get("pool", {}).values():
            conn.close()
        self._local.__dict__["pool"] = {}


def ping(url: str, timeout: float = 2.0) -> bool:
    """True when GET /ping answers 200."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_until_ready(url: str, timeout: float = 30.0, process: Any | None = None) -> None:
    """Poll GET /ping until 200; TimeoutError after `timeout` s, RuntimeError if `process` (a Popen) exits."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if ping(url, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"endpoint process exited with code {process.returncode} before {url} was ready"
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"endpoint {url} not ready after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
