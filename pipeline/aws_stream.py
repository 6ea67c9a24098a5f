"""`run_pipeline.py send` and `decisions`: the streaming half on a real account, and its local view.

    python run_pipeline.py send --rows 1000 [--rate 200] [--stream transactions] [--out sent.jsonl]
    python run_pipeline.py send --events events.jsonl [--restamp]
    python run_pipeline.py decisions [--follow] [--since 15m] [--expect sent.jsonl --timeout 600]
    python run_pipeline.py decisions --work-dir work/demo        # the local replay's decisions

`send` puts transactions on the `transactions` stream with PutRecords (at most 500 records and
5 MiB per call, `cc_num` as partition key). Kinesis orders records per shard, but a PutRecords call
that partly fails has written the records after a failed one: re-sending the failed one would put
it behind a later transaction of the same card. So a call carries at most one record per card, and a
card's next record is sent only once the previous one is in the stream: each card stays in order
whatever fails. Exactly the records a call reports as failed are re-sent, with exponential backoff
and full jitter; a whole call refused for throttling is re-sent the same way. The rate is held
steady by spacing calls; simulated events (processing/simulate.py) get their event time when they
are sent, so the live watermark advances.

`decisions` reads `fraud-decisions` across all shards (ListShards, GetShardIterator, GetRecords;
enhanced fan-out would only pay with several consumers or more than 2 MiB/s per shard, and needs a
registered consumer), prints each decision (time, card, amount, score, flagged, late) and a running
summary: count, flagged, fraud rate, p50/p99 of event-to-decision latency (arrival on the stream minus
`trans_ts`, where that is meaningful). Decisions are de-duplicated by `decision_id` (by `tid` for
records without one): the Lambdas deliver at least once. Every AWS call takes its client as an
argument (tests use moto and Stubber); user errors are one line, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import random
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from features import spec
from shared.errors import RunFailed

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024
"""PutRecords limits: 500 records, 5 MiB per call, 1 MiB per record (data + partition key each)."""
DEFAULT_RATE = 200.0
"""Events per second: a fifth of one shard's write limit (1,000 records/s)."""
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
        "LimitExceededException",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
DECISIONS_FILE = Path("replay") / "decisions.jsonl"
"""Where `run_pipeline.py local` has the replay write its decisions, under the work dir."""
DEFAULT_EXPECT_TIMEOUT = 600.0
"""How long `decisions --expect` waits for the last decision by default (Flink, batching, scoring)."""
MEANINGFUL_LATENCY_S = (-60.0, 86400.0)
"""Event-to-decision latencies outside this range come from historical event times: not shown."""


