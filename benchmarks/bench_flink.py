#!/usr/bin/env python3
"""The Flink job locally: throughput after start-up on 1 M events, and arrival-to-emission latency.

Throughput (default): N synthetic events (10,000 cards, event time over 10 days, arrival shuffled
within 3 s < the 5 s watermark), streaming/job.py run twice as the tests run it (a subprocess per
run): on 100 events (fixed cost: JVM, planner, job submission, teardown) and on the N events.
Throughput after start-up = N / (t_N - t_100). Also the CPU seconds of the whole process group
(the JVM, which runs every operator, and the Python client) per event, which a busy shared machine
inflates less than wall time. Needs the operator jar (`make install`).

    python benchmarks/bench_flink.py [--events 1000000] [--emit on-watermark|on-arrival]

Latency (`--latency`): an unbounded run (watched source directory, print sink): a feeder appends
`--rate` events/s (live event time = wall clock) for `--seconds`; each event carries its send time
in its tid; the bench reads the job's stdout and takes arrival-to-emission = time the row is
printed - time the event was written (includes the source's directory polling, `--monitor-ms`).

    python benchmarks/bench_flink.py --latency [--rate 2000] [--seconds 60] [--emit on-watermark] \
        [--end-to-end [--batching-window-ms 200] [--batch-size 100]]

`--end-to-end` also scores every printed row with `score_transaction.process_batch` (local SQLite
store + local XGBoost endpoint, benchmarks/bench_scoring.py's set-up), fed like its Kinesis event
source mapping (every `--batching-window-ms`, up to `--batch-size` records per call): send-to-
decision percentiles. Figures under load: the job's process-group CPU seconds are recorded too.

Writes benchmarks/results/flink.json (throughput) or flink_latency_<emit>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streaming.launch import FlinkJobError, output_lines, start_job, stop_job  # noqa: E402
from streaming.sql import DEFAULT_WATERMARK_SECONDS  # noqa: E402


def write_events(path: Path, n: int, seed: int = 0) -> None:
    """Synthetic events in arrival order (numpy only, fast)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = 1_580_515_200
    ts = np.sort(rng.integers(start, start + 10 * 86400, n)).astype(np.float64)
    arrival = ts + rng.uniform(0, 3, n)
    order = np.argsort(arrival, kind="stable")
    cards = 4_000_000_000_000_000 + rng.integers(0, 10_000, n)
    amounts = np.round(rng.lognormal(3.5, 1.5, n), 2)
    with path.open("w") as f:
        for i in order:
            f.write(
                f'{{"tid": "t{i:08d}", "cc_num": {cards[i]}, "amount": {float(amounts[i])!r}, "trans_ts": {float(ts[i])!r}}}\n'
            )


