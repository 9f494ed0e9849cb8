"""The conversion matrix in the suite: every source kind × every target, each result
loaded as that target's users would, then converted back to the source's own format and
loaded again (`harness.py` says how). Any *wrong* cell fails; `scripts/matrix.py` prints the
same cells as a table.

Cells known to be wrong are strict expected failures naming their issue, so that a fix
turns them green (and must remove them here) and a new wrong cell fails."""

from __future__ import annotations

import pytest

from . import harness, page

SOURCES = [
    "tfk-checkpoint",
    "tfk-checkpoint+opt",
    "tfk-prefix",
    "tfk-prefix+opt",
    "tfk-prefix-nested",
    "tfk-h5",
    "tfk-h5-nested",
    "tfk-h5-subclassed",
    "tfk-h5-full",
    "tfk-h5-full+opt",
    "tfk-h5-full-nested",
    "tfk-savedmodel",
    "tfk-savedmodel+opt",
    "k3-weights.h5",
    "k3-keras",
    "torch-state-dict",
    "torch-training",
    "torch-tied",
    "torch-bf16",
    "safetensors",
    "flax",
]

KNOWN_WRONG: dict[tuple[str, str], str] = {}


def _cells():
    for source in SOURCES:
        for target in harness.TARGETS:
            reason = KNOWN_WRONG.get((source, target))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(source, target, id=f"{source}->{target}", marks=marks)


PAGE, PAGE_SOURCES, PAGE_TARGETS = page.read(page.PAGE.read_text(encoding="utf8"))


@pytest.mark.parametrize(("source", "target"), list(_cells()))
def test_cell(matrix_sources, source, target, tmp_path):
    cell = harness.run_cell(matrix_sources[source], target, tmp_path)
    assert cell.status != harness.WRONG, cell.detail
    assert cell.back != harness.WRONG, (
        f"round trip back to {matrix_sources[source].home}: {cell.back_detail}"
    )
    found = (cell.status, cell.back or page.NOT_RUN)
    assert found == PAGE[source, target], (
        f"docs/reports/matrix.md says {PAGE[source, target]}, the code does {found} "
        f"({cell.detail}; {cell.back_detail}): run scripts/matrix.py --write "
        "docs/reports/matrix.md"
    )


def test_every_source_is_in_the_suite(matrix_sources):
    assert sorted(matrix_sources) == sorted(SOURCES)


def test_the_page_lists_every_cell():
    assert PAGE_SOURCES == SOURCES and list(harness.TARGETS) == PAGE_TARGETS
