#!/usr/bin/env python3
"""Fault and bad-input suite of the local system: every case either handled cleanly or counted.

    python benchmarks/fault_suite.py            # everything, real Flink and Spark (a few minutes)
    python benchmarks/fault_suite.py --quick    # no Flink/Spark/CLI processes (seconds; tests/test_faults.py)

"Handled cleanly" means, per kind of case:
- endpoint payloads: a 4xx answer whose body is one line, and the server still scores afterwards;
- stream records (score_transaction on Kinesis batches, real SQLite store, real local endpoint):
  the bad record goes to the failure destination with a reason, nothing is retried, and every good
  record of the same batch is decided (a good record without a decision counts as *lost*);
- store writes and Lambda configuration: a ValidationError / ConfigError naming the value, nothing
  stored, later writes unaffected;
- CLI inputs: a non-zero exit with exactly one error line and no traceback;
- re-delivery and faults injected into the stream clients: one decision per event after
  de-duplication (*duplicated* counts decision ids seen twice in the decisions file);
- signals (SIGTERM to `replay` during Flink, to `local` during Spark, to a deploy, to the endpoint
  during a request): the documented exit code, one line, and no process left behind (*orphans*).
Writes benchmarks/results/faults.json and prints the totals.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import logging
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from features import spec  # noqa: E402
from lambdas.retries import RetryPolicy  # noqa: E402
from lambdas.score_transaction import handler as score  # noqa: E402
from lambdas.settings import ConfigError  # noqa: E402
from lambdas.testing import kinesis_event  # noqa: E402
from pipeline.local.feature_store import LocalFeatureStoreRuntime  # noqa: E402
from training.endpoint_client import LocalSageMakerRuntime  # noqa: E402
from training.model_artifact import write_model_archive  # noqa: E402
from training.serve import LocalEndpointServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "faults.json"
QUEUE = "local://failures"
T0 = 1_580_515_200.0  # 2020-02-01


@dataclass
class Case:
    category: str
    name: str
    clean: bool
    detail: str = ""


@dataclass
class Report:
    cases: list[Case] = field(default_factory=list)
    decisions_lost: int = 0
    decisions_duplicated: int = 0
    duplicates_dropped: int = 0
    orphans_left: int = 0
    seconds: float = 0.0

    def add(self, category: str, name: str, clean: bool, detail: str = "") -> None:
        self.cases.append(Case(category, name, bool(clean), detail))

    def check(self, category: str, name: str, fn: Callable[[], str | None]) -> None:
        """Run one case: None or "" = clean; a string = what was wrong; an exception = not clean."""
        try:
            problem = fn()
        except Exception as exc:
            problem = f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        self.add(category, name, not problem, problem or "")

    def totals(self) -> dict[str, Any]:
        by_cat: dict[str, dict[str, int]] = {}
        for c in self.cases:
            d = by_cat.setdefault(c.category, {"tried": 0, "clean": 0})
            d["tried"] += 1
            d["clean"] += c.clean
        return {
            "inputs_tried": len(self.cases),
            "handled_cleanly": sum(c.clean for c in self.cases),
            "decisions_lost": self.decisions_lost,
            "decisions_duplicated_after_dedup": self.decisions_duplicated,
            "duplicates_dropped": self.duplicates_dropped,
            "orphans_left": self.orphans_left,
            "by_category": by_cat,
        }


# --- shared fixtures -------------------------------------------------------------------------
def _model(root: Path) -> Path:
    x = np.random.default_rng(0).uniform(0, 5, (400, len(spec.MODEL_FEATURES)))
    y = (x[:, min(2, x.shape[1] - 1)] > 2.5).astype(int)
    import xgboost as xgb

    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(x, label=y), 5)
    return write_model_archive(booster, root / "model" / "model.tar.gz")


def _lone_features(amount: float) -> dict[str, Any]:
    """Streaming features of a card's only event, from the declarations (tests/reference.py)."""
    from tests.reference import lone_event_features

    return lone_event_features(amount)


def enriched(tid: str, card: int, amount: float, ts: float, **extra: Any) -> dict[str, Any]:
    return {"tid": tid, "cc_num": card, "amount": amount, "trans_ts": ts, **_lone_features(amount),
            "late": False, **extra}  # fmt: skip


