"""Comparing a restored Flax tree with a Graph, leaf by leaf and bit by bit."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from convert.core.graph import Graph, Node


def flatten_tree(tree: Any, prefix: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(arrays, other values) of a restored Flax tree, by path; numpy scalars are arrays."""
    arrays: dict = {}
    values: dict = {}
    if isinstance(tree, dict) and "__msgpack_chunked_array__" in tree:
        raise AssertionError("chunked array left in a restored tree")
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        path = prefix + (str(key),)
        if isinstance(value, dict | list):
            sub_arrays, sub_values = flatten_tree(value, path)
            arrays.update(sub_arrays)
            values.update(sub_values)
        elif isinstance(value, np.ndarray | np.generic | jax.Array):
            arrays[path] = np.asarray(value)
        else:
            values[path] = value
    return arrays, values


def flatten_graph(graph: Graph) -> tuple[dict, dict]:
    arrays = {e.path: e.tensor.read() for e in graph.entries()}
    values = {}
    nodes = [((), graph.root)] + [(p, n) for p, n in graph.walk() if isinstance(n, Node)]
    for path, node in nodes:
        for name, value in node.values.items():
            values[path + (name,)] = value
    return arrays, values


def assert_bit_exact(got: dict, want: dict) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for path, array in want.items():
        array = np.asarray(array)
        assert got[path].dtype == array.dtype, (path, got[path].dtype, array.dtype)
        assert got[path].shape == array.shape, (path, got[path].shape, array.shape)
        assert got[path].tobytes() == array.tobytes(), path
