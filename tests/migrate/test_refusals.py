"""What migrate refuses rather than guesses, on graphs built here: optimizer list entries
that no variable claims, once some variables are dropped."""

from __future__ import annotations

import numpy as np
import pytest

from convert.core.errors import UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.tensor import Tensor
from convert.passes import migrate as migration


def _var(name: str, dtype=np.float32) -> Tensor:
    return Tensor.from_array(np.zeros((), dtype), {"tf_full_name": name})


def _graph(slot_name: str) -> Graph:
    graph = Graph(format="tf")
    graph.add(("model", "a", "kernel"), _var("a/kernel"))
    graph.add(("model", "b", "kernel"), _var("b/kernel"))
    opt = graph.add(("opt",), Node())
    iterations, slot = _var("iteration", np.int64), _var(slot_name)
    opt.edges["_iterations"] = iterations
    graph.add(("opt", "_variables", "0"), iterations)
    graph.add(("opt", "_variables", "1"), slot)
    graph.add(("opt", "_momentums", "0"), slot)
    return graph


def test_an_entry_of_a_dropped_variable_goes():
    out, done = migration.migrate(
        _graph("Adam/m/b/kernel"), pick=["model/a", "opt"], checkpoint_root=True
    )
    assert list(out.get(("opt", "_variables")).edges) == ["0"]
    assert not out.get(("opt", "_momentums")).edges
    assert {
        "path": "opt/_variables/1",
        "why": "optimizer state of a variable that is not kept",
    } in done.dropped


def test_an_entry_no_variable_claims_is_refused():
    with pytest.raises(UnsupportedError, match="no variable here is named by 'Adam/m/c/k'"):
        migration.migrate(_graph("Adam/m/c/k"), pick=["model/a", "opt"])
    out, _ = migration.migrate(_graph("Adam/m/c/k"), under="x")  # nothing dropped: kept
    assert len(out.get(("x", "opt", "_variables")).edges) == 2


def test_paths_may_be_checkpoint_keys():
    """A TF key's `/.ATTRIBUTES/VARIABLE_VALUE` names the variable; another attribute is one
    edge (`.ATTRIBUTES/ITERATOR_STATE`)."""
    assert migration.parse_pick("model/d/kernel/.ATTRIBUTES/VARIABLE_VALUE=k") == migration.Pick(
        ("model", "d", "kernel"), ("k",)
    )
    assert migration.parse_path("it/.ATTRIBUTES/ITERATOR_STATE", "--pick") == (
        "it",
        ".ATTRIBUTES/ITERATOR_STATE",
    )
    with pytest.raises(UnsupportedError, match="is not a path"):
        migration.parse_path("a//b", "--pick")
