"""The matrix page's counts and tables agree (the cells themselves: test_matrix.py)."""

from __future__ import annotations

from . import page


def test_the_page_counts_its_own_tables():
    text = page.PAGE.read_text(encoding="utf8")
    results, sources, targets = page.read(text)
    assert len(results) == len(sources) * len(targets) > 100
    assert page.rewrite(text, results, sources, targets) == text


def test_a_hand_edited_cell_is_seen():
    text = page.PAGE.read_text(encoding="utf8")
    results, sources, targets = page.read(text)
    edited = text.replace("| tfk-checkpoint | right |", "| tfk-checkpoint | refused |", 1)
    assert edited != text and page.rewrite(edited, *page.read(edited)) != edited
