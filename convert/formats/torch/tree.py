"""A `torch.save` object tree <-> graph Nodes.

Reading: dicts, lists and tuples that hold tensors become Nodes marked with their
container kind (`node.meta[TORCH_CONTAINER]`), their keys split on "." into paths;
values without tensors (epoch, param_groups, ...) go to the Node's `values` whole.
Writing: marked Nodes become those containers again (original key types and order from
`node.meta[TORCH_KEYS]`, a state dict's `_metadata` from `node.meta[TORCH_ATTRIBUTES]`);
a graph from another format becomes one flat OrderedDict of dotted keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convert.core.errors import FormatError, UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import (
    SAFETENSORS_FORMAT,
    TF1_NAMES,
    TORCH_ATTRIBUTES,
    TORCH_CONTAINER,
    TORCH_KEYS,
)
from convert.core.notes import count, dropped_values
from convert.core.tensor import Tensor
from convert.formats.torch.records import PickledOrderedDict, StorageRef, TensorRef, TorchDtype
from convert.frameworks.flatkeys import add_keyed, join_path
from convert.frameworks.tf1_names import names_to_keep

MAX_DEPTH = 200

MakeTensor = Callable[[TensorRef, str], Tensor]


def key_name(key: Any) -> str:
    """The edge or value name of a dict key: ints as decimal text, others as repr
    (the original key comes back from `TORCH_KEYS` when written)."""
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return repr(key)


class _Reader:
    def __init__(self, make_tensor: MakeTensor):
        self.make_tensor = make_tensor
        self.nodes: dict[int, Node] = {}
        self.holds: dict[int, bool] = {}
        self.alive: list[Any] = []  # keeps ids stable while the maps refer to them

    def holds_tensor(self, value: Any, depth: int = 0) -> bool:
        if isinstance(value, TensorRef):
            return True
        if isinstance(value, StorageRef):
            raise UnsupportedError("the file holds a bare storage outside any tensor")
        if not isinstance(value, (dict, list, tuple, set, frozenset)):
            return False
        if id(value) in self.holds:
            return self.holds[id(value)]
        if depth > MAX_DEPTH:
            raise FormatError(f"containers nested more than {MAX_DEPTH} deep")
        self.holds[id(value)] = False  # a cycle back to here adds nothing
        self.alive.append(value)
        children = value.values() if isinstance(value, dict) else value
        found = False
        for child in children:  # (tensors inline: a state dict holds little else)
            if type(child) is TensorRef or self.holds_tensor(child, depth + 1):
                found = True
        if found and isinstance(value, (set, frozenset)):
            raise UnsupportedError("the file holds tensors inside a set")
        self.holds[id(value)] = found
        return found

    def node(self, value: dict | list | tuple, prefix: str, depth: int) -> Node:
        if id(value) in self.nodes:
            return self.nodes[id(value)]
        if depth > MAX_DEPTH:
            raise FormatError(f"containers nested more than {MAX_DEPTH} deep")
        kind = (
            "OrderedDict"
            if isinstance(value, PickledOrderedDict)
            else type(value).__name__
            if type(value) in (dict, list, tuple)
            else "dict"
        )
        node = Node({TORCH_CONTAINER: kind})
        self.nodes[id(value)] = node
        self.alive.append(value)
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        items = list(value.values()) if isinstance(value, dict) else value
        node.meta[TORCH_KEYS] = keys
        if isinstance(value, PickledOrderedDict) and value.attributes:
            node.meta[TORCH_ATTRIBUTES] = dict(value.attributes)
        names = [key if type(key) is str else key_name(key) for key in keys]
        if len(set(names)) != len(names):
            raise UnsupportedError(
                "a dict holding tensors has keys of different types "
                "that read the same (e.g. 1 and '1')"
            )
        edges: list[tuple[str, Any]] = []
        for name, item in zip(names, items, strict=True):
            if type(item) is TensorRef:
                key = f"{prefix}.{name}" if prefix else name
                edges.append((name, self.make_tensor(item, key)))
            elif self.holds_tensor(item, depth):
                key = f"{prefix}.{name}" if prefix else name
                edges.append((name, self.node(item, key, depth + 1)))
            else:
                node.values[name] = item
        add_keyed(node, edges)
        return node


def to_graph(obj: Any, make_tensor: MakeTensor) -> Graph:
    """The graph of an unpickled `torch.save` object."""
    reader = _Reader(make_tensor)
    if isinstance(obj, (dict, list, tuple)):
        reader.holds_tensor(obj)
        return Graph(root=reader.node(obj, "", 0))
    root = Node({TORCH_CONTAINER: "value"})
    if reader.holds_tensor(obj):
        root.edges["value"] = make_tensor(obj, "value")
    else:
        root.values["value"] = obj
    return Graph(root=root)


# --------------------------------------------------------------------------------------
# Writing


def is_plain(value: Any, depth: int = 0) -> bool:
    """Data torch.load(weights_only=True) accepts back: scalars, text, containers, dtypes."""
    if depth > MAX_DEPTH:
        return False
    if value is None or isinstance(
        value, (bool, int, float, complex, str, bytes, bytearray, TorchDtype)
    ):
        return True
    if isinstance(value, (list, tuple, set)):
        return all(is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(is_plain(k, depth + 1) and is_plain(v, depth + 1) for k, v in value.items())
    return False


class _Writer:
    def __init__(self, notes: list[str]):
        self.notes = notes
        self.built: dict[int, Any] = {}
        self.dropped: list[str] = []

    def container(self, node: Node, where: str) -> Any:
        if id(node) in self.built:
            return self.built[id(node)]
        kind = node.meta[TORCH_CONTAINER]
        pairs: list[tuple[str, Any]] = []
        self.collect(node, None, pairs, where, set())
        for name, value in node.values.items():
            if is_plain(value):
                pairs.append((name, value))
            else:
                self.dropped.append(_join(where, name))
        original = {key_name(k): k for k in node.meta.get(TORCH_KEYS, [])}
        order = {name: i for i, name in enumerate(original)}
        pairs.sort(key=lambda p: order.get(p[0], len(order)))
        keyed = [(original.get(name, name), value) for name, value in pairs]
        if kind == "value":
            result = keyed[0][1] if keyed else None
        elif kind in ("list", "tuple"):
            items = [value for _, value in keyed]
            result = items if kind == "list" else tuple(items)
        else:
            result = PickledOrderedDict() if kind == "OrderedDict" else {}
            result.update(keyed)
            if isinstance(result, PickledOrderedDict):  # (kind == "OrderedDict")
                result.attributes.update(node.meta.get(TORCH_ATTRIBUTES, {}))
        self.built[id(node)] = result
        return result

    def collect(
        self, node: Node, prefix: str | None, pairs: list, where: str, seen: set[int]
    ) -> None:
        """Tensors and containers under `node`, flattening path-split intermediate Nodes."""
        for name, item in node.edges.items():
            key = f"{prefix}.{name}" if prefix is not None else name
            if isinstance(item, Tensor):
                pairs.append((key, item))
            elif TORCH_CONTAINER in item.meta:
                pairs.append((key, self.container(item, _join(where, key))))
            elif id(item) not in seen:
                seen.add(id(item))
                self.dropped.extend(_join(where, f"{key}.{m}") for m in item.values)
                self.collect(item, key, pairs, where, seen)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def from_graph(graph: Graph, notes: list[str]) -> Any:
    """The object to pickle for `graph`, with Tensors at the leaves; fills `notes`."""
    if TORCH_CONTAINER in graph.root.meta:
        writer = _Writer(notes)
        obj = writer.container(graph.root, "")
        writer.dropped.extend(f"(file) {name}" for name in graph.values)
        note = dropped_values(
            writer.dropped, "not plain data torch.load(weights_only=True) accepts"
        )
        if note:
            notes.append(note)
        return obj
    return flat_state_dict(graph, notes)


def flat_state_dict(graph: Graph, notes: list[str]) -> PickledOrderedDict:
    """One OrderedDict of dotted keys, every path of every tensor (tied ones share)."""
    state = PickledOrderedDict()
    slots = 0
    entries = graph.entries()
    names = names_to_keep(graph, entries, ".", join_path)
    if names is not None:  # a TF1 checkpoint's keys, beside torch's own `_metadata`
        state.attributes[TF1_NAMES] = names
    for entry in entries:
        slots += entry.slot is not None
        for path in entry.paths:
            key = join_path(path)
            if key in state:
                raise UnsupportedError(f"two tensors would both be written as {key!r}")
            state[key] = entry.tensor
    if slots:
        notes.append(
            f"wrote {count(slots, 'optimizer slot tensor')} as plain keys under "
            "their optimizer's path"
        )
    # (safetensors' own `format` marker describes that container, not the model)
    dropped = [
        k for k in graph.values if not (graph.format == "safetensors" and k == SAFETENSORS_FORMAT)
    ]
    dropped.extend(map(join_path, graph.value_paths()))
    note = dropped_values([str(k) for k in dropped], "a state dict holds tensors only")
    if note:
        notes.append(note)
    return state
