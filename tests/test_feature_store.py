"""Local online store: boto3 shapes, event-time guard, errors, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading

import pytest
from botocore.exceptions import ClientError

from features.spec import BATCH_FEATURE_GROUP, STREAMING_FEATURE_GROUP
from pipeline.local.feature_store import LocalFeatureStoreRuntime

FG = STREAMING_FEATURE_GROUP.name


def record(cc_num: int, count: int, avg: float, event_time: float) -> list[dict[str, str]]:
    return [
        {"FeatureName": "cc_num", "ValueAsString": str(cc_num)},
        {"FeatureName": "num_trans_last_10m", "ValueAsString": str(count)},
        {"FeatureName": "avg_amt_last_10m", "ValueAsString": repr(avg)},
        {"FeatureName": "trans_time", "ValueAsString": repr(event_time)},
    ]


def as_dict(rec: list[dict[str, str]]) -> dict[str, str]:
    return {f["FeatureName"]: f["ValueAsString"] for f in rec}


@pytest.fixture
def store(tmp_path):
    s = LocalFeatureStoreRuntime(tmp_path / "fs.db")
    yield s
    s.close()


def test_put_get_round_trip_keeps_values_and_order(store):
    store.put_record(
        FeatureGroupName=FG, Record=record(4000123412341234, 3, 12.345678901234567, 1580000000.5)
    )
    got = store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="4000123412341234")
    assert got["Record"] == record(4000123412341234, 3, 12.345678901234567, 1580000000.5)
    assert float(as_dict(got["Record"])["avg_amt_last_10m"]) == 12.345678901234567
    assert int(as_dict(got["Record"])["num_trans_last_10m"]) == 3
    sel = store.get_record(
        FeatureGroupName=FG,
        RecordIdentifierValueAsString="4000123412341234",
        FeatureNames=["avg_amt_last_10m"],
    )
    assert sel["Record"] == [{"FeatureName": "avg_amt_last_10m", "ValueAsString": "12.345678901234567"}]


def test_absent_record_is_empty_dict(store):
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="42") == {}


def test_batch_get_returns_found_records_per_group(store):
    store.put_record(FeatureGroupName=FG, Record=record(1, 1, 1.5, 10.0))
    store.put_record(FeatureGroupName=FG, Record=record(2, 2, 2.5, 10.0))
    batch = [
        {"FeatureName": "cc_num", "ValueAsString": "1"},
        {"FeatureName": "num_trans_last_1w", "ValueAsString": "7"},
        {"FeatureName": "avg_amt_last_1w", "ValueAsString": "99.25"},
        {"FeatureName": "trans_time", "ValueAsString": "86400.0"},
    ]
    store.put_record(FeatureGroupName=BATCH_FEATURE_GROUP.name, Record=batch)
    out = store.batch_get_record(
        Identifiers=[
            {"FeatureGroupName": FG, "RecordIdentifiersValueAsString": ["2", "1", "3"]},
            {
                "FeatureGroupName": BATCH_FEATURE_GROUP.name,
                "RecordIdentifiersValueAsString": ["1", "2"],
                "FeatureNames": ["num_trans_last_1w", "avg_amt_last_1w"],
            },
        ]
    )
    assert out["Errors"] == [] and out["UnprocessedIdentifiers"] == []
    got = [
        (r["FeatureGroupName"], r["RecordIdentifierValueAsString"], as_dict(r["Record"]))
        for r in out["Records"]
    ]
    assert got == [
        (FG, "2", as_dict(record(2, 2, 2.5, 10.0))),
        (FG, "1", as_dict(record(1, 1, 1.5, 10.0))),
        (BATCH_FEATURE_GROUP.name, "1", {"num_trans_last_1w": "7", "avg_amt_last_1w": "99.25"}),
    ]


def test_older_write_does_not_replace_newer(store):
    store.put_record(FeatureGroupName=FG, Record=record(7, 5, 50.0, 2000.0))
    store.put_record(FeatureGroupName=FG, Record=record(7, 1, 10.0, 1999.0))
    assert as_dict(
        store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="7")["Record"]
    ) == as_dict(record(7, 5, 50.0, 2000.0))
    store.put_record(FeatureGroupName=FG, Record=record(7, 2, 20.0, 2001.0))
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="7")["Record"] == record(
        7, 2, 20.0, 2001.0
    )


def test_equal_event_time_replaces(store):
    store.put_record(FeatureGroupName=FG, Record=record(7, 5, 50.0, 2000.0))
    store.put_record(FeatureGroupName=FG, Record=record(7, 6, 60.0, 2000.0))
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="7")["Record"] == record(
        7, 6, 60.0, 2000.0
    )


def test_unknown_feature_group_is_resource_not_found(store):
    for call in (
        lambda: store.put_record(FeatureGroupName="nope", Record=record(1, 1, 1.0, 1.0)),
        lambda: store.get_record(FeatureGroupName="nope", RecordIdentifierValueAsString="1"),
        lambda: store.batch_get_record(
            Identifiers=[{"FeatureGroupName": "nope", "RecordIdentifiersValueAsString": ["1"]}]
        ),
    ):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "ResourceNotFound"
        assert isinstance(err.value, store.exceptions.ResourceNotFound)


@pytest.mark.parametrize("missing", ["cc_num", "trans_time"])
def test_missing_record_id_or_event_time_is_validation_error(store, missing):
    rec = [f for f in record(1, 1, 1.0, 1.0) if f["FeatureName"] != missing]
    with pytest.raises(ClientError) as err:
        store.put_record(FeatureGroupName=FG, Record=rec)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert missing in str(err.value)
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1") == {}


def test_bad_types_and_unknown_features_are_validation_errors(store):
    for bad in (
        [*record(1, 1, 1.0, 1.0)[:1], {"FeatureName": "num_trans_last_10m", "ValueAsString": "1.5"}],
        [*record(1, 1, 1.0, 1.0), {"FeatureName": "not_a_feature", "ValueAsString": "1"}],
        [*record(1, 1, 1.0, 1.0)[:3], {"FeatureName": "trans_time", "ValueAsString": "yesterday"}],
    ):
        with pytest.raises(ClientError) as err:
            store.put_record(FeatureGroupName=FG, Record=bad)
        assert err.value.response["Error"]["Code"] == "ValidationError"


def test_delete_respects_event_time(store):
    store.put_record(FeatureGroupName=FG, Record=record(1, 1, 1.0, 100.0))
    store.delete_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1", EventTime="99")
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1") != {}
    store.delete_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1", EventTime="100")
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1") == {}


def test_pickles_for_spark_partitions(store):
    store.put_record(FeatureGroupName=FG, Record=record(1, 1, 1.0, 100.0))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1")["Record"] == record(
        1, 1, 1.0, 100.0
    )


def _writer(db_path: str, worker: int, n_workers: int, n_events: int) -> None:
    """Each process writes a disjoint, shuffled share of event times for the same cards."""
    store = LocalFeatureStoreRuntime(db_path)
    times = list(range(worker, n_events, n_workers))
    if worker % 2:
        times.reverse()
    for t in times:
        for card in range(5):
            store.put_record(FeatureGroupName=FG, Record=record(card, t, float(t), float(t)))
    store.close()


def test_concurrent_writers_across_processes_keep_newest(tmp_path):
    db = str(tmp_path / "fs.db")
    LocalFeatureStoreRuntime(db).close()
    n_workers, n_events = 4, 120
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, n_workers, n_events)) for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = LocalFeatureStoreRuntime(db)
    for card in range(5):
        got = as_dict(
            store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString=str(card))["Record"]
        )
        assert got["trans_time"] == repr(float(n_events - 1)) and got["num_trans_last_10m"] == str(
            n_events - 1
        )
    assert store.count(FG) == 5


def test_concurrent_threads_share_one_object(tmp_path):
    store = LocalFeatureStoreRuntime(tmp_path / "fs.db")
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for t in range(offset, 400, 4):
                store.put_record(FeatureGroupName=FG, Record=record(9, t, float(t), float(t)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert as_dict(store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="9")["Record"])[
        "trans_time"
    ] == repr(399.0)


@pytest.mark.parametrize("event_time", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "abc", ""])
def test_non_finite_or_non_numeric_event_time_is_a_validation_error_never_stored(store, event_time):
    """Issue 9: "nan" raised a raw sqlite3 error and "inf" was stored, then won every later write."""
    rec = [*record(1, 1, 1.0, 1.0)[:3], {"FeatureName": "trans_time", "ValueAsString": event_time}]
    with pytest.raises(ClientError) as err:
        store.put_record(FeatureGroupName=FG, Record=rec)
    assert isinstance(err.value, store.exceptions.ValidationError)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "trans_time" in str(err.value)
    assert store.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1") == {}
    # Later writes are not blocked.
    store.put_record(FeatureGroupName=FG, Record=record(1, 2, 2.0, 5.0))
    assert store.count(FG) == 1
    with pytest.raises(store.exceptions.ValidationError):
        store.delete_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1", EventTime=event_time)


def test_a_sqlite_failure_is_a_retryable_client_error_not_a_raw_sqlite_error(tmp_path):
    from lambdas.retries import is_transient

    fs = LocalFeatureStoreRuntime(tmp_path / "s.sqlite")
    fs._conn().execute("DROP TABLE records")  # the database under the store breaks
    with pytest.raises(ClientError) as err:
        fs.put_record(FeatureGroupName=FG, Record=record(1, 1, 1.0, 1.0))
    assert err.value.response["Error"]["Code"] == "InternalFailure" and is_transient(err.value)
    with pytest.raises(ClientError):
        fs.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1")


def test_bulk_writes_commit_together_or_not_at_all(tmp_path):
    db = tmp_path / "fs.db"
    writer, reader = LocalFeatureStoreRuntime(db), LocalFeatureStoreRuntime(db)
    with writer.bulk():
        for card in range(3):
            writer.put_record(FeatureGroupName=FG, Record=record(card, 1, 1.0, 100.0))
        # Another connection sees nothing before the commit: a publish is all or nothing.
        assert reader.count(FG) == 0
    assert reader.count(FG) == 3
    with pytest.raises(ClientError), writer.bulk():
        writer.put_record(FeatureGroupName=FG, Record=record(7, 1, 1.0, 100.0))
        writer.put_record(FeatureGroupName=FG, Record=record(8, 1, 1.0, float("nan")))
    assert reader.count(FG) == 3  # the failed bulk left no partial write behind
    assert reader.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="7") == {}
    writer.close()
    reader.close()


def test_a_redefined_group_of_the_same_name_gets_its_own_schema(tmp_path):
    """The per-group schema is cached by the group object: a grown definition under the same name
    (a new object) is checked against its own features, not the cached ones."""
    from dataclasses import replace

    grown = replace(
        STREAMING_FEATURE_GROUP, features=(*STREAMING_FEATURE_GROUP.features, ("extra", "Integral"))
    )
    old = LocalFeatureStoreRuntime(tmp_path / "a.db")
    new = LocalFeatureStoreRuntime(tmp_path / "b.db", {FG: grown})
    with_extra = [*record(1, 1, 1.0, 1.0), {"FeatureName": "extra", "ValueAsString": "7"}]
    for _ in range(2):  # the second round reads the cache
        with pytest.raises(ClientError, match="Unknown feature 'extra'"):
            old.put_record(FeatureGroupName=FG, Record=with_extra)
        new.put_record(FeatureGroupName=FG, Record=with_extra)
        with pytest.raises(ClientError, match="extra='x' is not Integral"):
            new.put_record(
                FeatureGroupName=FG,
                Record=[*record(1, 1, 1.0, 1.0), {"FeatureName": "extra", "ValueAsString": "x"}],
            )
    assert (
        as_dict(new.get_record(FeatureGroupName=FG, RecordIdentifierValueAsString="1")["Record"])["extra"]
        == "7"
    )
    old.close()
    new.close()
