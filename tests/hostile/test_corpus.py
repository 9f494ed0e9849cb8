"""The guarantee for every case of the hostile corpus (scripts/make_bad_inputs), through
`ckpt ls` and `ckpt convert`: one line naming the file and exit 2 (or, only where the
damage leaves a valid file, a normal read), no traceback, no payload run, nothing opened
outside the input, bounded memory, no output left, the input unchanged, within 5 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .report import bad_cases, misses, table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "corpus"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_bad_inputs"), str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def corpus_results(corpus) -> list[dict]:
    results = corpus.parent / "results.json"
    subprocess.run([sys.executable, "-m", "tests.hostile.harness", str(corpus), str(results)],
                   check=True, cwd=ROOT, timeout=900)
    return json.loads(results.read_text())


def test_every_bad_input_is_refused_cleanly(corpus_results, capsys):
    with capsys.disabled():
        print("\n" + table(corpus_results))
    assert bad_cases(corpus_results) >= 200
    assert not misses(corpus_results), "\n".join(misses(corpus_results))


def test_the_corpus_covers_every_format_and_kind(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    formats = {c["format"] for c in manifest["cases"]}
    assert formats == {"tf", "torch", "safetensors", "sharded", "npz", "flax", "keras",
                       "keras-h5"}
    malicious = [c for c in manifest["cases"] if c["kind"] == "malicious"]
    assert sum(c["id"].split("-", 1)[1].startswith("torch-zip") for c in malicious) >= 10
    assert sum(c["id"].split("-", 1)[1].startswith("torch-legacy") for c in malicious) >= 10
    assert any(c["format"] == "npz" for c in malicious)
