"""Dotted keys (`encoder.layer.0.weight`) <-> graph paths, for torch and safetensors.

A key is split on "." so that `a..b` gives ("a", "", "b") and joining with "." gives the
same string back. One exception keeps every key reachable: when another key of the same
dict is a dotted prefix of it (`a` and `a.b`, legal in a dict), the longer key stays one
edge named `a.b`; joining still gives it back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...graph import Node, Path
from ...tensor import Tensor


def split_keys(keys: Iterable[str]) -> dict[str, Path]:
    """The path of each key (see the module doc)."""
    parts = {key: tuple(key.split(".")) for key in keys}
    whole = set(parts.values())
    return {key: (key,) if any(p[:i] in whole for i in range(1, len(p))) else p
            for key, p in parts.items()}


def join_path(path: Path) -> str:
    return ".".join(path)


def add_path(node: Node, path: Path, item: Node | Tensor) -> None:
    """Put `item` under `node` at `path`, creating plain intermediate Nodes."""
    for name in path[:-1]:
        nxt = node.edges.get(name)
        if not isinstance(nxt, Node):
            nxt = node.edges[name] = Node()
        node = nxt
    node.edges[path[-1]] = item


def add_flat(root: Node, items: Iterable[tuple[str, Tensor]]) -> None:
    """Add (key, tensor) pairs of one flat state dict under `root`."""
    items = list(items)
    paths = split_keys(key for key, _ in items)
    for key, tensor in items:
        add_path(root, paths[key], tensor)
