"""Signals around the local services: a critical section that holds them, and the children to stop.

Ctrl-C and SIGTERM themselves become exceptions in `shared.signals` (held by `shared.cli.run`
around every command); this module adds what the local runner needs on top: `deferred_signals`
for a deploy that must not be cut half-way, and `stop_descendants` for the Spark JVM and its
workers, which an interrupted driver leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil


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
