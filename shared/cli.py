"""The command-line entry shared by `run_pipeline.py` and the standalone scripts.

`ArgumentParser` refuses a bad argument with one line (`PROG: error: ...`, exit 2) instead of the
usage block, and `non_negative_int`/`positive_int` are the argument types the commands share; `run`
calls a script's `main`, catches every `UserError` once and maps Ctrl-C to 130 and SIGTERM to 143,
following the exit-code convention of `shared.errors` (docs/design.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from shared.errors import EXIT_USAGE, UserError, one_line
from shared.signals import INTERRUPTS, Interrupted, describe, exit_code, terminate_as_exception


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line refusal; `--help` still prints the whole usage. Subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def non_negative_int(text: str) -> int:
    """Argument type: a whole number >= 0 (refused with the parser's one line otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """Argument type: a whole number >= 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _print_error(prog: str | None, message: str) -> None:
    print(f"{prog + ': ' if prog else ''}error: {message}", file=sys.stderr)


def report(prog: str | None, exc: UserError) -> int:
    """Print a user error as one line (`PROG: error: ...`, or `error: ...` without a prog); its exit code."""
    _print_error(prog, one_line(exc))
    return exc.exit_code


def run(main: Callable[[], int | None], prog: str | None = None) -> int:
    """Exit code of `main()`: its own, a UserError's, 130 on Ctrl-C or 143 on SIGTERM (one line each).

    SIGTERM raises `Terminated` while `main` runs, so its clean-up runs as it does on Ctrl-C; a
    command that says more after its clean-up raises `shared.signals.Interrupted` with that line."""
    try:
        with terminate_as_exception():
            return int(main() or 0)
    except UserError as exc:
        return report(prog, exc)
    except (Interrupted, *INTERRUPTS) as exc:
        _print_error(prog, str(exc) if isinstance(exc, Interrupted) else describe(exc))
        return exit_code(exc)
