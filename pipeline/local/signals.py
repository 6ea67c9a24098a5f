"""Ctrl-C and SIGTERM for the local CLI commands: clean-up runs, one line, conventional exit code.

Python turns SIGINT into KeyboardInterrupt but dies on SIGTERM without running `finally` blocks,
which would leave a Flink job or a half-started endpoint behind. `terminate_as_exception` raises
`Terminated` instead, so the same clean-up runs for both; the command then prints one line and
exits 130 (Ctrl-C, 128 + SIGINT) or 143 (SIGTERM, 128 + 15), as shells report a signal death.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (a BaseException, like KeyboardInterrupt)."""


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while the block runs (main thread only)."""

    def _raise(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM while the block runs (a critical section such as "switch the deployment
    record, then stop the old server"), then deliver them: the block is never cut half-way."""
    received: list[int] = []

    def _record(signum: int, _frame: object) -> None:
        received.append(signum)

    try:
        previous = {sig: signal.signal(sig, _record) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not delivered here anyway
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def exit_code(exc: BaseException) -> int:
    """130 for KeyboardInterrupt, 143 for Terminated."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def describe(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"


def stop_descendants(keep: Callable[[psutil.Process], bool] = lambda _p: False, grace: float = 5.0) -> int:
    """Terminate every descendant process of this one except those `keep` selects (SIGTERM, then
    SIGKILL after `grace` s); returns how many were stopped.

    Used on Ctrl-C/SIGTERM: the Spark JVM (py4j gateway) does not exit when the Python driver is
    interrupted in the middle of a job (its gateway thread keeps it alive), so it is stopped here,
    with the Python workers it started."""
    me = psutil.Process(os.getpid())
    try:
        procs = [p for p in me.children(recursive=True) if not _kept(p, keep)]
    except psutil.Error:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    time.sleep(0)  # let the interpreter reap
    return len(procs)


def _kept(proc: psutil.Process, keep: Callable[[psutil.Process], bool]) -> bool:
    try:
        return keep(proc)
    except psutil.Error:
        return True  # already gone


def is_endpoint_server(proc: psutil.Process) -> bool:
    """A local endpoint server: managed by pipeline/local/endpoint.py (recorded, or stopped there)."""
    return "training.serve" in proc.cmdline()
