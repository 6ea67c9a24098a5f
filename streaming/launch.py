"""Launching the Flink job (streaming/job.py) as a subprocess of its own venv, in its own process group.

`run_job` waits for a bounded run; `start_job` returns the running process (unbounded source,
restart and latency measurements) and `stop_job` kills its whole group (JVM and Python workers).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


class FlinkJobError(RuntimeError):
    """The job failed or timed out (message carries the log's tail)."""


def flink_python() -> str:
    exe = os.environ.get("FLINK_PYTHON") or str(REPO_ROOT / ".venv-flink" / "bin" / "python")
    if not Path(exe).exists():
        raise FlinkJobError(
            f"PyFlink environment not found at {exe}: run `make install` (or set FLINK_PYTHON)"
        )
    return exe


def job_command(source: Path, sink: Path | str, args: Sequence[str] = ()) -> list[str]:
    return [
        flink_python(),
        str(REPO_ROOT / "streaming" / "job.py"),
        "--source-path",
        str(source),
        "--sink-path",
        str(sink),
        *args,
    ]


def start_job(
    source: Path,
    sink: Path | str,
    log_path: Path,
    args: Sequence[str] = (),
    stdout: Any = None,
    jvm_options: str = "",
) -> subprocess.Popen:
    """The job in its own session (killed as a group); output to `log_path` unless `stdout` given.

    `jvm_options` go first in the job's JVM_ARGS (read by PyFlink when it starts the JVM), so flags
    the caller's own JVM_ARGS give come later and win; our own environment is left as it is."""
    env = None
    if jvm_options:
        old = os.environ.get("JVM_ARGS")
        env = {**os.environ, "JVM_ARGS": f"{jvm_options} {old}" if old else jvm_options}
    log = log_path.open("w")
    return subprocess.Popen(
        job_command(source, sink, args),
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log if stdout is None else stdout,
        stderr=log,
        start_new_session=True,
    )


def stop_job(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM then SIGKILL to the job's whole process group."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_job(
    source: Path,
    sink: Path,
    log_path: Path,
    args: Sequence[str] = (),
    timeout: float | None = None,
    jvm_options: str = "",
) -> float:
    """A bounded run; wall seconds. Raises FlinkJobError with the log tail on failure."""
    t0 = time.perf_counter()
    proc = start_job(source, sink, log_path, args, jvm_options=jvm_options)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlinkJobError(f"Flink job did not finish within {timeout} s (log {log_path})") from None
    finally:
        stop_job(proc)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise FlinkJobError(f"Flink job failed (exit {proc.returncode}, log {log_path}): {' | '.join(tail)}")
    return time.perf_counter() - t0


_PART = re.compile(r"(.*)-(\d+)-(\d+)")


def _part_key(path: Path) -> tuple[str, int, int, str]:
    """Flink's part files (`PREFIX-SUBTASK-COUNTER`) in the order they were written; others by name."""
    m = _PART.fullmatch(path.name)
    return (m.group(1), int(m.group(2)), int(m.group(3)), path.name) if m else (path.name, -1, -1, path.name)


def finished_parts(sink: Path) -> list[Path]:
    """The finished part files (not hidden, not in progress), in write order (counter 10 after 9)."""
    files = [p for p in sink.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
    return sorted(files, key=_part_key)


def output_lines(sink: Path) -> Iterator[str]:
    """The job's output lines (finished part files only, in write order)."""
    for p in finished_parts(sink):
        with p.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")
