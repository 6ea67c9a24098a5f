"""Retry policy of the Lambdas' AWS calls: which errors are worth retrying in place, and the backoff.

`with_retries` re-sends a call on throttling and on transient connection errors (refused/closed
connections, timeouts) with exponential backoff and full jitter; anything else, and the last error
once the attempts run out, propagates. `AWS_ERRORS` is what a handler catches to turn an AWS call
that gave up into batch item failures (an AWS error never escapes a handler: a crashed invocation
would emit no metrics and re-send its malformed records to the failure queue on every Kinesis retry).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from lambdas.telemetry import log

T = TypeVar("T")
E = TypeVar("E")

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceeded",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "SlowDown",
        "InternalFailure",
        "InternalServerError",
    }
)
"""Error codes worth retrying in place: the request was fine, the service was busy."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError
    HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
    IncompleteReadError,
)
"""botocore errors raised before any answer arrived: the same request may succeed when re-sent."""

AWS_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError)
"""What an AWS call can raise once `with_retries` gives up; handlers turn it into batch item failures."""


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_throttling(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLING_CODES


def is_transient(exc: BaseException) -> bool:
    """Worth retrying in place: throttling, or a connection that failed or timed out."""
    return is_throttling(exc) or isinstance(exc, TRANSIENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: sleep U(0, min(cap, base * 2**attempt))."""

    max_attempts: int = 6
    base_delay: float = 0.05
    max_delay: float = 2.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.max_delay, self.base_delay * (2**attempt))


def with_retries(
    call: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `call`, retrying throttling and transient connection errors (`is_transient`) with backoff.

    Any other error, and the last one after max attempts, propagates."""
    policy = policy or RetryPolicy()
    for attempt in range(policy.max_attempts):
        try:
            return call()
        except AWS_ERRORS as exc:
            if not is_transient(exc) or attempt == policy.max_attempts - 1:
                raise
            if on_retry:
                on_retry(attempt, exc)
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def resend_failed_entries(
    send: Callable[[list[E]], tuple[list[E], bool]],
    entries: Sequence[E],
    *,
    error_message: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[E]:
    """One batch call whose entries can fail one by one (PutRecords, SendMessageBatch): botocore and
    `with_retries` re-send a failed call, never the failed entries of a call that succeeded.

    `send(pending)` makes the call and returns (the entries not accepted, whether to re-send them);
    they are re-sent with backoff, at most `policy.max_attempts` calls. An AWS error once
    `with_retries` gives up ends the attempts (logged as `error_message`). Returns the entries
    never accepted."""
    policy = policy or RetryPolicy()
    pending = list(entries)
    for attempt in range(policy.max_attempts):
        try:
            pending, again = with_retries(lambda pending=pending: send(pending), policy=policy, sleep=sleep)
        except AWS_ERRORS as exc:
            log("ERROR", error_message, error=str(exc), count=len(pending))
            break
        if not again:
            break
        sleep(policy.delay(attempt))
    return pending
