"""Writing safetensors: the header (dtypes, shapes, offsets, string metadata), then each
tensor's bytes once, copied from the source as they lie where they can be."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from convert.core.dtypes import dtype_name
from convert.core.errors import UnsupportedError
from convert.core.graph import Entry, Graph
from convert.core.meta import SAFETENSORS_FORMAT, TF1_NAMES
from convert.core.notes import count, dropped_values, some
from convert.core.tensor import raw_bytes
from convert.formats.safetensors.dtypes import CODES
from convert.frameworks import transformers_tf
from convert.frameworks.flatkeys import join_path
from convert.frameworks.tf1_names import names_to_keep
from convert.io.outputs import OutputSet
from convert.io.rawcopy import Output
from convert.io.stream import contents


def header_metadata(
    graph: Graph, notes: list[str], entries: list[Entry] | None = None
) -> dict[str, str]:
    """`__metadata__`: the graph's string values, with `format: pt` as transformers wants,
    and a TF1 checkpoint's names (`TF1_NAMES`; from `entries` when the caller has them)."""
    metadata = {k: v for k, v in graph.values.items() if isinstance(k, str) and isinstance(v, str)}
    metadata.setdefault(SAFETENSORS_FORMAT, "pt")
    names = names_to_keep(graph, entries, ".", join_path)
    if names is not None:
        metadata[TF1_NAMES] = json.dumps(names, separators=(",", ":"), ensure_ascii=False)
    dropped = [str(k) for k in graph.values if k not in metadata]
    dropped.extend(map(join_path, graph.value_paths()))
    note = dropped_values(dropped, "safetensors holds tensors and string metadata only")
    if note:
        notes.append(note)
    return metadata


def _code(dtype: Any) -> str | None:
    return CODES.get(dtype_name(dtype))


def write_entries(
    entries: list[Entry],
    path: Path,
    progress: Any,
    report: Any,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write one safetensors file of `entries` (each once, under its first path)."""
    # (every loop here runs once per tensor: kept to plain list and dict work, each
    # dtype's code looked up once)
    tensors = [entry.tensor for entry in entries]
    if metadata and metadata.get(SAFETENSORS_FORMAT) == "tf":  # (a TF-format file's keys)
        names = [transformers_tf.key(entry.paths[0]) for entry in entries]
    else:
        names = [".".join(entry.paths[0]) for entry in entries]
    folded = [
        f"{join_path(p)} -> {name}"
        for entry, name in zip(entries, names, strict=True)
        if len(entry.paths) > 1
        for p in entry.paths[1:]
    ]
    slots = sum(entry.slot is not None for entry in entries)
    codes: dict[Any, str | None] = {}
    for tensor, name in zip(tensors, names, strict=True):
        if tensor.dtype not in codes:
            codes[tensor.dtype] = _code(tensor.dtype)
        if codes[tensor.dtype] is None:
            raise UnsupportedError(
                f"tensor {name!r} is {dtype_name(tensor.dtype)}, which safetensors cannot store"
            )
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise UnsupportedError(f"two tensors would both be written as {duplicate!r}")
    # Data in falling item size, so every tensor is aligned to its own item size.
    sizes = [tensor.dtype.itemsize for tensor in tensors]
    order = sorted(range(len(entries)), key=lambda i: -sizes[i])
    offsets: list[list[int]] = [[]] * len(entries)
    position = 0
    for i in order:
        end = position + tensors[i].nbytes
        offsets[i] = [position, end]
        position = end
    header: dict[str, Any] = {"__metadata__": metadata or {SAFETENSORS_FORMAT: "pt"}}
    for name, tensor, span in zip(names, tensors, offsets, strict=True):
        header[name] = {
            "dtype": codes[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": span,
        }
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # as the safetensors package pads it
    with Output(path) as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        f.reserve(position)
        for tensor, stored, array in contents([tensors[i] for i in order]):
            if stored is not None:  # (unchanged bytes: copied file to file, checked)
                f.copy(stored)
            else:
                assert array is not None  # (`contents`: no stored bytes, so the value)
                f.write(raw_bytes(array))
            del array
            if progress is not None:
                progress(tensor.nbytes)
        report.tensors += len(entries)
        report.bytes += position
    if folded:
        report.notes.append(
            f"safetensors stores shared tensors once: folded "
            f"{count(len(folded), 'alias', 'aliases')}: {some(folded)}"
        )
    if slots:
        report.notes.append(
            f"wrote {count(slots, 'optimizer slot tensor')} as plain keys "
            "under their optimizer's path"
        )
    return names


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
    from convert.core.report import Report
    from convert.formats.sharding import is_index, write_sharded

    if report is None:
        report = Report(graph.source, str(path), graph.format, "safetensors")
    # (one file: its entries are walked once, for the names kept and for the data)
    sharded = max_shard_size is not None or is_index(path)
    entries = None if sharded else graph.entries()
    metadata = header_metadata(graph, report.notes, entries)

    def shard(
        entries: list[Entry], tmp: Path, destination: Path, progress: Any, report: Any
    ) -> list[str]:
        return write_entries(entries, tmp, progress, report, metadata)

    if sharded and write_sharded(
        graph,
        path,
        shard,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        inputs=inputs,
        progress=progress,
        report=report,
    ):
        return
    with OutputSet(overwrite, inputs) as out:
        write_entries(
            graph.entries() if entries is None else entries,
            out.path(path),
            progress,
            report,
            metadata,
        )
    report.files.append(str(path))
