"""The command-line entry shared by `run_pipeline.py` and the standalone scripts.

`ArgumentParser` refuses a bad argument with one line (`PROG: error: ...`, exit 2) instead of the
usage block; `run` calls a script's `main`, catches every `UserError` once and maps Ctrl-C to 130,
following the exit-code convention of `shared.errors` (docs/design.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from shared.errors import EXIT_SIGINT, EXIT_USAGE, UserError, one_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line refusal; `--help` still prints the whole usage. Subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def report(prog: str | None, exc: UserError) -> int:
    """Print a user error as one line (`PROG: error: ...`, or `error: ...` without a prog); its exit code."""
    print(f"{prog + ': ' if prog else ''}error: {one_line(exc)}", file=sys.stderr)
    return exc.exit_code


def run(main: Callable[[], int | None], prog: str | None = None) -> int:
    """Exit code of `main()`: its own, a UserError's (one line on stderr), or 130 on Ctrl-C."""
    try:
        return int(main() or 0)
    except UserError as exc:
        return report(prog, exc)
    except KeyboardInterrupt:
        print(f"{prog + ': ' if prog else ''}error: interrupted", file=sys.stderr)
        return EXIT_SIGINT