class MemoryKinesis:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.records += [json.loads(r["Data"]) for r in Records]
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in Records]}


class MemorySqs:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.messages += [json.loads(e["MessageBody"]) for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


class RefusingRuntime:
    """Wraps a runtime; the endpoint refuses (container 400) any request holding amount 666."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def invoke_endpoint(self, **kw: Any) -> dict[str, Any]:
        body = kw["Body"].decode() if isinstance(kw["Body"], bytes) else kw["Body"]
        if any(line.split(",")[0] == "666.0" for line in body.splitlines()):
            raise ClientError(
                {"Error": {"Code": "ModelError", "Message": "Received client error (400) from primary"},
                 "ResponseMetadata": {"HTTPStatusCode": 424}, "OriginalStatusCode": 400,
                 "OriginalMessage": "refused"},
                "InvokeEndpoint",
            )  # fmt: skip
        return self.inner.invoke_endpoint(**kw)


def _store(path: Path) -> LocalFeatureStoreRuntime:
    fs = LocalFeatureStoreRuntime(path)
    fg = spec.BATCH_FEATURE_GROUP
    types = dict(fg.features)
    for card, scale in ((1, 50.0), (5, 1e-300)):  # card 5: a tiny weekly average (ratios overflow)
        record = []
        for name in fg.feature_names:
            if name == fg.record_identifier:
                v = str(card)
            elif name == fg.event_time:
                v = repr(T0)
            elif types[name] == "Integral":
                v = "1"
            else:
                v = repr(scale)
            record.append({"FeatureName": name, "ValueAsString": v})
        fs.put_record(FeatureGroupName=fg.name, Record=record)
    return fs


# --- 1. endpoint payloads --------------------------------------------------------------------
def _endpoint_cases(report: Report, server: LocalEndpointServer) -> None:
    n = len(spec.MODEL_FEATURES)
    good = ",".join(["1.5"] * n).encode()
    row = lambda *v: ",".join(v).encode()  # noqa: E731
    bodies: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("csv nan", "text/csv", row("nan", *["1"] * (n - 1)), {}),
        ("csv NaN", "text/csv", row("NaN", *["1"] * (n - 1)), {}),
        ("csv inf", "text/csv", row("inf", *["1"] * (n - 1)), {}),
        ("csv -Infinity", "text/csv", row("-Infinity", *["1"] * (n - 1)), {}),
        ("csv 5000-digit integer", "text/csv", row("9" * 5000, *["1"] * (n - 1)), {}),
        ("csv 1e999", "text/csv", row("1e999", *["1"] * (n - 1)), {}),
        ("csv too few columns", "text/csv", b"1,2", {}),
        ("csv too many columns", "text/csv", row(*["1"] * (n + 3)), {}),
        ("csv header line", "text/csv", ",".join(spec.MODEL_FEATURES).encode(), {}),
        ("csv text value", "text/csv", row("abc", *["1"] * (n - 1)), {}),
        ("csv empty body", "text/csv", b"", {}),
        ("csv blank lines", "text/csv", b"\n\n\n", {}),
        ("csv not UTF-8", "text/csv", b"\xff\xfe\xfd", {}),
        ("csv NUL bytes", "text/csv", b"\x00" * 20, {}),
        ("csv ragged rows", "text/csv", good + b"\n1,2\n", {}),
        ("json malformed", "application/json", b"{not json", {}),
        ("json NaN literal", "application/json", f"[[NaN{',1' * (n - 1)}]]".encode(), {}),
        ("json Infinity literal", "application/json", f"[[Infinity{',1' * (n - 1)}]]".encode(), {}),
        ("json 5000-digit integer", "application/json", f"[[{'9' * 5000}{',1' * (n - 1)}]]".encode(), {}),
        ("json 400-digit integer", "application/json", f"[[{'9' * 400}{',1' * (n - 1)}]]".encode(), {}),
        ("json 1e999", "application/json", f"[[1e999{',1' * (n - 1)}]]".encode(), {}),
        ("json 100k-deep nesting", "application/json", b"[" * 100_000 + b"]" * 100_000, {}),
        ("json string value", "application/json", f'[["a"{",1" * (n - 1)}]]'.encode(), {}),
        ("json boolean value", "application/json", f"[[true{',1' * (n - 1)}]]".encode(), {}),
        ("json wrong length", "application/json", b'{"instances": [[1, 2]]}', {}),
        ("json empty instances", "application/json", b'{"instances": []}', {}),
        ("json instances not a list", "application/json", b'{"instances": 3}', {}),
        ("json missing named feature", "application/json", b'{"instances": [{"amount": 1}]}', {}),
        ("json scalar", "application/json", b"3", {}),
        ("json null", "application/json", b"null", {}),
        ("unsupported content type", "application/x-protobuf", good, {}),
        ("unsupported accept", "text/csv", good, {"Accept": "image/png"}),
        ("invalid content-length", "text/csv", good, {"Content-Length": "abc"}),
        ("payload over 6 MiB", "text/csv", (good + b"\n") * (6 * 1024 * 1024 // len(good) + 1), {}),
    ]
    for name, ctype, body, headers in bodies:

        def case(ctype: str = ctype, body: bytes = body, headers: dict[str, str] = headers) -> str | None:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
            try:
                conn.putrequest("POST", "/invocations")
                conn.putheader("Content-Type", ctype)
                conn.putheader("Content-Length", headers.get("Content-Length", str(len(body))))
                for k, v in headers.items():
                    if k != "Content-Length":
                        conn.putheader(k, v)
                conn.endheaders()
                with contextlib.suppress(OSError):
                    conn.send(body)
                resp = conn.getresponse()
                text = resp.read().decode("utf-8", "replace")
            finally:
                conn.close()
            if not 400 <= resp.status < 500:
                return f"status {resp.status}"
            if text.count("\n") != 1:
                return f"error body is not one line: {text[:100]!r}"
            runtime = LocalSageMakerRuntime(server.url)
            scores = runtime.invoke_endpoint(EndpointName="x", Body=good, ContentType="text/csv")[
                "Body"
            ].read()
            return None if scores.strip() else "server stopped scoring"

        report.check("endpoint payload", name, case)


# --- 2. stream records through score_transaction -----------------------------------------------
def _record_cases(report: Report, store: LocalFeatureStoreRuntime, url: str) -> None:
    bad_records: list[tuple[str, bytes]] = [
        ("not JSON", b"{broken"),
        ("empty", b""),
        ("JSON array", b"[1, 2]"),
        ("not UTF-8", b"\xff\xfe"),
        ("NaN literal", b'{"tid": "x", "cc_num": 1, "amount": NaN, "trans_ts": 1580515200}'),
        ("Infinity literal", b'{"tid": "x", "cc_num": 1, "amount": Infinity, "trans_ts": 1580515200}'),
        (
            "5000-digit amount",
            b'{"tid": "x", "cc_num": 1, "amount": ' + b"9" * 5000 + b', "trans_ts": 1.6e9}',
        ),
        ("100k-deep JSON", b"[" * 100_000 + b"]" * 100_000),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + json.dumps(enriched("bom", 1, 5.0, T0)).encode()),
    ]
    fields: list[tuple[str, dict[str, Any]]] = [
        ("missing tid", {"tid": None}),
        ("empty tid", {"tid": ""}),
        ("numeric tid", {"tid": 12}),
        ("missing cc_num", {"cc_num": None}),
        ("text cc_num", {"cc_num": "abc"}),
        ("fractional cc_num", {"cc_num": 1.5}),
        ("negative cc_num", {"cc_num": -1}),
        ("cc_num beyond 64 bits", {"cc_num": 2**70}),
        ("boolean amount", {"amount": True}),
        ("text amount", {"amount": "12"}),
        ("negative amount", {"amount": -3.0}),
        ("amount 1.7e308", {"amount": 1.7e308}),
        ("amount above the declared maximum", {"amount": getattr(spec, "MAX_AMOUNT", 1e9) * 10}),
        ("missing trans_ts", {"trans_ts": None}),
        ("negative trans_ts", {"trans_ts": -5.0}),
        ("trans_ts year 5138", {"trans_ts": 1e11}),
        ("text trans_ts", {"trans_ts": "yesterday"}),
        ("label 2", {"fraud_label": 2}),
        ("late missing", {"late": None}),
        ("late as text", {"late": "no"}),
    ]
    for name, patch in fields:
        bad_records.append((name, json.dumps(enriched("bad", 1, 5.0, T0) | patch).encode()))
    # Valid but extreme: the weekly average of card 5 is 1e-300, so amount / it is infinite.
    bad_records.append(("ratio overflows to inf", json.dumps(enriched("ovf", 5, 1e9, T0)).encode()))

    runtime = LocalSageMakerRuntime(url)
    for name, raw in bad_records:

        def case(raw: bytes = raw, name: str = name) -> str | None:
            good = [enriched(f"g{i}", 1 + i % 2, 10.0 + i, T0 + i) for i in range(9)]
            payloads: list[bytes] = [json.dumps(g).encode() for g in good[:4]] + [raw]
            payloads += [json.dumps(g).encode() for g in good[4:]]
            kin, sqs = MemoryKinesis(), MemorySqs()
            with contextlib.redirect_stdout(io.StringIO()):
                resp = score.process_batch(
                    kinesis_event(payloads, partition_keys=["0"] * len(payloads)),
                    featurestore=store, runtime=runtime, kinesis=kin, sqs=sqs,
                    config=score.Config(failure_queue_url=QUEUE),
                )  # fmt: skip
            decided = {d["tid"] for d in kin.records}
            lost = {g["tid"] for g in good} - decided
            report.decisions_lost += len(lost)
            if name == "UTF-8 BOM" and "bom" in decided:
                return None  # a BOM-prefixed record that is decided is handled too
            if resp["batchItemFailures"]:
                return f"batch item failures {resp['batchItemFailures']}: the shard would retry"
            if lost:
                return f"good records not decided: {sorted(lost)}"
            if len(sqs.messages) != 1 or not sqs.messages[0].get("reason"):
                return f"failure destination got {len(sqs.messages)} message(s)"
            return None

        report.check("stream record", name, case)

    def refused() -> str | None:
        good = [enriched(f"g{i}", 1, 666.0 if i == 57 else 10.0 + i, T0 + i) for i in range(100)]
        kin, sqs = MemoryKinesis(), MemorySqs()
        with contextlib.redirect_stdout(io.StringIO()):
            resp = score.process_batch(
                kinesis_event(good), featurestore=store, runtime=RefusingRuntime(runtime),
                kinesis=kin, sqs=sqs, config=score.Config(failure_queue_url=QUEUE),
            )  # fmt: skip
        lost = 99 - len({d["tid"] for d in kin.records})
        report.decisions_lost += max(lost, 0)
        if resp["batchItemFailures"] or lost or len(sqs.messages) != 1:
            return f"failures {resp['batchItemFailures']}, lost {lost}, rejected {len(sqs.messages)}"
        return None

    report.check("stream record", "row refused by the endpoint (400) in a batch of 100", refused)


# --- 3. store writes and configuration -------------------------------------------------------
def _store_cases(report: Report, root: Path) -> None:
    fg = spec.STREAMING_FEATURE_GROUP
    fs = LocalFeatureStoreRuntime(root / "store-cases.sqlite")
    types = dict(fg.features)

    def record(event_time: str, **override: str) -> list[dict[str, str]]:
        out = []
        for name in fg.feature_names:
            if name == fg.record_identifier:
                v = "1"
            elif name == fg.event_time:
                v = event_time
            else:
                v = "1" if types[name] == "Integral" else "1.0"
            out.append({"FeatureName": name, "ValueAsString": override.get(name, v)})
        return out

    for value in ("nan", "NaN", "inf", "-inf", "Infinity", "1e999", "abc", "", " "):

        def case(value: str = value) -> str | None:
            try:
                fs.put_record(FeatureGroupName=fg.name, Record=record(value))
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ValidationError":
                    return f"error code {exc.response['Error']['Code']}"
            else:
                return "accepted"
            if fs.get_record(FeatureGroupName=fg.name, RecordIdentifierValueAsString="1"):
                return "stored"
            return None

        report.check("store write", f"event time {value!r}", case)
    integral = next((n for n, t in fg.features if t == "Integral" and n != fg.record_identifier), None)
    if integral:

        def fractional_integral() -> str | None:
            try:
                fs.put_record(FeatureGroupName=fg.name, Record=record("1.0", **{integral: "1.5"}))
            except ClientError as exc:
                return None if exc.response["Error"]["Code"] == "ValidationError" else "wrong code"
            return "accepted"

        report.check("store write", f"{integral} = 1.5", fractional_integral)

    def later_write() -> str | None:
        fs.put_record(FeatureGroupName=fg.name, Record=record("100.0"))
        return None if fs.get_record(FeatureGroupName=fg.name, RecordIdentifierValueAsString="1") else "lost"

    report.check("store write", "valid write after the bad ones", later_write)
    for value in ("abc", "nan", "inf", "1.5", "-0.1", "0x1p-1"):

        def config(value: str = value) -> str | None:
            try:
                score.Config.from_env({"FRAUD_THRESHOLD": value})
            except ConfigError as exc:
                return None if "FRAUD_THRESHOLD" in str(exc) else f"message {exc}"
            return "accepted"

        report.check("lambda config", f"FRAUD_THRESHOLD={value}", config)


# --- 4. CLI inputs, signals, the replay with Flink ----------------------------------------------
def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run_pipeline.py", *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str | None:
    """A non-zero exit with one `error:` line (argparse's usage lines before its error line count as
    the parser's standard answer), no traceback."""
    errors = [x for x in result.stderr.splitlines() if x.strip() and not x.startswith(("[replay]", "["))]
    if result.returncode == 0:
        return "exit 0"
    if "Traceback" in result.stderr:
        return "traceback"
    if result.returncode == 2 and errors and ": error: argument " in errors[-1]:
        return None  # refused by the argument parser, before anything started
    if len(errors) != 1 or not errors[0].startswith("error:"):
        return f"{len(errors)} error lines: {errors[-3:]}"
    return None


def _work_dir(root: Path, model: Path) -> Path:
    """A `local`-run layout for the replay: a snapshot table and a deployment record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = root / "work"
    snap = work / "features" / "snapshots"
    snap.mkdir(parents=True, exist_ok=True)
    day = int(T0 // 86400) * 86400
    cols: dict[str, Any] = {
        spec.CARD_ID: pa.array([1, 2, 3], pa.int64()),
        "cutoff": pa.array([day] * 3, pa.int64()),
    }
    for name in getattr(spec, "SNAPSHOT_FEATURES", ("num_trans_last_1w", "avg_amt_last_1w")):
        cols[name] = (
            pa.array([5.0, 6.0, 7.0]) if not name.startswith("num_") else pa.array([5, 6, 7], pa.int64())
        )
    pq.write_table(pa.table(cols), snap / "part-0.parquet")
    (work / "endpoint").mkdir(parents=True, exist_ok=True)
    (work / "endpoint" / "deployed.json").write_text(
        json.dumps({"model_data": str(model), "version": 1, "endpoint_name": spec.ENDPOINT_NAME})
    )
    return work


def _events(path: Path, n: int, *, warmup_collision: bool = True, bom: bool = True) -> int:
    rng = random.Random(7)
    lines = []
    if warmup_collision:
        lines.append(
            json.dumps({"tid": "e0", "cc_num": 1, "amount": 3.0, "trans_ts": T0 + 1, "warmup": True})
        )
    for i in range(n):
        ev = {"tid": f"e{i}", "cc_num": 1 + rng.randrange(3), "amount": round(rng.uniform(1, 500), 2),
              "trans_ts": T0 + 600 + i * 3, "fraud_label": int(rng.random() < 0.05)}  # fmt: skip
        lines.append(json.dumps(ev))
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text)
    return n


class StickyFailingKinesis:
    """Fails every in-place retry of the first delivery of a seeded 1 % of decisions: the handler
    reports them, and Kinesis-style re-delivery re-sends the rest of their batch."""

    def __init__(self, inner: Any, rate: float = 0.01, seed: int = 3) -> None:
        self.inner, self.rate, self.rng, self.tries = inner, rate, random.Random(seed), {}
        self.sticky: dict[str, bool] = {}

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        out, ok = [], []
        for r in Records:
            tid = json.loads(r["Data"])["tid"]
            sticky = self.sticky.setdefault(tid, self.rng.random() < self.rate)
            self.tries[tid] = self.tries.get(tid, 0) + 1
            if sticky and self.tries[tid] <= RetryPolicy().max_attempts:
                out.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"})
            else:
                ok.append(r)
                out.append({"SequenceNumber": "1", "ShardId": "s"})
        self.inner.put_records(StreamName=StreamName, Records=ok)
        return {"FailedRecordCount": len(Records) - len(ok), "Records": out}


def _replay_cases(report: Report, root: Path, model: Path, *, real_flink: bool) -> None:
    from streaming import replay

    work = _work_dir(root, model)
    events = root / "events.jsonl"
    n = _events(events, 2000 if real_flink else 400)

    def run() -> str | None:
        out = root / "missing-folder" / "decisions.jsonl"

        def faults(clients: dict[str, Any]) -> dict[str, Any]:
            return clients | {"kinesis": StickyFailingKinesis(clients["kinesis"])}

        if not real_flink:
            saved = replay.run_flink
            replay.run_flink = _echo_flink  # type: ignore[assignment]
        try:
            s = replay.run_replay(work, events, out, progress=False, batch_size=100, wrap_clients=faults)
        finally:
            if not real_flink:
                replay.run_flink = saved  # type: ignore[assignment]
        decided = [json.loads(x) for x in out.read_text().splitlines()]
        rejects = [json.loads(x) for x in Path(s["rejects_path"]).read_text().splitlines()]
        ids = [d["decision_id"] for d in decided]
        report.decisions_duplicated += len(ids) - len(set(ids))
        report.duplicates_dropped += s["duplicates_dropped"]
        accounted = {d["tid"] for d in decided} | {json.loads(r["data"]).get("tid") for r in rejects
                                                    if r.get("data", "").startswith("{")}  # fmt: skip
        lost = {f"e{i}" for i in range(n)} - accounted
        report.decisions_lost += len(lost)
        if lost:
            return f"{len(lost)} events without a decision or a reject (e.g. {sorted(lost)[:3]})"
        if s["duplicates_dropped"] == 0 or s["redelivered"] == 0:
            return "no re-delivery happened: the fault injection did not bite"
        return None

    report.check(
        "replay", f"{n} events, 1 % PutRecords failing, warm-up tid collision, BOM, new --out folder", run
    )
    if not real_flink:
        return

    argv = ["replay", "--work-dir", str(work), "--events", str(events), "--out", str(root / "d.jsonl")]
    cli_cases = [
        ("--watermark-seconds -1", [*argv, "--watermark-seconds", "-1"]),
        ("--batch-size 0", [*argv, "--batch-size", "0"]),
        ("--out is a directory", [*argv[:-1], str(root)]),
        ("unreachable --endpoint-url", [*argv, "--endpoint-url", "http://127.0.0.1:9"]),
        ("missing events file", [*argv[:4], str(root / "none.jsonl"), *argv[5:]]),
        ("work dir without a local run", ["replay", "--work-dir", str(root / "none"), *argv[3:]]),
    ]
    for name, args in cli_cases:
        report.check("cli input", f"replay {name}", lambda args=args: _one_line_error(_cli(*args)))

    def sigterm_replay() -> str | None:
        before = _flink_like()
        code, jvms, err = _sigterm_once_java_runs(argv, settle_seconds=1.0)
        time.sleep(0.5)
        left = [p for p in jvms if _alive(p)] + [p for p in _flink_like() if p not in before]
        report.orphans_left += len(left)
        if not jvms:
            return "the Flink JVM never started"
        if code != 143 or "Traceback" in err:
            return f"exit {code}: {err.strip().splitlines()[-1:]}"
        return f"{len(left)} process(es) left" if left else None

    report.check("signal", "SIGTERM to replay while Flink runs", sigterm_replay)

    def rerun() -> str | None:
        result = _cli(*argv, "--json")
        if result.returncode != 0:
            return f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"
        summary = json.loads(result.stdout)
        decided = {json.loads(x)["tid"] for x in (root / "d.jsonl").read_text().splitlines()}
        lost = {f"e{i}" for i in range(n)} - decided
        report.decisions_lost += len(lost)
        if lost:
            return f"{len(lost)} events without a decision"
        return None if summary["decisions"] == n else f"{summary['decisions']} decisions for {n} events"

    report.check("signal", "replay rerun after the SIGTERM completes", rerun)


def _echo_flink(source: Path, sink: Path, watermark_seconds: int, log_path: Path, **_: object) -> float:
    sink.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in source.read_text().splitlines()]
    out = [r | _lone_features(r["amount"]) | {"late": False, "raw": None} for r in rows]
    (sink / "part-0").write_text("".join(json.dumps(r) + "\n" for r in out))
    return 0.0


def _sigterm_once_java_runs(argv: list[str], settle_seconds: float) -> tuple[int, list[psutil.Process], str]:
    """Run `run_pipeline.py ARGV`, wait (up to 120 s) for its Java child (Spark or Flink), let it work
    `settle_seconds`, send SIGTERM: the exit code, the JVMs it had, its stderr."""
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _descendants(proc.pid, "java") and proc.poll() is None:
            time.sleep(0.1)
        jvms = _descendants(proc.pid, "java")
        time.sleep(settle_seconds)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, jvms, err


def _descendants(pid: int, name: str) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [c for c in psutil.Process(pid).children(recursive=True) if name in c.name()]
    return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _flink_like() -> set[int]:
    out = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "streaming/job.py" in cmd or ("org.apache.flink" in cmd and str(REPO) in cmd):
            out.add(p.pid)
    return out


def _process_cases(report: Report, root: Path, model: Path) -> None:
    """Deploy and endpoint signals; `local` input errors and SIGTERM during Spark."""
    from pipeline.local import endpoint
    from training.serve import LocalEndpointServer

    work = root / "deploy"

    def port_conflict() -> str | None:
        other = LocalEndpointServer(model, model_version="other").start()
        try:
            first = endpoint.deploy(work, model, 1)
            try:
                endpoint.deploy(work, model, 2, port=other.port)
            except endpoint.DeployError:
                pass
            else:
                return "deploy reported success on a port held by another server"
            left = [p.pid for p in endpoint.servers(work) if p.pid != first["pid"]]
            report.orphans_left += len(left)
            if endpoint.read_deployment(work) != first or not endpoint.is_live(first):
                return "the previous deployment is not the recorded, serving one"
            return f"{len(left)} server(s) left" if left else None
        finally:
            other.stop()

    report.check("deploy", "port held by another work dir's server", port_conflict)

    def sigterm_deploy() -> str | None:
        from pipeline.local.registry import LocalModelRegistry

        registry = LocalModelRegistry(work / "registry")
        registry.register(spec.MODEL_PACKAGE_GROUP, model, approval_status="Approved")
        proc = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "endpoint", "--work-dir", str(work), "--deploy-latest"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _descendants(proc.pid, "python"):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        record = endpoint.read_deployment(work)
        running = [p.pid for p in endpoint.servers(work)]
        extra = [p for p in running if p != (record or {}).get("pid")]
        report.orphans_left += len(extra)
        if proc.returncode not in (0, 143) or "Traceback" in err:
            return f"exit {proc.returncode}"
        if not endpoint.is_live(record):
            return "no live deployment recorded"
        return f"{len(extra)} unrecorded server(s)" if extra else None

    report.check("signal", "SIGTERM to `endpoint --deploy-latest` mid-deploy", sigterm_deploy)

    def stop_all() -> str | None:
        endpoint.stop(work)
        left = endpoint.servers(work)
        report.orphans_left += len(left)
        return f"{len(left)} left" if left else None

    report.check("deploy", "`endpoint --stop` finds every server", stop_all)

    def sigterm_serve() -> str | None:
        ready = root / "ready"
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.serve", "--model", str(model), "--port", "0", "--ready-file", str(ready)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            host, port = ready.read_text().strip().removeprefix("http://").split(":")
            body = (",".join(["1.0"] * len(spec.MODEL_FEATURES)) + "\n").encode() * 100
            conn = http.client.HTTPConnection(host, int(port), timeout=20)
            conn.putrequest("POST", "/invocations")
            conn.putheader("Content-Type", "text/csv")
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            conn.send(body[:50])
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            conn.send(body[50:])
            resp = conn.getresponse()
            status = resp.status
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        return None if status == 200 and proc.returncode == 0 else f"status {status}, exit {proc.returncode}"

    report.check("signal", "SIGTERM to the endpoint during a request (drained)", sigterm_serve)

    import pyarrow as pa
    import pyarrow.parquet as pq

    base = {"tid": ["a"], "datetime": ["2020-01-01 00:00:00"], "cc_num": [4000000000000001], "amount": [1.0],
            "fraud_label": [0]}  # fmt: skip
    for name, patch in (
        ("struct amount", {"amount": [{"dollars": 1.0}]}),
        ("list amount", {"amount": [[1.0, 2.0]]}),
        ("binary cc_num", {"cc_num": [b"\x01"]}),
        ("map label", {"fraud_label": [[("a", 1)]]}),
    ):
        path = root / f"{name.replace(' ', '_')}.parquet"
        data = base | patch
        table = (
            pa.table(data)
            if name != "map label"
            else pa.table(base | {"fraud_label": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64()))})
        )
        pq.write_table(table, path)
        report.check("cli input", f"local --transactions with a {name} column",
                     lambda path=path: _one_line_error(_cli("local", "--transactions", str(path), "--work-dir",
                                                            str(root / "w"), "--no-stream")))  # fmt: skip
    report.check("cli input", "local --transactions missing file",
                 lambda: _one_line_error(_cli("local", "--transactions", str(root / "no.csv"), "--work-dir",
                                              str(root / "w"), "--no-stream")))  # fmt: skip

    def sigterm_spark() -> str | None:
        argv = ["local", "--rows", "30000", "--work-dir", str(root / "spark"), "--no-stream"]
        code, jvms, err = _sigterm_once_java_runs(argv, settle_seconds=3.0)
        _, alive = psutil.wait_procs(jvms, timeout=15)
        report.orphans_left += len(alive)
        if not jvms:
            return "the Spark JVM never started"
        if code != 143 or "Traceback" in err or len(err.strip().splitlines()[-1:]) != 1:
            return f"exit {code}"
        return f"{len(alive)} JVM(s) left" if alive else None

    report.check("signal", "SIGTERM to local during the Spark step", sigterm_spark)


# --- main --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        yield Path(tmp)


def run(quick: bool = False) -> dict[str, Any]:
    """Run the suite; `quick` skips the cases that start Flink, Spark or CLI processes."""
    t0 = time.perf_counter()
    report = Report()
    logging.getLogger("training.serve").setLevel(logging.ERROR)  # each refused request logs a warning
    with _workspace() as root:
        model = _model(root)
        server = LocalEndpointServer(model).start()
        store = _store(root / "store.sqlite")
        try:
            _endpoint_cases(report, server)
            _record_cases(report, store, server.url)
            _store_cases(report, root)
            _replay_cases(report, root, model, real_flink=not quick)
            if not quick:
                _process_cases(report, root, model)
        finally:
            server.stop()
            store.close()
    report.seconds = round(time.perf_counter() - t0, 1)
    return {**report.totals(), "seconds": report.seconds, "quick": quick,
            "failures": [asdict(c) for c in report.cases if not c.clean],
            "cases": [asdict(c) for c in report.cases]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip Flink, Spark and CLI processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'category':<18} {'tried':>5} {'clean':>5}")
    for cat, d in result["by_category"].items():
        print(f"{cat:<18} {d['tried']:>5} {d['clean']:>5}")
    print(
        f"inputs tried {result['inputs_tried']}, handled cleanly {result['handled_cleanly']}, "
        f"decisions lost {result['decisions_lost']}, duplicated after de-dup "
        f"{result['decisions_duplicated_after_dedup']} ({result['duplicates_dropped']} re-deliveries dropped), "
        f"orphans left {result['orphans_left']} in {result['seconds']} s"
    )
    for f in result["failures"]:
        print(f"NOT CLEAN  {f['category']}: {f['name']}: {f['detail']}")
    ok = (
        result["handled_cleanly"] == result["inputs_tried"]
        and result["decisions_lost"] == 0
        and result["decisions_duplicated_after_dedup"] == 0
        and result["orphans_left"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
