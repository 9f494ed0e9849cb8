"""Hugging Face sharded sets: an index `X.index.json` beside its shards.

The index is `{"metadata": {"total_size": N}, "weight_map": {key: shard file}}`, shards
named `model-00001-of-00003.safetensors` in the same directory. Reading gives one graph of
all shards' tensors, of the format its shards are (each read by its own format's reader):

- safetensors or torch shards (`model.safetensors.index.json`,
  `pytorch_model.bin.index.json`): one flat state dict of all shards' keys;
- keras-h5 or Flax shards, the TF and Flax sets transformers 4.x wrote
  (`tf_model.h5.index.json` + `tf_model-00001-of-00002.h5`, `flax_model.msgpack.index.json`
  + `flax_model-00001-of-00002.msgpack`): each shard a tree, joined by path, which gives
  the unsharded file's graph. A TF shard keeps a weight under another key than the index
  names it by (without the model's scope): its format's `{prefix}shard_key` says which;
  each such tensor's `key` is then the index's name;
- safetensors shards of a TF model (`format: tf`, keys `bert/pooler/dense/kernel:0`):
  trees too, as the file of one shard reads.

Writing (safetensors and torch only) splits the tensors, in order, into shards of at most
`max_shard_size` bytes (a larger tensor gets a shard of its own), each tensor with all its
aliases in one shard (sharding.py: the safetensors and torch writers split through it).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convert.core import registry
from convert.core.errors import ConvertError, FormatError
from convert.core.graph import Entry, Graph, GraphPath, Node
from convert.core.meta import (
    SAVED_BY,
    SHARDED_INDEX,
    SOURCE_KEY,
    TF_LAYOUT,
    TOTAL_SIZE,
    VARIABLE_NAME,
)
from convert.core.tensor import Tensor
from convert.formats.sharding import DEFAULT_SHARD_SIZE, INDEX_SUFFIX, is_index
from convert.formats.sharding import (
    parse_size as parse_size,  # (the CLI's option parsing names it here)
)
from convert.frameworks import transformers_tf
from convert.frameworks.flatkeys import add_flat, join_path
from convert.frameworks.keras.layout import strip_suffix
from convert.io.reads import read_region

MAX_INDEX_BYTES = 100 << 20
FLAT = ("safetensors", "torch")  # shards of flat keys (`bert.pooler.dense.bias`)
TREES = ("keras-h5", "flax")  # shards of nested names, joined by path


# --------------------------------------------------------------------------------------
# Reading


def sniff(path: Path) -> bool:
    """By name: a damaged index then gets the reader's precise error."""
    try:
        return is_index(path) and path.is_file()
    except OSError:
        return False


def _load_index(path: Path) -> dict:
    size = os.path.getsize(path)
    if size > MAX_INDEX_BYTES:
        raise FormatError(f"index is {size} bytes, more than {MAX_INDEX_BYTES}", path)
    try:
        data = json.loads(bytes(read_region(path, 0, size, "index")).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"is not valid JSON ({exc})", path) from None
    if not isinstance(data, dict):
        raise FormatError("is not a JSON object", path)
    return data


