"""Each reader fuzzed for a short budget (scripts/fuzz.py FORMAT --minutes N runs longer):
damaged seeds may only raise a ConvertError, never crash, hang or exhaust memory."""

from __future__ import annotations

import pytest

from . import fuzz

SECONDS = 3


@pytest.mark.parametrize("fmt", fuzz.FORMATS)
def test_fuzzed_reader_raises_only_convert_errors(corpus, fmt, tmp_path):
    stats = fuzz.run(fmt, corpus / "seeds", SECONDS, tmp_path / "findings")
    assert stats.executions >= 5, stats  # (HDF5 readers fork a probe per new file)
    assert stats.refused > 0, stats
    assert not stats.findings, stats.findings


def test_mutations_are_applied():
    data = bytes(range(16))
    assert fuzz.mutate(data, [("flip", 0, 0)])[0] == 1
    assert fuzz.mutate(data, [("cut", 4)]) == data[:4]
    assert fuzz.mutate(data, [("int", 2, 4, 2**32 - 1)])[2:6] == b"\xff" * 4
    assert fuzz.mutate(data, [("insert", 1, b"xy")])[:4] == b"\x00xy\x01"
    assert fuzz.mutate(data, [("delete", 0, 3)]) == data[3:]
