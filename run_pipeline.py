#!/usr/bin/env python3
"""Entry point: the SageMaker pipeline on AWS, and the same steps on a laptop.

    python run_pipeline.py local  ...   # whole batch half locally (then a streaming replay)
    python run_pipeline.py replay ...   # streaming path locally on an events file
    python run_pipeline.py definition | upsert | start | status | approve   # AWS
    python run_pipeline.py send | decisions   # streaming demo on AWS (decisions --work-dir: local)

Each subcommand lives in its own module, which registers its arguments here.

Exit codes (shared/errors.py, docs/design.md): 0 success; 1 a run failed (quality gate, a step,
an AWS call); 2 bad usage or input; 130 Ctrl-C, 143 SIGTERM. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import aws_cli, aws_stream, local_runner
from shared.cli import ArgumentParser, run
from streaming import replay


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="run_pipeline.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local_runner.add_commands(commands)
    replay.add_commands(commands)
    aws_cli.add_commands(commands)
    aws_stream.add_commands(commands)
    for sub in commands.choices.values():  # keep the modules' docstring layout in --help
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    """Every user error (shared.errors.UserError) is caught here, once: one line, its exit code."""
    args = build_parser().parse_args(argv)
    return run(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
