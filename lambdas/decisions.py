"""One decision per event: the deterministic decision id and the consumer-side de-duplication."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from features import spec

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
    return _uuid5(key)


_NAMESPACE_BYTES = DECISION_NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(DECISION_NAMESPACE, name))` without the UUID object (RFC 4122: SHA-1 of
    namespace + name, version nibble 5, variant bits 10)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).hexdigest()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


class DecisionDeduplicator:
    """What a consumer of the decisions stream keeps: the first decision per `decision_id`.

    Kinesis and Lambda deliver at least once (a retried batch re-sends records already decided),
    so a consumer sees some decisions twice; it keeps the first and counts the rest."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.duplicates_dropped = 0

    def accept(self, decision: Mapping[str, Any]) -> bool:
        """True the first time a decision id is seen; False (and counted) for a re-delivery."""
        return self.accept_id(decision["decision_id"])

    def accept_id(self, key: str) -> bool:
        """`accept` by the decision id alone."""
        if key in self.seen:
            self.duplicates_dropped += 1
            return False
        self.seen.add(key)
        return True
