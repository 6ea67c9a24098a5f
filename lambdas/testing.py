"""Test and local-run helpers for the stream Lambdas; never shipped in a Lambda zip.

infra/package.py packs only what a handler imports, and no handler imports this module
(tests/test_infra.py checks both).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any

from features import spec


def kinesis_event(
    payloads: Sequence[bytes | str | dict],
    *,
    start_sequence: int = 1,
    stream: str = spec.CARD_FEATURES_STREAM,
    partition_keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build a Kinesis-shaped Lambda event (replay and tests drive the handlers with it)."""
    records = []
    arrival = time.time()  # one arrival time per batch (nothing reads it; building it per record cost)
    source_arn = f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"
    b64 = base64.b64encode
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
                    "data": b64(data).decode("ascii"),
                    "approximateArrivalTimestamp": arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": "shardId-000000000000:" + seq,
                "eventName": "aws:kinesis:record",
                "eventSourceARN": source_arn,
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}
