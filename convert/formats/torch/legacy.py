"""Reading the legacy form of `torch.save` (before torch 1.6, or
`_use_new_zipfile_serialization=False`).

Consecutive pickles: the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001,
a sys-info dict (byte order, type sizes), the object (storages as 6-tuple persistent ids),
then the list of storage keys; after that, for each key in that order, the storage's
element count as a little-endian int64 followed by its raw bytes. Listing records each
storage's byte offset by reading only those 8-byte counts and seeking past the data.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from convert.core.errors import FormatError
from convert.core.graph import Graph
from convert.core.meta import TORCH_FORMAT
from convert.formats.torch.records import StorageRef, storage_from_pid
from convert.formats.torch.storage import Record, TensorFactory
from convert.formats.torch.tree import to_graph
from convert.formats.torch.unpickler import Unpickler
from convert.io.reads import SourceFile

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
_MAGIC_PICKLE = b"\x8a\x0a" + MAGIC.to_bytes(10, "little")


def is_legacy(path: Path) -> bool:
    try:
        with open(path, "rb", buffering=0) as f:  # (the unpickler does its own read-ahead)
            head = f.read(14)
    except OSError:
        return False
    return len(head) == 14 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2:] == _MAGIC_PICKLE


def read_legacy(path: Path) -> Graph:
    where = str(path)
    size = os.path.getsize(path)
    storages: dict[str, StorageRef] = {}
    pickle_where = f"{where}: pickle"

    def persistent_load(pid: object) -> StorageRef:
        ref = storage_from_pid(pid, pickle_where)
        seen = storages.setdefault(ref.key, ref)
        if (seen.numel, seen.type.itemsize) != (ref.numel, ref.type.itemsize):
            raise FormatError(f"storage {ref.key!r} is declared with two sizes", path)
        return ref

    offset = 0  # where the next pickle starts

    with open(path, "rb", buffering=0) as f:  # (the unpickler does its own read-ahead)

        def unpickle(what: str, persistent=None) -> object:
            nonlocal offset
            f.seek(offset)
            machine = Unpickler(f, size - offset, persistent, f"{where}: {what}")
            value = machine.load()
            offset += machine.consumed
            return value

        if unpickle("magic number") != MAGIC:
            raise FormatError("is not a torch.save file (wrong magic number)", path)
        if unpickle("protocol version") != PROTOCOL:
            raise FormatError("has an unknown torch.save protocol version", path)
        sys_info = unpickle("sys info")
        if not isinstance(sys_info, dict):
            raise FormatError("has a malformed sys-info record", path)
        obj = unpickle("pickled object", persistent_load)
        keys = unpickle("storage key list")
    data_start = offset
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise FormatError("has a malformed storage key list", path)
    big_endian = sys_info.get("little_endian", True) is False
    records = _scan(path, keys, storages, data_start, size, big_endian)

    def locate(ref: StorageRef) -> tuple[Record, int, int]:
        record = records[ref.key]
        if ref.view is None:
            return record, 0, record.nbytes
        _, offset, numel = ref.view
        base, limit = offset * ref.type.itemsize, numel * ref.type.itemsize
        if base + limit > record.nbytes:
            raise FormatError(f"a view of storage {ref.key!r} lies outside it", path)
        return record, base, limit

    graph = to_graph(obj, TensorFactory(where, locate))
    graph.root.meta[TORCH_FORMAT] = "legacy"
    return graph


def _scan(
    path: Path,
    keys: list[str],
    storages: dict[str, StorageRef],
    offset: int,
    size: int,
    big_endian: bool,
) -> dict[str, Record]:
    """Each storage's data offset, from the int64 counts before each one."""
    records: dict[str, Record] = {}
    source = SourceFile(path)  # (one file descriptor for every count and tensor)
    for key in keys:
        ref = storages.get(key)
        if ref is None:
            raise FormatError(f"lists storage {key!r}, which no tensor uses (damaged file)", path)
        if key in records:
            raise FormatError(f"lists storage {key!r} twice", path)
        (count,) = struct.unpack(
            "<q" if not big_endian else ">q", source.read(offset, 8, f"size of storage {key!r}")
        )
        if count != ref.numel:
            raise FormatError(
                f"storage {key!r} holds {count} elements but the pickle declares {ref.numel}", path
            )
        nbytes = count * ref.type.itemsize
        if offset + 8 + nbytes > size:
            raise FormatError(
                f"storage {key!r} ({nbytes} bytes at {offset + 8}) lies past the "
                f"end of the file ({size} bytes): the file is truncated",
                path,
            )
        records[key] = Record(
            str(path), key, offset + 8, nbytes, big_endian=big_endian, source=source
        )
        offset += 8 + nbytes
    missing = sorted(set(storages) - set(records))
    if missing:
        raise FormatError(f"storage {missing[0]!r} is used but not stored", path)
    return records
