"""Hugging Face sharded sets: `model.safetensors.index.json` / `pytorch_model.bin.index.json`.

The index is `{"metadata": {"total_size": N}, "weight_map": {key: shard file}}`, shards
named `model-00001-of-00003.safetensors` in the same directory. Reading gives one graph of
all shards' keys; writing splits the tensors, in order, into shards of at most
`max_shard_size` bytes (a larger tensor gets a shard of its own), each tensor with all its
aliases in one shard.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import ConvertError, FormatError
from ..fileio import OutputSet, read_region
from ..graph import Entry, Graph
from ..notes import count, size, some
from ..tensor import Tensor
from ..tfnames import LAYOUT
from .torch.keys import add_flat, join_path

INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 100 << 20
DEFAULT_SHARD_SIZE = 5 * 10**9  # transformers' historical default, "5GB"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """`2GB` (decimal, as transformers reads it), `1.5GiB`, `500MB`, or plain bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size like 2GB, 500MB or 1GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return size


def is_index(path: Path) -> bool:
    return path.name.lower().endswith(INDEX_SUFFIX)


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
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
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
        for key, value in shard_graph.metadata.items():
            graph.metadata.setdefault(key, value)
        if shard_graph.root.meta.get(LAYOUT) == "names":  # shards of a TF1 checkpoint
            graph.root.meta[LAYOUT] = "names"
        for entry in shard_graph.entries():
            for p in entry.paths:
                key = join_path(p)
                if key in found:
                    raise FormatError(f"tensor {key!r} is in two shards ({found[key]} and "
                                      f"{shard})", path)
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
        graph.metadata.update({k: v for k, v in metadata.items() if k != "total_size"})
    graph.format = formats.pop() if formats else "safetensors"
    graph.root.meta["sharded.index"] = path.name
    return graph


def _shard_path(index: Path, name: str) -> Path:
    """A shard named by the index: a plain file name beside it, never a path elsewhere."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or os.path.isabs(name)):
        raise FormatError(f"names shard {name[:80]!r}, which is not a file name beside the "
                          "index", index)
    shard = index.parent / name
    if not shard.is_file():
        raise FormatError(f"shard {name} named by the index is missing", index)
    return shard


# --------------------------------------------------------------------------------------
# Writing

# write_entries(entries, temporary path, destination, progress, report) -> keys written
WriteEntries = Callable[[list[Entry], Path, Path, Any, Any], list[str]]


def write_sharded(graph: Graph, path: Path, write_entries: WriteEntries, *,
                  max_shard_size: int | None, overwrite: bool, inputs: tuple,
                  progress: Any, report: Any) -> bool:
    """Write `graph` as shards + index if it must be; False when one file is enough."""
    entries = graph.entries()
    limit = max_shard_size or DEFAULT_SHARD_SIZE
    total = sum(e.tensor.nbytes for e in entries)
    forced = is_index(path)
    if not forced and total <= limit:
        return False
    base = path.name[:-len(INDEX_SUFFIX)] if forced else path.name
    index_path = path if forced else path.with_name(path.name + INDEX_SUFFIX)
    stem, dot, ext = base.rpartition(".")
    stem, ext = (stem, dot + ext) if stem else (base, "")
    groups = _groups(entries, limit)
    names = [f"{stem}-{i:05d}-of-{len(groups):05d}{ext}" for i in range(1, len(groups) + 1)]
    weight_map: dict[str, str] = {}
    with OutputSet(overwrite, inputs) as out:
        for group, name in zip(groups, names, strict=True):
            destination = path.parent / name
            for key in write_entries(group, out.path(destination), destination, progress,
                                     report):
                weight_map[key] = name
            report.files.append(str(path.parent / name))
        index = {"metadata": {"total_size": total},
                 "weight_map": dict(sorted(weight_map.items()))}
        out.path(index_path).write_text(json.dumps(index, indent=2) + "\n")
        report.files.append(str(index_path))
    report.notes.append(_shards_note(groups, limit, index_path.name))
    return True


def _shards_note(groups: list[list[Entry]], limit: int, index_name: str) -> str:
    """What was written, true also when a tensor is larger than the limit (it is a shard
    of its own, as in transformers' sharding)."""
    note = f"wrote {count(len(groups), 'shard')} of at most {size(limit)} and {index_name}"
    larger = [join_path(e.path) for group in groups for e in group if e.tensor.nbytes > limit]
    if larger:
        note = (f"wrote {count(len(groups), 'shard')} and {index_name}: at most {size(limit)} "
                f"each, but for {count(len(larger), 'tensor')} larger than that, each a shard "
                f"of its own: {some(larger)}")
    return note


def _groups(entries: list[Entry], limit: int) -> list[list[Entry]]:
    groups: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if groups[-1] and size + entry.tensor.nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.tensor.nbytes
    return groups


def write(graph: Graph, path: Path, *, overwrite: bool = False, inputs: tuple = (),
          progress: Any = None, report: Any = None, max_shard_size: int | None = None,
          **options: Any) -> None:
    """`X.safetensors.index.json` / `X.bin.index.json`: shards in X's own format."""
    inner = registry.by_extension(path.name[:-len(INDEX_SUFFIX)])
    if inner is None or inner.name not in ("safetensors", "torch") or inner.write is None:
        raise ConvertError("a sharded set is named like model.safetensors.index.json or "
                           "pytorch_model.bin.index.json", path)
    inner.write(graph, path, overwrite=overwrite, inputs=inputs, progress=progress,
                report=report, max_shard_size=max_shard_size or DEFAULT_SHARD_SIZE, **options)
