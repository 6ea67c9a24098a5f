"""Score enriched transactions from the `card-features` stream; decisions to `fraud-decisions`.

Per Kinesis batch: one BatchGetRecord for the distinct cards (1-week snapshot), the ratios from
features.spec, ONE multi-row CSV InvokeEndpoint, and PutRecords of the decisions (failed entries
retried). Malformed records go to the failure queue with the reason and are not retried; records
that could not be scored or delivered (throttling or connection errors once retries run out,
endpoint/model errors) are returned as `batchItemFailures` (Kinesis then retries from the lowest
one; downstream consumers de-duplicate decisions by `tid`); the invocation itself never fails.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from features import spec
from lambdas.clients import aws_client
from lambdas.decisions import decision_id
from lambdas.failures import FailureQueue, batch_item_failures
from lambdas.records import BEYOND_LATENESS, KinesisItem, decode_batch
from lambdas.retries import (
    AWS_ERRORS,
    THROTTLING_CODES,
    RetryPolicy,
    error_code,
    resend_failed_entries,
    with_retries,
)
from lambdas.scores import parse_scores
from lambdas.settings import env_float
from lambdas.telemetry import DEFAULT_METRICS_NAMESPACE, log, put_metrics

BATCH_GET_LIMIT = 100  # identifiers per BatchGetRecord call
PUT_RECORDS_LIMIT = 500  # entries per PutRecords call


@dataclass(frozen=True)
class Config:
    """Everything read from the environment, in one place."""

    endpoint_name: str = spec.ENDPOINT_NAME
    batch_feature_group: str = spec.BATCH_FEATURE_GROUP.name
    decisions_stream: str = spec.DECISIONS_STREAM
    failure_queue_url: str | None = None
    threshold: float = spec.DECISION_THRESHOLD
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            endpoint_name=env.get("ENDPOINT_NAME", spec.ENDPOINT_NAME),
            batch_feature_group=env.get("BATCH_FEATURE_GROUP_NAME", spec.BATCH_FEATURE_GROUP.name),
            decisions_stream=env.get("DECISIONS_STREAM_NAME", spec.DECISIONS_STREAM),
            failure_queue_url=env.get("FAILURE_QUEUE_URL") or None,
            threshold=env_float(env, "FRAUD_THRESHOLD", spec.DECISION_THRESHOLD, low=0.0, high=1.0),
            metrics_namespace=env.get("METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE),
        )


def _float(record: list[dict[str, str]], name: str) -> float:
    for f in record:
        if f["FeatureName"] == name:
            return float(f["ValueAsString"])
    return 0.0


def fetch_snapshots(
    featurestore: Any,
    group: str,
    cards: Sequence[int],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> dict[int, dict[str, float]]:
    """Snapshot features per card; cards without a record are absent (= all 0, as the batch rule)."""
    names = list(spec.SNAPSHOT_FEATURES)
    out: dict[int, dict[str, float]] = {}
    for start in range(0, len(cards), BATCH_GET_LIMIT):
        pending = [str(c) for c in cards[start : start + BATCH_GET_LIMIT]]
        for attempt in range(policy.max_attempts):
            ids = [
                {
                    "FeatureGroupName": group,
                    "RecordIdentifiersValueAsString": pending,
                    "FeatureNames": names,
                }
            ]
            resp = with_retries(
                lambda ids=ids: featurestore.batch_get_record(Identifiers=ids), policy=policy, sleep=sleep
            )
            for rec in resp.get("Records", []):
                out[int(rec["RecordIdentifierValueAsString"])] = {n: _float(rec["Record"], n) for n in names}
            errors = resp.get("Errors") or []
            hard = [e for e in errors if e.get("ErrorCode") not in THROTTLING_CODES]
            if hard:
                raise RuntimeError(f"BatchGetRecord errors: {hard[:3]}")
            pending = [
                rid
                for u in resp.get("UnprocessedIdentifiers") or []
                for rid in u.get("RecordIdentifiersValueAsString", [])
            ] + [e["RecordIdentifierValueAsString"] for e in errors]
            if not pending:
                break
            sleep(policy.delay(attempt))
        else:
            raise RuntimeError(f"BatchGetRecord left {len(pending)} identifiers unprocessed")
    return out


def feature_rows(
    events: Sequence[dict[str, Any]], snapshots: Mapping[int, Mapping[str, float]]
) -> list[dict[str, float]]:
    """Model input per event (by name, model order): the event's streaming features, its card's
    snapshot (0 for a card without one), the ratios, via the shared spec code."""
    empty = dict.fromkeys(spec.SNAPSHOT_FEATURES, 0.0)
    rows = []
    for ev in events:
        values = {spec.AMOUNT: ev[spec.AMOUNT], **{n: ev[n] for n in spec.STREAMING_FEATURES}}
        values.update(snapshots.get(ev[spec.CARD_ID], empty))
        rows.append(spec.model_input(values))
    return rows


def to_csv(rows: Sequence[Mapping[str, float]]) -> str:
    """Multi-row CSV body; repr() keeps every float bit-exact (parity with the training rows)."""
    return "\n".join(",".join(repr(float(r[n])) for n in spec.MODEL_FEATURES) for r in rows)


def invoke(
    runtime: Any, endpoint: str, body: str, *, policy: RetryPolicy, sleep: Callable[[float], None]
) -> bytes:
    """One InvokeEndpoint; the body is read inside the retried call (a read timeout re-sends the request)."""

    def call() -> bytes:
        resp = runtime.invoke_endpoint(
            EndpointName=endpoint, Body=body.encode(), ContentType="text/csv", Accept="text/csv"
        )
        return resp["Body"].read()

    return with_retries(call, policy=policy, sleep=sleep)


def refused_by_model(exc: BaseException) -> str | None:
    """The endpoint's message when it refused the request as the client's fault (container 4xx), else None.

    SageMaker reports a container's answer as ModelError (HTTP 424) with `OriginalStatusCode`;
    a 5xx there, throttling and connection errors are the service's and are retried instead."""
    if error_code(exc) != "ModelError" or not hasattr(exc, "response"):
        return None
    response = exc.response  # type: ignore[attr-defined]
    try:
        original = int(response.get("OriginalStatusCode") or 0)
    except (TypeError, ValueError):
        original = 0
    if 400 <= original < 500:
        return str(response.get("OriginalMessage") or response.get("Error", {}).get("Message", ""))
    return None


