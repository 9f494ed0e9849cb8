"""An Orbax checkpoint as a Graph: each item's tree from its `_METADATA`, arrays as lazy
tensors (TensorStore opens each one's metadata; values are read one array at a time),
scalars, strings and `None` as values, lists as nodes keyed "0", "1", ... (marked, as the
Flax msgpack reader marks them, so that the tree can be written as it was)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from convert.core.errors import FormatError
from convert.core.graph import Graph, Node
from convert.core.meta import SOURCE_KEY
from convert.core.tensor import Tensor
from convert.formats.orbax import layout, metadata
from convert.formats.orbax.arrays import Arrays, spec_of
from convert.io.reads import read_json

SEQUENCE_NODE = "orbax_sequence"  # Node.meta: the node was a list or tuple
STEP = "orbax_step"  # Graph.values: the step read from a CheckpointManager's folder
# Graph.values: the step's `_CHECKPOINT_METADATA` (handlers, timestamps, metrics, custom)
CHECKPOINT_INFO = "orbax_checkpoint_metadata"
ARRAY_TYPES = ("jax.Array", "np.ndarray")
EMPTY_TYPES = ("Dict", "List", "Tuple", "dict", "list", "tuple")
STRINGS = "_strings.json"
_MAX_STRINGS = 64 << 20


def read(path: Path) -> Graph:
    found = layout.locate(path)
    graph = Graph(format="orbax", source=str(path))
    for name, item in found.items.items():
        node = graph.root
        if name:
            node = graph.root.edges[name] = Node()
        _read_item(item, node, (name,) if name else (), graph)
    if found.step is not None:
        graph.values[STEP] = found.step
    if found.folder is not None:
        info = read_json(found.folder / layout.CHECKPOINT_METADATA, _MAX_STRINGS, "Orbax's")
        if isinstance(info, dict):
            graph.values[CHECKPOINT_INFO] = info
    graph.notes += found.notes
    return graph


def _read_item(item: Path, root: Node, prefix: tuple[str, ...], graph: Graph) -> None:
    tree = metadata.read(item)
    arrays = [leaf for leaf in tree.leaves if leaf.value_type in (*ARRAY_TYPES, "scalar")]
    store = Arrays(item, tree.zarr3, tree.all_chunks) if arrays else None
    opened = store.open([leaf.name for leaf in arrays]) if store is not None else {}
    strings = _strings(item) if any(leaf.value_type == "string" for leaf in tree.leaves) else {}
    left_out = []
    for leaf in sorted(tree.leaves, key=_order):
        parent = root
        for depth, key in enumerate(leaf.keys):
            if leaf.in_sequence[depth]:  # (the node holding this key is a list)
                parent.meta[SEQUENCE_NODE] = True
            if depth == len(leaf.keys) - 1:
                break
            child = parent.edges.get(key)
            if child is None:
                child = parent.edges[key] = Node()
            if not isinstance(child, Node):
                raise FormatError(f"{'/'.join(leaf.keys[: depth + 1])} is a leaf and a tree", item)
            parent = child
        key, where = leaf.keys[-1], "/".join((*prefix, *leaf.keys))
        if leaf.value_type in ARRAY_TYPES and store is not None:
            dtype, shape = spec_of(opened[leaf.name])
            loader = _Loader(store, leaf.name, opened[leaf.name])
            parent.edges[key] = Tensor(dtype, shape, loader, {SOURCE_KEY: where})
        elif leaf.value_type == "scalar" and store is not None:
            parent.values[key] = store.read(leaf.name, opened[leaf.name]).item()
        elif leaf.value_type == "string" and leaf.name in strings:
            parent.values[key] = strings[leaf.name]
        elif leaf.value_type == "None":
            parent.values[key] = None
        elif leaf.value_type in EMPTY_TYPES:
            parent.edges.setdefault(key, Node())
        else:
            left_out.append(f"{where} ({leaf.value_type})")
    if left_out:
        graph.notes.append(
            f"left out {len(left_out)} leaves of kinds not read: {', '.join(left_out[:5])}"
        )
    graph.files += [str(p) for p in _files(item)]


def _order(leaf: metadata.Leaf) -> tuple:
    """The tree's order: a list's items by number (`_METADATA` sorts `10` before `2`)."""
    return tuple(
        (0, int(k), "") if s else (1, 0, k)
        for k, s in zip(leaf.keys, leaf.in_sequence, strict=True)
    )


class _Loader:
    def __init__(self, arrays: Arrays, name: str, store: Any):
        self.arrays, self.name, self.store = arrays, name, store

    def __call__(self) -> Any:
        return self.arrays.read(self.name, self.store)


def _strings(item: Path) -> dict[str, Any]:
    strings = read_json(item / STRINGS, _MAX_STRINGS, "Orbax's strings")
    if strings is None:
        raise FormatError(f"the tree has strings, but there is no {STRINGS}", item)
    if not isinstance(strings, dict):
        raise FormatError("is not a JSON object", item / STRINGS)
    return strings


def _files(item: Path) -> list[Path]:
    return [Path(d) / f for d, _, names in os.walk(item) for f in names]
