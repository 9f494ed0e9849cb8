"""Reading the zip form of `torch.save` (torch >= 1.6).

The archive's one top folder holds `data.pkl` (the pickled object, storages as persistent
ids) and `data/<key>` (one record per storage), plus `byteorder` and version records.
centraldir.py parses the central directory; `data.pkl` is read through its local header.
Listing checks each storage against its central directory record only (sizes, method,
flags, bounds); the record's local header (its signature, name, and the length of its
extra field, where torch pads the data to 64 bytes) is read when the tensor's data first
is, and tensors are then read with positioned reads, straight from the file.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from convert.core.errors import ChecksumError, FormatError, UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import TORCH_ARCHIVE, TORCH_FORMAT
from convert.formats.torch.centraldir import CentralDirectory, ZipEntry
from convert.formats.torch.records import StorageRef, storage_from_pid
from convert.formats.torch.storage import Record, TensorFactory
from convert.formats.torch.tree import to_graph
from convert.formats.torch.unpickler import Unpickler
from convert.io.checksums import crc32
from convert.io.reads import SourceFile

MAX_PICKLE_BYTES = 256 << 20  # ~4M tensors' worth; a larger data.pkl is not weights
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_STORED = 0
_ENCRYPTED = 0x1 | 0x40  # (traditional, strong)
_SPECULATE = 64 << 10  # a first read up to this long takes the local header with the data
_WINDOW = 256 << 10  # bytes read ahead for small records' local headers (a pread: < 1 MiB)


def archive_prefix(names: list[str]) -> str | None:
    """The `<folder>/` that holds `data.pkl`, or None when this is not a torch archive."""
    for name in names:
        folder, _, rest = name.partition("/")
        if rest == "data.pkl" and folder:
            return folder + "/"
    return None


def is_torch_zip(path: Path) -> bool:
    """torch writes `<folder>/data.pkl` first: its local header says so without parsing
    the central directory (other zips fall back to that)."""
    try:
        with open(path, "rb") as f:
            header = f.read(_LOCAL_HEADER.size + 1024)
        if header[:4] != b"PK\x03\x04":
            return False
        name_len = _LOCAL_HEADER.unpack(header[: _LOCAL_HEADER.size])[9]
        first = header[_LOCAL_HEADER.size : _LOCAL_HEADER.size + name_len]
        if archive_prefix([first.decode("utf-8", "replace")]) is not None:
            return True
        with zipfile.ZipFile(path) as zf:
            return archive_prefix(zf.namelist()) is not None
    except Exception:
        return False


def read_zip(path: Path, span: tuple[int, int] | None = None, label: str | None = None) -> Graph:
    """The graph of the torch.save archive at `path`, or (`span`) of the one at those
    bytes of it, as a DCP `.distcp` file holds one per tensor chunk; `label` names it."""
    obj, make_tensor, prefix = _unpickled(path, span, label)
    graph = to_graph(obj, make_tensor)
    graph.root.meta.update({TORCH_FORMAT: "zip", TORCH_ARCHIVE: prefix[:-1]})
    return graph


def read_zip_object(path: Path, span: tuple[int, int], label: str) -> Any:
    """The object a torch.save archive inside a file holds, as unpickled (no tensors made:
    a DCP value, such as a learning rate)."""
    return _unpickled(path, span, label)[0]


def read_zip_tree(path: Path, allowed: dict[str, Any]) -> tuple[Any, TensorFactory]:
    """The object a torch.save archive holds, unpickled with the table `allowed` (a
    DeepSpeed state's classes beside torch's), and what makes its TensorRefs Tensors."""
    obj, make_tensor, _ = _unpickled(path, None, None, allowed)
    return obj, make_tensor


def _unpickled(
    path: Path,
    span: tuple[int, int] | None,
    label: str | None,
    allowed: dict[str, Any] | None = None,
) -> tuple[Any, TensorFactory, str]:
    where = label or str(path)
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        if span is not None:
            if span[0] + span[1] > size:
                raise FormatError("lies past the end of its file: truncated?", where)
            size = span[0] + span[1]
        directory = CentralDirectory(raw.fileno(), size, where)
    if span is not None and directory.shift != span[0]:
        raise FormatError(
            f"is not a torch.save archive starting at byte {span[0]} of {path.name}", where
        )
    archive = _Archive(path, SourceFile(path), size, directory)
    prefix, pickle_bytes, big_endian = archive.torch_records()
    storages: dict[str, StorageRef] = {}
    # (errors of a whole file are given its path by the caller)
    pickle_where = "data.pkl" if label is None else f"{label}: data.pkl"

    def persistent_load(pid: object) -> StorageRef:
        ref = storage_from_pid(pid, pickle_where)  # (raises for types numpy lacks)
        seen = storages.setdefault(ref.key, ref)
        if seen is not ref and seen.nbytes != ref.nbytes:
            raise FormatError(f"storage {ref.key!r} is declared with two sizes", path)
        return ref

    obj = Unpickler(pickle_bytes, len(pickle_bytes), persistent_load, pickle_where, allowed).load()
    records: dict[str, Record] = {}
    folder = f"{prefix}data/"

    def locate(ref: StorageRef) -> tuple[Record, int, int]:
        record = records.get(ref.key)
        if record is None:
            record = records[ref.key] = archive.storage(folder + ref.key, big_endian)
        if record.nbytes != ref.nbytes:
            raise FormatError(
                f"storage {record.name} holds {record.nbytes} bytes but data.pkl declares "
                f"{ref.numel} x {ref.type.itemsize} = {ref.nbytes}",
                path,
            )
        return record, 0, ref.nbytes

    return obj, TensorFactory(where, locate), prefix


class _Archive:
    """The records of a torch zip archive (see the module doc)."""

    def __init__(self, path: Path, source: SourceFile, size: int, directory: CentralDirectory):
        self.path, self.source, self.size, self.directory = path, source, size, directory
        self.where = str(path)
        self.window = _Window(source, size)

    def torch_records(self) -> tuple[str, bytes, bool]:
        """The archive's folder, its `data.pkl`, and whether its byte order is big-endian."""
        directory, path = self.directory, self.path
        prefix = archive_prefix(directory.names())
        if prefix is None:
            raise FormatError(
                "is a zip archive without a <folder>/data.pkl record: not a torch.save file", path
            )
        code = prefix + "code/"
        if prefix + "constants.pkl" in directory or any(
            n.startswith(code) for n in directory.names()
        ):
            raise UnsupportedError(
                "is a TorchScript archive (torch.jit.save); save the "
                "model's state_dict() with torch.save instead",
                path,
            )
        pickle_bytes = self.read_small(prefix + "data.pkl", MAX_PICKLE_BYTES)
        byteorder = b"little"
        if prefix + "byteorder" in directory:
            byteorder = self.read_small(prefix + "byteorder", 16)
        if byteorder not in (b"little", b"big"):
            raise FormatError(f"has an unknown byteorder record {byteorder[:16]!r}", path)
        return prefix, pickle_bytes, byteorder == b"big"

    def entry(self, name: str, kind: str = "record") -> ZipEntry:
        entry = self.directory.get(name)
        if entry is None:
            raise FormatError(f"{kind} {name} is missing", self.path)
        if entry.flags & _ENCRYPTED:
            raise UnsupportedError(f"record {name} is encrypted", self.path)
        return entry

    def read_small(self, name: str, limit: int) -> bytes:
        """A whole record of at most `limit` bytes, its CRC-32 checked."""
        entry = self.entry(name)
        if entry.file_size > limit:
            raise FormatError(
                f"record {name} is {entry.file_size} bytes, more than the "
                f"{limit} this reader accepts",
                self.path,
            )
        if entry.method != _STORED:
            return _read_compressed(self.path, entry)
        if entry.compress_size != entry.file_size:
            raise FormatError(f"stored record {name} has two sizes", self.path)
        header = self.source.read(
            entry.header_offset,
            _LOCAL_HEADER.size + entry.name_len,
            f"local header of record {name}",
        )
        start = entry.header_offset + _data_start(header, entry, self.path)
        data = bytes(self.source.read(start, entry.file_size, f"record {name}"))
        if crc32(data) != entry.crc:
            raise ChecksumError(f"record {name} does not match its CRC-32", self.path)
        return data

    def storage(self, name: str, big_endian: bool) -> Record:
        """A storage record, checked against the central directory only."""
        entry = self.directory.get(name)  # (`entry` inline: this runs for every storage)
        if entry is None or entry.flags & _ENCRYPTED:
            entry = self.entry(name, "storage record")  # (raises, saying why)
        if entry.method != _STORED:
            path = self.path
            return Record(
                self.where,
                name,
                0,
                entry.file_size,
                big_endian=big_endian,
                read_whole=lambda: _read_compressed(path, entry),
                source=self.source,
            )
        if entry.compress_size != entry.file_size:
            raise FormatError(f"stored record {name} has two sizes", self.path)
        # (fail at listing, not mid-conversion: the end, less the local extra field)
        if entry.header_offset + _LOCAL_HEADER.size + entry.name_len + entry.file_size > self.size:
            raise FormatError(
                f"record {name} ({entry.file_size} bytes after its header at "
                f"{entry.header_offset}) lies past the end of the file "
                f"({self.size} bytes): the file is truncated",
                self.path,
            )
        return _ZipRecord(self.where, entry, big_endian, self.source, self.window)


