"""A zip archive's central directory, parsed with `struct` from one read.

Why not `zipfile`: it makes a ZipInfo object per record, a tenth of a second for a
checkpoint of 20,000 storages, when a torch archive needs only each record's sizes, CRC,
flags, method and local header offset. The scan keeps zipfile's checks: the end record
(and its zip64 form) is found within the file and names one disk, the directory lies
within the file, every record has its signature and lies within the directory, and zip64
fields come from the extra field where the record says so (an archive appended to other
bytes is read as zipfile reads it). The scan indexes records by name; each record's
fields are unpacked when it is looked up.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from convert.core.errors import FormatError
from convert.io.zipcheck import unsafe_name

_END = struct.Struct("<4sHHHHIIH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sIQI")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4s4xHH4xIIIHHH8xI")  # a central directory record, less its name
_SCAN = struct.Struct("<4s4xH18xHHH")  # the same: signature, flags and the three lengths
_MAX_COMMENT = 0xFFFF
_UTF8_NAME = 0x800
_ZIP64 = 0xFFFFFFFF
_new_tuple = tuple.__new__


class ZipEntry(NamedTuple):
    """One record of the central directory."""

    name: str
    header_offset: int  # of its local header
    compress_size: int
    file_size: int
    crc: int
    flags: int
    method: int
    name_len: int  # bytes of the name as stored

    def name_bytes(self) -> bytes:
        """The name as stored (both encodings decode and encode back unchanged)."""
        return self.name.encode("utf-8" if self.flags & _UTF8_NAME else "cp437")


class CentralDirectory:
    """The records of the zip archive open as `fd` (`size` bytes), by name; a later record
    of the same name replaces an earlier one, as in zipfile. Damage is a FormatError that
    says "zip"."""

    def __init__(self, fd: int, size: int, path: str):
        self.path = path
        start, length, self.shift = self._locate(fd, size)
        self.data = os.pread(fd, length, start)
        if len(self.data) != length:
            raise self.error("the central directory lies past the end of the file")
        self.positions = self._scan()

    def error(self, message: str) -> FormatError:
        return FormatError(f"is not a readable zip archive ({message})", self.path)

    def _locate(self, fd: int, size: int) -> tuple[int, int, int]:
        """Where the directory starts, its length, and how far the archive is shifted."""
        tail_start = max(0, size - _END.size - _MAX_COMMENT - _END64_LOCATOR.size - _END64.size)
        tail = os.pread(fd, size - tail_start, tail_start)
        at = tail.rfind(b"PK\x05\x06", max(0, len(tail) - _END.size - _MAX_COMMENT))
        if at < 0 or at + _END.size > len(tail):
            raise self.error("no end of central directory record: not a zip file, or truncated")
        _, _, _, _, _, length, offset, _ = _END.unpack_from(tail, at)
        end = tail_start + at  # (the directory ends where its end record starts)
        zip64 = self._zip64(tail, at)
        if zip64 is not None:
            length, offset = zip64
            end -= _END64_LOCATOR.size + _END64.size
        start = end - length
        if start < 0 or offset > start:
            raise self.error("bad offset or size of the central directory")
        return start, length, start - offset

    def _zip64(self, tail: bytes, at: int) -> tuple[int, int] | None:
        """The directory's (length, offset) from a zip64 end record, if there is one."""
        locator = at - _END64_LOCATOR.size
        if locator < 0 or not tail.startswith(b"PK\x06\x07", locator):
            return None
        _, disk, _, disks = _END64_LOCATOR.unpack_from(tail, locator)
        if disk != 0 or disks > 1:
            raise self.error("zip archives that span several disks are not supported")
        record = locator - _END64.size
        if record < 0 or not tail.startswith(b"PK\x06\x06", record):
            return None
        fields = _END64.unpack_from(tail, record)
        return fields[8], fields[9]

    def _scan(self, naming_twice: bool = False) -> dict[str, int]:
        """Each record's position in the directory, by name. (A name met twice shows as
        fewer names than records; a second scan then finds it, to say which.)"""
        data, unpack, positions = self.data, _SCAN.unpack_from, {}
        pos, end, count = 0, len(self.data), 0
        while pos < end:
            if pos + _CENTRAL.size > end:
                raise self.error("truncated central directory")
            sig, flags, name_len, extra_len, comment_len = unpack(data, pos)
            if sig != b"PK\x01\x02":
                raise self.error("bad signature of a central directory record")
            name_end = pos + _CENTRAL.size + name_len
            name = data[pos + _CENTRAL.size : name_end]
            try:
                text = name.decode("utf-8" if flags & _UTF8_NAME else "cp437")
            except UnicodeDecodeError:
                raise self.error(f"record name {name[:60]!r} is not UTF-8") from None
            unsafe = unsafe_name(text)
            if unsafe is not None:
                raise self.error(unsafe)
            if naming_twice and text in positions:
                raise self.error(f"holds record {text!r} twice")
            positions[text] = pos
            count += 1
            pos = name_end + extra_len + comment_len
            if pos > end:
                raise self.error("a central directory record runs past the directory")
        if len(positions) != count:
            return self._scan(naming_twice=True)
        return positions

    def __contains__(self, name: str) -> bool:
        return name in self.positions

    def names(self) -> list[str]:
        return list(self.positions)

    def get(self, name: str) -> ZipEntry | None:
        pos = self.positions.get(name)
        if pos is None:
            return None
        (_, flags, method, crc, compress_size, file_size, name_len, extra_len, _, header_offset) = (
            _CENTRAL.unpack_from(self.data, pos)
        )
        if _ZIP64 in (compress_size, file_size, header_offset):
            extra = pos + _CENTRAL.size + name_len
            file_size, compress_size, header_offset = self._zip64_sizes(
                self.data[extra : extra + extra_len], file_size, compress_size, header_offset, name
            )
        # (tuple.__new__: a NamedTuple's own __new__ is a Python call, made for each storage)
        return _new_tuple(
            ZipEntry,
            (
                name,
                header_offset + self.shift,
                compress_size,
                file_size,
                crc,
                flags,
                method,
                name_len,
            ),
        )

    def _zip64_sizes(
        self, extra: bytes, file_size: int, compress_size: int, header_offset: int, name: str
    ) -> tuple[int, int, int]:
        """The 64-bit values a record marks 0xFFFFFFFF, from its zip64 extra field (in
        that order, each present only when marked)."""
        while len(extra) >= 4:
            kind, length = struct.unpack_from("<HH", extra)
            if length + 4 > len(extra):
                raise self.error(f"corrupt extra field of record {name}")
            if kind == 1:
                values = [file_size, compress_size, header_offset]
                data = extra[4 : 4 + length]
                for i, value in enumerate(values):
                    if value == _ZIP64:
                        if len(data) < 8:
                            raise self.error(f"corrupt zip64 extra field of record {name}")
                        values[i], data = struct.unpack_from("<Q", data)[0], data[8:]
                return values[0], values[1], values[2]
            extra = extra[4 + length :]
        return file_size, compress_size, header_offset
