"""Optimizer state in the graph, for `ckpt migrate`: which objects are optimizers, which
tensors are the model's variables, and how slots and Keras optimizer lists follow them.

A TF slot (`Slot`) is kept only with its variable and its optimizer. A Keras optimizer's
variable lists (`_variables/N`, with `_momentums/N`, `_velocities/N` and Keras 3's
`_trainable_variables/N` beside it) lose the entries of variables that are not kept and are
renumbered, as an optimizer built over the kept variables numbers them. Which variable an
entry belongs to comes from Keras 3's `_trainable_variables` or, in tf_keras, from the
entry's name (`Adam/m/dense/kernel` is a slot of `dense/kernel`); an entry no variable claims
is refused once variables are dropped, rather than guessed.
"""

from __future__ import annotations

from typing import cast

from convert.core.errors import UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import VARIABLE_NAME
from convert.core.tensor import Tensor

LISTS = ("_variables", "_trainable_variables")  # the Keras optimizer lists that are not slots
ITERATIONS = ("_iterations", "iter", "iterations")


def _is_optimizer(node: Node) -> bool:
    """A Keras optimizer by its shape: an iteration counter beside a variable list or a
    learning rate (tf_keras, Keras 3, tf_keras' legacy optimizers)."""
    counter = next((node.edges[n] for n in ITERATIONS if n in node.edges), None)
    if not isinstance(counter, Tensor) or counter.shape != () or counter.dtype.kind not in "iu":
        return False
    return type(node.edges.get("_variables")) is Node or any(
        n in node.edges for n in ("learning_rate", "_learning_rate")
    )


def find(graph: Graph) -> set[int]:
    """The optimizer objects: those that keep slots (not a TF1 root), and Keras ones."""
    found = {id(s.optimizer) for s in graph.slots if s.optimizer is not graph.root}
    found |= {id(n) for _, n in graph.nodes() if n is not graph.root and _is_optimizer(n)}
    return found


def variables(graph: Graph, optimizers: set[int]) -> dict[int, Tensor]:
    """The tensors reachable without going through an optimizer: the model's variables."""
    found: dict[int, Tensor] = {}
    seen: set[int] = set()
    stack = [graph.root]
    while stack:
        for item in stack.pop().edges.values():
            if isinstance(item, Tensor):
                found[id(item)] = item
            elif id(item) not in seen and id(item) not in optimizers:
                seen.add(id(item))
                stack.append(item)
    return found


def drop_optimizers(graph: Graph) -> None:
    optimizers = find(graph)
    for _, node in graph.nodes():
        for name in [n for n, item in node.edges.items() if id(item) in optimizers]:
            del node.edges[name]
    graph.slots = []


def follow_slots(graph: Graph, known: dict[int, Tensor], notes: list[str]) -> None:
    """Slots and Keras optimizer list entries stay only with their kept variables."""
    optimizers = find(graph)
    kept = variables(graph, optimizers)
    reached = {id(n) for _, n in graph.nodes()}
    graph.slots = [s for s in graph.slots if id(s.variable) in kept and id(s.optimizer) in reached]
    by_name: dict[str, list[Tensor]] = {}
    for tensor in known.values():
        name = tensor.meta.get(VARIABLE_NAME)
        if isinstance(name, str) and name:
            by_name.setdefault(name, []).append(tensor)
    dropped_any = any(i not in kept for i in known)
    done: set[int] = set()
    for path, node in list(graph.nodes()):
        if id(node) in done or id(node) not in optimizers:
            continue
        done.add(id(node))
        if _prune_lists(node, kept, by_name, dropped_any, "/".join(path), graph.source):
            notes.append(
                f"the Keras optimizer at {'/'.join(path) or '(root)'} keeps the state of the "
                "kept variables only, renumbered: Keras restores it by position, into the "
                "variables an optimizer is built over, in their order"
            )


def _lists(opt: Node) -> dict[str, Node]:
    return {
        name: item
        for name, item in opt.edges.items()
        if type(item) is Node
        and item.edges
        and all(k.isdigit() and isinstance(t, Tensor) for k, t in item.edges.items())
    }


def _in_order(node: Node) -> list[Tensor]:
    ordered = sorted(node.edges.items(), key=lambda kv: int(kv[0]))
    return cast("list[Tensor]", [t for _, t in ordered])  # (a list of `_lists`: Tensors)


def _prune_lists(
    opt: Node,
    kept: dict[int, Tensor],
    by_name: dict[str, list[Tensor]],
    dropped_any: bool,
    where: str,
    source,
) -> bool:
    """Drop the list entries of variables that are not kept; renumber. True if any went."""
    lists = _lists(opt)
    entries = _in_order(lists.get("_variables", Node()))
    owners = _owners(lists, entries, by_name)
    drop: set[int] = set()
    for tensor in entries:
        claim = owners.get(id(tensor))
        if claim is None:
            continue
        status = {id(v) in kept for v in claim}
        if len(status) > 1:
            raise UnsupportedError(
                f"{where}/_variables: {_name(tensor)!r} is the state of "
                "one of several variables of that name, of which some are "
                "kept; pass --no-optimizer",
                source,
            )
        if not status.pop():
            drop.add(id(tensor))
    if dropped_any:
        slots = {
            id(t) for name, lst in lists.items() if name not in LISTS for t in lst.edges.values()
        }
        stray = [t for t in entries if id(t) in slots and id(t) not in owners]
        if stray:
            raise UnsupportedError(
                f"{where}/_variables: no variable here is named by "
                f"{_name(stray[0])!r}, so whether it goes with the kept "
                "variables is not known; pass --no-optimizer",
                source,
            )
    changed = False
    for name, lst in lists.items():
        tensors = _in_order(lst)
        keep = [
            t
            for t in tensors
            if id(t) not in drop and (name != "_trainable_variables" or id(t) in kept)
        ]
        if len(keep) != len(tensors):
            lst.edges = {str(i): t for i, t in enumerate(keep)}
            changed = True
    return changed


def _owners(
    lists: dict[str, Node], entries: list[Tensor], by_name: dict[str, list[Tensor]]
) -> dict[int, list[Tensor]]:
    """Which variable(s) each `_variables` entry is the state of: Keras 3's lists of slots
    run beside `_trainable_variables`; tf_keras names a slot `<optimizer>/<slot>/<variable>`."""
    owners: dict[int, list[Tensor]] = {}
    variables = _in_order(lists["_trainable_variables"]) if "_trainable_variables" in lists else []
    in_entries = {id(t) for t in entries}
    for name, lst in lists.items():
        slots = _in_order(lst)
        if (
            name in LISTS
            or len(slots) != len(variables)
            or not all(id(t) in in_entries for t in slots)
        ):
            continue
        for slot, variable in zip(slots, variables, strict=True):
            owners[id(slot)] = [variable]
    for tensor in entries:
        parts = _name(tensor).split("/")
        for k in range(1, len(parts)):  # the longest variable name it ends with
            claim = by_name.get("/".join(parts[k:]))
            if claim and id(tensor) not in owners:
                owners[id(tensor)] = claim
                break
    return owners


def _name(tensor: Tensor) -> str:
    return str(tensor.meta.get(VARIABLE_NAME) or "")