def _group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process of a process group (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp) is index 2 after the command
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_timed(src: Path, out: Path, args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the job's process group, output rows) of one bounded run."""
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    proc = start_job(src, out, log, args)
    cpu = 0.0
    try:
        while proc.poll() is None:
            cpu = max(cpu, _group_cpu_seconds(proc.pid))
            time.sleep(0.2)
    finally:
        stop_job(proc)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise FlinkJobError(f"Flink job failed (exit {proc.returncode}): {' | '.join(tail)}")
    return wall, cpu, sum(1 for _ in output_lines(out))


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def throughput(args: argparse.Namespace) -> dict:
    job_args = ["--emit", args.emit, "--execution-mode", args.execution_mode]
    with tempfile.TemporaryDirectory(prefix="bench-flink-") as tmp:
        tmp_path = Path(tmp)
        small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
        print(f"generating {args.events:,} events ...", flush=True)
        write_events(big, args.events)
        write_events(small, 100, seed=1)
        load_before = round(os.getloadavg()[0], 2)
        print("start-up run (100 events) ...", flush=True)
        startup_s, startup_cpu, n_small = run_timed(small, tmp_path / "out-small", job_args)
        print(f"  {startup_s:.1f}s; full run ({args.events:,} events) ...", flush=True)
        total_s, total_cpu, n_big = run_timed(big, tmp_path / "out-big", job_args)
    if n_big != args.events or n_small != 100:
        sys.exit(f"bench_flink: expected {args.events} and 100 output rows, got {n_big} and {n_small}")
    processing_s = max(total_s - startup_s, 1e-9)
    cpu_s = max(total_cpu - startup_cpu, 1e-9)
    return {
        "benchmark": "flink_job_local",
        "events": args.events,
        "emit": args.emit,
        "execution_mode": args.execution_mode,
        "parallelism": 1,
        "startup_seconds": round(startup_s, 2),
        "total_seconds": round(total_s, 2),
        "processing_seconds": round(processing_s, 2),
        "events_per_second_after_startup": round(args.events / processing_s),
        "events_per_second_including_startup": round(args.events / total_s),
        "cpu_seconds_after_startup": round(cpu_s, 2),
        "events_per_cpu_second": round(args.events / cpu_s),
        "load_average_1m_before": load_before,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _print_row_parser():
    """A Flink print-sink line ("+I[v1, v2, ...]") -> the enriched event dict (sql.output_columns)."""
    from streaming import sql

    cols = sql.output_columns()
    conv = {"BIGINT": int, "INT": int, "DOUBLE": float, "BOOLEAN": lambda v: v == "true", "STRING": str}

    def parse(text: str) -> dict | None:
        i, j = text.find("["), text.rfind("]")
        values = text[i + 1 : j].split(", ")
        if len(values) != len(cols):
            return None  # a rejected record's raw text may hold ", " (none in this feed)
        return {n: None if v == "null" else conv[t](v) for (n, t), v in zip(cols, values, strict=True)}

    return parse


class _Scorer:
    """The score_transaction Lambda locally, fed like its Kinesis event source mapping: every
    `window_ms`, whatever enriched rows have arrived (up to `batch` per call) go to
    `process_batch` with the local store and a local endpoint (benchmarks/bench_scoring.py's
    set-up); a decision's time is when its batch returns."""

    def __init__(self, tmp: Path, window_ms: int, batch: int) -> None:
        import numpy as np

        sys.path.insert(0, str(REPO / "benchmarks"))
        import bench_scoring

        from lambdas.score_transaction import handler as score
        from training.endpoint_client import LocalSageMakerRuntime
        from training.serve import LocalEndpointServer

        print("scoring path: populating the local store and training a model ...", flush=True)
        self.store, model = bench_scoring.setup(tmp, np.random.default_rng(0))
        self.server = LocalEndpointServer(model).start()
        self.runtime = LocalSageMakerRuntime({bench_scoring.spec.ENDPOINT_NAME: self.server.url})
        self.kinesis = bench_scoring.NullKinesis()
        self.score, self.cfg = score, score.Config(failure_queue_url="local")
        self.window, self.batch = window_ms / 1000.0, batch
        self.queue: list[dict] = []
        self.lock = threading.Lock()
        self.decided: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seq = 1

    def put(self, row: dict) -> None:
        with self.lock:
            self.queue.append(row)

    def _run(self) -> None:
        import contextlib
        import io

        from lambdas.testing import kinesis_event

        while not self.stop.is_set():
            time.sleep(self.window)
            with self.lock:
                rows, self.queue = self.queue, []
            for k in range(0, len(rows), self.batch):
                part = rows[k : k + self.batch]
                event = kinesis_event(part, start_sequence=self.seq)
                self.seq += len(part)
                with contextlib.redirect_stdout(io.StringIO()):
                    self.score.process_batch(
                        event,
                        featurestore=self.store,
                        runtime=self.runtime,
                        kinesis=self.kinesis,
                        sqs=None,
                        config=self.cfg,
                        on_decisions=self._decided,
                    )

    def _decided(self, decisions: list[dict]) -> None:
        t = time.time()
        for d in decisions:
            seq, sent = d["tid"][1:].split("-")
            self.decided[int(seq)] = t - int(sent) / 1e9

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.server.stop()
        self.store.close()


def latency(args: argparse.Namespace) -> dict:
    import subprocess

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-flink-lat-") as tmp:
        tmp_path = Path(tmp)
        src = tmp_path / "in"
        src.mkdir()
        job_args = [
            "--emit",
            args.emit,
            "--monitor-interval",
            f"{args.monitor_ms} ms",
            "--watermark-seconds",
            str(args.watermark_seconds),
            "--execution-mode",
            args.execution_mode,
        ]
        scorer = _Scorer(tmp_path, args.batching_window_ms, args.batch_size) if args.end_to_end else None
        parse_row = _print_row_parser()
        received: dict[int, float] = {}
        proc = start_job(src, "print", tmp_path / "job.log", job_args, stdout=subprocess.PIPE)
        cpu0 = [0.0]

        def reader() -> None:
            for line in proc.stdout:  # "+I[s<seq>-<sent_ns>, ...]"
                t = time.time()
                text = line.decode(errors="replace")
                i = text.find("[s")
                if i >= 0:
                    tid = text[i + 2 : text.index(",", i)]
                    received[int(tid.split("-")[0])] = t - int(tid.split("-")[1]) / 1e9
                    if scorer is not None:
                        row = parse_row(text)
                        if row is not None:
                            scorer.put(row)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        if scorer is not None:
            scorer.thread.start()
        try:
            # Warm-up: wait until the job answers (start-up is not latency).
            seq, rng = 0, np.random.default_rng(0)
            deadline = time.time() + 300
            while not received and time.time() < deadline:
                seq = _feed(src, seq, 20, rng)
                time.sleep(0.5)
            if not received:
                raise FlinkJobError(f"no output within 300 s (log {tmp_path / 'job.log'})")
            time.sleep(args.watermark_seconds + 2)
            first = seq
            period = 0.05
            per_tick = max(1, round(args.rate * period))
            load_before = round(os.getloadavg()[0], 2)
            cpu0[0] = _group_cpu_seconds(proc.pid)
            t_start = time.time()
            t_end = t_start + args.seconds
            next_tick = t_start
            while time.time() < t_end:
                seq = _feed(src, seq, per_tick, rng)
                next_tick += period
                time.sleep(max(0.0, next_tick - time.time()))
            last = seq
            fed_s = time.time() - t_start
            cpu_used = _group_cpu_seconds(proc.pid) - cpu0[0]
            # Keep the stream going (as live traffic would) so the watermark passes the last events.
            t_tail = time.time() + args.watermark_seconds + 10
            while time.time() < t_tail:
                seq = _feed(src, seq, per_tick, rng)
                time.sleep(period)
            time.sleep(2)
        finally:
            stop_job(proc, grace=0)
            if scorer is not None:
                scorer.close()
        lat = [received[s] for s in range(first, last) if s in received]
        e2e = [scorer.decided[s] for s in range(first, last) if s in scorer.decided] if scorer else []
    if not lat:
        sys.exit("bench_flink: no latency samples")

    def pct(values: list[float]) -> dict:
        q = np.percentile(np.array(values) * 1000, [50, 95, 99])
        return {
            "p50": round(q[0], 1),
            "p95": round(q[1], 1),
            "p99": round(q[2], 1),
            "max": round(max(values) * 1000, 1),
        }

    result = {
        "benchmark": "flink_job_latency_local",
        "emit": args.emit,
        "execution_mode": args.execution_mode,
        "rate_events_per_second": args.rate,
        "achieved_feed_rate": round((last - first) / fed_s),
        "seconds": args.seconds,
        "events_sent": last - first,
        "events_measured": len(lat),
        "watermark_seconds": args.watermark_seconds,
        "source_monitor_interval_ms": args.monitor_ms,
        "arrival_to_emission_ms": pct(lat),
        "job_cpu_seconds_while_feeding": round(cpu_used, 1),
        "load_average_1m_before": load_before,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if scorer is not None:
        result["end_to_end"] = {
            "what": "send -> Flink -> score_transaction.process_batch (local store, local endpoint) returned",
            "batching_window_ms": args.batching_window_ms,
            "batch_size": args.batch_size,
            "events_decided": len(e2e),
            "send_to_decision_ms": pct(e2e) if e2e else None,
        }
    return result


def _feed(src: Path, seq: int, n: int, rng) -> int:
    """Append n live events as one new file (written aside, then renamed: the source sees it whole)."""
    now = time.time()
    lines = []
    for _ in range(n):
        sent = time.time_ns()
        card = 4_000_000_000_000_000 + int(rng.integers(0, 10_000))
        lines.append(
            f'{{"tid": "s{seq}-{sent}", "cc_num": {card}, "amount": {float(rng.uniform(1, 500))!r}, "trans_ts": {now!r}}}\n'
        )
        seq += 1
    tmp = src / f".f{seq}.tmp"
    tmp.write_text("".join(lines))
    tmp.rename(src / f"f{seq:09d}.jsonl")
    return seq


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--emit", choices=("on-watermark", "on-arrival"), default="on-watermark")
    ap.add_argument("--execution-mode", choices=("thread", "process"), default="thread")
    ap.add_argument("--latency", action="store_true", help="measure arrival-to-emission instead")
    ap.add_argument("--rate", type=int, default=2000, help="events/s fed in the latency run")
    ap.add_argument("--seconds", type=int, default=60, help="length of the latency run")
    ap.add_argument("--monitor-ms", type=int, default=100, help="source directory polling interval")
    ap.add_argument("--watermark-seconds", type=int, default=DEFAULT_WATERMARK_SECONDS)
    ap.add_argument(
        "--end-to-end", action="store_true", help="latency: also score every row with the scoring handler"
    )
    ap.add_argument("--batching-window-ms", type=int, default=200, help="end to end: scorer polling period")
    ap.add_argument("--batch-size", type=int, default=100, help="end to end: records per handler call")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    try:
        result = latency(args) if args.latency else throughput(args)
    except FlinkJobError as exc:
        sys.exit(f"bench_flink: {exc}")
    name = f"flink_latency_{args.emit}.json" if args.latency else "flink.json"
    out = Path(args.out) if args.out else RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
