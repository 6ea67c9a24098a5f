"""Local online feature store: SQLite behind the boto3 `sagemaker-featurestore-runtime` shapes.

Handlers, the Spark job and the replay take a "featurestore" client; locally they get this class,
on AWS the boto3 client, so the calling code is identical. The SageMaker online-store rule is kept:
a write older than the stored record (by event time) never replaces it, equal event time does.
That rule lives inside one UPSERT statement, so it holds for concurrent writers in several threads
and processes without any read-modify-write race.

Bad requests fail the way boto3 fails, with a `ValidationError` ClientError (HTTP 400) naming the
value: an event time that is not a finite number ("nan", "inf", "abc") is refused and never stored
(SQLite would store NaN as NULL and fail, and an "inf" record would win every later write).
A SQLite failure (disk full, database locked beyond the busy timeout) is an `InternalFailure`
ClientError (HTTP 500), which the Lambdas' retry policy treats as transient; a raw sqlite3 error
never reaches the caller.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError

from features.spec import FEATURE_GROUPS, FeatureGroup

BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    feature_group TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event_time REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (feature_group, record_id)
) WITHOUT ROWID
"""

# The event-time guard: the DO UPDATE only fires when the incoming record is not older.
_UPSERT = """
INSERT INTO records (feature_group, record_id, event_time, record) VALUES (?, ?, ?, ?)
ON CONFLICT (feature_group, record_id) DO UPDATE
SET event_time = excluded.event_time, record = excluded.record
WHERE excluded.event_time >= records.event_time
"""


class ResourceNotFound(ClientError):
    """Same error code as the boto3 modeled exception `ResourceNotFound`."""


class ValidationError(ClientError):
    """Same error code as botocore's `ValidationError` for malformed requests."""


def _error(cls: type[ClientError], code: str, message: str, operation: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return cls(response, operation)


@contextlib.contextmanager
def _database(operation: str) -> Iterator[None]:
    """SQLite errors as the service's own failure (retryable), never a raw sqlite3 exception."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _error(
            ClientError, "InternalFailure", f"local online store failed: {exc}", operation, 500
        ) from None


def _event_time(value: Any, name: str, operation: str) -> float:
    """A finite event time (seconds), else ValidationError."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise _error(
            ValidationError,
            "ValidationError",
            f"{name} {value!r} is not a valid event time: a finite number of seconds is required",
            operation,
            400,
        )
    return t


_SCHEMAS: dict[int, tuple[FeatureGroup, dict[str, str], tuple[str, ...]]] = {}


def _schema(group: FeatureGroup) -> tuple[dict[str, str], tuple[str, ...]]:
    """(feature -> type, declared order) of a group, built once per group, not per PutRecord
    (looked up by identity: hashing the frozen dataclass on every call cost more than the lookup)."""
    hit = _SCHEMAS.get(id(group))
    if hit is None or hit[0] is not group:
        hit = _SCHEMAS[id(group)] = (group, dict(group.features), tuple(group.feature_names))
    return hit[1], hit[2]


def _metadata() -> dict[str, Any]:
    return {"ResponseMetadata": {"HTTPStatusCode": 200}}


