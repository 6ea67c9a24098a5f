"""Where the records a batch cannot process go: the SQS failure destination and the partial-batch response.

Malformed records are sent to the failure queue with the reason (`send_failures`, SendMessageBatch
with the partially failed entries re-sent; `FailureQueue.divert` as a handler calls it); what cannot
be sent, and what should be retried, is reported to Lambda as `batchItemFailures`
(`batch_item_failures`), so nothing is lost.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lambdas.records import KinesisItem
from lambdas.retries import RetryPolicy, resend_failed_entries
from lambdas.telemetry import log


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

    def send(pending: list[tuple[str, KinesisItem]]) -> tuple[list[tuple[str, KinesisItem]], bool]:
        entries = [
            {"Id": k, "MessageBody": json.dumps(failure_message(it, source, stage))} for k, it in pending
        ]
        resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        failed = {f["Id"] for f in resp.get("Failed", []) if not f.get("SenderFault")}
        hard = {f["Id"] for f in resp.get("Failed", []) if f.get("SenderFault")}
        for k, it in pending:
            if k in hard:
                log("ERROR", "failure destination rejected message", id=k, sequence=it.sequence_number)
        return [(k, it) for k, it in pending if k in failed or k in hard], bool(failed)

    unsent: list[KinesisItem] = []
    for start in range(0, len(items), 10):  # SendMessageBatch takes at most 10 entries
        chunk = [(str(i), it) for i, it in enumerate(items[start : start + 10])]
        left = resend_failed_entries(
            send, chunk, error_message="failure destination unavailable", policy=policy, sleep=sleep
        )
        unsent.extend(it for _, it in left)
    return unsent


@dataclass(frozen=True)
class FailureQueue:
    """One handler's failure destination, bound to its clients and retry policy for a batch."""

    sqs: Any
    url: str | None
    source: str
    policy: RetryPolicy | None = None
    sleep: Callable[[float], None] = time.sleep

    def divert(self, items: Sequence[KinesisItem], *, stage: str) -> list[str]:
        """Log each record with its reason (WARN) and send it to the queue; the sequence numbers of
        those that could not be sent, which the handler reports as `batchItemFailures`."""
        for it in items:
            log("WARN", "record diverted to the failure destination", reason=it.reason,
                sequence=it.sequence_number, source=self.source, stage=stage)  # fmt: skip
        unsent = send_failures(
            self.sqs, self.url, items, source=self.source, stage=stage, policy=self.policy, sleep=self.sleep
        )
        return [it.sequence_number for it in unsent]


def batch_item_failures(sequence_numbers: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """Lambda's partial-batch response (ReportBatchItemFailures on the event source mapping)."""
    seen: dict[str, None] = dict.fromkeys(sequence_numbers)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in seen]}