class _Window:
    """The archive's bytes read ahead, for records read in file order: many small records
    (a state dict of 20,000 tensors) then take one read for many local headers and their
    data, not one each. A read elsewhere, or larger than a tenth of the window, goes to the
    file as it is."""

    __slots__ = ("source", "size", "start", "end", "data")

    def __init__(self, source: SourceFile, size: int):
        self.source, self.size = source, size
        self.start = self.end = 0
        self.data: bytearray | memoryview = bytearray()

    def read(self, offset: int, size: int, what: str) -> tuple[bytearray | memoryview, int]:
        """A buffer holding `size` bytes at `offset` of the file, and where they start in it."""
        if self.start <= offset and offset + size <= self.end:
            return self.data, offset - self.start
        # (refilled only going forward, and not far: reads in another order each take
        # their own bytes, never a window's worth)
        if size > _WINDOW // 10 or (self.end and not self.start <= offset <= self.end + _WINDOW):
            return self.source.read(offset, size, what), 0
        self.data = self.source.read(offset, max(size, min(_WINDOW, self.size - offset)), what)
        self.start, self.end = offset, offset + len(self.data)
        return self.data, 0


class _ZipRecord(Record):
    """A stored record, whose data offset its local header gives when first read."""

    __slots__ = ("entry", "window")

    def __init__(
        self, path: str, entry: ZipEntry, big_endian: bool, source: SourceFile, window: _Window
    ):
        super().__init__(path, entry.name, -1, entry.file_size, entry.crc, None, big_endian, source)
        self.entry, self.window = entry, window

    def data_offset(self, what: str) -> int:
        if self.offset < 0:
            self.fetch(0, 0, what)  # (reads the local header, which sets it)
        return self.offset

    def fetch(self, start: int, size: int, what: str) -> bytes | bytearray | memoryview:
        if self.offset >= 0:
            return super().fetch(start, size, what)
        # The first read takes the local header, and a small tensor's data with it: torch
        # pads the data to 64 bytes with the header's extra field (4 + at most 63 bytes).
        window = self.window
        header_offset = self.entry.header_offset
        header_len = _LOCAL_HEADER.size + self.entry.name_len
        want = header_len + 68 + start + size
        want = header_len if want > _SPECULATE else min(want, window.size - header_offset)
        head, at = window.read(
            header_offset, max(want, header_len), f"local header of record {self.name}"
        )
        data_start = _data_start(head, self.entry, self.path, at)
        self.offset = header_offset + data_start
        first = at + data_start + start
        if first + size <= at + want:
            return head[first : first + size]
        return super().fetch(start, size, what)


