"""`ckpt ls --dot / --svg / --png`: the object graph as Graphviz DOT, parsed back by
Graphviz itself (`dot -Tjson`): every variable once (or inside a folded block whose count
covers it), every alias a dashed edge, every slot tied to its variable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf_keras = pytest.importorskip("tf_keras")
torch = pytest.importorskip("torch")

import convert  # noqa: E402
from tests.conftest import assert_one_line_error  # noqa: E402

DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz's dot is not installed")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pictures")
    L = tf_keras.layers
    inp = tf_keras.Input((4,))
    model = tf_keras.Model(inp, L.Dense(2)(L.Dense(3, activation="relu")(inp)))
    model.compile(tf_keras.optimizers.legacy.Adam(), "mse")  # (slot variables: m and v)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)), epochs=1, verbose=0)
    model.save_weights(str(root / "keras" / "weights"))

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.norm = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.ModuleList([Block() for _ in range(6)])
            self.head = torch.nn.Linear(4, 2)

    torch.save(Stack().state_dict(), root / "stack.pt")
    return {"keras": root / "keras" / "weights", "stack": root / "stack.pt"}


def _parsed(ckpt, path: Path, *options: str) -> dict:
    result = ckpt("ls", path, "--dot", *options)
    assert result.code == 0, result.err
    assert DOT is not None
    done = subprocess.run([DOT, "-Tjson"], input=result.out, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _by_name(drawn: dict) -> dict[str, dict]:
    return {o["name"]: o for o in drawn["objects"] if "nodes" not in o}


@needs_dot
def test_every_variable_alias_and_slot_is_drawn(files, ckpt):
    graph = convert.load(files["keras"])
    entries = graph.entries()
    drawn = _parsed(ckpt, files["keras"])
    nodes = _by_name(drawn)
    variables = Counter(o["ckpt_var"] for o in nodes.values() if "ckpt_var" in o)
    plain = [e for e in entries if e.slot is None]
    assert variables == Counter("/".join(e.path) for e in plain)  # each once, at its path
    edges = drawn["edges"]
    ids = {o["_gvid"]: name for name, o in nodes.items()}
    dashed = [e for e in edges if e.get("style") == "dashed"]
    aliases = sum(len(e.paths) - 1 for e in plain)
    shared_nodes = sum(n - 1 for n in Counter(id(n) for _, n in graph.nodes()).values())
    assert len(dashed) == aliases + shared_nodes  # (layer-N beside layer_with_weights-N)
    slots = [o for o in nodes.values() if "ckpt_slot" in o]
    assert len(graph.slots) == 8  # (m and v of two kernels and two biases)
    assert sorted(o["ckpt_slot"] for o in slots) == sorted(s.name for s in graph.slots)
    tied = {ids[e["head"]] for e in edges if e.get("style") == "dotted"}
    assert tied == {name for name, o in nodes.items() if "ckpt_slot" in o}
    for edge in (e for e in edges if e.get("style") == "dotted"):
        assert "ckpt_var" in nodes[ids[edge["tail"]]]  # (a slot hangs off a variable)


@needs_dot
def test_repeated_blocks_fold_and_their_counts_add_up(files, ckpt):
    total = len(convert.load(files["stack"]).entries())
    folded = _by_name(_parsed(ckpt, files["stack"]))
    counts = [int(o["ckpt_count"]) for o in folded.values() if "ckpt_var" in o]
    assert sum(counts) == total and max(counts) == 6 and len(counts) == 4 + 2
    assert any(o.get("label", "").startswith("{0..5}") for o in folded.values())
    expanded = _by_name(_parsed(ckpt, files["stack"], "--expand"))
    counts = [int(o["ckpt_count"]) for o in expanded.values() if "ckpt_var" in o]
    assert counts == [1] * total


@needs_dot
def test_svg_and_png_are_drawn(files, ckpt, tmp_path):
    result = ckpt("ls", files["keras"], "--svg", tmp_path / "g.svg", "--png", tmp_path / "g.png")
    assert result.code == 0, result.err
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "g.svg").read_text()
    again = ckpt("ls", files["keras"], "--png", tmp_path / "g.png")
    assert_one_line_error(again, "exists already")


def test_without_dot_drawing_is_one_line_and_dot_text_still_prints(files, ckpt, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()  # (a PATH with no dot on it)
    env_path = os.environ["PATH"]
    try:
        os.environ["PATH"] = str(bare)
        result = ckpt("ls", files["stack"], "--svg", tmp_path / "g.svg")
        text = ckpt("ls", files["stack"], "--dot")
    finally:
        os.environ["PATH"] = env_path
    assert_one_line_error(result, "Graphviz", "apt install graphviz")
    assert not (tmp_path / "g.svg").exists()
    assert text.code == 0 and text.out.startswith("digraph checkpoint {")


@needs_dot
def test_a_migration_is_drawn_coloured_by_what_becomes_of_each_variable(files, ckpt, tmp_path):
    from convert import api
    from convert.pictures.dot import _COLOURS, migration_marks, to_dot

    picks = ("layer_with_weights-0=zy", "optimizer")
    args = ("migrate", files["keras"], tmp_path / "out", "--dry-run")
    result = ckpt(*args, *(f"--pick={p}" for p in picks), "--png", tmp_path / "m.png")
    assert result.code == 0, result.err
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "out").exists()
    report = api.migrate(files["keras"], tmp_path / "out", pick=picks, dry_run=True)
    marks, added = migration_marks(report.migration)
    text = to_dot(convert.load(files["keras"]), marks=marks, added=added)
    done = subprocess.run([DOT, "-Tjson"], input=text, capture_output=True, text=True)
    drawn = _by_name(json.loads(done.stdout))
    coloured = [o.get("color") for o in drawn.values() if "ckpt_var" in o or "ckpt_slot" in o]
    statuses = Counter(mark.status for mark in marks.values())
    assert statuses["moved"] == 6 and statuses["dropped"] == 6 and statuses["kept"] == 5
    assert Counter(coloured) == Counter(_COLOURS[m.status] for m in marks.values())
    assert (
        [o["ckpt_added"] for o in drawn.values() if "ckpt_added" in o] == added == ["save_counter"]
    )


@needs_dot
def test_a_port_is_drawn_layer_to_layer_with_its_ops(files, ckpt, tmp_path):
    from convert import api
    from convert.pictures.port import port_dot

    class Twin(torch.nn.Module):  # (the Keras model's two Dense layers, in torch)
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)

    skeleton = tmp_path / "fresh.pt"
    torch.save(Twin().state_dict(), skeleton)
    out = tmp_path / "out.pt"
    args = ("--rules", "keras-torch", "--like", skeleton, "--dry-run")
    result = ckpt("convert", files["keras"], out, *args, "--svg", tmp_path / "port.svg")
    assert result.code == 0, result.err
    assert "<svg" in (tmp_path / "port.svg").read_text() and not out.exists()
    report = api.convert(
        files["keras"], out, rules="keras-torch", like=skeleton, dry_run=True, check="partial"
    )
    text = port_dot(report.rules, "keras", "torch")
    drawn = json.loads(
        subprocess.run([DOT, "-Tjson"], input=text, capture_output=True, text=True).stdout
    )
    nodes = _by_name(drawn)
    pairs = [e for e in drawn["edges"]]
    assert len(pairs) == len(report.rules["layers"]) == 2
    for edge in pairs:
        assert "weight ← kernel: transpose(axes=[1, 0])" in edge["label"]
        assert "dense (by order)" in edge["label"]
    unused = sum(int(o["ckpt_unused"]) for o in nodes.values() if "ckpt_unused" in o)
    assert unused == len(report.rules["unused"]) > 0  # (the optimizer's own variables)
    no_rules = ckpt("convert", files["keras"], tmp_path / "x.npz", "--svg", tmp_path / "x.svg")
    assert_one_line_error(no_rules, "--svg and --png draw a port")
    assert not (tmp_path / "x.npz").exists()
