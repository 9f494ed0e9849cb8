"""The guarantee for every case of the hostile corpus (scripts/make_bad_inputs.py), through
`ckpt ls` and `ckpt convert`: one line naming the file and exit 2 (or, only where the
damage leaves a valid file, a normal read), no traceback, no payload run, nothing opened
outside the input, bounded memory, no output left, the input unchanged, within 5 s."""

from __future__ import annotations

import json

from .report import bad_cases, misses, table


def test_every_bad_input_is_refused_cleanly(corpus_results, capsys):
    with capsys.disabled():
        print("\n" + table(corpus_results))
    assert bad_cases(corpus_results) >= 200
    assert not misses(corpus_results), "\n".join(misses(corpus_results))


def test_the_corpus_covers_every_format_and_kind(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    formats = {c["format"] for c in manifest["cases"]}
    assert formats == {
        *("tf", "dcp", "torch", "safetensors", "sharded", "npz", "flax", "keras", "keras-h5")
    }
    malicious = [c for c in manifest["cases"] if c["kind"] == "malicious"]
    assert sum(c["id"].split("-", 1)[1].startswith("torch-zip") for c in malicious) >= 10
    assert sum(c["id"].split("-", 1)[1].startswith("torch-legacy") for c in malicious) >= 10
    assert any(c["format"] == "npz" for c in malicious)
    assert sum(c["format"] == "dcp" for c in malicious) >= 10