def _data_start(
    header: bytes | bytearray | memoryview, entry: ZipEntry, path: Path | str, at: int = 0
) -> int:
    """Where a record's data starts, from the start of its local header (at `at` of
    `header`, and checked against the central directory's name)."""
    name = entry.name
    sig, _, _, _, _, _, _, _, _, name_len, extra_len = _LOCAL_HEADER.unpack_from(header, at)
    if sig != b"PK\x03\x04":
        raise FormatError(f"local header of record {name} is damaged", path)
    name_end = _LOCAL_HEADER.size + name_len
    if (
        name_len != entry.name_len
        or header[at + _LOCAL_HEADER.size : at + name_end] != entry.name_bytes()
    ):
        raise FormatError(f"local header of record {name} names another record", path)
    return name_end + extra_len


def _read_compressed(path: Path, entry: ZipEntry) -> bytes:
    """A compressed record, whole, through zipfile (torch reads these too, though never
    mmaps them)."""
    name = entry.name
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(name)
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise ChecksumError(f"record {name} does not match its CRC-32", path) from None
        raise FormatError(f"record {name}: {exc}", path) from None
    except (
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        KeyError,
        zipfile.LargeZipFile,
        struct.error,
    ) as exc:
        raise FormatError(f"record {name} cannot be read ({exc})", path) from None
