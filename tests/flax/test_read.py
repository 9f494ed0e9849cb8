"""Reading Flax msgpack files written by real Flax: every leaf bit-exact, nothing eager."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from flax import serialization

import convert
from convert.core.graph import Node
from convert.core.tensor import Tensor
from convert.formats import flax as flax_format
from convert.formats.flax import layout, walk

from .trees import assert_bit_exact, flatten_graph, flatten_tree

GOLDEN_NAMES = ["cnn", "block", "bf16", "nnx", "misc", "raw", "chunked"]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_every_leaf_matches_flax_restore(goldens, name):
    path = goldens[name].path
    graph = convert.load(path)
    assert graph.format == "flax" and graph.files == [str(path)]
    want_arrays, want_values = flatten_tree(serialization.msgpack_restore(path.read_bytes()))
    got_arrays, got_values = flatten_graph(graph)
    assert want_arrays, "the golden file holds arrays"
    assert_bit_exact(got_arrays, want_arrays)
    assert got_values == want_values


def test_linen_collections_become_nodes(linen_cnn):
    graph = convert.load(linen_cnn.path)
    assert list(graph.root.edges) == ["params", "batch_stats"]
    bn = graph.get(("batch_stats", "BatchNorm_0"))
    assert isinstance(bn, Node) and set(bn.edges) == {"mean", "var"}
    kernel = graph.get(("params", "Conv_0", "kernel"))
    want = linen_cnn.template["params"]["Conv_0"]["kernel"]
    assert isinstance(kernel, Tensor) and kernel.shape == want.shape
    assert kernel.meta["key"] == "params/Conv_0/kernel"


def test_ls_json_lists_slash_joined_keys(ckpt, linen_block):
    result = ckpt("ls", linen_block.path, "--json")
    assert result.code == 0, result.err
    rows = {r["key"]: r for r in json.loads(result.out)}
    want, _ = flatten_tree(serialization.msgpack_restore(linen_block.path.read_bytes()))
    assert set(rows) == {"/".join(p) for p in want}
    for path, array in want.items():
        row = rows["/".join(path)]
        assert row["shape"] == list(array.shape) and row["dtype"] == array.dtype.name


def test_leaf_kinds_are_kept(misc):
    graph = convert.load(misc.path)
    scalar = graph.get(("scalar",))
    assert scalar.shape == () and scalar.meta[layout.META_EXT] == "npscalar"
    assert graph.root.values["c"] == complex(1.5, -2.0)
    assert graph.root.values["name"] == "run-1" and graph.root.values["step"] == 7
    assert graph.get(("params", "bf")).dtype_name == "bfloat16"
    assert graph.get(("params", "f8")).dtype_name == "float8_e4m3fn"
    assert isinstance(graph.get(("nothing",)), Node)


def test_raw_msgpack_arrays_are_indexed_nodes(raw_lists):
    graph = convert.load(raw_lists.path)
    layers = graph.get(("layers",))
    assert layers.meta[layout.META_ARRAY] is True
    assert list(layers.edges) == ["0", "1"] and layers.values == {"2": 4}


def test_chunked_array_is_one_tensor(chunked):
    graph = convert.load(chunked.path)
    embedding = graph.get(("params", "embedding"))
    assert embedding.shape == (40, 8) and embedding.meta["chunks"] == 5
    np.testing.assert_array_equal(embedding.read(), chunked.template["params"]["embedding"])


def test_load_returns_a_fresh_array_each_time(linen_cnn):
    kernel = convert.load(linen_cnn.path).get(("params", "Conv_0", "kernel"))
    first = kernel.read()
    first[...] = 0
    second = kernel.read()
    assert second is not first and np.any(second != 0)


def test_reading_the_structure_reads_no_tensor_data(linen_block, monkeypatch):
    calls = []
    monkeypatch.setattr(walk, "read_region", lambda *a, **k: calls.append(a) or bytearray())
    graph = convert.load(linen_block.path)
    assert len(graph) > 0 and calls == []


def test_pickles_are_not_taken_for_msgpack(tmp_path):
    """A pickle starts 0x80 (a msgpack empty map) then its protocol byte."""
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.msgpack"
        path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}, protocol=protocol))
        assert not flax_format.sniff(path)