class StreamError(RunFailed):
    """A user-facing failure: one line on stderr (run_pipeline.py), exit 1 (or `code`)."""


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _retryable(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return _error_code(exc) in RETRYABLE_CODES or isinstance(exc, BotoConnectionError | HTTPClientError)


def _backoff(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Full jitter: U(0, min(cap, base * 2**attempt))."""
    return rng() * min(cap, base * (2**attempt))


# --------------------------------------------------------------------------- events to send
@dataclass
class OutgoingRecord:
    """One event to put: its position in the input, partition key, and the bytes once stamped."""

    index: int
    key: str
    event: dict[str, Any] | None = None
    raw: bytes | None = None
    stamp: bool = False
    attempts: int = 0

    def data(self, now: Callable[[], float]) -> bytes:
        """The record's bytes, fixed at the first attempt (a re-send is byte-identical)."""
        if self.raw is None:
            assert self.event is not None
            if self.stamp:
                self.event[spec.EVENT_TIME] = round(now(), 3)
            self.raw = json.dumps(self.event, separators=(",", ":")).encode()
        return self.raw


def simulated_records(rows: int, seed: int, run_id: str) -> list[OutgoingRecord]:
    """`rows` transactions of the study's simulator, in time order; event time set when sent.

    Transaction ids get the run id as prefix, so the decisions of two runs never mix."""
    from processing.simulate import simulate_table

    table = simulate_table(rows=rows, seed=seed)
    columns = {name: table.column(name).to_pylist() for name in ("tid", spec.CARD_ID, spec.AMOUNT)}
    labels = table.column(spec.LABEL).to_pylist() if spec.LABEL in table.column_names else None
    records = []
    for i in range(table.num_rows):
        event: dict[str, Any] = {
            "tid": f"{run_id}-{columns['tid'][i]}",
            spec.CARD_ID: int(columns[spec.CARD_ID][i]),
            spec.AMOUNT: float(columns[spec.AMOUNT][i]),
            spec.EVENT_TIME: None,
        }
        if labels is not None:
            event[spec.LABEL] = int(labels[i])
        records.append(OutgoingRecord(i, str(event[spec.CARD_ID]), event=event, stamp=True))
    return records


def file_records(path: Path, restamp: bool = False) -> list[OutgoingRecord]:
    """Events of a JSON-lines file, sent as they are (bad lines too: the pipeline rejects them with a
    reason); `restamp` sets each JSON object's event time to when it is sent."""
    if not path.is_file():
        raise StreamError(f"events file not found: {path}", code=2)
    records = []
    with path.open("rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and event.get(spec.CARD_ID) is not None:
                key = str(event[spec.CARD_ID])[:256]
            else:
                key = "unkeyed"  # still sent: score_transaction sends it to its DLQ with the reason
            if restamp and isinstance(event, dict):
                records.append(OutgoingRecord(len(records), key, event=event, stamp=True))
            else:
                records.append(OutgoingRecord(len(records), key, raw=line))
    if not records:
        raise StreamError(f"{path} has no events", code=2)
    return records


# --------------------------------------------------------------------------- send
@dataclass
class SendStats:
    total: int
    sent: int = 0
    retried: int = 0
    failed: int = 0
    calls: int = 0
    throttled_calls: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    sent_events: list[bytes] = field(default_factory=list, repr=False)

    def line(self, stream: str) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (
            f"sent {self.sent:,} of {self.total:,} events to {stream} in {self.seconds:.1f} s ({rate:,.0f} events/s): "
            f"retried {self.retried:,}, failed {self.failed:,}"
        )


class RateLimiter:
    """Spaces calls so that `rate` events per second go out steadily (None = no limit)."""

    def __init__(self, rate: float | None, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self._next = clock()

    def acquire(self, n: int) -> None:
        if not self.rate:
            return
        wait = self._next - self.clock()
        if wait > 0:
            self.sleep(wait)
        self._next = max(self._next, self.clock()) + n / self.rate


def send_records(
    kinesis: Any,
    stream: str,
    records: Sequence[OutgoingRecord],
    *,
    rate: float | None = DEFAULT_RATE,
    max_attempts: int = 10,
    base_delay: float = 0.1,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
    progress: Callable[[SendStats], None] | None = None,
    keep_sent: bool = False,
) -> SendStats:
    """Put every record once, per-card order kept; see the module docstring for the protocol."""
    from botocore.exceptions import BotoCoreError, ClientError

    stats = SendStats(total=len(records))
    started = clock()
    limiter = RateLimiter(rate, clock, sleep)
    per_call = MAX_RECORDS_PER_CALL if not rate else max(1, min(MAX_RECORDS_PER_CALL, math.ceil(rate / 5)))
    queues: dict[str, deque[OutgoingRecord]] = {}
    for record in records:
        queues.setdefault(record.key, deque()).append(record)
    heads = [(q[0].index, key) for key, q in queues.items()]  # one record per card in flight
    heapq.heapify(heads)
    consecutive_failures = 0

    def advance(key: str) -> None:
        queue = queues[key]
        queue.popleft()
        if queue:
            heapq.heappush(heads, (queue[0].index, key))

    def give_up(record: OutgoingRecord, reason: str) -> None:
        stats.failed += 1
        if len(stats.failures) < 5:
            stats.failures.append(f"event {record.index + 1}: {reason}")
        advance(record.key)

    while heads:
        batch: list[OutgoingRecord] = []
        size = 0
        while heads and len(batch) < per_call:
            _, key = heads[0]
            record = queues[key][0]
            record_size = len(record.data(now)) + len(key.encode())
            if record_size > MAX_BYTES_PER_RECORD:
                heapq.heappop(heads)
                give_up(record, f"{record_size:,} bytes > the 1 MiB record limit")
                continue
            if size + record_size > MAX_BYTES_PER_CALL:
                break
            heapq.heappop(heads)
            batch.append(record)
            size += record_size
        if not batch:
            continue
        limiter.acquire(len(batch))
        stats.calls += 1
        entries = [{"Data": r.data(now), "PartitionKey": r.key} for r in batch]
        try:
            response = kinesis.put_records(StreamName=stream, Records=entries)
            results = response.get("Records", [])
            if len(results) != len(batch):
                raise StreamError(f"PutRecords answered {len(results)} results for {len(batch)} records")
        except (ClientError, BotoCoreError) as exc:
            if not _retryable(exc):
                code = _error_code(exc)
                if code == "ResourceNotFoundException":
                    raise StreamError(
                        f"stream {stream!r} not found: deploy infra/streaming.yaml or pass --stream"
                    ) from exc
                raise StreamError(f"PutRecords: {code or type(exc).__name__}: {exc}") from exc
            stats.throttled_calls += 1
            results = [{"ErrorCode": _error_code(exc) or type(exc).__name__, "ErrorMessage": str(exc)}] * len(
                batch
            )
        failed_now = 0
        for record, result in zip(batch, results, strict=True):
            if result.get("ErrorCode"):
                record.attempts += 1
                if record.attempts >= max_attempts:
                    give_up(record, f"{result['ErrorCode']} after {record.attempts} attempts")
                else:
                    stats.retried += 1
                    failed_now += 1
                    heapq.heappush(heads, (record.index, record.key))
            else:
                stats.sent += 1
                if keep_sent:
                    stats.sent_events.append(record.data(now))
                advance(record.key)
        stats.seconds = clock() - started
        if progress:
            progress(stats)
        if failed_now:
            sleep(_backoff(consecutive_failures, base_delay, max_delay, rng))
            consecutive_failures += 1
        else:
            consecutive_failures = 0
    stats.seconds = clock() - started
    return stats


def progress_bar(out: TextIO, stream: str, min_interval: float = 0.2) -> Callable[[SendStats], None]:
    """A one-line progress bar redrawn at most every `min_interval` seconds (and at the end)."""
    last = [0.0]

    def draw(stats: SendStats) -> None:
        now = time.monotonic()
        done = stats.sent + stats.failed
        if now - last[0] < min_interval and done < stats.total:
            return
        last[0] = now
        width = 30
        filled = int(width * done / stats.total) if stats.total else width
        rate = stats.sent / stats.seconds if stats.seconds else 0.0
        out.write(
            f"\r{stream} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{stats.total:,}  "
            f"retried {stats.retried:,}  failed {stats.failed:,}  {rate:,.0f} events/s"
        )
        if done >= stats.total:
            out.write("\n")
        out.flush()

    return draw


# --------------------------------------------------------------------------- read the stream
@dataclass
class StreamRecord:
    data: bytes
    arrival: float | None  # epoch seconds (ApproximateArrivalTimestamp)
    shard: str
    sequence: str


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None = None
    last_sequence: str | None = None
    caught_up: bool = False
    closed: bool = False


class StreamReader:
    """Polls every shard of a stream with GetRecords (at most once per shard per poll)."""

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        *,
        since_seconds: float | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        max_throttle_retries: int = 8,
    ):
        self.kinesis, self.stream = kinesis, stream
        self.start = None if since_seconds is None else now() - since_seconds
        self.sleep, self.rng = sleep, rng
        self.max_throttle_retries = max_throttle_retries
        self.throttled = 0
        self.shards: dict[str, _Shard] = {}
        for shard_id in self._list_shards():
            self.shards[shard_id] = _Shard(shard_id)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(self.max_throttle_retries + 1):
            try:
                return fn()
            except (ClientError, BotoCoreError) as exc:
                code = _error_code(exc)
                if code == "ResourceNotFoundException":
                    raise StreamError(
                        f"stream {self.stream!r} not found: deploy infra/streaming.yaml or pass --stream"
                    ) from exc
                if code == "ExpiredIteratorException" or not _retryable(exc):
                    raise
                if attempt == self.max_throttle_retries:
                    raise StreamError(
                        f"{what}: still {code or type(exc).__name__} after {attempt + 1} attempts"
                    ) from exc
                self.throttled += 1
                self.sleep(_backoff(attempt, 0.2, 5.0, self.rng))
        raise AssertionError("unreachable")  # pragma: no cover

    def _list_shards(self) -> list[str]:
        shard_ids: list[str] = []
        token: str | None = None
        while True:
            kwargs = {"NextToken": token} if token else {"StreamName": self.stream}
            page = self._call("ListShards", lambda kwargs=kwargs: self.kinesis.list_shards(**kwargs))
            shard_ids += [s["ShardId"] for s in page.get("Shards", [])]
            token = page.get("NextToken")
            if not token:
                return shard_ids

    def _iterator(self, shard: _Shard) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard.shard_id}
        if shard.last_sequence:
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=shard.last_sequence
            )
        elif self.start is not None:
            kwargs.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=datetime.fromtimestamp(self.start, UTC))
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        return self._call("GetShardIterator", lambda: self.kinesis.get_shard_iterator(**kwargs))[
            "ShardIterator"
        ]

    @property
    def caught_up(self) -> bool:
        return all(s.caught_up or s.closed for s in self.shards.values())

    def poll(self, limit: int = 10000) -> list[StreamRecord]:
        """One GetRecords per open shard; returns what arrived, shard by shard."""
        from botocore.exceptions import ClientError

        out: list[StreamRecord] = []
        for shard in list(self.shards.values()):
            if shard.closed:
                continue
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            try:
                page = self._call(
                    "GetRecords",
                    lambda s=shard: self.kinesis.get_records(ShardIterator=s.iterator, Limit=limit),
                )
            except ClientError as exc:
                if _error_code(exc) != "ExpiredIteratorException":
                    raise
                shard.iterator = None  # resume after the last record read (5-minute iterator lifetime)
                continue
            records = page.get("Records", [])
            for r in records:
                arrival = r.get("ApproximateArrivalTimestamp")  # datetime from botocore
                if isinstance(arrival, int | float):
                    arrival = datetime.fromtimestamp(arrival, UTC)
                out.append(
                    StreamRecord(
                        r["Data"],
                        arrival.timestamp() if arrival else None,
                        shard.shard_id,
                        r["SequenceNumber"],
                    )
                )
            if records:
                shard.last_sequence = records[-1]["SequenceNumber"]
            shard.caught_up = not records and page.get("MillisBehindLatest", 0) == 0
            shard.iterator = page.get("NextShardIterator")
            if shard.iterator is None:  # shard closed by a reshard: read its children from their start
                shard.closed = True
                for child in page.get("ChildShards", []) or []:
                    self.shards.setdefault(child["ShardId"], _Shard(child["ShardId"]))
        return out


