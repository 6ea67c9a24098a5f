"""Ctrl-C and SIGTERM for the local CLI commands: clean-up runs, one line, conventional exit code.

Python turns SIGINT into KeyboardInterrupt but dies on SIGTERM without running `finally` blocks,
which would leave a Flink job or a half-started endpoint behind. `terminate_as_exception` raises
`Terminated` instead, so the same clean-up runs for both; the command then prints one line and
exits 130 (Ctrl-C, 128 + SIGINT) or 143 (SIGTERM, 128 + 15), as shells report a signal death.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

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


def exit_code(exc: BaseException) -> int:
    """130 for KeyboardInterrupt, 143 for Terminated."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def describe(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
