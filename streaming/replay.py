"""Local replay of the streaming path: events -> Flink job -> both Lambda handlers -> decisions.

    python run_pipeline.py replay --work-dir DIR --events EVENTS.jsonl --out DECISIONS.jsonl

Uses what a previous `local` run left in DIR: the snapshot table (DIR/features/snapshots) and the
deployed model (DIR/endpoint/deployed.json). Like production with a nightly refresh, it starts
from its own empty online store (DIR/replay/online-store.sqlite), publishes the snapshot of the
first event's day, and publishes each following day's snapshot when event time crosses midnight
(before scoring that day's events). The Lambdas run unchanged with local clients: the SQLite
store, the local endpoint, a Kinesis sink appending to DECISIONS.jsonl and a failure queue
appending to the rejects file.

Exactly one decision per event: the handlers retry failed records the way Kinesis does (from the
lowest failed sequence number on), so some records are decided twice; DECISIONS.jsonl is what a
de-duplicating consumer keeps (the first decision per `decision_id`), and the summary counts the
re-deliveries as `duplicates_dropped`. The Flink job runs in its own process group, which is
killed on any exit (error, Ctrl-C, SIGTERM): no Flink JVM outlives the replay.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from features import spec
from lambdas import common
from shared.cli import non_negative_int, positive_int
from shared.errors import UserError
from shared.signals import INTERRUPTS, Interrupted, describe
from streaming import launch
from streaming.sql import DEFAULT_WATERMARK_SECONDS

RAW_FIELD = spec.REJECTED_RAW_FIELD  # set by the Flink job on records it could not place

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = spec.SNAPSHOT_PERIOD_SECONDS
DEFAULT_BATCH_SIZE = 100
MAX_REDELIVERIES = 3
UTF8_BOM = b"\xef\xbb\xbf"


class ReplayError(UserError, RuntimeError):
    """A user-facing failure (missing inputs, Flink failed): one line on stderr, exit 2."""


# --- local stand-ins for the two AWS destinations --------------------------------------------
class LocalKinesisSink:
    """`kinesis.put_records` for the decisions stream, read by a de-duplicating consumer: the file
    gets the first decision per `decision_id` (lambdas.common.DecisionDeduplicator); re-deliveries
    are counted in `duplicates_dropped`. `dedupe=False` appends every record (the raw stream)."""

    def __init__(self, path: str | Path, *, dedupe: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        self._seq = 0
        self.consumer = common.DecisionDeduplicator() if dedupe else None
        self.written = 0

    @property
    def duplicates_dropped(self) -> int:
        return self.consumer.duplicates_dropped if self.consumer else 0

    def put_records(self, *, StreamName: str, Records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = []
        for rec in Records:
            data = rec["Data"]
            text = (data.decode() if isinstance(data, bytes) else data).rstrip("\n")
            self._seq += 1
            out.append({"SequenceNumber": f"{self._seq:056d}", "ShardId": "shardId-000000000000"})
            if self.consumer is not None:
                key = _decision_id_of(text)
                if key is not None and not self.consumer.accept_id(key):
                    continue
            self._f.write(text + "\n")
            self.written += 1
        self._f.flush()
        return {"FailedRecordCount": 0, "Records": out}

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


_DECISION_PREFIX = '{"decision_id": "'
_UUID_CHARS = frozenset("0123456789abcdef-")


def _decision_id_of(text: str) -> Any:
    """The `decision_id` of a decisions-stream record, or None for anything that is not a decision.

    The score handler writes `json.dumps(decision)` with the id first (a UUID string): that form is
    read off the text; any other record is decoded (an object without the id is not a decision)."""
    n = len(_DECISION_PREFIX)
    if (
        text.startswith(_DECISION_PREFIX)
        and text[n + 36 : n + 39] == '", '
        and _UUID_CHARS.issuperset(text[n : n + 36])
    ):
        return text[n : n + 36]
    try:
        decision = json.loads(text)
    except ValueError:
        return None
    if isinstance(decision, dict) and "decision_id" in decision:
        return decision["decision_id"]
    return None


class LocalFailureQueue:
    """`sqs.send_message_batch` that appends each message body as one line (the rejects file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        self.count = 0

    def send_message_batch(self, *, QueueUrl: str, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        for e in Entries:
            self._f.write(e["MessageBody"].rstrip("\n") + "\n")
            self.count += 1
        self._f.flush()
        return {"Successful": [{"Id": e["Id"], "MessageId": e["Id"]} for e in Entries], "Failed": []}

    def extend_from(self, path: Path) -> None:
        """Append another queue file's messages (the ingest handler's, from its own process)."""
        if path.exists():
            with path.open(encoding="utf-8") as src:
                for line in src:
                    self._f.write(line)
                    self.count += 1
            self._f.flush()

    def reject(self, reason: str, raw: str, stage: str, **extra: Any) -> None:
        """A reject found before any stream (the input file itself)."""
        self._f.write(json.dumps({"reason": reason, "stage": stage, "data": raw, **extra}) + "\n")
        self.count += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


# --- snapshots -------------------------------------------------------------------------------
class SnapshotPublisher:
    """Publishes daily snapshots from the Spark snapshot table into the replay's online store."""

    def __init__(self, snapshots_dir: Path, featurestore: Any) -> None:
        self.dir = snapshots_dir
        self.store = featurestore
        self.published_day: int | None = None
        self.cards: set[int] = set()
        self.days: list[int] = []

    COLUMNS = (spec.CARD_ID, "cutoff", *spec.SNAPSHOT_FEATURES)

    def check(self) -> None:
        """Fail before the (slow) Flink run when the table is unreadable or lacks a column."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        try:
            names = set(ds.dataset(self.dir, format="parquet").schema.names)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ReplayError(f"cannot read snapshot table {self.dir}: {_one_line(exc)}") from None
        missing = [c for c in self.COLUMNS if c not in names]
        if missing:
            raise ReplayError(f"snapshot table {self.dir} lacks column(s): {', '.join(missing)}")

    def _day_rows(self, day: int) -> list[tuple[Any, ...]]:
        """(card, *snapshot features) of one cut-off."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        try:
            table = ds.dataset(self.dir, format="parquet").to_table(
                columns=[spec.CARD_ID, *spec.SNAPSHOT_FEATURES], filter=ds.field("cutoff") == day * DAY
            )
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ReplayError(f"cannot read snapshot table {self.dir}: {_one_line(exc)}") from None
        d = table.to_pydict()
        return list(zip(*(d[c] for c in (spec.CARD_ID, *spec.SNAPSHOT_FEATURES)), strict=True))

    def publish(self, day: int) -> int:
        """Write day's snapshot (event time = its cut-off); cards absent that day get all 0."""
        fg = spec.BATCH_FEATURE_GROUP
        kinds = dict(fg.features)
        cutoff = repr(float(day * DAY))
        rows = self._day_rows(day)
        seen = {int(r[0]) for r in rows}
        rows += [(c, *(0 for _ in spec.SNAPSHOT_FEATURES)) for c in self.cards - seen]
        bulk = getattr(self.store, "bulk", contextlib.nullcontext)  # the local store: one commit
        with bulk():
            for card, *snapshot in rows:
                values = {spec.CARD_ID: str(int(card)), fg.event_time: cutoff}
                for name, v in zip(spec.SNAPSHOT_FEATURES, snapshot, strict=True):
                    values[name] = str(int(v)) if kinds[name] == "Integral" else repr(float(v))
                self.store.put_record(
                    FeatureGroupName=fg.name,
                    Record=[{"FeatureName": k, "ValueAsString": values[k]} for k in fg.feature_names],
                )
        self.cards |= seen
        self.published_day = day
        self.days.append(day)
        return len(rows)

    def advance_to(self, day: int) -> None:
        """Publish the snapshot of `day` if event time has crossed into it (never goes back)."""
        if self.published_day is None or day > self.published_day:
            self.publish(day)


# --- helpers ---------------------------------------------------------------------------------
def run_flink(
    source: Path,
    sink: Path,
    watermark_seconds: int,
    log_path: Path,
    *,
    parallelism: int | None = None,
    timeout: float | None = None,
) -> float:
    """The Flink job as a subprocess of its own venv (its pins clash with the main one), in its own
    process group, killed with everything in it on any exit of ours (streaming/launch.py); wall seconds."""
    if sink.exists():
        shutil.rmtree(sink)
    args = ["--watermark-seconds", str(watermark_seconds)]
    if parallelism is not None:
        args += ["--parallelism", str(parallelism)]
    try:
        return launch.run_job(source, sink, log_path, args, timeout=timeout, jvm_options=JVM_OPTIONS)
    except launch.FlinkJobError as exc:
        raise ReplayError(str(exc)) from None


JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
"""For the replay's Flink JVM: C1 only. Most of a replay-sized job is JVM start-up, which C2's
compilations slow down; the job's output is the same (flags given in JVM_ARGS come later and win)."""


def start_flink(source: Path, sink: Path, watermark_seconds: int, log_path: Path) -> subprocess.Popen:
    """The Flink job started, not waited for (`FlinkRun` follows it): the handlers read its output
    while it runs, as the Lambdas read the card-features stream on AWS. Own process group (launch.py)."""
    if sink.exists():
        shutil.rmtree(sink)
    args = ["--watermark-seconds", str(watermark_seconds)]
    try:
        return launch.start_job(source, sink, log_path, args, jvm_options=JVM_OPTIONS)
    except launch.FlinkJobError as exc:  # no Flink environment: one line, as for run_flink
        raise ReplayError(str(exc)) from None


class FlinkRun:
    """The running Flink job: `finished()` polls it (ReplayError if it failed, with the log's tail);
    `done` is set once it exited 0, for the ingest handler's process; `stop()` kills its group."""

    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc, self.log_path = proc, log_path
        self.t0 = time.perf_counter()
        self.seconds: float | None = None
        self.ended_at: float | None = None
        self.done = multiprocessing.get_context("fork").Event()
        self.stopped = False
        # The exit time as it happens, also while nobody polls (a pipeline run trains meanwhile).
        # Python < 3.13 on macOS has no os.waitid: there the exit time is the first poll's.
        self.exited_at: float | None = None
        if hasattr(os, "waitid"):
            threading.Thread(target=self._note_exit, name="flink-exit", daemon=True).start()

    def _note_exit(self) -> None:
        """Waits without reaping (WNOWAIT): `finished()`'s `poll()` still reaps the job and reads its
        exit code, and Popen's lock is never held here."""
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # already reaped by `finished()`'s poll, which noted the time
            return
        self.exited_at = time.perf_counter()

    def finished(self) -> bool:
        if self.seconds is not None:
            return True
        code = self.proc.poll()
        if code is None:
            return False
        self.ended_at = self.exited_at or time.perf_counter()
        self.seconds = self.ended_at - self.t0  # its group's leftovers are killed by `stop()` at the end
        if code != 0:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            tail = text.strip().splitlines()[-5:]
            raise ReplayError(f"Flink job failed (exit {code}, log {self.log_path}): {' | '.join(tail)}")
        self.done.set()
        return True

    def stop(self) -> None:
        """Kill the job's process group, once: a later signal to the group of a reaped leader could
        reach a group that has reused its pid by then."""
        if not self.stopped:
            self.stopped = True
            launch.stop_job(self.proc)


_IN_PROGRESS = re.compile(r"\.(part-[^/]*)-0-(\d+)\.inprogress\.[^/]+")


def _text_lines(f: Any) -> Iterator[str]:
    """The non-blank lines of a text stream, without their newline (launch.output_lines' rule)."""
    for line in f:
        if line.strip():
            yield line.rstrip("\n")


def enriched_lines(sink: Path) -> Iterator[str]:
    """The Flink output lines (finished part files only, in write order)."""
    for p in launch.finished_parts(sink):
        with p.open(encoding="utf-8") as f:
            yield from _text_lines(f)


class OutputFollower:
    """The Flink output lines while the job runs, then the rest once it has finished: exactly the
    lines `enriched_lines` gives after the job, in the same order.

    While `finished()` is False, whole lines are read from the job's single in-progress part file
    (one subtask: `.PREFIX-0-N.inprogress.ID`); part N is complete once part N+1 exists (Flink
    closes a part before it opens the next). Once finished, the finished part files are read in
    order, each from where the same file (inode) was left. Anything unusual while running (another
    subtask, a gap in the counters, a carriage return, a part ending mid-line) stops the early reading
    and leaves the rest to that final pass; the final pass checks that what was read early is the
    head of the finished output (ReplayError otherwise)."""

    CHUNK = 1 << 18

    def __init__(self, sink: Path, finished: Callable[[], bool], poll_seconds: float = 0.02) -> None:
        self.sink, self.finished, self.poll_seconds = sink, finished, poll_seconds
        self.consumed: dict[int, int] = {}  # inode -> bytes of whole lines given out
        self.order: list[int] = []  # inodes in the order they were read
        self._file: Any = None
        self._part: int | None = None
        self._prefix: str | None = None
        self._buf = b""
        self._early = True

    def __iter__(self) -> Iterator[str]:
        try:
            while not self.finished():
                lines = self._read_available() if self._early else []
                if lines:
                    yield from lines
                else:
                    time.sleep(self.poll_seconds)
            yield from self._rest()
        finally:
            if self._file is not None:
                self._file.close()

    def _in_progress(self) -> dict[int, Path] | None:
        """Counter -> path of the in-progress parts; None when the output is not one subtask's."""
        parts: dict[int, Path] = {}
        try:
            entries = list(os.scandir(self.sink))
        except FileNotFoundError:
            return {}
        for e in entries:
            if not e.name.startswith("."):
                continue
            m = _IN_PROGRESS.fullmatch(e.name)
            if m is None or (self._prefix is not None and m.group(1) != self._prefix):
                return None
            if self._prefix is None:
                self._prefix = m.group(1)
            parts[int(m.group(2))] = Path(e.path)
        return parts

    def _read_available(self) -> list[str]:
        parts = self._in_progress()
        if parts is None:
            self._early = False
            return []
        if self._file is None:
            if not parts:
                return []
            if self._part is None:
                self._part = min(parts)
            path = parts.get(self._part)
            if path is None:
                return []
            try:
                self._file = path.open("rb")
            except FileNotFoundError:  # renamed as the job finishes: the final pass reads it
                self._early = False
                return []
            inode = os.fstat(self._file.fileno()).st_ino
            self.order.append(inode)
            self.consumed[inode] = 0
        chunk = self._file.read(self.CHUNK)
        if not chunk and self._part is not None and self._part + 1 in parts:
            chunk = self._file.read()  # closed before the next one opened: this is all of it
            lines = self._take(chunk)
            if self._buf or not self._early:
                self._early = False  # ends mid-line (or a carriage return): the final pass reads it
                return lines
            self._file.close()
            self._file, self._part = None, self._part + 1
            return lines or self._read_available()
        return self._take(chunk)

    def _take(self, chunk: bytes) -> list[str]:
        """The whole lines of buffer + chunk (counted as consumed), keeping a partial last line."""
        data = self._buf + chunk
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._buf = data
            return []
        if b"\r" in data[:end]:  # universal newlines: left to the text-mode final pass
            self._early = False
            self._buf = b""
            return []
        self._buf = data[end:]
        inode = self.order[-1]
        self.consumed[inode] += end
        text = data[:end].decode("utf-8")
        return [line for line in text.split("\n")[:-1] if line.strip()]

    def _rest(self) -> Iterator[str]:
        if self._file is not None:
            self._file.close()
            self._file = None
        files = launch.finished_parts(self.sink)
        inodes = [p.stat().st_ino for p in files]
        head = inodes[: len(self.order)]
        full = all(self.consumed[i] == files[k].stat().st_size for k, i in enumerate(self.order[:-1]))
        if head != self.order or not full:
            raise ReplayError(
                f"the Flink output in {self.sink} is not what was read while the job ran: rerun the replay"
            )
        for p, inode in zip(files, inodes, strict=True):
            with p.open("rb") as raw:
                raw.seek(self.consumed.get(inode, 0))
                with io.TextIOWrapper(raw, encoding="utf-8") as f:
                    yield from _text_lines(f)


# The Flink job's rows are JSON objects with the sink schema's keys in order (streaming/sql.py):
# tid, cc_num, amount, trans_ts first; late, beyond_lateness, raw, reject_reason last.
_ROW_HEAD = re.compile(
    r'\{"tid":"([^"\\\x00-\x1f]*)","cc_num":[^,"]*,"amount":[^,"]*,'
    r'"trans_ts":(-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?),'
)
_ROW_TAIL = re.compile(
    r',"late":(true|false),"beyond_lateness":(?:true|false),"raw":null,"reject_reason":null\}\Z'
)
_ROW_TAIL_MAX = len(',"late":false,"beyond_lateness":false,"raw":null,"reject_reason":null}')


def flink_row_fields(line: str) -> tuple[str, bool, float | int] | None:
    """(tid, late, trans_ts) of an accepted Flink row (`raw` null), read off its text, as
    `json.loads` would give them; None for any line not in that exact form (the caller decodes it).

    The replay routes every row before the handlers see it; a full decode of each ~400-byte row
    cost more than the rest of the routing. A tid with escapes, a row Flink set aside, keys in
    another order: all fall back to the decoder."""
    head = _ROW_HEAD.match(line)
    if head is None:
        return None
    tail = _ROW_TAIL.search(line, max(head.end() - 1, len(line) - _ROW_TAIL_MAX))
    if tail is None:
        return None
    number = head.group(2)
    event_time = float(number) if head.group(3) or head.group(4) else int(number)
    return head.group(1), tail.group(1) == "true", event_time


_RUN_FLINK = run_flink
"""The launcher this module defines: when `run_flink` is still it, the replay starts the job with
`start_flink` and follows its output instead (same job, same lines, same order)."""


def _endpoint(work_dir: Path, endpoint_url: str | None) -> tuple[str, str, Any]:
    """(endpoint name, url, server-or-None).

    `endpoint_url` given: that endpoint, which must answer (no silent fallback to another model).
    Else the deployed server, when the record's URL is answered by that very server (its PID,
    instance id and model version: a port taken over by another work dir's server does not count);
    else an in-process server on the deployed model artifact."""
    from pipeline.local import endpoint as local_endpoint

    if endpoint_url:
        if not _ping(endpoint_url):
            raise ReplayError(f"--endpoint-url {endpoint_url} does not answer GET /ping")
        return spec.ENDPOINT_NAME, endpoint_url, None
    deployed_path = work_dir / "endpoint" / "deployed.json"
    if not deployed_path.exists():
        raise ReplayError(f"no deployed model: {deployed_path} missing (run `run_pipeline.py local` first)")
    deployed = local_endpoint.read_deployment(work_dir)
    if deployed is None:
        raise ReplayError(
            f"deployment record {deployed_path} is unreadable: redeploy with `endpoint --deploy-latest`"
        )
    name = deployed.get("endpoint_name") or spec.ENDPOINT_NAME
    if local_endpoint.is_live(deployed):
        return name, deployed["url"], None
    from training.serve import LocalEndpointServer

    model = deployed.get("model_data")
    if not model or not Path(model).exists():
        raise ReplayError(f"deployed model artifact not found: {model!r} (from {deployed_path})")
    server = LocalEndpointServer(None)
    try:
        server.load_model(model, None if deployed.get("version") is None else str(deployed["version"]))
    except Exception as exc:  # any loader failure (artifact, xgboost) is a user error here
        server.stop()
        raise ReplayError(f"cannot load the deployed model {model}: {_one_line(exc)}") from None
    server.start()
    return name, server.url, server


def _one_line(exc: BaseException) -> str:
    """An exception as one line (Arrow and XGBoost messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _ping(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(f"[replay] {msg}", file=sys.stderr, flush=True)


class IngestProcess:
    """`Replay.ingest_all` in a forked child, so the ingest handler runs beside the score handler
    (two event source mappings on AWS; two cores here). The child reports its counters through a
    pipe and leaves with `os._exit` (no inherited clean-up runs twice); `stop` ends it on any exit
    of the parent (the child is daemonic too). Its work is finite: it ends when the stream is read."""

    def __init__(self, replay: Replay) -> None:
        # Buffered writes would otherwise be written twice (the child's copy of a buffer is flushed
        # when the child drops the object): nothing may be pending at the fork.
        for f in (replay.queue, replay.sink, replay.lambda_log, sys.stdout, sys.stderr):
            f.flush()
        ctx = multiprocessing.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=self._child, args=(replay, send), daemon=True)
        self._proc.start()
        send.close()

    @staticmethod
    def _child(replay: Replay, send: Any) -> None:
        code = 0
        try:
            send.send(("ok", replay.ingest_all()))
        except BaseException as exc:  # reported to the parent, which raises it
            code = 1
            with contextlib.suppress(Exception):
                send.send(("error", _one_line(exc)))
        finally:
            os._exit(code)

    def result(self) -> dict[str, Any]:
        try:
            status, value = self._recv.recv()
        except EOFError:
            raise ReplayError(f"the ingest handler's process died (exit {self._proc.exitcode})") from None
        self._proc.join()
        if status != "ok":
            raise ReplayError(f"the ingest handler failed: {value}")
        return value

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._recv.close()


# --- the replay ------------------------------------------------------------------------------
class Replay:
    """One replay run as named steps: `prepare` (check inputs, clear outputs), `read_events` (input
    validation; valid events go to Flink), `run_flink_job`, `score` (both handlers on Kinesis-shaped
    batches, snapshots published as event time crosses midnight), `summarise`. The counters the
    steps share are attributes; `run` performs the steps in order, `start` and `finish` in two
    halves with the caller's work between them (a pipeline run trains its model there)."""

    def __init__(
        self,
        work_dir: str | Path,
        events_path: str | Path,
        out_path: str | Path,
        *,
        rejects_path: str | Path | None = None,
        watermark_seconds: int = DEFAULT_WATERMARK_SECONDS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        endpoint_url: str | None = None,
        threshold: float = spec.DECISION_THRESHOLD,
        progress: bool = True,
        wrap_clients: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.work_dir, self.events_path, self.out_path = Path(work_dir), Path(events_path), Path(out_path)
        self.rejects_path = (
            Path(rejects_path)
            if rejects_path
            else self.out_path.with_name(self.out_path.stem + ".rejects.jsonl")
        )
        self.snapshots_dir = self.work_dir / "features" / "snapshots"
        self.rdir = self.work_dir / "replay"
        self.db = self.rdir / "online-store.sqlite"
        self.flink_in = self.rdir / "flink-input.jsonl"
        self.flink_out = self.rdir / "flink-output"
        self.watermark_seconds, self.batch_size = watermark_seconds, batch_size
        self.endpoint_url, self.threshold = endpoint_url, threshold
        self.progress, self.wrap_clients = progress, wrap_clients
        # read_events
        self.labels: dict[str, int] = {}
        self.warmup: set[str] = set()
        self.n_lines = self.n_valid = 0
        # run_flink_job / score
        self.flink_s = self.handler_s = self.ingest_s = self.after_flink_s = self.waited_s = 0.0
        self.t_started = 0.0
        self.flink: FlinkRun | None = None
        self.url: str | None = None
        self.server: Any = None
        self.latencies: list[float] = []
        self.decided: list[dict[str, Any]] = []
        self.batch: list[str] = []
        self.seq = 1
        self.n_decisions = self.n_late = self.n_flagged = self.enriched_count = self.n_flink_rejects = 0
        self.tp = self.fp = self.fn = 0
        self.redelivered = self.lost = 0

    def run(self) -> dict[str, Any]:
        self.start()
        try:
            return self.finish()
        finally:
            self.stop()

    def start(self) -> None:
        """Everything before the handlers: inputs checked, events validated, the Flink job started.
        None of it needs the model, so a pipeline run can start it while the model trains."""
        self.prepare()
        self.read_events()
        try:
            self.run_flink_job()
        except BaseException:
            self.stop()
            raise
        self.t_started = time.perf_counter()

    def finish(self, endpoint_url: str | None = None) -> dict[str, Any]:
        """The handlers on the job's output, then the summary; the job is stopped on any exit. The
        time between `start` and `finish` (the caller's, e.g. training) is not the replay's."""
        self.waited_s = time.perf_counter() - self.t_started
        if endpoint_url is not None:
            self.endpoint_url = endpoint_url
        try:
            self.score()
        finally:
            self.stop()
        return self.summarise()

    def stop(self) -> None:
        """Kill the Flink job's process group if it was started (once: `FlinkRun.stop`)."""
        if self.flink is not None:
            self.flink.stop()

    def _progress(self, msg: str) -> None:
        _progress(msg, self.progress)

    # -- step 0: inputs checked, outputs cleared, local destinations opened
    def prepare(self) -> None:
        if not self.events_path.is_file():
            raise ReplayError(f"events file not found: {self.events_path}")
        if not self.snapshots_dir.is_dir():
            raise ReplayError(
                f"snapshot table not found: {self.snapshots_dir} (run `run_pipeline.py local` first)"
            )
        if self.batch_size < 1:
            raise ReplayError("--batch-size must be >= 1")
        if self.watermark_seconds < 0:
            raise ReplayError("--watermark-seconds must be >= 0")
        SnapshotPublisher(self.snapshots_dir, None).check()
        try:
            self.rdir.mkdir(parents=True, exist_ok=True)
            for p in (self.out_path, self.rejects_path):
                if p.is_dir():
                    raise ReplayError(f"{p} is a directory: give a file path for the decisions/rejects")
                p.parent.mkdir(parents=True, exist_ok=True)  # a missing output folder is created
                p.unlink(missing_ok=True)
        except OSError as exc:
            raise ReplayError(f"cannot write the replay outputs: {_one_line(exc)}") from None
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.db) + suffix).unlink(missing_ok=True)
        (self.rdir / "summary.json").unlink(missing_ok=True)  # a previous run's, about outputs now gone
        self.t_start = time.perf_counter()
        self.sink = LocalKinesisSink(self.out_path)
        self.queue = LocalFailureQueue(self.rejects_path)
        self.queue_url = f"file://{self.rejects_path.resolve()}"

    # -- step 1: validate the input file (what producers' SDKs would refuse); valid events go to Flink
    def read_events(self) -> None:
        # Warm-up events get their own tids on the way into Flink, so a real event sharing a warm-up
        # line's tid is still decided (the original tid is only the producer's, not unique).
        warmup_prefix = f"warmup-{uuid.uuid4().hex}-"
        with self.events_path.open("rb") as src, self.flink_in.open("w", encoding="utf-8") as dst:
            for lineno, raw in enumerate(src, 1):
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]  # a UTF-8 byte-order mark some editors write
                if not raw.strip():
                    continue
                self.n_lines += 1
                try:
                    ev = common.parse_event(raw.rstrip(b"\r\n"))
                except common.MalformedRecord as exc:
                    self.queue.reject(
                        str(exc), raw.decode("utf-8", "replace").rstrip("\n"), "input", line=lineno
                    )
                    continue
                if ev.pop("warmup", False) is True:  # history for the windows only (streaming/events.py)
                    self.n_lines -= 1
                    ev["tid"] = f"{warmup_prefix}{lineno}"
                    self.warmup.add(ev["tid"])
                else:
                    self.n_valid += 1
                    if ev.get(spec.LABEL) is not None:
                        self.labels[ev["tid"]] = int(ev[spec.LABEL])
                dst.write(json.dumps(ev) + "\n")
        self._progress(
            f"{self.n_lines:,} events read, {self.n_lines - self.n_valid:,} rejected at input, "
            f"{len(self.warmup):,} warm-up"
        )

    # -- step 2: the Flink job on the valid events
    def run_flink_job(self) -> None:
        """Start the job; the handlers (`score`) read its output as it is written. A replaced
        `run_flink` (tests and the fault suite stand in for the job with it) runs to the end first."""
        if not self.n_valid:
            return
        log = self.rdir / "flink.log"
        if run_flink is not _RUN_FLINK:  # module-level names, looked up at call time
            self._progress(f"running the Flink job (watermark {self.watermark_seconds}s)")
            self.flink_s = run_flink(self.flink_in, self.flink_out, self.watermark_seconds, log)
            self._progress(f"Flink job finished in {self.flink_s:.1f}s")
            return
        self._progress(
            f"starting the Flink job (watermark {self.watermark_seconds}s); the handlers follow its output"
        )
        self.flink = FlinkRun(start_flink(self.flink_in, self.flink_out, self.watermark_seconds, log), log)

    def _flink_finished(self) -> bool:
        """The parent's view of the running job (raises if it failed); tells the ingest process."""
        assert self.flink is not None
        if self.flink.seconds is not None:
            return True
        if not self.flink.finished():
            return False
        self.flink_s = self.flink.seconds or 0.0
        self._progress(f"Flink job finished in {self.flink_s:.1f}s")
        return True

    def _enriched(self, *, in_child: bool = False) -> Iterator[str]:
        """The Flink output lines: followed while the job runs, or read after `run_flink` returned."""
        if self.flink is None:
            return enriched_lines(self.flink_out)
        if not in_child:
            return iter(OutputFollower(self.flink_out, self._flink_finished))
        done, parent = self.flink.done, os.getppid()

        def finished() -> bool:
            if done.is_set():
                return True
            if os.getppid() != parent:
                raise RuntimeError("the replay process is gone")
            return False

        return iter(OutputFollower(self.flink_out, finished))

    # -- step 3: both handlers on Kinesis-shaped batches, local clients
    def score(self) -> None:
        """The two Lambdas consume the enriched stream side by side, as their two event source
        mappings do on AWS: the ingest handler in a child process, the score handler here (it
        reads only the snapshot group, never what the ingest handler writes)."""
        from pipeline.local.feature_store import LocalFeatureStoreRuntime

        self.store = LocalFeatureStoreRuntime(self.db)
        self.publisher = SnapshotPublisher(self.snapshots_dir, self.store)
        self.lambda_log = (self.rdir / "lambda.log").open("w", encoding="utf-8")
        ingest: IngestProcess | None = None
        try:
            if self.n_valid:
                self._connect()
                ingest = IngestProcess(self)
                first: float | None = None
                for line in self._enriched():
                    if first is None:
                        first = time.perf_counter()
                    self._feed(line)
                self._flush()
                self._merge_ingest(ingest.result())
                end = time.perf_counter()
                # from the first enriched record (the handlers start with the Flink job and wait for it)
                self.handler_s = end - first if first is not None else 0.0
                ended = self.flink.ended_at if self.flink is not None else None
                # after the job ended, or from the first record if it had ended before (while waiting)
                if ended is not None and first is not None:
                    self.after_flink_s = end - max(ended, first)
                else:
                    self.after_flink_s = self.handler_s
                self._count_decisions()
        finally:
            if ingest is not None:
                ingest.stop()
            self.lambda_log.close()
            self.sink.close()
            self.queue.close()
            self.store.close()
            if self.server is not None:
                self.server.stop()

    def ingest_all(self) -> dict[str, Any]:
        """The ingest handler on every enriched record, in Kinesis batches with re-delivery. Runs in
        the forked child (IngestProcess): own store connection, own failure file, own log."""
        from pipeline.local.feature_store import LocalFeatureStoreRuntime

        store = LocalFeatureStoreRuntime(self.db)
        self.queue = LocalFailureQueue(self.rejects_path.with_name(self.rejects_path.name + ".ingest"))
        self.queue_client = self.queue
        clients = {"featurestore": store, "runtime": self.runtime, "kinesis": self.sink, "sqs": self.queue}
        if self.wrap_clients is not None:
            clients = self.wrap_clients(clients)
        fs, sqs = clients["featurestore"], clients["sqs"]

        def invoke(ev: dict[str, Any]) -> set[str]:
            # One local-store commit per batch; a batch whose writes SQLite may have rolled back is
            # redelivered whole (its writes are idempotent under the store's event-time guard).
            with store.group_commit() as tx:
                r = self.ingest.process_batch(ev, featurestore=fs, sqs=sqs, config=self.icfg)
            if not tx["committed"]:
                return {rec["kinesis"]["sequenceNumber"] for rec in ev["Records"]}
            return {f["itemIdentifier"] for f in r["batchItemFailures"]}

        self.seq, self.redelivered, self.lost, batch = 1, 0, 0, []
        t0: float | None = None
        with (
            (self.rdir / "lambda-ingest.log").open("w", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
        ):
            for line in self._enriched(in_child=True):
                if t0 is None:
                    t0 = time.perf_counter()
                if self._route(line, record_rejects=False)[0]:
                    batch.append(line)
                if len(batch) >= self.batch_size:
                    self._deliver(batch, invoke)
                    batch = []
            self._deliver(batch, invoke)
        self.queue.close()
        store.close()
        return {
            "seconds": time.perf_counter() - t0 if t0 is not None else 0.0,
            "redelivered": self.redelivered,
            "lost": self.lost,
            "rejects_path": str(self.queue.path),
            "rejects": self.queue.count,
        }

    def _merge_ingest(self, result: dict[str, Any]) -> None:
        """The child's counters and failure messages into this run's (one rejects file)."""
        self.ingest_s = result["seconds"]
        self.redelivered += result["redelivered"]
        self.lost += result["lost"]
        path = Path(result["rejects_path"])
        self.queue.extend_from(path)
        path.unlink(missing_ok=True)
        log = self.rdir / "lambda-ingest.log"
        if log.exists():
            self.lambda_log.write(log.read_text(encoding="utf-8"))
            log.unlink()

    def _connect(self) -> None:
        """The endpoint, the clients the handlers use (wrapped by `wrap_clients`) and their configs."""
        from lambdas.ingest_aggregates import handler as ingest
        from lambdas.score_transaction import handler as score
        from training.endpoint_client import LocalSageMakerRuntime

        name, self.url, self.server = _endpoint(self.work_dir, self.endpoint_url)
        runtime: Any = LocalSageMakerRuntime({name: self.url})
        self.fs_client, self.runtime = self.store, runtime
        self.sink_client, self.queue_client = self.sink, self.queue
        if self.wrap_clients is not None:
            wrapped = self.wrap_clients(
                {"featurestore": self.store, "runtime": runtime, "kinesis": self.sink, "sqs": self.queue}
            )
            self.fs_client, self.runtime = wrapped["featurestore"], wrapped["runtime"]
            self.sink_client, self.queue_client = wrapped["kinesis"], wrapped["sqs"]
        self.ingest, self.score_handler = ingest, score
        self.icfg = ingest.Config(failure_queue_url=self.queue_url)
        self.scfg = score.Config(
            endpoint_name=name, failure_queue_url=self.queue_url, threshold=self.threshold
        )

    def _feed(self, line: str) -> None:
        """One Flink output line into the current batch, publishing a new day's snapshot first."""
        self.enriched_count += 1
        keep, day = self._route(line)
        if not keep:
            return
        published = self.publisher.published_day
        if day is not None and (published is None or day > published):
            self._flush()  # the previous day's events are scored on the previous snapshot
            self.publisher.advance_to(day)
            self._progress(f"snapshot {time.strftime('%Y-%m-%d', time.gmtime(day * DAY))} published")
        self.batch.append(line)
        if len(self.batch) >= self.batch_size:
            self._flush()

    def _route(self, line: str, *, record_rejects: bool = True) -> tuple[bool, int | None]:
        """(whether the line goes to the handlers, the day it moves event time to or None); a line
        Flink set aside is recorded once, by the scoring side (`record_rejects`).

        Event time advances with the on-time rows only: a late row can come out of Flink ahead of
        on-time rows still waiting for the watermark (the keyed operator emits a late row at once,
        on-time rows when the watermark passes), so it must not move the snapshot day forward."""
        try:
            fields = flink_row_fields(line)
            if fields is not None:  # the common case, read without decoding the whole row
                tid, late, event_time = fields
                if self.warmup and tid in self.warmup:
                    return False, None
                return True, (None if late else int(event_time // DAY))
            row = json.loads(line)
            if self.warmup and row.get("tid") in self.warmup:
                return False, None  # warm-up rows only fill the windows; they are not decided
            if isinstance(row, dict) and row.get(RAW_FIELD) is not None:
                # Flink's rule is stricter than the input check here (e.g. a card number in
                # exponent form): one reject line with the reason, not one per handler.
                if record_rejects:
                    self.queue.reject(common.flink_reject_reason(row[RAW_FIELD]), row[RAW_FIELD], "flink")
                    self.n_flink_rejects += 1
                return False, None
            return True, (None if row.get("late") is not False else int(row[spec.EVENT_TIME] // DAY))
        except (ValueError, TypeError, KeyError, AttributeError):
            return True, None

    def _flush(self) -> None:
        """The current batch through the score handler."""
        self._deliver(self.batch, self._invoke)
        self.batch.clear()

    def _deliver(self, lines: list[str], invoke: Callable[[dict[str, Any]], set[str]]) -> None:
        """One batch to one handler; failed records re-delivered the way Kinesis does."""
        if not lines:
            return
        pending = list(lines)
        for _attempt in range(MAX_REDELIVERIES + 1):
            ev = common.kinesis_event(pending, start_sequence=self.seq, partition_keys=["0"] * len(pending))
            self.seq += len(pending)
            failed = invoke(ev)
            if not failed:
                break
            # Kinesis semantics: redeliver from the lowest failed sequence number on.
            recs = ev["Records"]
            first = min(i for i, r in enumerate(recs) if r["kinesis"]["sequenceNumber"] in failed)
            pending = pending[first:]
            self.redelivered += len(pending)
        else:
            self.lost += len(pending)
            for line in pending:
                self.queue.reject("processing failed after redeliveries", line, "lambda")

    def _invoke(self, ev: dict[str, Any]) -> set[str]:
        """One delivery to the score handler (timed); the failed sequence numbers."""
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(self.lambda_log):
            r2 = self.score_handler.process_batch(
                ev,
                featurestore=self.fs_client,
                runtime=self.runtime,
                kinesis=self.sink_client,
                sqs=self.queue_client,
                config=self.scfg,
                on_decisions=self.decided.extend,
            )
        self.latencies.append((time.perf_counter() - t1) * 1000)
        return {f["itemIdentifier"] for f in r2["batchItemFailures"]}

    def _count_decisions(self) -> None:
        consumer = common.DecisionDeduplicator()  # the summary counts each event's decision once
        for d in self.decided:
            if not consumer.accept(d):
                continue
            self.n_decisions += 1
            self.n_late += bool(d["late"])
            self.n_flagged += bool(d["fraud"])
            y = self.labels.get(d["tid"])
            if y is not None:
                self.tp += int(d["fraud"] and y == 1)
                self.fp += int(d["fraud"] and y == 0)
                self.fn += int((not d["fraud"]) and y == 1)

    # -- step 4: the summary (also written to DIR/replay/summary.json)
    def _idle_wait(self) -> float:
        """The part of the wait between `start` and `finish` after the Flink job had ended: not the
        replay's time (while the job ran, it was)."""
        if self.flink is None:  # no job, or a stand-in that ran to its end inside `start`
            return self.waited_s
        if self.flink.ended_at is None:
            return 0.0
        return self.waited_s - min(self.waited_s, max(0.0, self.flink.ended_at - self.t_started))

    def summarise(self) -> dict[str, Any]:
        total_s = time.perf_counter() - self.t_start - self._idle_wait()
        tp, fp, fn, labels, handler_s = self.tp, self.fp, self.fn, self.labels, self.handler_s
        summary: dict[str, Any] = {
            "events": self.n_lines,
            "warmup_events": len(self.warmup),
            "decisions": self.n_decisions,
            "rejects": self.queue.count,
            "flink_rejects": self.n_flink_rejects,
            "late": self.n_late,
            "fraud_flagged": self.n_flagged,
            "labelled": bool(labels),
            "precision": (tp / (tp + fp) if tp + fp else 0.0) if labels else None,
            "recall": (tp / (tp + fn) if tp + fn else 0.0) if labels else None,
            "duplicates_dropped": self.sink.duplicates_dropped,
            "redelivered": self.redelivered,
            "failed_after_redelivery": self.lost,
            "snapshots_published": [
                time.strftime("%Y-%m-%d", time.gmtime(d * DAY)) for d in self.publisher.days
            ],
            "flink_seconds": round(self.flink_s, 3),
            "flink_output_events": self.enriched_count,
            # both handlers side by side, from the first enriched record (they follow the running job)
            "handler_seconds": round(handler_s, 3),
            "ingest_handler_seconds": round(self.ingest_s, 3),
            "handlers_after_flink_seconds": round(self.after_flink_s, 3),
            "throughput_events_per_s": round(self.n_decisions / handler_s, 1) if handler_s else None,
            "end_to_end_events_per_s": round(self.n_lines / total_s, 1) if total_s else None,
            "scoring_batch_latency_ms": {
                "batch_size": self.batch_size,
                "p50": _round(_percentile(self.latencies, 0.50)),
                "p95": _round(_percentile(self.latencies, 0.95)),
                "p99": _round(_percentile(self.latencies, 0.99)),
            },
            "decisions_path": str(self.out_path),
            "rejects_path": str(self.rejects_path),
            "endpoint": self.url,
            "watermark_seconds": self.watermark_seconds,
            # the replay's own time, Flink's included, without the wait after the job had ended
            "total_seconds": round(total_s, 3),
            "waited_seconds": round(self.waited_s, 3),  # between start and finish
        }
        (self.rdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def run_replay(
    work_dir: str | Path, events_path: str | Path, out_path: str | Path, **options: Any
) -> dict[str, Any]:
    """Replay `events_path` through Flink and both handlers; write decisions and rejects; return the summary.

    `options` are `Replay`'s keyword arguments (rejects_path, watermark_seconds, batch_size,
    endpoint_url, threshold, progress, wrap_clients). `wrap_clients` receives the local clients
    ({"featurestore", "runtime", "kinesis", "sqs"}) and returns the ones the handlers use: the fault
    suite wraps them to inject failures."""
    return Replay(work_dir, events_path, out_path, **options).run()


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable summary block (the `local` runner prints it too)."""
    lat = s["scoring_batch_latency_ms"]
    lines = [
        f"events {s['events']:,}  decisions {s['decisions']:,}  rejects {s['rejects']:,}  late {s['late']:,}  "
        f"fraud flagged {s['fraud_flagged']:,}",
    ]
    if s.get("duplicates_dropped") or s.get("redelivered"):
        lines.append(
            f"re-delivered records {s.get('redelivered', 0):,}; duplicate decisions dropped "
            f"{s.get('duplicates_dropped', 0):,} (one decision per event, by decision_id)"
        )
    if s.get("labelled"):
        lines.append(f"precision {s['precision']:.3f}  recall {s['recall']:.3f}")
    lines.append(
        f"throughput {s['throughput_events_per_s']} events/s (handlers), {s['end_to_end_events_per_s']} events/s "
        f"end to end incl. Flink {s['flink_seconds']}s"
    )
    lines.append(
        f"scoring latency per batch of {lat['batch_size']}: p50 {lat['p50']} ms  p95 {lat['p95']} ms  "
        f"p99 {lat['p99']} ms"
    )
    lines.append(f"decisions -> {s['decisions_path']}  rejects -> {s['rejects_path']}")
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------
def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="streaming path locally on an events file (Flink + both Lambdas)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--work-dir", required=True, help="directory of a previous `local` run")
    p.add_argument("--events", required=True, help="events JSON lines")
    p.add_argument("--out", required=True, help="decisions JSON lines (one per parsed event)")
    p.add_argument("--rejects", default=None, help="rejects JSON lines (default: OUT.rejects.jsonl)")
    p.add_argument(
        "--watermark-seconds",
        type=non_negative_int,
        default=DEFAULT_WATERMARK_SECONDS,
        help="bounded out-of-orderness of the Flink watermark (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="Kinesis batch size for the Lambdas",
    )
    p.add_argument(
        "--endpoint-url", default=None, help="use this running endpoint instead of the deployed model"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_cli)


def _cli(args: argparse.Namespace) -> int:
    """Exit 0; through `shared.cli.run`, 2 (ReplayError), 130 (Ctrl-C) or 143 (SIGTERM), one line each.
    The Flink job never outlives it."""
    try:
        s = run_replay(
            args.work_dir,
            args.events,
            args.out,
            rejects_path=args.rejects,
            watermark_seconds=args.watermark_seconds,
            batch_size=args.batch_size,
            endpoint_url=args.endpoint_url,
        )
    except INTERRUPTS as exc:
        raise Interrupted(
            exc, f"replay {describe(exc)}; the Flink job was stopped, rerun to start over"
        ) from None
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0
