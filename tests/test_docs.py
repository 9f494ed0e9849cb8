"""The README and docs/ hold together: every relative link reaches a file (and a heading,
for a `#fragment`), every `ckpt` command they show exists, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from convert.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf8")
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf8")):
        if re.match(r"[a-z]+:", target):
            continue  # (a URL)
        path, _, fragment = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        missing_heading = (
            found.exists()
            and fragment
            and found.suffix == ".md"
            and fragment not in _anchors(found)
        )
        if not found.exists() or missing_heading:
            broken.append(target)
    assert broken == []


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf8").splitlines()) <= 200


def test_every_ckpt_command_shown_exists():
    commands = set(main.commands)
    shown = set()
    for page in PAGES:
        for line in page.read_text(encoding="utf8").splitlines():
            match = re.match(r"\s*ckpt ([a-z]+)\b", line)
            if match:
                shown.add(match.group(1))
    assert shown and shown <= commands, shown - commands
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0


def test_the_link_check_sees_the_links():
    """(Else the check above proves nothing.)"""
    links = [t for p in PAGES for t in LINK.findall(p.read_text(encoding="utf8"))]
    assert len([t for t in links if not re.match(r"[a-z]+:", t)]) > 30
    assert any("#" in t for t in links)
