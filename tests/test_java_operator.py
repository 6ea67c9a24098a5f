"""The Java operator's pure parts against their Python oracles (no Flink job: one plain `java` run).

`fraud.streaming.ParseCheck` runs the operator's parser (`EventParser`) on records given on stdin;
every answer must equal streaming/parse.py's (accept/reject, every field bit for bit, the reason
word for word except the text of a JSON syntax error, the partition key of a rejected record).
The keyed rules themselves are checked in the real job (tests/test_flink_job.py, test_parity.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import zipfile
from pathlib import Path

import pytest

from features import spec
from streaming import job, keyed, operator_jar, parse

T0 = 1_580_515_200.0


@pytest.fixture(scope="module")
def jar() -> Path:
    try:
        return operator_jar.find_jar()
    except operator_jar.BuildError as exc:
        pytest.skip(str(exc))


def _java_check(jar: Path, tmp: Path, items: list) -> list[dict]:
    config = tmp / "operator.json"
    config.write_text(job.operator_config(keyed.Settings()))
    classpath = f"{jar}:{operator_jar.flink_lib() / '*'}"
    proc = subprocess.run(
        ["java", "-cp", classpath, "fraud.streaming.ParseCheck", str(config)],
        input="".join(json.dumps(x) + "\n" for x in items),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


VALUES = [
    0,
    1,
    -1,
    7,
    4e15,
    1.5,
    -0.0,
    0.0,
    12.0,
    1e300,
    1e-7,
    0.0001,
    1e16,
    123456789.123,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**70,
    -(2**63) - 1,
    1e9,
    1e9 + 0.01,
    5e9,
    T0,
    T0 + 0.0625,
    True,
    False,
    None,
    "",
    "x",
    "12",
    "it's",
    'say "hi"',
    "tab\there",
    [1, 2],
    {"a": 1},
]


def _records(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    good = {"tid": "t1", "cc_num": 4_000_000_000_000_123, "amount": 12.5, "trans_ts": T0}
    out = [json.dumps(good), json.dumps({**good, "merchant": "m", "zip_code": 12345, "fraud_label": 1})]
    fields = ["tid", "cc_num", "amount", "trans_ts", "merchant", "zip_code", "fraud_label"]
    for _ in range(n):
        rec = dict(good)
        for name in rng.sample(fields, rng.choice([1, 1, 1, 2, 3])):
            if rng.random() < 0.1:
                rec.pop(name, None)
            else:
                rec[name] = rng.choice(VALUES)
        out.append(json.dumps(rec))
    out += [
        "",
        "   ",
        "not json at all",
        "[1, 2]",
        "42",
        "null",
        '"text"',
        '{"tid": "nan", "cc_num": 6, "amount": NaN, "trans_ts": 1.0}',
        '{"tid": "inf", "cc_num": 6, "amount": Infinity, "trans_ts": 1.0}',
        '{"tid": "big", "cc_num": 6, "amount": 1e400, "trans_ts": 1.0}',
        '{"tid": "deep", "cc_num": 6, "amount": 1.0, "trans_ts": 1.0, "x": 1e999}',
        '{"tid": "sur\\ud800", "cc_num": 6, "amount": 1.0, "trans_ts": 1.0}',
        '{"tid": "pair\\ud83d\\ude00", "cc_num": 6, "amount": 1.0, "trans_ts": 1.0}',
        '{"tid": "trail", "cc_num": 6, "amount": 1.0, "trans_ts": 1.0} x',
        '{"tid": "dup", "cc_num": 6, "cc_num": 7, "amount": 1.0, "trans_ts": 1.0}',
        '{"tid": "zero", "cc_num": 06, "amount": 1.0, "trans_ts": 1.0}',
        '{"tid": "comma", "cc_num": 6, "amount": 1.0, "trans_ts": 1.0,}',
        '{"tid": "exp", "cc_num": 4E15, "amount": 1E2, "trans_ts": 1.58e9}',
        '{"tid": "neg0", "cc_num": -0, "amount": -0.0, "trans_ts": 0}',
        "[" * 1100 + "]" * 1100,
    ]
    return out


def test_parser_equals_the_python_oracle(jar, tmp_path):
    records = _records(3000)
    answers = _java_check(jar, tmp_path, records)
    assert len(answers) == len(records)
    accepted = 0
    for raw, got in zip(records, answers, strict=True):
        fields, reason = parse.parse(raw)
        assert got["card_of"] == parse.card_of(raw), raw
        if fields is not None:
            accepted += 1
            assert "fields" in got, (raw, got)
            assert tuple(got["fields"]) == fields, raw
            assert [type(v) for v in got["fields"]] == [type(v) for v in fields], raw
        elif reason.startswith("bad JSON: "):
            assert got.get("reason", "").startswith("bad JSON: "), (raw, got, reason)
        else:
            assert got.get("reason") == reason, raw
    assert 100 < accepted < len(records) - 100  # both sides of the rule are exercised


def test_event_time_and_float_text_equal_python(jar, tmp_path):
    rng = random.Random(1)
    times = [T0 + rng.randrange(0, 10**6) / 1000 + rng.choice([0, 0.0005, 0.00049]) for _ in range(500)]
    times += [0.0, 1_580_515_200.0625, 1_580_515_200.0615, spec.MAX_EVENT_TIME]
    floats = [rng.uniform(-1e20, 1e20) * 10 ** rng.randint(-30, 10) for _ in range(500)]
    floats += [0.0, -0.0, 1e16, 1e15, 1e-4, 1e-5, 0.1, 123.0, 5e-324, 1.7976931348623157e308]
    answers = _java_check(jar, tmp_path, [{"ms": t} for t in times] + [{"repr": x} for x in floats])
    assert [a["value"] for a in answers[: len(times)]] == [keyed.event_time_ms(t) for t in times]
    assert [a["value"] for a in answers[len(times) :]] == [repr(x) for x in floats]


def test_operator_config_follows_the_spec():
    wider = spec.SPEC.with_(spec.Aggregation("max", "5m", spec.STREAMING))
    cfg = json.loads(job.operator_config(keyed.Settings(fs=wider, emit=keyed.EMIT_ON_ARRIVAL), T0, 60))
    assert [a["name"] for a in cfg["aggregations"]] + [r["name"] for r in cfg["recency"]] == list(
        wider.streaming_features
    )
    assert {"name": "max_amt_last_5m", "operation": "max", "seconds": 300} in cfg["aggregations"]
    assert cfg["output_columns"] == [list(c) for c in job.sql.output_columns(wider)]
    assert cfg["emit"] == "on-arrival" and cfg["max_event_time"] == T0 and cfg["future_skew_seconds"] == 60
    assert cfg["bounds"][spec.AMOUNT]["high_text"] == "1e+09"  # as spec.value_problem prints it


def test_jar_build_is_deterministic(tmp_path, jar):
    a = operator_jar.build(tmp_path / "a.jar")
    b = operator_jar.build(tmp_path / "b.jar")
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert operator_jar.OPERATOR_CLASS.replace(".", "/") + ".class" in zf.namelist()


def test_source_functions_agree_with_the_parser(jar, tmp_path):
    """EVENT_TIME_MS (the SQL source's watermark input): for every record the parser accepts, its
    event time when within the bound, else 0; 0 for a record that is not JSON (such a record never
    moves the watermark). A record orjson rejects only for 1e400, a lone surrogate escape or depth
    may still give its time (the operator rejects it)."""
    records = _records(1500, seed=11)
    bound = T0 + 100.0
    answers = _java_check(jar, tmp_path, [{"source": r, "bound": bound} for r in records])
    for raw, got in zip(records, answers, strict=True):
        fields, reason = parse.parse(raw)
        if fields is not None:
            want = keyed.event_time_ms(fields[3]) if 0 <= fields[3] <= bound else 0
            assert got["time"] == want, raw
        elif reason.startswith("bad JSON") and not _json_syntax_ok(raw):
            assert got["time"] == 0, raw


def _json_syntax_ok(raw: str) -> bool:
    """Well-formed for a plain JSON reader (orjson also rejects 1e400, lone surrogates and deep
    nesting: the source functions do not look that far, and the operator rejects such records)."""

    def no_constants(name: str):
        raise ValueError(name)

    try:
        json.JSONDecoder(parse_constant=no_constants).decode(raw)
    except (ValueError, RecursionError):
        return False
    return True


def test_build_errors_are_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(operator_jar.BuildError, match="make install"):
        operator_jar.find_jar(tmp_path / "absent.jar")
    monkeypatch.setattr(operator_jar.shutil, "which", lambda name: None)
    with pytest.raises(operator_jar.BuildError, match=r"javac not found.*JDK 17"):
        operator_jar.build(tmp_path / "x.jar")
    assert operator_jar.main([str(tmp_path / "x.jar")]) == 1 and not (tmp_path / "x.jar").exists()
