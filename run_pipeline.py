#!/usr/bin/env python3
"""Entry point: the SageMaker pipeline on AWS, and the same steps on a laptop.

    python run_pipeline.py local  ...   # whole batch half locally (then a streaming replay)
    python run_pipeline.py replay ...   # streaming path locally on an events file
    python run_pipeline.py definition | upsert | start | status | approve   # AWS
    python run_pipeline.py send | decisions   # streaming demo on AWS (decisions --work-dir: local)

Each subcommand lives in its own module, which registers its arguments here.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import aws_cli, aws_stream, local_runner
from streaming import replay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
