"""The streaming job's pure-Python parts: generated SQL, record parsing, per-card keyed rules.

No PyFlink here (main venv, fast); tests/test_flink_job.py runs the real job.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from features import spec
from features.compute import reference_features
from streaming import job, keyed, parse, sql

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_580_515_200.0


def test_interval_literal_day_to_second():
    assert sql.interval_literal(600) == "INTERVAL '0 00:10:00' DAY TO SECOND"
    assert sql.interval_literal(3661) == "INTERVAL '0 01:01:01' DAY TO SECOND"  # SECOND(4) would fail
    assert sql.interval_literal(604800) == "INTERVAL '7 00:00:00' DAY TO SECOND"
    for bad in (-1, 100 * 86400):
        with pytest.raises(ValueError):
            sql.interval_literal(bad)


def test_output_columns_follow_the_spec():
    names = [n for n, _ in sql.output_columns()]
    assert names == [
        *(n for n, _ in sql.INPUT_COLUMNS),
        *spec.STREAMING_FEATURES,
        "late",
        "beyond_lateness",
        sql.RAW,
        sql.REJECT_REASON,
    ]
    types = dict(sql.output_columns())
    assert types["num_trans_last_10m"] == "BIGINT" and types["avg_amt_last_10m"] == "DOUBLE"
    assert types["secs_since_prev_trans"] == "DOUBLE"
    wider = spec.SPEC.with_(spec.Aggregation("max", "5m", spec.STREAMING))
    assert ("max_amt_last_5m", "DOUBLE") in sql.output_columns(wider)
    assert "`max_amt_last_5m` DOUBLE" in sql.sink_ddl(sql.ConnectorConfig("filesystem", "/a", "/b"), wider)


def test_source_event_time_never_ahead_of_the_bound():
    conn = sql.ConnectorConfig("filesystem", "/in.jsonl", "/out")
    ddl = sql.source_ddl(conn, 7)
    live = f"LEAST({spec.MAX_EVENT_TIME!r}, CAST(UNIX_TIMESTAMP() AS DOUBLE) + {float(spec.FUTURE_SKEW_SECONDS)!r})"
    # EVENT_TIME_MS (streaming/java SourceFields, checked in tests/test_java_operator.py): the ms of
    # a top-level numeric trans_ts within [0, bound], else the placeholder 0 (never moves the watermark).
    assert f"`rowtime` AS TO_TIMESTAMP_LTZ(EVENT_TIME_MS(`raw`, CAST({live} AS DOUBLE)), 3)" in ddl
    assert "WATERMARK FOR `rowtime` AS `rowtime` - INTERVAL '0 00:00:07' DAY TO SECOND" in ddl
    assert "'format' = 'raw'" in ddl and "ignore-parse-errors" not in ddl
    replay = sql.source_ddl(conn, 5, max_event_time=T0)
    assert f"EVENT_TIME_MS(`raw`, CAST({T0!r} AS DOUBLE))" in replay and "UNIX_TIMESTAMP" not in replay
    assert sql.time_bound_sql(9e99) == repr(spec.MAX_EVENT_TIME)
    assert "PARTITIONED BY" not in sql.sink_ddl(conn)
    assert set(sql.SOURCE_FUNCTIONS) == {sql.EVENT_TIME_FUNCTION}


def test_job_reads_the_key_in_sql_and_the_event_time_like_the_source():
    q = sql.source_query()
    assert q == f"SELECT `raw` FROM {sql.SOURCE_TABLE}"  # parsed and keyed in Java (ParseEvents)
    assert "`rowtime`" not in q  # the operator recomputes the event time (keyed.event_time_ms's rule)
    # CAST(ROUND(ts * 1000) AS BIGINT): half up, where Python's round() would round half to even.
    assert keyed.event_time_ms(1_580_515_200.0625) == 1_580_515_200_063
    assert keyed.event_time_ms(1_580_515_200.0615) == 1_580_515_200_062  # x = ...061.5: up
    assert keyed.event_time_ms(T0) == round(T0 * 1000) and keyed.event_time_ms(0.0) == 0


BAD_RECORDS: list[str] = [
    "not json at all",
    "[1, 2]",
    json.dumps({"tid": "nocard", "amount": 1.0, "trans_ts": T0}),
    json.dumps({"tid": "neg", "cc_num": 6, "amount": -1.0, "trans_ts": T0}),
    json.dumps({"tid": "str", "cc_num": 6, "amount": "12", "trans_ts": T0}),
    json.dumps({"tid": "frac", "cc_num": 1.5, "amount": 3.0, "trans_ts": T0}),
    json.dumps({"tid": "bool", "cc_num": 6, "amount": True, "trans_ts": T0}),
    '{"tid": "nan", "cc_num": 6, "amount": NaN, "trans_ts": 1.0}',
    json.dumps({"tid": "nots", "cc_num": 6, "amount": 2.0}),
    json.dumps({"tid": 7, "cc_num": 6, "amount": 2.0, "trans_ts": T0}),
    json.dumps({"tid": "tsstr", "cc_num": 6, "amount": 2.0, "trans_ts": str(T0)}),
    json.dumps({"tid": "huge", "cc_num": 6, "amount": 1e27, "trans_ts": T0}),  # > spec.MAX_AMOUNT
    json.dumps({"tid": "y2100", "cc_num": 6, "amount": 1.0, "trans_ts": 5e9}),  # > spec.MAX_EVENT_TIME
    json.dumps({"tid": "lbl", "cc_num": 6, "amount": 1.0, "trans_ts": T0, "fraud_label": 2}),
    json.dumps({"tid": "", "cc_num": 6, "amount": 1.0, "trans_ts": T0}),
]


def test_parse_rejects_what_the_lambdas_reject():
    from lambdas.records import MalformedRecord, parse_event

    for raw in BAD_RECORDS:
        fields, reason = parse.parse(raw)
        assert fields is None and reason, raw
        with pytest.raises(MalformedRecord):
            parse_event(raw)
    good = {"tid": "g", "cc_num": 4e15, "amount": 3, "trans_ts": T0, "merchant": 12, "fraud_label": 1}
    fields, reason = parse.parse(json.dumps(good))
    assert reason is None and fields == ("g", 4_000_000_000_000_000, 3.0, T0, "12", None, 1)
    assert parse_event(json.dumps(good))["cc_num"] == fields[1]
    assert parse.card_of(json.dumps(good)) == fields[1] and parse.card_of("not json") == 0


def _events(card: int, spec_rows: list[tuple[str, float, float]]) -> list[tuple]:
    return [
        ((tid, card, amount, ts, None, None, None), ts, amount, round(ts * 1000))
        for tid, ts, amount in spec_rows
    ]


def _check_against_reference(
    out: list[tuple], rows: list[tuple[str, float, float]], fs: spec.FeatureSpec, tids
):
    ref = reference_features([(1, ts, a) for _, ts, a in rows], fs)
    by_tid = {r[0]: r for r in out}
    for (tid, _, _), want in zip(rows, ref, strict=True):
        if tid not in tids:
            continue
        got = dict(zip(fs.streaming_features, by_tid[tid][7 : 7 + len(fs.streaming_features)], strict=True))
        for name in fs.streaming_features:
            assert math.isclose(got[name], want[name], rel_tol=1e-9, abs_tol=0.0), (tid, name, got, want)


def test_keyed_rules_on_time_late_and_beyond():
    """One card driven like Flink: shuffled within the watermark, a late burst, one beyond lateness."""
    s = keyed.Settings(allowed_lateness_ms=1_800_000)
    rows = [
        ("z", T0, 1.0),
        ("a", T0 + 597, 10.0),
        ("b", T0 + 600, 20.0),
        ("c", T0 + 600, 30.0),
        ("d", T0 + 1200, 5.0),
    ]
    rows += [(f"burst{i}", T0 + 1300 + 40 * i, 1.0 + i) for i in range(6)]
    rows += [("after", T0 + 1700, 7.0), ("old", T0 - 7200, 99.0)]
    by_tid = {t: (t, ts, a) for t, ts, a in rows}
    arrival = [
        "z",
        "b",
        "a",
        "c",
        "d",
        "burst0",
        "burst4",
        "burst5",
        "burst1",
        "burst2",
        "burst3",
        "after",
        "old",
    ]
    wms = [-(2**63)] + [0] * (len(arrival) - 1)
    seen = -math.inf
    for i, tid in enumerate(arrival):  # watermark = max seen so far - 5 s (before this event)
        wms[i] = round((seen - 5) * 1000) if seen > -math.inf else -(2**63)
        seen = max(seen, by_tid[tid][1])
    out = list(keyed.replay_in_order(_events(1, [by_tid[t] for t in arrival]), s, wms))
    assert sorted(r[0] for r in out) == sorted(arrival)  # each exactly once
    flags = {r[0]: (r[-2], r[-1]) for r in out}
    assert flags["burst1"] == flags["burst2"] == flags["burst3"] == (True, False)
    assert flags["old"] == (True, True) and flags["after"] == (False, False) and flags["a"] == (False, False)
    # Every event emitted after the late burst arrived (`after`, and the late ones themselves: their
    # windows were complete on arrival) equals the batch reference over all events; `a` arrived
    # after `b` within the watermark; burst5 was still waiting for the watermark when the late
    # burst arrived, so it counts it. burst4 was emitted (the watermark passed it) before
    # burst1..3 arrived: it equals the reference without those, exactly (the documented limit).
    late_burst = {"burst1", "burst2", "burst3"}
    exact = {"z", "a", "b", "c", "d", "burst0", "burst5", "after", *late_burst}
    _check_against_reference(out, rows[:-1], s.fs, exact)
    _check_against_reference(out, [r for r in rows[:-1] if r[0] not in late_burst], s.fs, {"burst4"})


def test_keyed_rules_emit_on_arrival_and_a_new_window():
    fs = spec.SPEC.with_(spec.Aggregation("max", "5m", spec.STREAMING))
    s = keyed.Settings(fs=fs, emit=keyed.EMIT_ON_ARRIVAL)
    rng = random.Random(3)
    rows = [
        (f"e{i}", T0 + i * rng.choice([0, 10, 100, 400]), round(rng.uniform(1, 500), 2)) for i in range(60)
    ]
    rows.sort(key=lambda r: r[1])  # in time order per card (Kinesis keeps it with cc_num as key)
    out = list(keyed.replay_in_order(_events(1, rows), s, [-(2**63)] * len(rows)))
    assert [r[0] for r in out] == [r[0] for r in rows]  # emitted at once, in arrival order
    assert "max_amt_last_5m" in fs.streaming_features
    # Features over what has arrived: the batch reference of the arrived prefix ...
    for i in range(len(rows)):
        _check_against_reference(out, rows[: i + 1], fs, {rows[i][0]})
    # ... which is the batch value itself unless a same-time peer arrives after the event.
    no_later_peer = {
        rows[i][0] for i in range(len(rows)) if i + 1 == len(rows) or rows[i + 1][1] != rows[i][1]
    }
    assert len(no_later_peer) < len(rows)  # the scenario has ties
    _check_against_reference(out, rows, fs, no_later_peer)


def test_keyed_state_is_bounded():
    s = keyed.Settings(allowed_lateness_ms=0)
    card = keyed.CardState(s)
    for i in range(50):
        ts = T0 + 600 * i
        card.on_event(("t", 1, 1.0, ts), ts, 1.0, round(ts * 1000), -(2**63))
        card.cleanup_timer(round(ts * 1000))
        card.on_watermark(round(ts * 1000), lambda r: r[3], lambda r: r[2])
    first = card.cleanup_timer(round(T0 * 1000))
    assert first is None  # one clean-up timer per card at a time (armed by the first event)
    wm = round((T0 + 600 * 49) * 1000)
    nxt = card.clean_up(card.cleanup_at, wm)
    assert len(card.history.times) <= s.fs.longest_streaming_seconds // 600 + 2
    assert nxt is not None and nxt > wm
    card.clean_up(nxt, 10**15)  # far later: only the last max_recency_nth events stay
    assert len(card.history.times) == s.fs.max_recency_nth and not card.pending


ARN_IN = "arn:aws:kinesis:eu-west-1:123456789012:stream/transactions"
ARN_OUT = "arn:aws:kinesis:eu-west-1:123456789012:stream/card-features"


def test_kinesis_connectors():
    conn = sql.ConnectorConfig("kinesis", ARN_IN, ARN_OUT, region="eu-west-1", init_position="TRIM_HORIZON")
    assert conn.source_options() == {
        "connector": "kinesis",
        "stream.arn": ARN_IN,
        "aws.region": "eu-west-1",
        "source.init.position": "TRIM_HORIZON",
        "format": "raw",
        "raw.charset": "UTF-8",
    }
    assert conn.sink_options() == {
        "connector": "kinesis",
        "stream.arn": ARN_OUT,
        "aws.region": "eu-west-1",
        "format": "json",
    }
    assert f"PARTITIONED BY (`{spec.CARD_ID}`)" in sql.sink_ddl(conn)
    with pytest.raises(ValueError, match="by ARN"):
        sql.ConnectorConfig("kinesis", "transactions", "card-features").source_options()
    with pytest.raises(ValueError):
        sql.ConnectorConfig("kafka", "a", "b").source_options()
    assert sql.arn_region(ARN_IN) == "eu-west-1"


def test_managed_flink_properties(tmp_path, monkeypatch):
    wider = spec.SPEC.with_(spec.Aggregation("max", "5m", spec.STREAMING))
    props = {
        "transactions.stream.arn": ARN_IN,
        "card-features.stream.arn": ARN_OUT,
        "watermark.seconds": "12",
        "stream.initpos": "TRIM_HORIZON",
        "allowed.lateness.seconds": "600",
        "emit.mode": "on-arrival",
        "future.skew.seconds": "60",
        "feature.spec": wider.to_json(),
        "python.execution-mode": "process",
    }
    assert set(props) <= set(job.PROPERTY_KEYS)
    f = tmp_path / "application_properties.json"
    f.write_text(json.dumps([{"PropertyGroupId": job.PROPERTY_GROUP, "PropertyMap": props}]))
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(f))
    loaded = job.load_application_properties()
    conn, wm = job.config_from_properties(loaded)
    assert (conn.source, conn.sink, conn.region, conn.init_position, wm) == (
        ARN_IN,
        ARN_OUT,
        "eu-west-1",
        "TRIM_HORIZON",
        12,
    )
    opts = job.job_options_from_properties(loaded)
    assert opts["settings"].fs == wider and opts["settings"].allowed_lateness_ms == 600_000
    assert opts["settings"].emit == "on-arrival" and opts["future_skew_seconds"] == 60.0
    assert opts["execution_mode"] == "process"
    defaults = job.job_options_from_properties({})
    assert defaults["settings"].fs == spec.SPEC and defaults["execution_mode"] == "thread"
    assert defaults["settings"].allowed_lateness_ms == 3_600_000
    with pytest.raises(ValueError, match=r"lacks transactions\.stream\.arn"):
        job.config_from_properties({})
    with pytest.raises(ValueError):
        job.job_options_from_properties({"emit.mode": "sometimes"})


def test_template_sets_only_known_properties():
    """infra/streaming.yaml's FraudFeatures keys are ones the job reads (the infra owner adds the
    new ones: allowed.lateness.seconds, emit.mode, future.skew.seconds, feature.spec, ...)."""
    from cfnlint.decode import decode

    tpl, errors = decode(str(ROOT / "infra" / "streaming.yaml"))
    assert not errors, errors
    (app,) = [r for r in tpl["Resources"].values() if r["Type"] == "AWS::KinesisAnalyticsV2::Application"]
    groups = app["Properties"]["ApplicationConfiguration"]["EnvironmentProperties"]["PropertyGroups"]
    (group,) = [g for g in groups if g["PropertyGroupId"] == job.PROPERTY_GROUP]
    assert set(group["PropertyMap"]) <= set(job.PROPERTY_KEYS)


def test_job_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(tmp_path / "absent.json"))
    assert (
        job.main(["--source-path", str(tmp_path / "missing.jsonl"), "--sink-path", str(tmp_path / "o")]) == 2
    )
    assert "no such input" in capsys.readouterr().err
    (tmp_path / "in.jsonl").write_text("{}\n")
    bad_spec = tmp_path / "spec.json"
    bad_spec.write_text('{"aggregations": []}')
    args = ["--source-path", str(tmp_path / "in.jsonl"), "--sink-path", str(tmp_path / "o")]
    assert job.main([*args, "--feature-spec", str(bad_spec)]) == 2
    assert job.main(["--source-path", "x"]) == 2
    assert job.main([]) == 2
