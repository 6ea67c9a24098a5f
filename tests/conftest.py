"""Shared fixtures: one local Spark session per test worker, and a network guard."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

# Tests never talk to AWS: fake credentials and a region so boto3/moto never look further.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
# Test-sized Flink jobs are nearly all JVM start-up: C1 only, as the replay runs its job
# (streaming/replay.py JVM_OPTIONS); PyFlink reads JVM_ARGS, and a caller's own value is kept.
os.environ.setdefault("JVM_ARGS", "-XX:TieredStopAtLevel=1")


@pytest.fixture(scope="session")
def spark():
    """A small local Spark session shared by every Spark test in this worker."""
    from processing.spark_session import local_spark_session

    session = local_spark_session("tests", cores=1, shuffle_partitions=4, input_rows=0)
    yield session
    session.stop()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a non-loopback connection fails the test."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address, *args, **kwargs):
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in ("127.0.0.1", "localhost", "::1")
            and not host.startswith("/")
        ):
            raise AssertionError(f"network access attempted in an offline test: {address!r}")
        return real_connect(self, address, *args, **kwargs)

    def guarded_getaddrinfo(host, *args, **kwargs):
        raise AssertionError(f"DNS lookup attempted in an offline test: {host!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(
        socket,
        "create_connection",
        lambda *a, **k: (_ for _ in ()).throw(
            AssertionError(f"network access attempted in an offline test: {a!r}")
        ),
    )
    yield
