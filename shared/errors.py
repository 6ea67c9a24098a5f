"""One user-error type and one exit-code convention for every command line (docs/design.md).

Exit codes, the same for `run_pipeline.py` and each standalone script:

    0    success
    1    a run failed: the quality gate, a pipeline step, an AWS call, a refused deployment
    2    bad usage or input: an argument the parser refuses, a missing file, a bad value or column
    130  interrupted by Ctrl-C (SIGINT); 143 terminated (SIGTERM)

A `UserError` is something the user can act on. It is caught once, at the command-line entry
(`shared.cli.run`), and printed as one line `PROG: error: MESSAGE` on stderr, never as a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class UserError(Exception):
    """A failure the user can act on: one line on stderr, exit `exit_code` (2: bad usage or input)."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.exit_code = code

    @property
    def code(self) -> int:
        """The exit code (the name the AWS commands used before this class existed)."""
        return self.exit_code


class RunFailed(UserError):
    """The input was fine but the run did not succeed (quality gate, a step, an AWS call): exit 1."""

    exit_code = EXIT_RUN_FAILED


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The exception's message folded to one line (at most `limit` characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
