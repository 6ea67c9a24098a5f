"""The generated Flink SQL follows the feature specification and the connector configuration."""

from __future__ import annotations

import json

import pytest

from features import spec
from streaming import job, sql


def test_interval_literal_day_to_second():
    assert sql.interval_literal(600) == "INTERVAL '0 00:10:00' DAY TO SECOND"
    assert sql.interval_literal(5) == "INTERVAL '0 00:00:05' DAY TO SECOND"
    assert (
        sql.interval_literal(3661) == "INTERVAL '0 01:01:01' DAY TO SECOND"
    )  # SECOND(4) would fail in Flink
    assert sql.interval_literal(604800) == "INTERVAL '7 00:00:00' DAY TO SECOND"
    for bad in (-1, 100 * 86400):
        with pytest.raises(ValueError):
            sql.interval_literal(bad)


def test_window_comes_from_the_spec(monkeypatch):
    text = sql.insert_sql()
    w = spec.SHORT_WINDOW
    assert f"RANGE BETWEEN {sql.interval_literal(w.seconds)} PRECEDING AND CURRENT ROW" in text
    assert f"PARTITION BY `{spec.CARD_ID}`" in text
    assert f"AS `{w.count_name}`" in text and f"AS `{w.avg_name}`" in text
    # Changing the spec changes the SQL (nothing re-typed here).
    monkeypatch.setattr(spec, "SHORT_WINDOW", spec.Window("5m", 300))
    changed = sql.insert_sql()
    assert "INTERVAL '0 00:05:00' DAY TO SECOND PRECEDING" in changed and "`num_trans_last_5m`" in changed


def test_insert_routes_late_and_invalid_rows_instead_of_dropping():
    text = sql.insert_sql()
    assert text.count("UNION ALL") == 2
    assert text.count("CURRENT_WATERMARK(`rowtime`)") == 4  # late predicate used twice (NOT and positive)
    assert f"{sql.valid_predicate()} IS NOT TRUE" in text
    assert "DECIMAL(38, 12)" in text  # exact running sum (see streaming/sql.py)
    for name in spec.EVENT_FIELDS:
        assert f"`{name}` IS NOT NULL" in sql.valid_predicate()


def test_source_has_event_time_and_watermark():
    conn = sql.ConnectorConfig("filesystem", "/in.jsonl", "/out")
    ddl = sql.source_ddl(conn, 7)
    assert "TO_TIMESTAMP_LTZ(CAST(ROUND(`trans_ts` * 1000) AS BIGINT), 3)" in ddl
    assert "WATERMARK FOR `rowtime` AS `rowtime` - INTERVAL '0 00:00:07' DAY TO SECOND" in ddl
    assert "'path' = '/in.jsonl'" in ddl and "'json.ignore-parse-errors' = 'true'" in ddl
    assert "PARTITIONED BY" not in sql.sink_ddl(conn)


def test_kinesis_connectors():
    arn_in = "arn:aws:kinesis:eu-west-1:123456789012:stream/transactions"
    arn_out = "arn:aws:kinesis:eu-west-1:123456789012:stream/card-features"
    conn = sql.ConnectorConfig("kinesis", arn_in, arn_out, region="eu-west-1", init_position="TRIM_HORIZON")
    src, sink = conn.source_options(), conn.sink_options()
    assert src["connector"] == sink["connector"] == "kinesis"
    assert (src["stream.arn"], sink["stream.arn"]) == (arn_in, arn_out)  # 5.x connector options
    assert src["aws.region"] == "eu-west-1" and src["source.init.position"] == "TRIM_HORIZON"
    assert f"PARTITIONED BY (`{spec.CARD_ID}`)" in sql.sink_ddl(conn)
    by_name = sql.ConnectorConfig("kinesis", "transactions", "card-features").source_options()
    assert by_name["stream"] == "transactions" and by_name["scan.stream.initpos"] == "LATEST"  # 4.x options
    with pytest.raises(ValueError):
        sql.ConnectorConfig("kafka", "a", "b").source_options()


def test_statements_order():
    stmts = sql.statements(sql.ConnectorConfig("filesystem", "/a", "/b"), 5)
    assert stmts[0].startswith(f"CREATE TEMPORARY TABLE {sql.SOURCE_TABLE}")
    assert stmts[1].startswith(f"CREATE TEMPORARY TABLE {sql.SINK_TABLE}")
    assert stmts[2].startswith(f"INSERT INTO {sql.SINK_TABLE}")


def test_managed_flink_properties(tmp_path, monkeypatch):
    props = [
        {"PropertyGroupId": "Other", "PropertyMap": {"x": "1"}},
        {
            "PropertyGroupId": job.PROPERTY_GROUP,
            "PropertyMap": {
                "transactions.stream": "tx-stream",
                "card-features.stream": "cf-stream",
                "aws.region": "us-west-2",
                "watermark.seconds": "12",
                "stream.initpos": "TRIM_HORIZON",
            },
        },
    ]
    f = tmp_path / "application_properties.json"
    f.write_text(json.dumps(props))
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(f))
    loaded = job.load_application_properties()
    conn, wm = job.config_from_properties(loaded)
    assert (conn.kind, conn.source, conn.sink, conn.region, conn.init_position, wm) == (
        "kinesis",
        "tx-stream",
        "cf-stream",
        "us-west-2",
        "TRIM_HORIZON",
        12,
    )
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(tmp_path / "absent.json"))
    assert job.load_application_properties() is None


def test_job_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(tmp_path / "absent.json"))
    assert (
        job.main(["--source-path", str(tmp_path / "missing.jsonl"), "--sink-path", str(tmp_path / "o")]) == 2
    )
    assert "no such input" in capsys.readouterr().err
    assert job.main(["--source-path", "x"]) == 2
    assert job.main([]) == 2
