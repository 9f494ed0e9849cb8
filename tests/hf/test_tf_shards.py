"""Hugging Face sharded TF sets (`tf_model.h5.index.json` + `tf_model-0000k-of-0000n.h5`)
read as one checkpoint: the graph of the unsharded `tf_model.h5` of the same weights.

The suite's transformers (5.x) has no TF classes, so the files are laid out here with h5py
as transformers 4.57 wrote them: `write_tf_sharded` follows `tf_shard_checkpoint` and the
h5 branch of `TFPreTrainedModel.save_pretrained`, `write_tf_h5` the unsharded file
(tf_keras `save_weights`), both through transformers' `save_attributes_to_hdf5_group`.
(Checked against a set transformers 4.57 wrote: same index bytes, same HDF5 structure,
attributes and dataset bytes.) The Flax sets: tests/flax/test_hf_shards.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import convert
from convert.core.errors import FormatError
from convert.core.graph import Graph
from convert.core.meta import SOURCE_KEY
from convert.formats.keras import legacy_reader
from tests.hf.tf_files import (
    MODEL,
    bert_layers,
    flat,
    shard_name,
    write_tf_h5,
    write_tf_sharded,
)


@pytest.fixture
def bert_set(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(tf_model.h5, the sharded set's index, the weights) of the same model."""
    layers = bert_layers()
    unsharded = write_tf_h5(tmp_path / "tf_model.h5", layers)
    index = write_tf_sharded(tmp_path / "sharded", flat(layers), max_shard_size=2600)
    return unsharded, index, flat(layers)


def tensors(graph: Graph) -> dict[tuple[str, ...], np.ndarray]:
    return {entry.path: entry.tensor.read() for entry in graph.entries()}


def assert_same_graph(sharded: Graph, unsharded: Graph) -> None:
    got, want = tensors(sharded), tensors(unsharded)
    assert sorted(got) == sorted(want)
    for path, value in want.items():
        assert got[path].dtype == value.dtype and got[path].shape == value.shape, path
        np.testing.assert_array_equal(got[path], value, err_msg="/".join(path))


