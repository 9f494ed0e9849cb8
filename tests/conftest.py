"""Shared test helpers. Each format's golden files are made by the real framework in
session-scoped fixtures of that format's own test folder."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str | os.PathLike) -> CliResult:
    """Run `ckpt` in a fresh process, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "convert", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def ckpt():
    return run_cli


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A user error: exit 2, one line on stderr, no traceback, naming what is wrong."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def listing(directory: Path) -> set[str]:
    """Every file name under `directory` (to prove nothing was left behind)."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}
