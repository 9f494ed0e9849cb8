"""Reading the zip form of `torch.save` (torch >= 1.6).

The archive's one top folder holds `data.pkl` (the pickled object, storages as persistent
ids) and `data/<key>` (one record per storage), plus `byteorder` and version records.
`zipfile` reads the central directory and `data.pkl`; each storage's data offset is
computed from its local header (30 bytes + name + extra field), so tensors are read later
with positioned reads, straight from the file.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from ...errors import ChecksumError, FormatError, UnsupportedError
from ...graph import Graph
from .storage import Record, TensorFactory
from .tree import to_graph
from .unpickler import StorageRef, Unpickler, storage_from_pid

MAX_PICKLE_BYTES = 256 << 20  # ~4M tensors' worth; a larger data.pkl is not weights
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


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
        name_len = _LOCAL_HEADER.unpack(header[:_LOCAL_HEADER.size])[9]
        first = header[_LOCAL_HEADER.size:_LOCAL_HEADER.size + name_len]
        if archive_prefix([first.decode("utf-8", "replace")]) is not None:
            return True
        with zipfile.ZipFile(path) as zf:
            return archive_prefix(zf.namelist()) is not None
    except Exception:
        return False


def read_zip(path: Path) -> Graph:
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error) as exc:
        raise FormatError(f"is not a readable zip archive ({exc})", path) from None
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        prefix = archive_prefix(list(infos))
        if prefix is None:
            raise FormatError("is a zip archive without a <folder>/data.pkl record: not a "
                              "torch.save file", path)
        code = prefix + "code/"
        if prefix + "constants.pkl" in infos or any(n.startswith(code) for n in infos):
            raise UnsupportedError("is a TorchScript archive (torch.jit.save); save the "
                                   "model's state_dict() with torch.save instead", path)
        pickle_bytes = _read_small(zf, infos[prefix + "data.pkl"], MAX_PICKLE_BYTES, path)
        byteorder = b"little"
        if prefix + "byteorder" in infos:
            byteorder = _read_small(zf, infos[prefix + "byteorder"], 16, path)
        if byteorder not in (b"little", b"big"):
            raise FormatError(f"has an unknown byteorder record {byteorder[:16]!r}", path)

    records: dict[str, Record] = {}
    storages: dict[str, StorageRef] = {}

    def persistent_load(pid: object) -> StorageRef:
        ref = storage_from_pid(pid, f"{where}: data.pkl")
        nbytes = ref.nbytes  # (raises for element types numpy cannot hold)
        seen = storages.setdefault(ref.key, ref)
        if seen is not ref and seen.nbytes != nbytes:
            raise FormatError(f"storage {ref.key!r} is declared with two sizes", path)
        return ref

    obj = Unpickler(pickle_bytes, len(pickle_bytes), persistent_load,
                    f"{where}: data.pkl").load()
    with open(path, "rb") as raw:  # one handle for every storage's local header
        headers = _HeaderReader(raw, path)

        def locate(ref: StorageRef) -> tuple[Record, int, int]:
            record = records.get(ref.key)
            if record is None:
                info = infos.get(f"{prefix}data/{ref.key}")
                if info is None:
                    raise FormatError(f"storage record {prefix}data/{ref.key} is missing", path)
                record = records[ref.key] = headers.record(info, byteorder == b"big")
            if record.nbytes != ref.nbytes:
                raise FormatError(
                    f"storage {record.name} holds {record.nbytes} bytes but data.pkl declares "
                    f"{ref.numel} x {ref.type.itemsize} = {ref.nbytes}", path)
            return record, 0, ref.nbytes

        graph = to_graph(obj, TensorFactory(where, locate))
    graph.root.meta.update({"torch.format": "zip", "torch.archive": prefix[:-1]})
    return graph


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    if info.file_size > limit:
        raise FormatError(f"record {info.filename} is {info.file_size} bytes, more than the "
                          f"{limit} this reader accepts", path)
    try:
        return zf.read(info)
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise ChecksumError(f"record {info.filename} does not match its CRC-32", path) \
                from None
        raise FormatError(f"record {info.filename}: {exc}", path) from None
    except (EOFError, OSError, ValueError, NotImplementedError, zipfile.LargeZipFile,
            struct.error) as exc:
        raise FormatError(f"record {info.filename} cannot be read ({exc})", path) from None


class _HeaderReader:
    """Storage records located from their local headers, through one open file."""

    def __init__(self, raw: BinaryIO, path: Path):
        self.fd = raw.fileno()
        self.size = os.fstat(self.fd).st_size
        self.path = path
        self.name = str(path)  # (once: this runs for every storage)

    def record(self, info: zipfile.ZipInfo, big_endian: bool) -> Record:
        path = self.path
        if info.flag_bits & 0x1:
            raise UnsupportedError(f"record {info.filename} is encrypted", path)
        header = os.pread(self.fd, _LOCAL_HEADER.size, info.header_offset)
        if len(header) != _LOCAL_HEADER.size:
            raise FormatError(f"local header of {info.filename} lies past the end of the "
                              "file: the file is truncated", path)
        sig, _, _, _, _, _, _, _, _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        if sig != b"PK\x03\x04":
            raise FormatError(f"local header of {info.filename} is damaged", path)
        offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if info.compress_type != zipfile.ZIP_STORED:
            return Record(self.name, info.filename, offset, info.file_size,
                          read_whole=lambda: _read_record(path, info), big_endian=big_endian)
        if info.compress_size != info.file_size:
            raise FormatError(f"stored record {info.filename} has two sizes", path)
        if offset + info.file_size > self.size:  # fail at listing, not mid-conversion
            raise FormatError(f"record {info.filename} ({info.file_size} bytes at {offset}) "
                              f"lies past the end of the file ({self.size} bytes): the file "
                              "is truncated", path)
        return Record(self.name, info.filename, offset, info.file_size, crc=info.CRC,
                      big_endian=big_endian)


def _read_record(path: Path, info: zipfile.ZipInfo) -> bytes:
    """A compressed record, whole (torch reads these too, though never mmaps them)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_small(zf, info, info.file_size, path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FormatError(f"record {info.filename} cannot be read ({exc})", path) from None
