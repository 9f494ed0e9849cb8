"""Writing Flax msgpack: real Flax restores every file, and the models give the same outputs."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from flax import serialization

import convert
from convert.core.dtypes import STRING
from convert.core.errors import OutputExistsError
from convert.core.graph import Graph, Node
from convert.core.tensor import Tensor
from convert.formats.flax import writer as flax_writer

from ..conftest import listing
from .conftest import CHUNK_LIMIT
from .trees import assert_bit_exact, flatten_tree

MODELS = ["cnn", "block", "bf16", "nnx"]


@pytest.mark.parametrize("name", ["cnn", "block", "bf16", "nnx", "misc", "raw", "chunked"])
def test_flax_round_trip_gives_the_same_bytes(goldens, name, tmp_path, monkeypatch):
    if name == "chunked":  # write with the limit the golden file was made with
        monkeypatch.setattr(flax_writer, "MAX_CHUNK_SIZE", CHUNK_LIMIT)
    golden = goldens[name].path
    report = convert.convert(golden, tmp_path / "out.msgpack")
    assert (tmp_path / "out.msgpack").read_bytes() == golden.read_bytes()
    assert report.files == [str(tmp_path / "out.msgpack")] and report.tensors > 0


@pytest.mark.parametrize("name", MODELS)
def test_model_restores_after_npz_round_trip(goldens, name, tmp_path, ckpt):
    golden = goldens[name]
    npz, back = tmp_path / "w.npz", tmp_path / "w.msgpack"
    for src, dst in [(golden.path, npz), (npz, back)]:
        result = ckpt("convert", src, dst)
        assert result.code == 0, result.err
    restored = serialization.from_bytes(golden.template, (tmp_path / "w.msgpack").read_bytes())
    np.testing.assert_array_equal(golden.apply(restored), golden.expected)
    want, _ = flatten_tree(serialization.msgpack_restore(golden.path.read_bytes()))
    got, _ = flatten_tree(serialization.msgpack_restore((tmp_path / "w.msgpack").read_bytes()))
    assert_bit_exact(got, want)


def test_large_arrays_are_chunked_like_flax(chunked, tmp_path, monkeypatch):
    monkeypatch.setattr(flax_writer, "MAX_CHUNK_SIZE", CHUNK_LIMIT)
    convert.convert(chunked.path, tmp_path / "c.npz")  # no chunks in npz
    convert.convert(tmp_path / "c.npz", tmp_path / "c.msgpack")
    raw = msgpack.unpackb((tmp_path / "c.msgpack").read_bytes(), strict_map_key=False)
    embedding = raw["params"]["embedding"]
    assert embedding["__msgpack_chunked_array__"] is True
    assert embedding["shape"] == {"0": 40, "1": 8} and len(embedding["chunks"]) == 5
    assert not isinstance(raw["params"]["bias"], dict)
    with monkeypatch.context() as mp:  # Flax's own writer, same limit: the same bytes
        mp.setattr(serialization, "MAX_CHUNK_SIZE", CHUNK_LIMIT)
        assert serialization.to_bytes(chunked.template) == (tmp_path / "c.msgpack").read_bytes()
    restored = serialization.msgpack_restore((tmp_path / "c.msgpack").read_bytes())
    got, _ = flatten_tree(restored)
    want, _ = flatten_tree(chunked.template)
    assert_bit_exact(got, want)


def test_chunking_off_by_default(chunked, tmp_path):
    convert.convert(chunked.path, tmp_path / "plain.msgpack")
    raw = msgpack.unpackb((tmp_path / "plain.msgpack").read_bytes(), strict_map_key=False)
    assert isinstance(raw["params"]["embedding"], msgpack.ExtType)


def _foreign_graph() -> Graph:
    """A graph as another format's reader makes it: aliases, metadata, a string tensor."""
    graph = Graph(format="torch")
    shared = Tensor.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    graph.add(("encoder", "embed", "weight"), shared)
    graph.add(("decoder", "weight"), shared)  # tied
    graph.add(("decoder", "bias"), Tensor.from_array(np.array([1, 2], np.int64)))
    graph.add(("names",), Tensor(STRING, (1,), lambda: np.array([b"a"], object)))
    graph.add(("act",), Node())  # an object without weights
    graph.get(("decoder",)).values["version"] = 1
    graph.values["framework"] = "torch"
    return graph


def test_foreign_graph_writes_each_tensor_once_with_notes(tmp_path):
    report = convert.save(_foreign_graph(), tmp_path / "f.msgpack")
    restored = serialization.msgpack_restore((tmp_path / "f.msgpack").read_bytes())
    assert set(restored) == {"encoder", "decoder"}  # no empty "act", no string tensor
    np.testing.assert_array_equal(
        restored["encoder"]["embed"]["weight"], np.arange(6, dtype=np.float32).reshape(2, 3)
    )
    assert set(restored["decoder"]) == {"bias"}
    assert report.tensors == 2
    notes = " ".join(report.notes)
    for fragment in ("aliases", "string tensor", "names", "non-tensor values", "framework"):
        assert fragment in notes


def test_existing_output_is_refused_and_nothing_is_left(linen_cnn, tmp_path):
    out = tmp_path / "x.msgpack"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        convert.convert(linen_cnn.path, out)
    assert out.read_bytes() == b"keep" and listing(tmp_path) == {"x.msgpack"}
    convert.convert(linen_cnn.path, out, overwrite=True)
    assert out.read_bytes() == linen_cnn.path.read_bytes()
    assert listing(tmp_path) == {"x.msgpack"}
