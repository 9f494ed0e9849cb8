"""Writing `torch.save`-compatible zip files without torch.

`data.pkl` comes from pickler.py (protocol 2, as torch writes it). Records follow in torch
2.13's order and layout (see ziparchive.py), each storage written as soon as its tensor is
read, then dropped; a storage whose bytes lie unchanged in the source is copied file to
file (rawcopy.py), its CRC-32 computed in the pass that verifies the source's checksum.

With `strided`, a tensor that is a permutation of another's axes (a kernel transposed into
a torch weight by the rules) is written as torch writes `w.t()`: the other tensor's bytes
untouched as the storage (copied file to file where they lie unchanged), with permuted
strides. No transpose is computed; `torch.load` gives a non-contiguous tensor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convert.core.graph import Entry, Graph
from convert.core.tensor import raw_bytes
from convert.formats.torch.pickler import Pickler
from convert.formats.torch.records import PickledOrderedDict
from convert.formats.torch.tree import from_graph
from convert.formats.torch.ziparchive import AlignedZipWriter
from convert.frameworks.flatkeys import join_path
from convert.io.rawcopy import Output
from convert.io.stream import contents


def archive_name(path: Path) -> str:
    """torch names the archive's folder after the file, without its extension."""
    stem = path.name.rsplit(".", 1)[0] if "." in path.name[1:] else path.name
    return stem or "archive"


def write_archive(
    obj: Any,
    path: Path,
    name: str,
    progress: Callable[[int], None] | None,
    report: Any,
    strided: bool = False,
) -> None:
    """Pickle `obj` and write it with its storages as a torch zip archive at `path`."""
    with Output(path) as stream:
        write_into(stream, obj, name, progress, report, strided)


def write_into(
    stream: Output,
    obj: Any,
    name: str,
    progress: Callable[[int], None] | None,
    report: Any,
    strided: bool = False,
) -> None:
    """Pickle `obj` and write it with its storages as a torch zip archive at the stream's
    position (its offsets counted from there, as torch.save into an open file counts)."""
    pickler = Pickler(strided)
    pickled = pickler.dump(obj)
    stream.reserve(sum(tensor.nbytes for _, tensor in pickler.storages) + len(pickled))
    archive = AlignedZipWriter(stream)
    archive.add(f"{name}/data.pkl", pickled)
    archive.add(f"{name}/.format_version", b"1")
    archive.add(f"{name}/.storage_alignment", b"64")
    archive.add(f"{name}/byteorder", b"little")
    keys = [key for key, _ in pickler.storages]
    tensors = (tensor for _, tensor in pickler.storages)
    for key, (tensor, stored, array) in zip(keys, contents(tensors), strict=True):
        if stored is not None:  # (unchanged bytes: copied file to file, checked)
            archive.add_stored(f"{name}/data/{key}", stored)
        else:
            assert array is not None  # (`contents`: no stored bytes, so the value)
            archive.add(f"{name}/data/{key}", raw_bytes(array))
        del array
        if progress is not None:
            progress(tensor.nbytes)
        if report is not None:
            report.tensors += 1
            report.bytes += tensor.nbytes
    archive.add(f"{name}/version", b"3\n")
    archive.add(f"{name}/.data/serialization_id", _serialization_id(pickled))
    archive.close()


def _serialization_id(pickled: bytes) -> bytes:
    digest = int.from_bytes(hashlib.sha256(pickled).digest()[:17], "big")
    return f"{digest % 10**40:040d}".encode()


def write_graph(
    graph: Graph,
    tmp: Path,
    destination: Path,
    progress: Callable[[int], None] | None,
    report: Any,
    strided: bool = False,
) -> None:
    obj = from_graph(graph, report.notes)
    write_archive(obj, tmp, archive_name(destination), progress, report, strided)


def write_entries(
    entries: list[Entry],
    tmp: Path,
    destination: Path,
    progress: Callable[[int], None] | None,
    report: Any,
    attributes: dict[str, Any] | None = None,
    strided: bool = False,
) -> list[str]:
    """One shard: a flat state dict of these entries (every path), with `attributes` on
    the OrderedDict (a TF1 checkpoint's names); returns its keys."""
    state = PickledOrderedDict()
    state.attributes.update(attributes or {})
    for entry in entries:
        for p in entry.paths:
            state[join_path(p)] = entry.tensor
    write_archive(state, tmp, archive_name(destination), progress, report, strided)
    return list(state)
