"""The feature table of docs/features.md, generated from the specification.

.venv/bin/python -m features.docs          # rewrite the table block in docs/features.md
.venv/bin/python -m features.docs --check  # exit 1 when the file is stale (the tests do this too)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from features.spec import AMOUNT, RECENCY_SENTINEL, SPEC, FeatureSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "features.md"
START, END = "<!-- feature-table:start -->", "<!-- feature-table:end -->"
_WHAT = {"count": "number of the card's transactions", "sum": "sum of amounts", "avg": "average amount"}
_WHAT |= {"min": "smallest amount", "max": "largest amount"}


def _definition(fs: FeatureSpec, name: str) -> tuple[str, str]:
    """(kind, definition) of a declared name."""
    for a in fs.aggregations:
        if a.name == name:
            if a.kind == "streaming":
                frame = "[ts - {w}, ts], the event and same-second peers included"
            else:
                frame = "[T - {w}, T), T = the day's 00:00 UTC cut-off"
            return a.kind, f"{_WHAT[a.operation]} in {frame.format(w=a.window)}"
    for r in fs.recency:
        if r.name == name:
            nth = "latest" if r.nth == 1 else f"{r.nth}{'nd' if r.nth == 2 else 'th'} latest"
            return "recency", (
                f"ts minus the time of the card's {nth} other transaction at or before ts "
                f"(0 when enough others share ts; {RECENCY_SENTINEL:g} when there are fewer)"
            )
    for r in fs.ratios:
        if r.name == name:
            return "ratio", f"{r.numerator} / {r.denominator} (0 when the denominator is 0)"
    if name == AMOUNT:
        return "raw", "the transaction's amount"
    raise KeyError(name)


def feature_table(fs: FeatureSpec = SPEC) -> str:
    """Markdown table: every declared feature, its kind, definition, and whether the model uses it."""
    names = [AMOUNT, *fs.streaming_features, *fs.snapshot_features, *(r.name for r in fs.ratios)]
    lines = ["| feature | kind | definition | model input |", "| --- | --- | --- | --- |"]
    for name in names:
        kind, definition = _definition(fs, name)
        used = f"#{fs.model_features.index(name) + 1}" if name in fs.model_features else "no"
        lines.append(f"| `{name}` | {kind} | {definition} | {used} |")
    return "\n".join(lines)


def render(text: str, fs: FeatureSpec = SPEC) -> str:
    """`text` with the block between the markers replaced by the generated table."""
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise ValueError(f"{DOC} lacks the {START} ... {END} markers")
    return f"{head}{START}\n{feature_table(fs)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the feature table of docs/features.md.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = render(current)
    if args.check:
        if current != wanted:
            print(f"{DOC} is stale: run python -m features.docs", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
