"""Shared plumbing of the two stream Lambdas: Kinesis decoding, validation, retries, logs, metrics.

Both handlers (ingest_aggregates, score_transaction) are thin: they decode a Kinesis batch with
`decode_batch`, send malformed records to the failure destination with `send_failures` (never
retried: a bad record stays bad), call AWS through `with_retries` (exponential backoff with full
jitter on throttling and on transient connection errors: refused/closed connections, timeouts)
and report the records to retry as `batchItemFailures`. An AWS error (`AWS_ERRORS`) never
escapes a handler: a crashed invocation would emit no metrics and re-send its malformed records
to the failure queue on every Kinesis retry.
The same code runs on AWS (boto3 clients) and locally (local clients with the same shapes).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from features import spec

T = TypeVar("T")

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

DEFAULT_METRICS_NAMESPACE = "FraudDetection/Streaming"


# --- Errors and retries ----------------------------------------------------------------------
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


# --- Structured logs and EMF metrics ----------------------------------------------------------
def log(level: str, message: str, **fields: Any) -> None:
    """One JSON object per line on stdout (CloudWatch Logs Insights parses the fields)."""
    print(
        json.dumps({"level": level, "message": message, **fields}, default=str), file=sys.stdout, flush=True
    )


def emf(
    namespace: str,
    metrics: Mapping[str, tuple[float, str]],
    dimensions: Mapping[str, str],
    properties: Mapping[str, Any] | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """A CloudWatch embedded-metric-format document (metrics as name -> (value, unit))."""
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(timestamp_ms if timestamp_ms is not None else time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": n, "Unit": u} for n, (_, u) in metrics.items()],
                }
            ],
        },
        **dimensions,
        **{n: v for n, (v, _) in metrics.items()},
        **(properties or {}),
    }
    return doc


def put_metrics(
    namespace: str, metrics: Mapping[str, tuple[float, str]], **dimensions: str
) -> dict[str, Any]:
    """Print an EMF document (Lambda ships stdout to CloudWatch, which extracts the metrics)."""
    doc = emf(namespace, metrics, dimensions)
    print(json.dumps(doc), file=sys.stdout, flush=True)
    return doc


# --- Kinesis decoding and validation ----------------------------------------------------------
class MalformedRecord(ValueError):
    """A record that can never be processed; goes to the failure destination, never retried."""


@dataclass
class KinesisItem:
    """One record of a Kinesis-triggered batch: its identity, raw bytes and parsed payload."""

    sequence_number: str
    partition_key: str
    raw: bytes
    event: dict[str, Any] | None = None
    reason: str | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _as_float(v: int | float) -> float:
    """float() of a JSON number; an integer too large for a double counts as infinite."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _card_number(v: Any) -> int:
    """The card number as an int (type check only; the range rule is spec.value_problem's)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _is_int(v):
        raise MalformedRecord(f"{spec.CARD_ID} must be an integer, got {v!r}")
    if v >= 2**63:
        raise MalformedRecord(f"{spec.CARD_ID} must fit in a signed 64-bit integer, got {v!r}")
    return v


FLINK_REJECT_REASON = "reject_reason"
"""Set by the Flink job next to `raw` on a record it set aside."""
BEYOND_LATENESS = "beyond_lateness"
"""Set by the Flink job on a late event older than its allowed lateness (features from what it kept)."""


def flink_reject_reason(raw: str) -> str:
    """Why the Flink job set a record aside: this module's reason on the original text where it
    rejects it too, else the shared rule (features.spec.valid_event_sql) as Flink reads it."""
    try:
        parse_event(raw)
    except MalformedRecord as exc:
        return f"rejected by the streaming job: {exc}"
    return "rejected by the streaming job: not a valid event under its typed reading (features.spec.valid_event_sql)"


def validate_event(obj: Any, *, enriched: bool = False) -> dict[str, Any]:
    """Check a transaction event (and, when `enriched`, the Flink aggregates); raise MalformedRecord.

    Types are checked here; the value rules (finite, >= 0 for spec.NON_NEGATIVE_FIELDS) are
    spec.value_problem, the same rule Spark and Flink apply through spec.valid_event_sql.
    Returns a normalised copy: `cc_num` int, `amount`/`trans_ts` float, optional fields kept."""
    if not isinstance(obj, dict):
        raise MalformedRecord(f"event is not a JSON object but {type(obj).__name__}")
    if enriched and isinstance(obj.get(spec.REJECTED_RAW_FIELD), str):
        reason = obj.get(FLINK_REJECT_REASON)
        if isinstance(reason, str) and reason:  # the streaming job says why (e.g. event time too far ahead)
            raise MalformedRecord(f"rejected by the streaming job: {reason}")
        raise MalformedRecord(flink_reject_reason(obj[spec.REJECTED_RAW_FIELD]))
    required = dict.fromkeys(spec.EVENT_FIELDS)  # NON_NEGATIVE_FIELDS are among them
    missing = [f for f in required if obj.get(f) is None]
    if missing:
        raise MalformedRecord(f"missing field(s): {', '.join(missing)}")
    out = dict(obj)
    tid = obj["tid"]
    if not isinstance(tid, str) or not tid:
        raise MalformedRecord(f"tid must be a non-empty string, got {tid!r}")
    for name in spec.NON_NEGATIVE_FIELDS:
        v = obj[name]
        if name == spec.CARD_ID:
            value: int | float = _card_number(v)
        elif _is_number(v):
            value = _as_float(v)
        else:
            raise MalformedRecord(f"{name} must be a number, got {v!r}")
        problem = spec.value_problem(name, value)
        if problem:
            raise MalformedRecord(problem)
        out[name] = value
    label = obj.get(spec.LABEL)
    if label is not None and label not in (0, 1):
        raise MalformedRecord(f"{spec.LABEL} must be 0 or 1 when present, got {label!r}")
    if enriched:
        late = obj.get("late")
        if not isinstance(late, bool):
            raise MalformedRecord(f"late must be a boolean, got {late!r}")
        beyond = obj.get(BEYOND_LATENESS, False)
        if not isinstance(beyond, bool):
            raise MalformedRecord(f"{BEYOND_LATENESS} must be a boolean, got {beyond!r}")
        out[BEYOND_LATENESS] = beyond
        for name in spec.STREAMING_FEATURES:
            out[name] = _streaming_value(name, obj.get(name))
    return out


def _streaming_value(name: str, v: Any) -> float | int:
    """A streaming feature of an enriched event, checked by its declared kind."""
    if spec.SPEC.feature_type(name) == "Integral":  # counts: the window holds the event itself
        if not _is_int(v) or v < 1:
            raise MalformedRecord(f"{name} must be an integer >= 1, got {v!r}")
        return int(v)
    if not _is_number(v):
        raise MalformedRecord(f"{name} must be a number, got {v!r}")
    value = _as_float(v)
    if value == spec.RECENCY_SENTINEL and spec.SPEC.kind_of(name) == "recency":
        return value
    if not math.isfinite(value) or value < 0:
        raise MalformedRecord(f"{name} must be a finite number >= 0, got {v!r}")
    return value


def _no_constants(name: str) -> Any:
    raise MalformedRecord(f"non-finite JSON literal {name}")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)
"""One strict decoder for every record (json.loads with options would build one per call)."""


def parse_event(raw: bytes | str, *, enriched: bool = False) -> dict[str, Any]:
    """Decode UTF-8 JSON (strict: NaN/Infinity literals are rejected) and validate it."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise MalformedRecord(f"not UTF-8: {exc}") from None

    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise MalformedRecord(f"bad JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise MalformedRecord(f"bad JSON: {exc}") from None
    except RecursionError:
        raise MalformedRecord("bad JSON: nested too deeply") from None
    return validate_event(obj, enriched=enriched)


def decode_batch(event: Mapping[str, Any], *, enriched: bool = True) -> list[KinesisItem]:
    """Every record of a Kinesis event, parsed or with the reason it is malformed (order kept)."""
    items: list[KinesisItem] = []
    for i, rec in enumerate(event.get("Records") or []):
        kin = rec.get("kinesis") or {}
        seq = str(kin.get("sequenceNumber") or rec.get("eventID") or f"index-{i}")
        item = KinesisItem(sequence_number=seq, partition_key=str(kin.get("partitionKey", "")), raw=b"")
        try:
            item.raw = base64.b64decode(kin.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            item.reason = f"data is not base64: {exc}"
            items.append(item)
            continue
        try:
            item.event = parse_event(item.raw, enriched=enriched)
        except MalformedRecord as exc:
            item.reason = str(exc)
        items.append(item)
    return items


# --- Configuration -----------------------------------------------------------------------------
class ConfigError(ValueError):
    """A Lambda environment variable with an unusable value: the message names the variable."""


def env_float(
    env: Mapping[str, str], name: str, default: float, *, low: float | None = None, high: float | None = None
) -> float:
    """A finite float from the environment, within [low, high]; ConfigError naming `name` otherwise."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in [{low}, {high}]" if low is not None and high is not None else ""
        raise ConfigError(f"environment variable {name}={raw!r} is not a finite number{bounds}")
    return value


# --- Decisions: one per event ------------------------------------------------------------------
DECISION_NAMESPACE = uuid.UUID("6f1d8c1e-6a57-4c1b-9a55-1f0a3c9b7e21")


def decision_id(event: Mapping[str, Any]) -> str:
    """The deterministic id of the decision on `event`: a UUID5 of the event's identity
    (tid, card, event time, amount), the same for every delivery of the same event.

    Not tid alone: tid is the producer's and is not unique in every data set (duplicate tids of
    distinct transactions would lose a decision under de-duplication by tid). Not the model
    version: a re-delivery scored after a blue/green switch is still the same event and must not
    yield a second decision; the model that decided is a field of the decision instead."""
    key = json.dumps(
        [
            str(event["tid"]),
            int(event[spec.CARD_ID]),
            float(event[spec.EVENT_TIME]),
            float(event[spec.AMOUNT]),
        ]
    )
    return str(uuid.uuid5(DECISION_NAMESPACE, key))


class DecisionDeduplicator:
    """What a consumer of the decisions stream keeps: the first decision per `decision_id`.

    Kinesis and Lambda deliver at least once (a retried batch re-sends records already decided),
    so a consumer sees some decisions twice; it keeps the first and counts the rest."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.duplicates_dropped = 0

    def accept(self, decision: Mapping[str, Any]) -> bool:
        """True the first time a decision id is seen; False (and counted) for a re-delivery."""
        key = decision["decision_id"]
        if key in self.seen:
            self.duplicates_dropped += 1
            return False
        self.seen.add(key)
        return True


# --- Failure destination ----------------------------------------------------------------------
def failure_message(item: KinesisItem, source: str, stage: str) -> dict[str, Any]:
    """What the failure destination receives: enough to inspect and replay the record."""
    try:
        payload: Any = item.raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(item.raw).decode("ascii"), "base64"
    return {
        "reason": item.reason,
        "stage": stage,
        "source": source,
        "sequenceNumber": item.sequence_number,
        "partitionKey": item.partition_key,
        "data": payload,
        "dataEncoding": encoding,
    }


def send_failures(
    sqs: Any,
    queue_url: str | None,
    items: Sequence[KinesisItem],
    *,
    source: str,
    stage: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[KinesisItem]:
    """Send malformed records to the failure queue; return the ones that could NOT be sent.

    Unsent records are reported as batch item failures by the caller, so nothing is lost.
    Without a queue (misconfiguration) every record is unsent."""
    if not items:
        return []
    if not queue_url or sqs is None:
        log("ERROR", "no failure destination configured", count=len(items))
        return list(items)
    unsent: list[KinesisItem] = []
    for start in range(0, len(items), 10):  # SendMessageBatch takes at most 10 entries
        chunk = {str(i): it for i, it in enumerate(items[start : start + 10])}
        pending = dict(chunk)
        for attempt in range((policy or RetryPolicy()).max_attempts):
            entries = [
                {"Id": k, "MessageBody": json.dumps(failure_message(it, source, stage))}
                for k, it in pending.items()
            ]
            try:
                resp = with_retries(
                    lambda entries=entries: sqs.send_message_batch(QueueUrl=queue_url, Entries=entries),
                    policy=policy,
                    sleep=sleep,
                )
            except AWS_ERRORS as exc:
                log("ERROR", "failure destination unavailable", error=str(exc), count=len(pending))
                break
            failed = {f["Id"] for f in resp.get("Failed", []) if not f.get("SenderFault")}
            hard = {f["Id"] for f in resp.get("Failed", []) if f.get("SenderFault")}
            for k in hard:
                log(
                    "ERROR", "failure destination rejected message", id=k, sequence=pending[k].sequence_number
                )
            pending = {k: v for k, v in pending.items() if k in failed or k in hard}
            if not failed:
                break
            sleep((policy or RetryPolicy()).delay(attempt))
        unsent.extend(pending.values())
    return unsent


def batch_item_failures(sequence_numbers: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """Lambda's partial-batch response (ReportBatchItemFailures on the event source mapping)."""
    seen: dict[str, None] = dict.fromkeys(sequence_numbers)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in seen]}


def kinesis_event(
    payloads: Sequence[bytes | str | dict],
    *,
    start_sequence: int = 1,
    stream: str = spec.CARD_FEATURES_STREAM,
    partition_keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build a Kinesis-shaped Lambda event (replay and tests drive the handlers with it)."""
    records = []
    for i, p in enumerate(payloads):
        data = json.dumps(p).encode() if isinstance(p, dict) else (p.encode() if isinstance(p, str) else p)
        pk = (
            partition_keys[i]
            if partition_keys
            else (str(p.get(spec.CARD_ID)) if isinstance(p, dict) else "0")
        )
        seq = f"{start_sequence + i:056d}"
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": pk,
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode("ascii"),
                    "approximateArrivalTimestamp": time.time(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{seq}",
                "eventName": "aws:kinesis:record",
                "eventSourceARN": f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}
