"""The generated Flink SQL follows the feature specification and the connector configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features import spec
from streaming import job, sql

ROOT = Path(__file__).resolve().parents[1]


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
    assert "WHERE NOT `valid`" in text and text.count("WHERE `valid` AND") == 2
    assert "DECIMAL(38, 12)" in text  # exact running sum (see streaming/sql.py)
    # Validity is the shared rule of features.spec (Spark, Flink, Lambdas), applied to the typed fields.
    view = sql.events_view_sql()
    assert spec.valid_event_sql() in view and sql.parsed_sql() in view
    # Rejected rows carry the raw record and no aggregates; valid rows no raw text.
    assert [n for n, _ in sql.OUTPUT_COLUMNS][-1] == sql.RAW
    assert text.count("IF(`valid`, CAST(NULL AS STRING), `raw`) AS `raw`") == 2


def test_strict_field_extraction():
    # Numbers must not be JSON strings; integers must be integral; JSON_VALUE ... RETURNING DOUBLE
    # (which throws on a string and fails the job) is never used.
    amount = sql.field_sql(spec.AMOUNT, "DOUBLE")
    assert "`_q_amount` NOT LIKE '[\"%'" in amount and "TRY_CAST(`_v_amount` AS DOUBLE)" in amount
    card = sql.field_sql(spec.CARD_ID, "BIGINT")
    assert "TRY_CAST(`_v_cc_num` AS DECIMAL(38, 12)) = TRY_CAST(`_v_cc_num` AS BIGINT)" in card
    assert "`_q_tid` LIKE '[\"%'" in sql.field_sql("tid", "STRING")
    assert sql.field_sql("merchant", "STRING") == "`_v_merchant`"  # optional free text: any scalar
    with pytest.raises(ValueError):
        sql.field_sql("x", "BOOLEAN")
    # Each JSON function is called once per record, as a source computed column (shared by the
    # three branches), never inside the view or the INSERT.
    cols = dict(sql.json_columns())
    assert cols["_v_amount"] == "JSON_VALUE(`raw`, '$.amount')"
    assert cols["_q_amount"] == "JSON_QUERY(`raw`, '$.amount' WITH ARRAY WRAPPER)"
    assert "_q_merchant" not in cols and len(cols) == len(sql.INPUT_COLUMNS) + 5
    assert "RETURNING" not in sql.source_ddl(sql.ConnectorConfig("filesystem", "/a", "/b"), 5)
    assert "JSON_" not in sql.events_view_sql() and "JSON_" not in sql.insert_sql()


def test_source_has_event_time_and_watermark():
    conn = sql.ConnectorConfig("filesystem", "/in.jsonl", "/out")
    ddl = sql.source_ddl(conn, 7)
    ts = "TRY_CAST(JSON_VALUE(`raw`, '$.trans_ts') AS DOUBLE)"
    assert f"THEN TO_TIMESTAMP_LTZ(CAST(ROUND({ts} * 1000) AS BIGINT), 3)" in ddl
    assert "ELSE TO_TIMESTAMP_LTZ(0, 3) END" in ddl  # never a NULL time attribute
    assert "WATERMARK FOR `rowtime` AS `rowtime` - INTERVAL '0 00:00:07' DAY TO SECOND" in ddl
    assert "'path' = '/in.jsonl'" in ddl and "'format' = 'raw'" in ddl
    assert "ignore-parse-errors" not in ddl  # nothing is dropped at decoding
    assert "PARTITIONED BY" not in sql.sink_ddl(conn)


ARN_IN = "arn:aws:kinesis:eu-west-1:123456789012:stream/transactions"
ARN_OUT = "arn:aws:kinesis:eu-west-1:123456789012:stream/card-features"


def assert_kinesis_5x(conn: sql.ConnectorConfig, arn_in: str, arn_out: str, region: str, initpos: str):
    """The options flink-sql-connector-kinesis 5.x requires (stream.arn, aws.region, format)."""
    src, sink = conn.source_options(), conn.sink_options()
    assert src == {
        "connector": "kinesis",
        "stream.arn": arn_in,
        "aws.region": region,
        "source.init.position": initpos,
        "format": "raw",
        "raw.charset": "UTF-8",
    }
    assert sink == {"connector": "kinesis", "stream.arn": arn_out, "aws.region": region, "format": "json"}
    assert f"PARTITIONED BY (`{spec.CARD_ID}`)" in sql.sink_ddl(conn)
    for opts in (src, sink):
        assert not {"stream", "scan.stream.initpos"} & set(opts)  # 4.x (kinesis-legacy) options


def test_kinesis_connectors():
    conn = sql.ConnectorConfig("kinesis", ARN_IN, ARN_OUT, region="eu-west-1", init_position="TRIM_HORIZON")
    assert_kinesis_5x(conn, ARN_IN, ARN_OUT, "eu-west-1", "TRIM_HORIZON")
    with pytest.raises(ValueError, match="by ARN"):
        sql.ConnectorConfig("kinesis", "transactions", "card-features").source_options()
    with pytest.raises(ValueError, match="by ARN"):
        sql.ConnectorConfig("kinesis", ARN_IN, "card-features").sink_options()
    with pytest.raises(ValueError):
        sql.ConnectorConfig("kafka", "a", "b").source_options()
    assert sql.is_stream_arn(ARN_IN) and not sql.is_stream_arn("arn:aws:sqs:eu-west-1:1:stream/x")
    assert sql.arn_region(ARN_IN) == "eu-west-1"


def test_statements_order():
    stmts = sql.statements(sql.ConnectorConfig("filesystem", "/a", "/b"), 5)
    assert stmts[0].startswith(f"CREATE TEMPORARY TABLE {sql.SOURCE_TABLE}")
    assert stmts[1].startswith(f"CREATE TEMPORARY VIEW {sql.EVENTS_VIEW}")
    assert stmts[2].startswith(f"CREATE TEMPORARY TABLE {sql.SINK_TABLE}")
    assert stmts[3].startswith(f"INSERT INTO {sql.SINK_TABLE}") and len(stmts) == 4


def test_managed_flink_properties(tmp_path, monkeypatch):
    props = [
        {"PropertyGroupId": "Other", "PropertyMap": {"x": "1"}},
        {
            "PropertyGroupId": job.PROPERTY_GROUP,
            "PropertyMap": {
                "transactions.stream": "tx-stream",
                "transactions.stream.arn": ARN_IN,
                "card-features.stream": "cf-stream",
                "card-features.stream.arn": ARN_OUT,
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
        ARN_IN,  # the ARN wins over the name
        ARN_OUT,
        "us-west-2",
        "TRIM_HORIZON",
        12,
    )
    # Without aws.region the region comes from the source ARN.
    no_region = {k: v for k, v in loaded.items() if k != "aws.region"}
    assert job.config_from_properties(no_region)[0].region == "eu-west-1"
    # Names alone cannot configure the 5.x connector: a clear error, no 4.x fallback.
    names_only = {k: v for k, v in loaded.items() if not k.endswith(".arn")}
    with pytest.raises(ValueError, match=r"transactions\.stream\.arn, card-features\.stream\.arn"):
        job.config_from_properties(names_only)
    with pytest.raises(ValueError, match="not a Kinesis stream ARN"):
        job.config_from_properties(loaded | {"card-features.stream.arn": "cf-stream"})
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(tmp_path / "absent.json"))
    assert job.load_application_properties() is None


def test_template_properties_yield_kinesis_5x_options():
    """infra/streaming.yaml's FraudFeatures group (Ref/GetAtt resolved as CloudFormation would with
    default parameters) configures the bundled 5.x connector."""
    from cfnlint.decode import decode

    tpl, errors = decode(str(ROOT / "infra" / "streaming.yaml"))
    assert not errors, errors
    tpl = json.loads(json.dumps(tpl))
    region, account = "ap-southeast-2", "210987654321"

    def resolve(v):
        if isinstance(v, dict) and "Ref" in v:
            ref = v["Ref"]
            if ref == "AWS::Region":
                return region
            if ref in tpl["Parameters"]:
                return str(tpl["Parameters"][ref]["Default"])
            return resolve(tpl["Resources"][ref]["Properties"]["Name"])  # a stream's Ref = its name
        if isinstance(v, dict) and "Fn::GetAtt" in v:
            ref, attr = v["Fn::GetAtt"]
            assert (tpl["Resources"][ref]["Type"], attr) == ("AWS::Kinesis::Stream", "Arn")
            return f"arn:aws:kinesis:{region}:{account}:stream/{resolve({'Ref': ref})}"
        return str(v)

    (app,) = [r for r in tpl["Resources"].values() if r["Type"] == "AWS::KinesisAnalyticsV2::Application"]
    groups = app["Properties"]["ApplicationConfiguration"]["EnvironmentProperties"]["PropertyGroups"]
    (group,) = [g for g in groups if g["PropertyGroupId"] == job.PROPERTY_GROUP]
    props = {k: resolve(v) for k, v in group["PropertyMap"].items()}
    conn, wm = job.config_from_properties(props)
    arn = f"arn:aws:kinesis:{region}:{account}:stream/"
    assert_kinesis_5x(conn, arn + spec.TRANSACTIONS_STREAM, arn + spec.CARD_FEATURES_STREAM, region, "LATEST")
    assert wm == job.DEFAULT_WATERMARK_SECONDS
    # The generated DDL carries exactly those options.
    ddl = sql.source_ddl(conn, wm)
    assert f"'stream.arn' = '{arn}{spec.TRANSACTIONS_STREAM}'" in ddl and "'stream' =" not in ddl


def test_job_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(tmp_path / "absent.json"))
    assert (
        job.main(["--source-path", str(tmp_path / "missing.jsonl"), "--sink-path", str(tmp_path / "o")]) == 2
    )
    assert "no such input" in capsys.readouterr().err
    assert job.main(["--source-path", "x"]) == 2
    assert job.main([]) == 2
    # Managed Flink properties without stream ARNs: one-line error, exit 2.
    props = [{"PropertyGroupId": job.PROPERTY_GROUP, "PropertyMap": {"transactions.stream": "t"}}]
    (tmp_path / "p.json").write_text(json.dumps(props))
    monkeypatch.setenv("FLINK_APPLICATION_PROPERTIES", str(tmp_path / "p.json"))
    capsys.readouterr()
    assert job.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks transactions.stream.arn" in err[0]