def score_isolating(
    runtime: Any,
    endpoint: str,
    rows: Sequence[Mapping[str, float]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> tuple[dict[int, float], dict[int, str], list[int]]:
    """Score `rows` in one call, bisecting on a 4xx refusal to isolate the refused rows.

    Returns (scores by row index, refusal reason by row index, indices left unscored because the
    endpoint failed transiently: the caller reports them for a retry)."""
    scores: dict[int, float] = {}
    refused: dict[int, str] = {}
    stack: list[list[int]] = [list(range(len(rows)))] if rows else []
    while stack:
        part = stack.pop()
        try:
            body = invoke(runtime, endpoint, to_csv([rows[i] for i in part]), policy=policy, sleep=sleep)
            values = parse_scores(body, len(part))
        except (*AWS_ERRORS, RuntimeError, ValueError) as exc:
            reason = refused_by_model(exc)
            if reason is None:  # the endpoint's trouble, not the rows': retry them all later
                log("ERROR", "scoring failed; records will be retried", error=str(exc),
                    error_type=type(exc).__name__, records=len(part) + sum(map(len, stack)))  # fmt: skip
                return scores, refused, sorted(part + [i for rest in stack for i in rest])
            if len(part) == 1:
                refused[part[0]] = reason
            else:
                mid = len(part) // 2
                stack += [part[mid:], part[:mid]]
            continue
        scores.update(zip(part, values, strict=True))
    return scores, refused, []


def non_finite_input(row: Mapping[str, float]) -> str | None:
    """Why a model-input row cannot be sent (a non-finite value), or None."""
    bad = [f"{k}={v!r}" for k, v in row.items() if not math.isfinite(v)]
    return f"non-finite model input ({', '.join(bad)}): the endpoint would refuse it" if bad else None


def put_decisions(
    kinesis: Any,
    stream: str,
    decisions: Sequence[tuple[str, dict[str, Any]]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> list[str]:
    """PutRecords in chunks, re-sending only the failed entries; return source sequence numbers never delivered."""

    def send(pending: list[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        entries = [{"Data": json.dumps(d).encode(), "PartitionKey": str(d[spec.CARD_ID])} for _, d in pending]
        resp = kinesis.put_records(StreamName=stream, Records=entries)
        if not resp.get("FailedRecordCount"):
            return [], False
        failed = [p for p, r in zip(pending, resp.get("Records", []), strict=False) if r.get("ErrorCode")]
        return failed, bool(failed)

    undelivered: list[str] = []
    for start in range(0, len(decisions), PUT_RECORDS_LIMIT):
        chunk = list(decisions[start : start + PUT_RECORDS_LIMIT])
        left = resend_failed_entries(
            send, chunk, error_message="PutRecords failed", policy=policy, sleep=sleep
        )
        undelivered.extend(seq for seq, _ in left)
    return undelivered


def process_batch(
    event: Mapping[str, Any],
    *,
    featurestore: Any,
    runtime: Any,
    kinesis: Any,
    sqs: Any,
    config: Config,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_decisions: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Score one Kinesis batch; returns the partial-batch response."""
    policy = policy or RetryPolicy()
    failure_queue = FailureQueue(sqs, config.failure_queue_url, "score_transaction", policy, sleep)
    t0 = time.perf_counter()
    items = decode_batch(event, enriched=True)
    good = [it for it in items if it.event is not None]
    bad = [it for it in items if it.event is None]
    failures = failure_queue.divert(bad, stage="validate")

    decisions: list[dict[str, Any]] = []
    rejected: list[KinesisItem] = []
    fs_ms = ep_ms = 0.0
    if good:
        events = [it.event for it in good]
        cards = list(dict.fromkeys(ev[spec.CARD_ID] for ev in events))
        try:
            t1 = time.perf_counter()
            snaps = fetch_snapshots(
                featurestore, config.batch_feature_group, cards, policy=policy, sleep=sleep
            )
        except (*AWS_ERRORS, RuntimeError, ValueError) as exc:
            # Transient or service-side: the whole scoring batch is retried by Kinesis.
            log(
                "ERROR",
                "scoring failed; batch will be retried",
                error=str(exc),
                error_type=type(exc).__name__,
                records=len(good),
            )
            failures += [it.sequence_number for it in good]
            good = []
        else:
            t2 = time.perf_counter()
            all_rows = feature_rows(events, snaps)
            # Non-finite model input is never sent: rejected here with the reason.
            sendable: list[int] = []
            for i, row in enumerate(all_rows):
                problem = non_finite_input(row)
                if problem:
                    good[i].reason = problem
                    rejected.append(good[i])
                else:
                    sendable.append(i)
            scores, refused, retry = score_isolating(
                runtime,
                config.endpoint_name,
                [all_rows[i] for i in sendable],
                policy=policy,
                sleep=sleep,
            )
            t3 = time.perf_counter()
            fs_ms, ep_ms = (t2 - t1) * 1000, (t3 - t2) * 1000
            for j, reason in refused.items():
                item = good[sendable[j]]
                item.reason = f"endpoint refused the record: {reason}"
                rejected.append(item)
            failures += [good[sendable[j]].sequence_number for j in retry]
            scored = [(good[sendable[j]], all_rows[sendable[j]], s) for j, s in sorted(scores.items())]
            for it, row, score in scored:
                ev = it.event or {}
                decisions.append(
                    {
                        "decision_id": decision_id(ev),
                        "tid": ev["tid"],
                        spec.CARD_ID: ev[spec.CARD_ID],
                        spec.EVENT_TIME: ev[spec.EVENT_TIME],
                        "features": row,
                        "score": score,
                        "fraud": bool(score >= config.threshold),
                        "late": ev["late"],
                        BEYOND_LATENESS: ev.get(BEYOND_LATENESS, False),
                    }
                )
            undelivered = put_decisions(
                kinesis,
                config.decisions_stream,
                [(it.sequence_number, d) for (it, _, _), d in zip(scored, decisions, strict=True)],
                policy=policy,
                sleep=sleep,
            )
            failures += undelivered
            if on_decisions:
                lost = set(undelivered)
                on_decisions(
                    [
                        d
                        for (it, _, _), d in zip(scored, decisions, strict=True)
                        if it.sequence_number not in lost
                    ]
                )
    failures += failure_queue.divert(rejected, stage="score")

    n = len(decisions)
    flagged = sum(d["fraud"] for d in decisions)
    late = sum(d["late"] for d in decisions)
    latency_ms = (time.perf_counter() - t0) * 1000
    put_metrics(
        config.metrics_namespace,
        {
            "Decisions": (n, "Count"),
            "FraudFlagged": (flagged, "Count"),
            "FraudRate": (flagged / n if n else 0.0, "None"),
            "LateEvents": (late, "Count"),
            "MalformedRecords": (len(bad), "Count"),
            "RejectedRecords": (len(rejected), "Count"),
            "FailedRecords": (len(set(failures)), "Count"),
            "BatchLatency": (latency_ms, "Milliseconds"),
            "FeatureStoreLatency": (fs_ms, "Milliseconds"),
            "EndpointLatency": (ep_ms, "Milliseconds"),
        },
        Function="score_transaction",
    )
    log(
        "INFO",
        "batch scored",
        records=len(items),
        decisions=n,
        fraud=flagged,
        late=late,
        malformed=len(bad),
        rejected=len(rejected),
        failed=len(set(failures)),
        latency_ms=round(latency_ms, 3),
    )
    return batch_item_failures(failures)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_batch(
        event,
        featurestore=aws_client("sagemaker-featurestore-runtime"),
        runtime=aws_client("sagemaker-runtime"),
        kinesis=aws_client("kinesis"),
        sqs=aws_client("sqs"),
        config=Config.from_env(),
    )
