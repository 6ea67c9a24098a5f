"""Ctrl-C and SIGTERM as exceptions, so that a command's clean-up runs for both (docs/design.md).

Python turns SIGINT into KeyboardInterrupt but dies on SIGTERM without running `finally` blocks,
which would leave a Flink job, a Spark JVM or a half-started endpoint behind. While
`terminate_as_exception` is active (`shared.cli.run` holds it around every command) SIGTERM raises
`Terminated` instead. The command line then exits 130 (Ctrl-C, 128 + SIGINT) or 143 (SIGTERM,
128 + 15), as shells report a signal death; a command with more to say than "interrupted" raises
`Interrupted` after its clean-up.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from shared.errors import EXIT_SIGINT, EXIT_SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (a BaseException, like KeyboardInterrupt)."""


INTERRUPTS = (KeyboardInterrupt, Terminated)
"""What a command catches to clean up after Ctrl-C or SIGTERM before re-raising."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM after a command's clean-up: the one line to print and the signal's exception."""

    def __init__(self, cause: BaseException, message: str) -> None:
        super().__init__(message)
        self.cause = cause


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


def _signal_of(exc: BaseException) -> BaseException:
    return exc.cause if isinstance(exc, Interrupted) else exc


def exit_code(exc: BaseException) -> int:
    """143 for SIGTERM (`Terminated`), 130 for Ctrl-C; an `Interrupted` counts as its cause."""
    return EXIT_SIGTERM if isinstance(_signal_of(exc), Terminated) else EXIT_SIGINT


def describe(exc: BaseException) -> str:
    """`terminated (SIGTERM)` or `interrupted (Ctrl-C)`: how the one-line messages name the signal."""
    return "terminated (SIGTERM)" if isinstance(_signal_of(exc), Terminated) else "interrupted (Ctrl-C)"
