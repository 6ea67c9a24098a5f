"""The handlers' boto3 clients, created once per Lambda container and reused by warm invocations."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def aws_client(service: str) -> Any:
    """The boto3 client of `service` (imported here: tests and local mode pass their own clients)."""
    import boto3

    return boto3.client(service)
