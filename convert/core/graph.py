"""The intermediate graph every reader produces and every writer consumes.

An object graph with ordered, named edges (as TensorFlow checkpoints already are):
Nodes hold edges to Nodes or Tensors; one Node or Tensor may be reached by several
paths (TF's `layer-0` and `layer_with_weights-0`, tied embeddings). Optimizer slots are
kept as Slots (state attached to a variable), not as anonymous tensors. Non-tensor
values (an epoch counter, a Keras config) ride along in `values` dicts; format facts in
`meta` dicts (their keys: `convert.core.meta`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from convert.core.meta import PRIMARY_PATH
from convert.core.tensor import Tensor

GraphPath = tuple[str, ...]


def slot_path(optimizer: GraphPath, name: str, variable: GraphPath) -> GraphPath:
    """Where a flat format puts a slot: under its optimizer, by slot name, then the
    variable's path (`optimizer/m/dense/kernel`), so it never nests under a tensor."""
    return optimizer + (name,) + variable


class Node:
    """An object: ordered named edges to Nodes or Tensors, plus non-tensor values."""

    __slots__ = ("edges", "values", "meta")

    def __init__(self, meta: dict[str, Any] | None = None):
        self.edges: dict[str, Node | Tensor] = {}
        self.values: dict[str, Any] = {}  # non-tensor values by name (epoch, config, ...)
        self.meta: dict[str, Any] = meta if meta is not None else {}  # format facts

    def __getitem__(self, name: str) -> Node | Tensor:
        return self.edges[name]

    def __setitem__(self, name: str, value: Node | Tensor) -> None:
        self.edges[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.edges

    def __repr__(self) -> str:
        return f"Node({list(self.edges)})"


EdgeTarget = Node | Tensor
_Target = TypeVar("_Target", bound=EdgeTarget)
# The graph walks' stack: each Node's path, with its edges not yet visited.
_Stack = list[tuple[GraphPath, Iterator[tuple[str, EdgeTarget]]]]


@dataclass
class Slot:
    """Optimizer state `name` (e.g. `m`) that `optimizer` keeps for `variable`."""

    variable: Tensor
    optimizer: Node
    name: str
    value: Tensor


@dataclass(slots=True)
class Entry:
    """One tensor of a graph, once, with every path that reaches it: first its
    `PRIMARY_PATH` when it has one, then in depth-first order."""

    paths: list[GraphPath]
    tensor: Tensor
    slot: Slot | None = None

    @property
    def path(self) -> GraphPath:
        return self.paths[0]


@dataclass
class Graph:
    root: Node = field(default_factory=Node)
    slots: list[Slot] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # file-level values
    format: str | None = None  # the format it was read from
    source: str | None = None  # the path it was read from
    files: list[str] = field(default_factory=list)  # every file it reads (never overwritten)
    notes: list[str] = field(default_factory=list)  # what a reader could not carry over

    # -- building ---------------------------------------------------------------
    def add(self, path: GraphPath, item: _Target) -> _Target:
        """Put `item` at `path`, creating the Nodes on the way; returns `item`."""
        node = self.root
        for i, name in enumerate(path[:-1]):
            nxt = node.edges.get(name)
            if nxt is None:
                nxt = node.edges[name] = Node()
            elif type(nxt) is not Node:
                raise ValueError(f"{'/'.join(path[: i + 1])} is a tensor, not an object")
            node = nxt
        node.edges[path[-1]] = item
        return item

    def get(self, path: GraphPath) -> EdgeTarget:
        item: EdgeTarget = self.root
        for name in path:
            if not isinstance(item, Node):
                raise KeyError(path)
            item = item.edges[name]
        return item

    # -- walking ----------------------------------------------------------------
    def walk(self) -> Iterator[tuple[GraphPath, EdgeTarget]]:
        """Depth-first, in edge order, every path to every item (aliases included).

        A Node reached again is reported but not descended into twice, so cycles end."""
        seen = {id(self.root)}
        stack: _Stack = [((), iter(self.root.edges.items()))]
        while stack:  # iterative: deep graphs must not hit the recursion limit
            prefix, edges = stack[-1]
            for name, item in edges:
                path = prefix + (name,)
                yield path, item
                if type(item) is Node and id(item) not in seen:
                    seen.add(id(item))
                    stack.append((path, iter(item.edges.items())))
                    break
            else:
                stack.pop()

    def nodes(self) -> Iterator[tuple[GraphPath, Node]]:
        """The root, then every Node as `walk` reports it (at each path that reaches it),
        without making a path for every tensor on the way."""
        yield (), self.root
        seen = {id(self.root)}
        stack: _Stack = [((), iter(self.root.edges.items()))]
        while stack:
            prefix, edges = stack[-1]
            for name, item in edges:
                if type(item) is Node:
                    path = prefix + (name,)
                    yield path, item
                    if id(item) not in seen:
                        seen.add(id(item))
                        stack.append((path, iter(item.edges.items())))
                        break
            else:
                stack.pop()

    def value_paths(self) -> list[GraphPath]:
        """The path of every non-tensor value the Nodes hold (`Node.values`), for writers
        that have nowhere to put them and say what they dropped."""
        # (`nodes` inlined, as in `entries`: a generator's resumption per Node is most of
        # this walk's cost when every tensor has a Node of its own)
        found: list[GraphPath] = [(name,) for name in self.root.values]
        seen = {id(self.root)}
        stack: _Stack = [((), iter(self.root.edges.items()))]
        while stack:
            prefix, edges = stack[-1]
            for name, item in edges:
                if type(item) is Node:
                    if item.values:
                        path = prefix + (name,)
                        found.extend(path + (key,) for key in item.values)
                    if id(item) not in seen:
                        seen.add(id(item))
                        stack.append((prefix + (name,), iter(item.edges.items())))
                        break
            else:
                stack.pop()
        return found

    def entries(self) -> list[Entry]:
        """Each tensor once, depth-first order, with all its paths; then the slots
        (at `slot_path`)."""
        # (`walk` inlined: this runs once per conversion over every tensor, and a
        # generator's resumption per edge is most of its cost for many small tensors)
        by_id: dict[int, Entry] = {}
        shared: list[Entry] = []
        seen = {id(self.root)}
        stack: _Stack = [((), iter(self.root.edges.items()))]
        while stack:
            prefix, edges = stack[-1]
            for name, item in edges:
                if isinstance(item, Node):  # (else a Tensor: edges hold nothing else)
                    if id(item) not in seen:
                        seen.add(id(item))
                        stack.append((prefix + (name,), iter(item.edges.items())))
                        break
                    continue
                entry = by_id.get(id(item))
                if entry is None:
                    by_id[id(item)] = Entry([prefix + (name,)], item)
                else:
                    if len(entry.paths) == 1:
                        shared.append(entry)
                    entry.paths.append(prefix + (name,))
            else:
                stack.pop()
        found = list(by_id.values())
        for entry in shared:
            _primary_first(entry)
        if not self.slots:
            return found
        first_path = {id(e.tensor): e.path for e in found}
        node_paths = self.node_paths()
        for slot in self.slots:
            var_path = first_path.get(id(slot.variable))
            opt_path = node_paths.get(id(slot.optimizer))
            if var_path is None or opt_path is None:
                raise ValueError(f"slot {slot.name!r} hangs on an object outside the graph")
            found.append(Entry([slot_path(opt_path, slot.name, var_path)], slot.value, slot))
        return found

    def node_paths(self) -> dict[int, GraphPath]:
        """First depth-first path of every Node (the root's is ())."""
        paths: dict[int, GraphPath] = {}
        for path, node in self.nodes():
            paths.setdefault(id(node), path)
        return paths

    def tensors(self) -> Iterator[tuple[GraphPath, Tensor]]:
        for entry in self.entries():
            yield entry.path, entry.tensor

    def __len__(self) -> int:
        return len(self.entries())

    @classmethod
    def from_flat(cls, items: dict[GraphPath, Tensor], **kwargs: Any) -> Graph:
        graph = cls(**kwargs)
        for path, tensor in items.items():
            graph.add(path, tensor)
        return graph


def _primary_first(entry: Entry) -> None:
    primary = entry.tensor.meta.get(PRIMARY_PATH)
    if primary is not None and primary != entry.paths[0] and primary in entry.paths:
        entry.paths.remove(primary)
        entry.paths.insert(0, primary)
