"""An Orbax item's `_METADATA`: the tree's leaves without reading any array.

`{"tree_metadata": {"('params', 'dense', 'kernel')": {"key_metadata": [{"key": "params",
"key_type": 2}, ...], "value_metadata": {"value_type": "jax.Array", "skip_deserialize":
false}}, ...}, "use_ocdbt": true, "use_zarr3": false}`: each leaf's keys from the root, each
key's type (1: a list or tuple index, 2: a dict key), and what the value is (`jax.Array`,
`np.ndarray`, `scalar`, `string`, ...). A leaf's arrays live under its keys joined with
`.` (`params.dense.kernel`), its dtype and shape in that array's own zarr metadata.

This JSON is Orbax's own, which TensorStore does not read; the checks here are what makes
a hostile file one clear error (keys that would reach outside the item, a tree that is
not a tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convert.core.errors import FormatError, UnsupportedError
from convert.formats.orbax.layout import METADATA
from convert.io.reads import read_json

_MAX_BYTES = 256 << 20  # (about 300 bytes a leaf: room for most of a million leaves)
SEQUENCE = 1  # key_type of a list or tuple index


@dataclass(frozen=True)
class Leaf:
    keys: tuple[str, ...]
    in_sequence: tuple[bool, ...]  # per key: whether it indexes a list or tuple
    value_type: str
    skipped: bool  # saved without its value (`skip_deserialize`)

    @property
    def name(self) -> str:
        """Where Orbax keeps its value: the keys joined with `.`."""
        return ".".join(self.keys)


@dataclass(frozen=True)
class Tree:
    leaves: list[Leaf]
    ocdbt: bool
    zarr3: bool
    # every chunk was written, even one all fill value: a missing chunk is damage, not zeros
    all_chunks: bool = False


def read(item: Path) -> Tree:
    path = item / METADATA
    top = read_json(path, _MAX_BYTES, "an Orbax tree")
    if not isinstance(top, dict):
        raise FormatError("is not a JSON object", path)
    if "tree_metadata" not in top:
        raise UnsupportedError(
            "is an Orbax _METADATA without `tree_metadata` (written before Orbax 0.5): "
            "restore it with Orbax and save it again",
            path,
        )
    tree = top["tree_metadata"]
    if not isinstance(tree, dict):
        raise FormatError("`tree_metadata` is not an object", path)
    leaves = [_leaf(entry, where, path) for where, entry in tree.items()]
    _check_tree(leaves, path)
    return Tree(
        leaves,
        bool(top.get("use_ocdbt", True)),
        bool(top.get("use_zarr3", False)),
        top.get("store_array_data_equal_to_fill_value") is True,
    )


def _leaf(entry: object, where: str, path: Path) -> Leaf:
    bad = f"leaf {where[:80]!r} is not {{key_metadata, value_metadata}} as Orbax writes them"
    if not isinstance(entry, dict):
        raise FormatError(bad, path)
    keys, value = entry.get("key_metadata"), entry.get("value_metadata")
    if not isinstance(keys, list) or not keys or not isinstance(value, dict):
        raise FormatError(bad, path)
    names, in_sequence = [], []
    for key in keys:
        name = key.get("key") if isinstance(key, dict) else None
        kind = key.get("key_type") if isinstance(key, dict) else None
        if not isinstance(name, str) or not isinstance(kind, int) or isinstance(kind, bool):
            raise FormatError(bad, path)
        if not name or any(c in name for c in "/\\\0"):
            # (a leaf's arrays are found by its keys: no key may name another folder)
            raise FormatError(f"leaf {where[:80]!r} has the key {name[:40]!r}", path)
        names.append(name)
        in_sequence.append(kind == SEQUENCE)
    value_type = value.get("value_type")
    if not isinstance(value_type, str):
        raise FormatError(bad, path)
    return Leaf(tuple(names), tuple(in_sequence), value_type, value.get("skip_deserialize") is True)


def _check_tree(leaves: list[Leaf], path: Path) -> None:
    """No leaf twice, none inside another, a list's indices numbers."""
    seen = {leaf.keys for leaf in leaves}
    if len(seen) != len(leaves):
        raise FormatError("names a leaf twice", path)
    names = {leaf.name for leaf in leaves}
    if len(names) != len(leaves):
        raise FormatError("has two leaves whose keys join to one name", path)
    for leaf in leaves:
        for depth in range(1, len(leaf.keys)):
            if leaf.keys[:depth] in seen:
                raise FormatError(f"has a leaf inside the leaf {'/'.join(leaf.keys[:depth])}", path)
        for key, indexed in zip(leaf.keys, leaf.in_sequence, strict=True):
            if indexed and not key.isdigit():
                raise FormatError(f"leaf {'/'.join(leaf.keys)}: list index {key!r}", path)
