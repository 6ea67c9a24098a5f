"""The docs tell the truth about the commands and links (docs/design.md is the design document).

Every `run_pipeline.py SUBCOMMAND --flag` and `make TARGET` shown in README.md exists, every
relative link in README.md and docs/*.md resolves, and nothing cites a DESIGN.md of its own.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _subparsers() -> dict:
    parser = run_pipeline.build_parser()
    return parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def _readme_commands() -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of every `run_pipeline.py SUB ...` in README.md, up to the end of its code span."""
    found = []
    for line in README.read_text().splitlines():
        for match in re.finditer(r"run_pipeline\.py (\w[\w-]*)([^`\n]*)", line):
            rest = re.split(r"\s#|\)\s|`", match.group(2))[0]
            found.append((match.group(1), re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)))
    return found


def test_readme_shows_commands() -> None:
    assert len(_readme_commands()) >= 10


@pytest.mark.parametrize(("command", "flags"), _readme_commands())
def test_readme_subcommand_and_flags_exist(command: str, flags: list[str]) -> None:
    subparsers = _subparsers()
    assert command in subparsers, f"README shows `run_pipeline.py {command}`, which does not exist"
    known = {option for action in subparsers[command]._actions for option in action.option_strings}
    assert set(flags) <= known, f"`run_pipeline.py {command}`: unknown flags {sorted(set(flags) - known)}"


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
