"""Dotted keys (`encoder.layer.0.weight`) <-> graph paths: the flat key convention torch
state dicts and safetensors files share (and the sharded index that lists them).

A key is split on "." so that `a..b` gives ("a", "", "b") and joining with "." gives the
same string back. One exception keeps every key reachable: when another key of the same
dict is a dotted prefix of it (`a` and `a.b`, legal in a dict), the longer key stays one
edge named `a.b`; joining still gives it back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from convert.core.graph import GraphPath, Node
from convert.core.tensor import Tensor


def split_keys(keys: Iterable[str]) -> dict[str, GraphPath]:
    """The path of each key (see the module doc)."""
    parts = {key: tuple(key.split(".")) for key in keys}
    whole = set(parts.values())
    return {
        key: (key,) if any(p[:i] in whole for i in range(1, len(p))) else p
        for key, p in parts.items()
    }


def join_path(path: GraphPath) -> str:
    return ".".join(path)


def add_path(node: Node, path: GraphPath, item: Node | Tensor) -> None:
    """Put `item` under `node` at `path`, creating plain intermediate Nodes."""
    for name in path[:-1]:
        nxt = node.edges.get(name)
        if not isinstance(nxt, Node):
            nxt = node.edges[name] = Node()
        node = nxt
    node.edges[path[-1]] = item


def add_keyed(node: Node, items: list[tuple[str, Node | Tensor]]) -> None:
    """Put each (key, item) of one dict under `node` at the key's path (see split_keys)."""
    if not node.edges:
        if _add_split(node, items):
            return
        node.edges.clear()  # (what the attempt added)
    paths = split_keys(key for key, _ in items)
    for key, item in items:
        add_path(node, paths[key], item)


def _add_split(node: Node, items: list[tuple[str, Node | Tensor]]) -> bool:
    """Put the items at their keys split on every "." (an rpartition and a dict lookup a
    key once its parent is made); False when a key is a dotted prefix of another, which
    split_keys keeps whole."""
    root = node.edges
    plain: dict[str, dict] = {}  # dotted prefix -> edges of the plain Node made for it
    for key, item in items:
        head, dot, leaf = key.rpartition(".")
        edges = root if not dot else plain.get(head)
        if edges is None:
            edges = _plain_node(root, plain, head)
        if edges is None or leaf in edges:  # (a plain Node there: a longer key made it)
            return False
        edges[leaf] = item
    return True


def _plain_node(root: dict, plain: dict[str, dict], head: str) -> dict | None:
    """The edges of a new plain Node at dotted path `head`; None when a key's own item
    is in the way."""
    up, dot, name = head.rpartition(".")
    edges = root if not dot else plain.get(up)
    if edges is None:  # (its parent is new too: make the path from the top)
        edges = _plain_path(root, plain, up)
    if edges is None or name in edges:
        return None
    child = edges[name] = Node()
    plain[head] = child.edges
    return child.edges


def _plain_path(root: dict, plain: dict[str, dict], head: str) -> dict | None:
    """_plain_node for every dotted prefix of `head` (without recursion: keys may hold
    any number of dots)."""
    edges, prefix = root, None
    for name in head.split("."):
        prefix = name if prefix is None else f"{prefix}.{name}"
        made = plain.get(prefix)
        if made is None:
            if name in edges:
                return None
            child = edges[name] = Node()
            made = plain[prefix] = child.edges
        edges = made
    return edges


def add_flat(root: Node, items: Iterable[tuple[str, Tensor]]) -> None:
    """Add (key, tensor) pairs of one flat state dict under `root`."""
    add_keyed(root, list(items))
