"""Every tensor read here equals TensorFlow's own reader, bit for bit, and `ckpt ls`
lists what `tf.train.list_variables` lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convert
from convert.core.dtypes import dtype_name

from .conftest import tf, tf_prefix, tf_values

ALL = [
    "functional",
    "subclassed",
    "keras3",
    "save_weights",
    "managed",
    "dtypes",
    "sharded",
    "tf1",
    "saved_model",
]


def assert_bits_equal(ours: np.ndarray, theirs: np.ndarray, key: str) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, key
    if ours.dtype == object or theirs.dtype.kind in "OS":  # strings: TF gives bytes or |S
        assert ours.astype(object).tolist() == theirs.astype(object).tolist(), key
        return
    assert dtype_name(ours.dtype) == dtype_name(theirs.dtype), key
    assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes(), key


def by_key(graph: convert.Graph) -> dict[str, convert.Tensor]:
    return {e.tensor.meta["key"]: e.tensor for e in graph.entries()}


@pytest.mark.parametrize("name", ALL)
def test_every_tensor_equals_tensorflow(goldens, name):
    ours = by_key(convert.load(goldens[name].path))
    theirs = tf_values(tf_prefix(goldens[name]))
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert_bits_equal(ours[key].read(), value, key)


@pytest.mark.parametrize("name", ALL)
def test_ls_json_matches_list_variables(goldens, name, ckpt):
    result = ckpt("ls", goldens[name].path, "--json")
    assert result.code == 0, result.err
    rows = {r["key"]: r for r in json.loads(result.out)}
    prefix = tf_prefix(goldens[name])
    expected = dict(tf.train.list_variables(prefix))
    expected.pop("_CHECKPOINTABLE_OBJECT_GRAPH", None)
    assert {k: r["shape"] for k, r in rows.items()} == {k: list(s) for k, s in expected.items()}
    dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
    for key, row in rows.items():
        tf_dtype = dtypes[key]
        want = "string" if tf_dtype == tf.string else dtype_name(tf_dtype.as_numpy_dtype)
        assert row["dtype"] == want, key


def test_object_graph_becomes_graph(goldens):
    graph = convert.load(goldens["functional"].path)
    model = graph.root["model"]
    # tf_keras tracks each layer with weights twice: an alias, not a copy.
    assert model["layer_with_weights-0"] is model["layer-1"]
    kernel = model["layer_with_weights-0"]["kernel"]
    assert kernel.meta["key"] == "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    names = {(s.name, id(s.variable)) for s in graph.slots}
    assert ("m", id(kernel)) in names and ("v", id(kernel)) in names
    assert all(s.optimizer is graph.root["optimizer"] for s in graph.slots)
    assert "save_counter" in graph.root


def test_registered_saver_is_reported(goldens, ckpt, tmp_path):
    listed = ckpt("ls", goldens["registered"].path)
    assert listed.code == 0 and "registered saver 'ConvertTests.Part'" in listed.err
    report = convert.convert(goldens["registered"].path, tmp_path / "out", to="tf")
    assert any("ConvertTests.Part" in note for note in report.notes)


def test_name_based_checkpoint_splits_names(goldens):
    graph = convert.load(goldens["tf1"].path)
    kernel = graph.get(("bert", "encoder", "layer_0", "kernel"))
    assert {s.name for s in graph.slots if s.variable is kernel} == {"Adam", "Adam_1"}
    assert graph.get(("global_step",)).shape == ()


@pytest.mark.parametrize("form", ["index", "data", "directory"])
def test_accepts_index_data_and_directory(goldens, form):
    prefix = goldens["functional"].path
    path = {
        "index": f"{prefix}.index",
        "data": f"{prefix}.data-00000-of-00001",
        "directory": prefix.parent,
    }[form]
    assert set(by_key(convert.load(path))) == set(tf_values(prefix))


def test_reads_only_when_asked(goldens, monkeypatch):
    from convert.io import reads as fileio

    calls = []
    real = fileio.SourceFile.read
    monkeypatch.setattr(fileio.SourceFile, "read", lambda *a, **k: calls.append(a) or real(*a, **k))
    graph = convert.load(goldens["sharded"].path)
    entries = graph.entries()
    assert len(calls) == 1  # the object graph itself, nothing else
    entries[0].tensor.read()
    assert len(calls) > 1


def test_sliced_tensors_are_reassembled(goldens):
    prefix = goldens["sharded"].path
    shards = list(prefix.parent.glob(prefix.name + ".data-*"))
    assert len(shards) > 1
    from convert.formats.tf.bundle import BundleReader

    reader = BundleReader(prefix)
    sliced = [k for k in reader.tensor_keys() if reader.entry(k).slices]
    assert sliced, "the sharding policy was expected to slice the large variables"


def test_tree_names_each_slot_optimizer_and_shows_tensors_like_other_lines(goldens, ckpt):
    for name, optimizer in (("tf1", "(root)"), ("functional", "optimizer")):
        lines = [
            line
            for line in ckpt("ls", goldens[name].path, "--tree").out.splitlines()
            if line.strip().startswith("slot ")
        ]
        assert lines, name
        for line in lines:
            assert f" kept by {optimizer}: float32[" in line, line
            assert "?" not in line and "Tensor(" not in line, line
