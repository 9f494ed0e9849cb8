"""The hostile corpus, made once per session (scripts/make_bad_inputs.py, which writes its
seeds with the real frameworks), and the harness's results on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "corpus"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_bad_inputs.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


@pytest.fixture(scope="session")
def corpus_results(corpus) -> list[dict]:
    results = corpus.parent / "results.json"
    subprocess.run(
        [sys.executable, "-m", "tests.hostile.harness", str(corpus), str(results)],
        check=True,
        cwd=ROOT,
        timeout=900,
    )
    return json.loads(results.read_text())
