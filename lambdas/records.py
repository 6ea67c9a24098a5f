"""The records of a Kinesis-triggered batch: decoding (base64, UTF-8, strict JSON) and validation.

`decode_batch` turns a Lambda Kinesis event into `KinesisItem`s, each with its parsed event or the
reason it is malformed (`MalformedRecord`: never retried, a bad record stays bad). The type rules
are here; the value rules are features.spec's (the ones Spark and Flink apply too).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features import spec


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
        for name, integral, recency in _streaming_kinds():
            v = obj.get(name)
            # The common, valid cases inline (a JSON int count, a JSON float feature); anything
            # else takes `_streaming_value`, which holds the rule and the messages.
            if integral:
                out[name] = v if v.__class__ is int and v >= 1 else _streaming_value(name, v)
            elif v.__class__ is float and (0.0 <= v < math.inf or (recency and v == spec.RECENCY_SENTINEL)):
                out[name] = v
            else:
                out[name] = _streaming_value(name, v)
    return out


_KINDS: tuple[Any, Any, tuple[tuple[str, bool, bool], ...]] | None = None


def _streaming_kinds() -> tuple[tuple[str, bool, bool], ...]:
    """(name, Integral?, recency?) per streaming feature, computed once per feature specification
    (not twice per feature and record: these lookups loop over the declarations)."""
    global _KINDS
    fs, names = spec.SPEC, spec.STREAMING_FEATURES
    if _KINDS is None or _KINDS[0] is not fs or _KINDS[1] is not names:
        kinds = tuple((n, fs.feature_type(n) == "Integral", fs.kind_of(n) == "recency") for n in names)
        _KINDS = (fs, names, kinds)
    return _KINDS[2]


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
