"""Reading one raw event record: strict JSON, typed fields, the spec's value rule (the oracle).

The Flink job runs the Java port of this module (streaming/java/fraud/streaming/EventParser.java);
tests/test_java_operator.py checks the two agree record by record. It imports no PyFlink and no
botocore; the type rules are the Lambdas' (`lambdas/records.py:validate_event`, checked equal by
tests/test_streaming_sql.py on a list of bad records) and the value rule is the specification's
(`features.spec.value_problem`: finite, bounds, integral card). A record is either a tuple of the
input fields in `streaming.sql.INPUT_COLUMNS` order or a one-line reason.
"""

from __future__ import annotations

import json
import math
from typing import Any

from features import spec

try:  # orjson (a PyFlink dependency) is ~3x faster; both reject NaN/Infinity literals
    import orjson

    _loads = orjson.loads
    _DECODE_ERRORS: tuple[type[BaseException], ...] = (orjson.JSONDecodeError, ValueError, RecursionError)
except ImportError:  # pragma: no cover - the main venv (tests) may lack it

    def _no_constants(name: str) -> Any:
        raise ValueError(f"non-finite JSON literal {name}")

    _loads = json.JSONDecoder(parse_constant=_no_constants).decode
    _DECODE_ERRORS = (ValueError, RecursionError)

OPTIONAL_STRING_FIELDS = spec.OPTIONAL_EVENT_FIELDS


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def parse(raw: str | bytes) -> tuple[tuple | None, str | None]:
    """(fields, None) for a valid event, (None, reason) otherwise.

    fields = (tid, cc_num, amount, trans_ts, merchant, zip_code, fraud_label): card an int,
    amount and time floats, optional strings as text (any JSON scalar; None when absent)."""
    try:
        obj = _loads(raw)
    except _DECODE_ERRORS as exc:
        return None, f"bad JSON: {' '.join(str(exc).split())[:200]}"
    if not isinstance(obj, dict):
        return None, f"event is not a JSON object but {type(obj).__name__}"
    missing = [f for f in spec.EVENT_FIELDS if obj.get(f) is None]
    if missing:
        return None, f"missing field(s): {', '.join(missing)}"
    tid = obj["tid"]
    if not isinstance(tid, str) or not tid:
        return None, f"tid must be a non-empty string, got {tid!r}"
    card = obj[spec.CARD_ID]
    if isinstance(card, float) and card.is_integer():
        card = int(card)
    if not isinstance(card, int) or isinstance(card, bool):
        return None, f"{spec.CARD_ID} must be an integer, got {card!r}"
    amount, ts = obj[spec.AMOUNT], obj[spec.EVENT_TIME]
    for name, v in ((spec.AMOUNT, amount), (spec.EVENT_TIME, ts)):
        if not _is_number(v):
            return None, f"{name} must be a number, got {v!r}"
    amount, ts = _float(amount), _float(ts)
    for name, v in ((spec.CARD_ID, card), (spec.AMOUNT, amount), (spec.EVENT_TIME, ts)):
        problem = spec.value_problem(name, v)
        if problem:
            return None, problem
    label = obj.get(spec.LABEL)
    if label is not None and label not in (0, 1):  # the Lambdas' rule (True == 1)
        return None, f"{spec.LABEL} must be 0 or 1 when present, got {label!r}"
    opt = []
    for name in OPTIONAL_STRING_FIELDS:
        v = obj.get(name)
        if v is not None and not isinstance(v, str):
            if isinstance(v, dict | list):
                return None, f"{name} must be a JSON scalar, got {type(v).__name__}"
            v = json.dumps(v)
        opt.append(v)
    return (tid, card, amount, ts, *opt, None if label is None else int(label)), None


def card_of(raw: str) -> int:
    """The partition key of a record: its card when readable, else 0 (rejected records)."""
    try:
        card = _loads(raw).get(spec.CARD_ID)
    except (*_DECODE_ERRORS, AttributeError):
        return 0
    if isinstance(card, float) and card.is_integer() and 0 <= card < 2**63:
        return int(card)
    if isinstance(card, int) and not isinstance(card, bool) and 0 <= card < 2**63:
        return card
    return 0