# --------------------------------------------------------------------------- decisions
@dataclass
class DecisionView:
    """De-duplicates decisions, prints them as a table and keeps the running summary."""

    out: TextIO
    table: bool = True
    seen: set[str] = field(default_factory=set)
    per_tid: dict[str, int] = field(default_factory=dict)
    count: int = 0
    flagged: int = 0
    late: int = 0
    duplicates: int = 0
    unreadable: int = 0
    latencies: list[float] = field(default_factory=list)
    historical: int = 0
    _header: bool = False

    HEADER = f"{'event time (UTC)':<23} {'card':>19} {'amount':>10} {'score':>7}  {'flagged':<7}  {'late':<4}  latency"

    def add(self, data: bytes | str, arrival: float | None = None) -> dict[str, Any] | None:
        try:
            decision = json.loads(data)
        except ValueError:
            decision = None
        if not isinstance(decision, dict) or "score" not in decision:
            self.unreadable += 1
            return None
        key = str(decision.get("decision_id") or f"tid:{decision.get('tid')}")
        if key in self.seen:
            self.duplicates += 1
            return None
        self.seen.add(key)
        self.count += 1
        tid = str(decision.get("tid"))
        self.per_tid[tid] = self.per_tid.get(tid, 0) + 1
        flagged, late = bool(decision.get("fraud")), bool(decision.get("late"))
        self.flagged += flagged
        self.late += late
        event_time = decision.get(spec.EVENT_TIME)
        latency = None
        if arrival is not None and isinstance(event_time, int | float):
            latency = arrival - float(event_time)
            if MEANINGFUL_LATENCY_S[0] <= latency <= MEANINGFUL_LATENCY_S[1]:
                self.latencies.append(latency)
            else:
                self.historical += 1
                latency = None
        if self.table:
            self._row(decision, event_time, flagged, late, latency)
        return decision

    def _row(
        self, d: dict[str, Any], event_time: Any, flagged: bool, late: bool, latency: float | None
    ) -> None:
        if not self._header:
            print(self.HEADER, file=self.out)
            self._header = True
        when = (
            datetime.fromtimestamp(float(event_time), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            if isinstance(event_time, int | float) and math.isfinite(event_time)
            else "?"
        )
        amount = d.get(spec.AMOUNT, (d.get("features") or {}).get(spec.AMOUNT))
        amount_s = f"{amount:,.2f}" if isinstance(amount, int | float) else "?"
        score = d.get("score")
        score_s = f"{score:.4f}" if isinstance(score, int | float) else "?"
        print(
            f"{when:<23} {d.get(spec.CARD_ID, '?')!s:>19} {amount_s:>10} {score_s:>7}  "
            f"{'FRAUD' if flagged else 'no':<7}  {'yes' if late else 'no':<4}  "
            f"{f'{latency:.2f} s' if latency is not None else '-'}",
            file=self.out,
        )

    def summary(self) -> str:
        rate = self.flagged / self.count if self.count else 0.0
        text = (
            f"decisions {self.count:,}  flagged {self.flagged:,}  fraud rate {rate:.2%}  late {self.late:,}  "
            f"duplicates dropped {self.duplicates:,}"
        )
        if self.latencies:
            text += (
                f"  latency p50 {_percentile(self.latencies, 0.5):.2f} s  p99 {_percentile(self.latencies, 0.99):.2f} s"
                " (trans_ts -> on fraud-decisions)"
            )
        elif self.historical:
            text += "  latency n/a (historical event times)"
        else:
            text += "  latency n/a"
        if self.unreadable:
            text += f"  unreadable records {self.unreadable:,}"
        return text


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (numpy's `inverted_cdf`): a latency that was observed."""
    import numpy as np

    return float(np.percentile(values, q * 100, method="inverted_cdf"))


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1d' or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not match:
        raise StreamError(f"--since expects a duration like 30s, 15m, 2h or 1d, got {text!r}", code=2)
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass
class Expectation:
    """The events `send --out` wrote: every one must be decided exactly once."""

    tids: set[str]

    @classmethod
    def load(cls, path: Path) -> Expectation:
        if not path.is_file():
            raise StreamError(f"--expect file not found: {path}", code=2)
        tids = set()
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                tids.add(str(json.loads(line)["tid"]))
        if not tids:
            raise StreamError(f"--expect file {path} has no events with a tid", code=2)
        return cls(tids)

    def done(self, view: DecisionView) -> bool:
        return self.tids <= set(view.per_tid)

    def check(self, view: DecisionView) -> tuple[bool, str]:
        missing = len(self.tids - set(view.per_tid))
        twice = sum(1 for t in self.tids if view.per_tid.get(t, 0) > 1)
        ok = not missing and not twice
        verdict = "OK" if ok else "FAILED"
        return ok, (
            f"check {verdict}: {len(self.tids):,} events sent, {len(self.tids) - missing:,} decided, {missing:,} missing, "
            f"{twice:,} decided more than once (after de-duplication by decision_id)"
        )


def watch_stream(
    reader: StreamReader,
    view: DecisionView,
    *,
    follow: bool = False,
    expect: Expectation | None = None,
    timeout: float | None = None,
    poll_seconds: float = 1.0,
    summary_every: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    err: TextIO = sys.stderr,
) -> None:
    """Read until caught up (or, with follow / expect, until interrupted / satisfied / timed out)."""
    started = last_summary = clock()
    while True:
        records = reader.poll()
        for r in records:
            view.add(r.data, r.arrival)
        if expect is not None and expect.done(view):
            return
        if expect is None and not follow and reader.caught_up:
            return
        if timeout is not None and clock() - started >= timeout:
            if expect is None:
                return
            raise StreamError(f"gave up after {timeout:.0f} s: {expect.check(view)[1]}", code=1)
        if (follow or expect is not None) and clock() - last_summary >= summary_every:
            print(view.summary(), file=err, flush=True)
            last_summary = clock()
        if not records:
            sleep(poll_seconds)  # idle shards: stay far below 5 GetRecords per shard per second
        else:
            sleep(0.2)


def local_decisions(path: Path, view: DecisionView, *, since_seconds: float | None, follow: bool) -> None:
    """The same view over a local decisions file (`replay --out`); `since` is relative to its newest event."""
    if not path.is_file():
        raise StreamError(
            f"no decisions file at {path}: run `run_pipeline.py local` (or `replay --out`) first, or pass --file",
            code=2,
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if since_seconds is not None:
        times = []
        for line in lines:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                times.append(float(json.loads(line)[spec.EVENT_TIME]))
        newest = max(times, default=0.0)

        def recent(line: str) -> bool:
            try:
                return float(json.loads(line)[spec.EVENT_TIME]) >= newest - since_seconds
            except (ValueError, TypeError, KeyError):
                return True

        lines = [line for line in lines if recent(line)]
    for line in lines:
        if line.strip():
            view.add(line)
    if not follow:
        return
    with path.open(encoding="utf-8") as f:
        f.seek(0, 2)
        while True:
            line = f.readline()
            if not line:
                time.sleep(0.5)
                continue
            if line.strip():
                view.add(line)


# --------------------------------------------------------------------------- CLI
def _kinesis(region: str | None) -> Any:
    from pipeline.aws_cli import _session

    return _session(region).client("kinesis")


def _aws_guard(action: str, fn: Callable[[], int]) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from pipeline.aws_cli import CliError, _aws_error

    try:
        return fn()
    except (BotoCoreError, ClientError) as exc:
        raise _aws_error(exc, action) from exc
    except CliError as exc:
        raise StreamError(str(exc), exc.code) from exc


def cmd_send(args: argparse.Namespace) -> int:
    if args.rate is not None and args.rate <= 0:
        raise StreamError("--rate must be > 0 events per second", code=2)
    if args.rows is not None and args.rows < 1:
        raise StreamError("--rows must be >= 1", code=2)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    if args.events:
        records = file_records(Path(args.events), restamp=args.restamp)
    else:
        records = simulated_records(args.rows, args.seed, run_id)
    out_file = Path(args.out) if args.out else None
    if out_file is not None and not out_file.parent.is_dir():
        raise StreamError(f"--out folder does not exist: {out_file.parent}", code=2)

    def run() -> int:
        kinesis = _kinesis(args.region)
        bar = progress_bar(sys.stderr, args.stream) if sys.stderr.isatty() else None
        stats = send_records(
            kinesis, args.stream, records, rate=args.rate, progress=bar, keep_sent=out_file is not None
        )
        if out_file is not None:
            out_file.write_bytes(b"".join(data + b"\n" for data in stats.sent_events))
        print(stats.line(args.stream))
        for failure in stats.failures:
            print(f"  failed: {failure}", file=sys.stderr)
        return 0 if stats.failed == 0 else 1

    return _aws_guard("send", run)


def cmd_decisions(args: argparse.Namespace) -> int:
    since = parse_duration(args.since) if args.since else None
    view = DecisionView(sys.stdout, table=not args.summary_only)
    expect = Expectation.load(Path(args.expect)) if args.expect else None
    if args.work_dir or args.file:
        path = Path(args.file) if args.file else Path(args.work_dir) / DECISIONS_FILE
        with contextlib.suppress(KeyboardInterrupt):  # --follow ends with Ctrl-C: print the summary
            local_decisions(path, view, since_seconds=since, follow=args.follow)
        print(view.summary())
        if expect is not None:
            ok, line = expect.check(view)
            print(line)
            return 0 if ok else 1
        return 0

    def run() -> int:
        reader = StreamReader(_kinesis(args.region), args.stream, since_seconds=since)
        timeout = args.timeout if args.timeout is not None else (DEFAULT_EXPECT_TIMEOUT if expect else None)
        try:
            watch_stream(reader, view, follow=args.follow, expect=expect, timeout=timeout)
        except KeyboardInterrupt:
            pass
        finally:
            print(view.summary())
        if expect is not None:
            ok, line = expect.check(view)
            print(line)
            return 0 if ok else 1
        return 0

    return _aws_guard("decisions", run)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `send` and `decisions` on run_pipeline.py's subparsers."""
    p = commands.add_parser("send", help="put transactions on the Kinesis transactions stream (AWS)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", metavar="FILE", help="JSON-lines events to send as they are")
    source.add_argument(
        "--rows", type=int, metavar="N", help="simulate N transactions (event time = when sent)"
    )
    p.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, metavar="EVENTS_PER_S", help="default %(default)s"
    )
    p.add_argument("--stream", default=spec.TRANSACTIONS_STREAM, help="default %(default)s")
    p.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / profile)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed with --rows (default %(default)s)")
    p.add_argument(
        "--restamp", action="store_true", help="with --events: set each event's trans_ts to when it is sent"
    )
    p.add_argument(
        "--out", metavar="FILE", help="write the events as sent (JSON lines), e.g. for decisions --expect"
    )
    p.set_defaults(handler=cmd_send)

    p = commands.add_parser(
        "decisions",
        help="read fraud decisions from the fraud-decisions stream (AWS) or a local run (--work-dir)",
    )
    p.add_argument("--follow", action="store_true", help="keep reading new decisions until Ctrl-C")
    p.add_argument(
        "--since",
        metavar="DURATION",
        help="only the last DURATION (30s, 15m, 2h, 1d): of arrival on the stream, or locally of event "
        "time before the file's newest event (default: everything retained)",
    )
    p.add_argument("--stream", default=spec.DECISIONS_STREAM, help="default %(default)s")
    p.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / profile)")
    p.add_argument("--work-dir", help="local mode: read DIR/replay/decisions.jsonl of a `local` run")
    p.add_argument("--file", help="local mode: read this decisions file (e.g. `replay --out`)")
    p.add_argument(
        "--expect", metavar="FILE", help="events file of `send --out`: check each was decided once"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with --expect: give up after this many seconds (default 600)",
    )
    p.add_argument("--summary-only", action="store_true", help="print only the summary, not every decision")
    p.set_defaults(handler=cmd_decisions)


__all__ = [
    "DecisionView",
    "Expectation",
    "OutgoingRecord",
    "SendStats",
    "StreamReader",
    "add_commands",
    "file_records",
    "parse_duration",
    "send_records",
    "simulated_records",
    "watch_stream",
]