class LocalFeatureStoreRuntime:
    """SQLite-backed stand-in for `boto3.client("sagemaker-featurestore-runtime")`.

    One connection per thread (sqlite3 connections are not shareable across threads); WAL mode
    and a busy timeout let readers and writers in other processes proceed concurrently.
    Durability is a local store's, not the service's: see `_conn` for `synchronous = OFF`.
    The object pickles (path + groups only), so Spark partitions can rebuild it.
    """

    exceptions = SimpleNamespace(
        ResourceNotFound=ResourceNotFound, ValidationError=ValidationError, ClientError=ClientError
    )

    def __init__(self, db_path: str | Path, feature_groups: Mapping[str, FeatureGroup] | None = None) -> None:
        self.db_path = str(db_path)
        self.feature_groups = dict(feature_groups if feature_groups is not None else FEATURE_GROUPS)
        self._local = threading.local()
        if self.db_path != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        self._conn()  # create the schema eagerly so a bad path fails at construction

    # -- plumbing -------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"db_path": self.db_path, "feature_groups": self.feature_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.db_path = state["db_path"]
        self.feature_groups = state["feature_groups"]
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # OFF, not NORMAL: no fsync at WAL checkpoints (~35 of ~110 us per PutRecord here). A
            # crash of any process keeps every committed write; only an OS crash or power loss can
            # cost the last ones, and everything in this local stand-in is re-derived by a rerun.
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(_SCHEMA)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's object is collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _group(self, name: str, operation: str) -> FeatureGroup:
        group = self.feature_groups.get(name)
        if group is None:
            raise _error(
                ResourceNotFound,
                "ResourceNotFound",
                f"Resource Not Found: Amazon SageMaker can't find a feature group with name {name}",
                operation,
                404,
            )
        return group

    @staticmethod
    def _select(record: list[dict[str, str]], names: Sequence[str] | None) -> list[dict[str, str]]:
        if not names:
            return record
        wanted = set(names)
        return [f for f in record if f["FeatureName"] in wanted]

    # -- API ------------------------------------------------------------------------------------
    def put_record(
        self,
        *,
        FeatureGroupName: str,
        Record: Iterable[Mapping[str, str]],
        TargetStores: Sequence[str] | None = None,
        TtlDuration: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a record unless the stored one has a newer event time."""
        op = "PutRecord"
        group = self._group(FeatureGroupName, op)
        types, order = _schema(group)
        values: dict[str, str] = {}
        for feature in Record:
            name, value = feature.get("FeatureName"), feature.get("ValueAsString")
            kind = types.get(name)
            if kind is None:
                raise _error(
                    ValidationError, "ValidationError", f"Unknown feature {name!r} for {group.name}", op, 400
                )
            if not isinstance(value, str):
                raise _error(
                    ValidationError, "ValidationError", f"ValueAsString of {name} must be a string", op, 400
                )
            try:
                if kind == "Integral":
                    int(value)
                elif kind == "Fractional":
                    float(value)
            except ValueError:
                raise _error(
                    ValidationError, "ValidationError", f"{name}={value!r} is not {kind}", op, 400
                ) from None
            values[name] = value
        for required in (group.record_identifier, group.event_time):
            if required not in values:
                raise _error(
                    ValidationError,
                    "ValidationError",
                    f"Record is missing required feature {required} of {group.name}",
                    op,
                    400,
                )
        event_time = _event_time(values[group.event_time], group.event_time, op)
        record = [{"FeatureName": n, "ValueAsString": values[n]} for n in order if n in values]
        row = (group.name, values[group.record_identifier], event_time, json.dumps(record))
        try:  # `_database` inline: the context manager cost ~10 % of a PutRecord
            self._conn().execute(_UPSERT, row)
        except sqlite3.Error as exc:
            raise _error(
                ClientError, "InternalFailure", f"local online store failed: {exc}", op, 500
            ) from None
        return _metadata()

    def get_record(
        self,
        *,
        FeatureGroupName: str,
        RecordIdentifierValueAsString: str,
        FeatureNames: Sequence[str] | None = None,
        ExpirationTimeResponse: str | None = None,
    ) -> dict[str, Any]:
        """`{"Record": [...]}` or `{}` when the record does not exist (as boto3 returns)."""
        group = self._group(FeatureGroupName, "GetRecord")
        with _database("GetRecord"):
            row = (
                self._conn()
                .execute(
                    "SELECT record FROM records WHERE feature_group = ? AND record_id = ?",
                    (group.name, str(RecordIdentifierValueAsString)),
                )
                .fetchone()
            )
        if row is None:
            return {}
        return {"Record": self._select(json.loads(row[0]), FeatureNames), **_metadata()}

    def batch_get_record(
        self, *, Identifiers: Sequence[Mapping[str, Any]], ExpirationTimeResponse: str | None = None
    ) -> dict[str, Any]:
        """Records found, per identifier group; absent ids are simply not returned."""
        with _database("BatchGetRecord"):
            return self._batch_get(Identifiers)

    def _batch_get(self, Identifiers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        conn = self._conn()
        for ident in Identifiers:
            group = self._group(ident["FeatureGroupName"], "BatchGetRecord")
            ids = [str(i) for i in ident["RecordIdentifiersValueAsString"]]
            names = ident.get("FeatureNames")
            found: dict[str, list[dict[str, str]]] = {}
            for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for record_id, record in conn.execute(
                    f"SELECT record_id, record FROM records WHERE feature_group = ? AND record_id IN ({marks})",
                    (group.name, *chunk),
                ):
                    found[record_id] = json.loads(record)
            for record_id in dict.fromkeys(ids):
                if record_id in found:
                    records.append(
                        {
                            "FeatureGroupName": group.name,
                            "RecordIdentifierValueAsString": record_id,
                            "Record": self._select(found[record_id], names),
                        }
                    )
        return {"Records": records, "Errors": [], "UnprocessedIdentifiers": [], **_metadata()}

    def delete_record(
        self,
        *,
        FeatureGroupName: str,
        RecordIdentifierValueAsString: str,
        EventTime: str,
        TargetStores: Sequence[str] | None = None,
        DeletionMode: str | None = None,
    ) -> dict[str, Any]:
        """Delete the record if it is not newer than `EventTime` (a late delete can't erase newer data)."""
        op = "DeleteRecord"
        group = self._group(FeatureGroupName, op)
        event_time = _event_time(EventTime, "EventTime", op)
        with _database(op):
            self._conn().execute(
                "DELETE FROM records WHERE feature_group = ? AND record_id = ? AND event_time <= ?",
                (group.name, str(RecordIdentifierValueAsString), event_time),
            )
        return _metadata()

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Many writes of this thread as one SQLite transaction (local-only helper): a day's
        snapshot publish is ~10,000 `put_record`s, which one commit instead of 10,000 makes cheap.
        A failure rolls back the whole bulk, so a publish is all or nothing."""
        conn = self._conn()
        with _database("PutRecord"):
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with _database("PutRecord"):
                conn.execute("ROLLBACK")
            raise
        with _database("PutRecord"):
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def group_commit(self) -> Iterator[dict[str, bool]]:
        """This thread's writes in the block as one transaction where possible (local-only helper:
        one commit per Kinesis batch instead of one per PutRecord, ~21 -> ~13 us a write). Each
        write inside still reports its own success, as it would alone. Yields a state whose
        "committed" is False when some write the block reported may not be stored: SQLite rolled
        the transaction back on its own (disk full, I/O error: later writes then ran alone) or the
        commit failed. The caller then redoes the whole block; writes are idempotent under the
        event-time guard. If the transaction cannot start, the block runs write by write."""
        conn = self._conn()
        state = {"committed": True}
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            yield state
            return
        try:
            yield state
        except BaseException:
            if conn.in_transaction:
                with _database("PutRecord"):
                    conn.execute("ROLLBACK")
            raise
        if not conn.in_transaction:
            state["committed"] = False
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            state["committed"] = False
            if conn.in_transaction:
                with _database("PutRecord"):
                    conn.execute("ROLLBACK")

    def count(self, FeatureGroupName: str) -> int:
        """Number of stored records of a group (local-only helper for tests and summaries)."""
        group = self._group(FeatureGroupName, "Count")
        return int(
            self._conn()
            .execute("SELECT COUNT(*) FROM records WHERE feature_group = ?", (group.name,))
            .fetchone()[0]
        )