def read(path: Path) -> Graph:
    index = _load_index(path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise FormatError("has no weight_map of tensor names to shard files", path)
    shards = list(dict.fromkeys(weight_map.values()))
    pairs: list[tuple[str, Tensor]] = []
    found: dict[str, str] = {}  # each shard key (`_keys`) → its shard
    tensors: dict[str, Tensor] = {}
    names: dict[str, str] = {}  # shard key → the index's name for it
    graph = Graph(source=str(path), files=[str(path)])
    kind = None
    flat = True  # (flat keys joined, or trees joined by path)
    for shard in shards:
        shard_path = _shard_path(path, shard)
        try:
            fmt = registry.detect(shard_path)
        except FormatError:
            raise
        except ConvertError:  # (no format's: a shard cut short before its first bytes tell)
            raise FormatError(
                f"is a shard of {path.name} in no format this tool reads (damaged or truncated?)",
                shard_path,
            ) from None
        if fmt.name not in FLAT + TREES:
            raise FormatError(
                f"shard {shard} is {fmt.name}, not {', '.join(FLAT + TREES[:-1])} or {TREES[-1]}",
                path,
            )
        if kind is not None and fmt.name != kind:
            raise FormatError(f"mixes {' and '.join(sorted((kind, fmt.name)))} shards", path)
        shard_graph = fmt.read(shard_path)
        tree = fmt.name in TREES or shard_graph.root.meta.get(SAVED_BY) is not None
        if kind is None:
            kind, flat = fmt.name, not tree
            # (a TF model's safetensors shards keep its weights as its keras-h5 shards do)
            said_tf = shard_graph.root.meta.get(SAVED_BY) == "tf"
            key_of = transformers_tf.in_file if said_tf else _shard_key(fmt)
            names = _names_by_key(weight_map, key_of, path)
        elif tree == flat:
            raise FormatError(f"mixes shards of two frameworks ({shard} and another)", path)
        graph.files.append(str(shard_path))
        for key, value in shard_graph.values.items():
            graph.values.setdefault(key, value)
        if shard_graph.root.meta.get(TF_LAYOUT) == "names":  # shards of a TF1 checkpoint
            graph.root.meta[TF_LAYOUT] = "names"
        for entry in shard_graph.entries():
            for key in _keys(entry, flat):
                if key in found:
                    raise FormatError(
                        f"tensor {names.get(key, key)!r} is in two shards "
                        f"({found[key]} and {shard})",
                        path,
                    )
                found[key] = shard
                tensors[key] = entry.tensor
                if flat:
                    pairs.append((key, entry.tensor))
        if not flat:
            _merge(graph.root, shard_graph.root, (), shard, path)
    for key, name in names.items():
        shard = weight_map[name]
        if found.get(key) != shard:
            raise FormatError(f"the index puts {name!r} in {shard}, which does not hold it", path)
        if kind in TREES:  # (keyed in the shard without the model's scope, a TF weight)
            tensors[key].meta[SOURCE_KEY] = name
            if kind == "keras-h5":  # (its variable's full name, as a tf_model.h5 gives it)
                tensors[key].meta[VARIABLE_NAME] = strip_suffix(name)
    add_flat(graph.root, pairs)
    metadata = index.get("metadata")
    if isinstance(metadata, dict):
        graph.values.update({k: v for k, v in metadata.items() if k != TOTAL_SIZE})
    graph.format = kind or "safetensors"
    graph.root.meta[SHARDED_INDEX] = path.name
    return graph


def _shard_key(fmt: registry.Format) -> Callable[[str], str]:
    """The key a shard of `fmt` gives a tensor its index names: the same name, unless the
    format's module says otherwise in a `{prefix}shard_key` function (as a TF shard keeps
    a weight without its model's scope); reached as the registry reaches a format's
    functions, so that no format imports another."""
    hook = getattr(importlib.import_module(fmt.module), fmt.prefix + "shard_key", None)
    return hook if callable(hook) else str


def _names_by_key(
    weight_map: dict[str, str], key_of: Callable[[str], str], index: Path
) -> dict[str, str]:
    """Each shard key the index names, with its name there (two names for one key refused)."""
    names: dict[str, str] = {}
    for name in weight_map:
        key = key_of(name)
        if names.setdefault(key, name) != name:
            raise FormatError(
                f"names {names[key]!r} and {name!r}, which a shard keeps both as {key!r}", index
            )
    return names


def _keys(entry: Entry, flat: bool) -> list[str]:
    """What the index names a shard's tensor by: each flat key of a safetensors or torch
    shard (aliases too), a tree's tensor's own `key` (`/`-joined)."""
    if flat:
        return [join_path(p) for p in entry.paths]
    return [str(entry.tensor.meta.get(SOURCE_KEY) or "/".join(entry.path))]


def _merge(into: Node, node: Node, where: GraphPath, shard: str, index: Path) -> None:
    """A shard's tree into the set's: its Nodes joined with those of the same path."""
    for key, value in node.meta.items():
        into.meta.setdefault(key, value)
    for key, value in node.values.items():
        into.values.setdefault(key, value)
    for name, item in node.edges.items():
        have = into.edges.get(name)
        if have is None:
            into.edges[name] = item
        elif isinstance(have, Node) and isinstance(item, Node):
            _merge(have, item, (*where, name), shard, index)
        else:
            raise FormatError(
                f"shard {shard} holds {'/'.join((*where, name))!r}, which an earlier "
                "shard holds too",
                index,
            )


def _shard_path(index: Path, name: str) -> Path:
    """A shard named by the index: a plain file name beside it, never a path elsewhere."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or os.path.isabs(name)
    ):
        raise FormatError(
            f"names shard {name[:80]!r}, which is not a file name beside the index", index
        )
    shard = index.parent / name
    if not shard.is_file():
        raise FormatError(f"shard {name} named by the index is missing", index)
    return shard


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Any = None,
    report: Any = None,
    max_shard_size: int | None = None,
    **options: Any,
) -> None:
    """`X.safetensors.index.json` / `X.bin.index.json`: shards in X's own format."""
    inner = registry.by_extension(path.name[: -len(INDEX_SUFFIX)])
    if inner is None or inner.name not in ("safetensors", "torch") or inner.write is None:
        raise ConvertError(
            "a sharded set is named like model.safetensors.index.json or "
            "pytorch_model.bin.index.json",
            path,
        )
    inner.write(
        graph,
        path,
        overwrite=overwrite,
        inputs=inputs,
        progress=progress,
        report=report,
        max_shard_size=max_shard_size or DEFAULT_SHARD_SIZE,
        **options,
    )