def assert_one_line(exc: pytest.ExceptionInfo, file: Path, *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and file.name in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# -- reading -----------------------------------------------------------------------------


def test_a_sharded_tf_set_reads_as_its_unsharded_file(bert_set):
    unsharded, index, weights = bert_set
    shards = sorted(index.parent.glob("tf_model-*.h5"))
    assert len(shards) > 2  # (the layout under test: several shards)
    whole, sharded = convert.load(unsharded), convert.load(index)
    assert whole.format == sharded.format == "keras-h5"
    assert_same_graph(sharded, whole)
    assert ("bert", "encoder", "layer_._1", "attention", "self", "query", "kernel") in (
        e.path for e in sharded.entries()
    )
    keys = {e.tensor.meta[SOURCE_KEY] for e in sharded.entries()}
    assert keys == set(weights)  # each tensor named as the index names it
    assert sharded.files == [str(index), *map(str, shards)]


def test_a_shard_alone_reads_as_its_part_of_the_model(bert_set):
    unsharded, index, _ = bert_set
    whole = tensors(convert.load(unsharded))
    shard = convert.load(index.parent / "tf_model-00002-of-00003.h5")
    assert shard.format == "keras-h5"
    part = tensors(shard)
    assert part and set(part) < set(whole)
    for path, value in part.items():
        np.testing.assert_array_equal(value, whole[path])


def test_names_kept_whole_go_where_the_unsharded_file_puts_them(tmp_path):
    """A weight name holding `model.` is stored whole, its model scope included."""
    rng = np.random.default_rng(1)
    layers = {
        "model.generator": {
            "tf_rag_model/model.generator/dense/kernel:0": rng.random((3, 2), np.float32),
            "tf_rag_model/model.generator/dense/bias:0": rng.random((2,), np.float32),
        },
        "classifier": {"tf_rag_model/classifier/kernel:0": rng.random((2, 2), np.float32)},
    }
    unsharded = write_tf_h5(tmp_path / "tf_model.h5", layers)
    index = write_tf_sharded(tmp_path / "sharded", flat(layers), max_shard_size=24)
    with h5py.File(index.parent / "tf_model-00001-of-00002.h5", "r") as f:
        assert "tf_rag_model/model.generator/dense/kernel:0" in f
    assert_same_graph(convert.load(index), convert.load(unsharded))


def test_the_shard_paths_of_weight_names():
    assert legacy_reader.hf_shard_name(f"{MODEL}/bert/pooler/dense/bias:0") == (
        "bert/pooler/dense/bias:0"
    )
    assert legacy_reader.hf_shard_name("a/model.b/kernel:0") == "a/model.b/kernel:0"
    assert legacy_reader.hf_shard_name("logit_scale:0") == "logit_scale:0"
    path = legacy_reader.hf_shard_path
    assert path("bert/pooler/dense/bias:0") == ("bert", "pooler", "dense", "bias")
    assert path("classifier/kernel:0") == ("classifier", "kernel")
    assert path("a/model.b/kernel:0") == ("model.b", "kernel")
    assert path("logit_scale:0") == ("logit_scale",)


def test_layer_names_split_past_the_header_limit(tmp_path):
    """Over 64512 bytes of names, a shard's `layer_names` is `layer_names0`, `…1`, …"""
    rng = np.random.default_rng(2)
    scope = "encoder/" + "x" * 250
    layers = {
        "encoder": {
            f"{MODEL}/{scope}/layer_._{i}/dense/kernel:0": rng.random((1,), np.float32)
            for i in range(300)
        }
    }
    unsharded = write_tf_h5(tmp_path / "tf_model.h5", layers)
    index = write_tf_sharded(tmp_path / "sharded", flat(layers), max_shard_size=4 * 250)
    with h5py.File(index.parent / "tf_model-00001-of-00002.h5", "r") as f:
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
    assert_same_graph(convert.load(index), convert.load(unsharded))


# -- what is refused -----------------------------------------------------------------------


def _edit_index(index: Path, edit) -> None:
    data = json.loads(index.read_text())
    edit(data["weight_map"])
    index.write_text(json.dumps(data))


def test_a_missing_shard_is_named(bert_set):
    _, index, _ = bert_set
    (index.parent / "tf_model-00002-of-00003.h5").unlink()
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, "shard tf_model-00002-of-00003.h5", "missing")


@pytest.mark.parametrize("keep", [0, 6, 1000, 0.5, -1])
def test_a_truncated_shard_is_named(bert_set, keep):
    _, index, _ = bert_set
    shard = index.parent / "tf_model-00002-of-00003.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, shard)


def test_a_weight_the_index_puts_in_the_wrong_shard(bert_set):
    _, index, _ = bert_set
    name = f"{MODEL}/classifier/bias:0"

    def move(weight_map):
        assert weight_map[name] == "tf_model-00003-of-00003.h5"
        weight_map[name] = "tf_model-00001-of-00003.h5"

    _edit_index(index, move)
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, repr(name), "tf_model-00001-of-00003.h5", "does not hold it")


def test_a_weight_no_shard_holds(bert_set):
    _, index, _ = bert_set
    name = f"{MODEL}/bert/pooler/dense/extra:0"
    _edit_index(index, lambda weight_map: weight_map.update({name: "tf_model-00003-of-00003.h5"}))
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, repr(name), "does not hold it")


def test_a_weight_in_two_shards(bert_set):
    _, index, weights = bert_set
    name = f"{MODEL}/classifier/bias:0"
    with h5py.File(index.parent / "tf_model-00001-of-00003.h5", "a") as f:
        f.create_dataset(shard_name(name), data=weights[name])
        f.attrs["layer_names"] = [*f.attrs["layer_names"], shard_name(name)]
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, repr(name), "in two shards")


def test_shards_of_two_formats(bert_set):
    _, index, _ = bert_set
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (index.parent / "tf_model-00003-of-00003.h5").write_bytes(
        len(header).to_bytes(8, "little") + header + bytes(4)  # (a safetensors file)
    )
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, "mixes keras-h5 and safetensors shards")
