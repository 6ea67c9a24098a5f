"""The docs tell the truth about the commands and links (docs/design.md is the design document).

Every `run_pipeline.py SUBCOMMAND --flag`, `python SCRIPT.py --flag` and `make TARGET` shown in the
documents exists, every relative link in them resolves, and nothing cites a DESIGN.md of its own.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [ROOT / name for name in subprocess.run(
    ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
).stdout.split()]  # fmt: skip
FLAG = r"(?<![\w-])--[a-z][a-z0-9-]*"


def _subparsers() -> dict:
    parser = run_pipeline.build_parser()
    return parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def _shown_commands(pattern: str) -> list[tuple[str, list[str]]]:
    """(what `pattern` captures, flags) of every command line it matches in the documents, up to the
    end of the command (a comment, a closing parenthesis or the end of its code span)."""
    found = []
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            for match in re.finditer(pattern + r"([^`\n|]*)", line):
                rest = re.split(r"\s#|\)\s|`", match.group(2))[0]
                found.append((match.group(1), re.findall(FLAG, rest)))
    return found


SUBCOMMANDS_SHOWN = _shown_commands(r"run_pipeline\.py (\w[\w-]*)")
SCRIPTS_SHOWN = [
    shown for shown in _shown_commands(r"python3? ([\w./-]+\.py)") if shown[0] != "run_pipeline.py"
]


def test_documents_show_commands() -> None:
    assert len(SUBCOMMANDS_SHOWN) >= 10 and len(SCRIPTS_SHOWN) >= 10


@pytest.mark.parametrize(("command", "flags"), SUBCOMMANDS_SHOWN)
def test_shown_subcommand_and_flags_exist(command: str, flags: list[str]) -> None:
    subparsers = _subparsers()
    assert command in subparsers, f"the docs show `run_pipeline.py {command}`, which does not exist"
    known = {option for action in subparsers[command]._actions for option in action.option_strings}
    assert set(flags) <= known, f"`run_pipeline.py {command}`: unknown flags {sorted(set(flags) - known)}"


@pytest.mark.parametrize(("script", "flags"), SCRIPTS_SHOWN)
def test_shown_script_and_flags_exist(script: str, flags: list[str]) -> None:
    """A standalone script's flags are read from its source (importing it would start Spark or Flink)."""
    path = ROOT / script
    assert path.is_file(), f"the docs show `python {script}`, which does not exist"
    declared = set(re.findall(r"[\"'](" + FLAG + r")[\"']", path.read_text()))
    assert set(flags) <= declared, f"`python {script}`: unknown flags {sorted(set(flags) - declared)}"


def test_readme_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, flags=re.MULTILINE))
    shown = set(re.findall(r"`make ([a-z][\w-]*)", README.read_text()))
    assert shown and shown <= targets, sorted(shown - targets)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:|#", target):
            continue
        if not (doc.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert not broken, f"{doc.name}: links that do not resolve: {broken}"


def test_design_document_is_cited_as_docs_design_md() -> None:
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yaml", "*.sh", "Makefile"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert (ROOT / "docs" / "design.md").is_file()
    citing = []
    for name in files:
        path = ROOT / name
        if name == "docs/design.md" or not path.is_file() or path == Path(__file__):
            continue  # design.md names the founding design kept outside the repository
        if re.search(r"(?<![\w/])DESIGN\.md", path.read_text(errors="replace")):
            citing.append(name)
    assert not citing, f"cite docs/design.md instead of DESIGN.md in {citing}"


@pytest.mark.parametrize("command", ["", *sorted(_subparsers())])
def test_help_prints_descriptions_as_written(command: str) -> None:
    """`--help` keeps a description's lines and indented blocks (not one re-wrapped paragraph)."""
    parser = _subparsers()[command] if command else run_pipeline.build_parser()
    shown = parser.format_help()
    for line in (parser.description or "").strip().splitlines():
        assert line.rstrip() in shown, f"`run_pipeline.py {command} --help` re-wraps: {line!r}"
