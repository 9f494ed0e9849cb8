"""Hugging Face sharded sets: `model.safetensors.index.json` / `pytorch_model.bin.index.json`.

The index is `{"metadata": {"total_size": N}, "weight_map": {key: shard file}}`, shards
named `model-00001-of-00003.safetensors` in the same directory. Reading gives one graph of
all shards' keys; writing splits the tensors, in order, into shards of at most
`max_shard_size` bytes (a larger tensor gets a shard of its own), each tensor with all its
aliases in one shard (sharding.py: the safetensors and torch writers split through it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from convert.core import registry
from convert.core.errors import ConvertError, FormatError
from convert.core.graph import Graph
from convert.core.meta import SHARDED_INDEX, TF_LAYOUT, TOTAL_SIZE
from convert.core.tensor import Tensor
from convert.formats.sharding import DEFAULT_SHARD_SIZE, INDEX_SUFFIX, is_index
from convert.formats.sharding import (
    parse_size as parse_size,  # (the CLI's option parsing names it here)
)
from convert.frameworks.flatkeys import add_flat, join_path
from convert.io.reads import read_region

MAX_INDEX_BYTES = 100 << 20


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
    found: dict[str, str] = {}
    graph = Graph(source=str(path), files=[str(path)])
    formats = set()
    for shard in shards:
        shard_path = _shard_path(path, shard)
        fmt = registry.detect(shard_path)
        if fmt.name not in ("safetensors", "torch"):
            raise FormatError(f"shard {shard} is {fmt.name}, not safetensors or torch", path)
        formats.add(fmt.name)
        shard_graph = fmt.read(shard_path)
        graph.files.append(str(shard_path))
        for key, value in shard_graph.values.items():
            graph.values.setdefault(key, value)
        if shard_graph.root.meta.get(TF_LAYOUT) == "names":  # shards of a TF1 checkpoint
            graph.root.meta[TF_LAYOUT] = "names"
        for entry in shard_graph.entries():
            for p in entry.paths:
                key = join_path(p)
                if key in found:
                    raise FormatError(
                        f"tensor {key!r} is in two shards ({found[key]} and {shard})", path
                    )
                found[key] = shard
                pairs.append((key, entry.tensor))
    for key, shard in weight_map.items():
        if found.get(key) != shard:
            raise FormatError(f"the index puts {key!r} in {shard}, which does not hold it", path)
    if len(formats) > 1:
        raise FormatError("mixes safetensors and torch shards", path)
    add_flat(graph.root, pairs)
    metadata = index.get("metadata")
    if isinstance(metadata, dict):
        graph.values.update({k: v for k, v in metadata.items() if k != TOTAL_SIZE})
    graph.format = formats.pop() if formats else "safetensors"
    graph.root.meta[SHARDED_INDEX] = path.name
    return graph


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
