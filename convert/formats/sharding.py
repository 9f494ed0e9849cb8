"""Splitting a graph's tensors into shards of at most a given size, with the index that
names each tensor's shard (`{"metadata": {"total_size": N}, "weight_map": {key: file}}`),
as Hugging Face sets are laid out. The safetensors and torch writers call `write_sharded`
with their own one-file writer; the `sharded` format reads such sets back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convert.core.graph import Entry, Graph
from convert.core.notes import count, size, some
from convert.frameworks.flatkeys import join_path
from convert.io.outputs import OutputSet

INDEX_SUFFIX = ".index.json"
DEFAULT_SHARD_SIZE = 5 * 10**9  # transformers' historical default, "5GB"
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


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


# write_entries(entries, temporary path, destination, progress, report) -> keys written
WriteEntries = Callable[[list[Entry], Path, Path, Any, Any], list[str]]


def write_sharded(
    graph: Graph,
    path: Path,
    write_entries: WriteEntries,
    *,
    max_shard_size: int | None,
    overwrite: bool,
    inputs: tuple,
    progress: Any,
    report: Any,
) -> bool:
    """Write `graph` as shards + index if it must be; False when one file is enough."""
    entries = graph.entries()
    limit = max_shard_size or DEFAULT_SHARD_SIZE
    total = sum(e.tensor.nbytes for e in entries)
    forced = is_index(path)
    if not forced and total <= limit:
        return False
    base = path.name[: -len(INDEX_SUFFIX)] if forced else path.name
    index_path = path if forced else path.with_name(path.name + INDEX_SUFFIX)
    stem, dot, ext = base.rpartition(".")
    stem, ext = (stem, dot + ext) if stem else (base, "")
    groups = _groups(entries, limit)
    names = [f"{stem}-{i:05d}-of-{len(groups):05d}{ext}" for i in range(1, len(groups) + 1)]
    weight_map: dict[str, str] = {}
    with OutputSet(overwrite, inputs) as out:
        for group, name in zip(groups, names, strict=True):
            destination = path.parent / name
            for key in write_entries(group, out.path(destination), destination, progress, report):
                weight_map[key] = name
            report.files.append(str(path.parent / name))
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
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
        note = (
            f"wrote {count(len(groups), 'shard')} and {index_name}: at most {size(limit)} "
            f"each, but for {count(len(larger), 'tensor')} larger than that, each a shard "
            f"of its own: {some(larger)}"
        )
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
