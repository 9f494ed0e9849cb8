"""Stored (uncompressed) npz members written byte for byte as `zipfile` writes them, so
that a tensor's bytes can go file to file (rawcopy.py) instead of through
`ZipFile.open(..., "w")`, which takes every byte in Python.

Why not `zipfile` itself: it computes each member's CRC-32 from the bytes it is given
and has no way to append bytes it did not see. The layout is `zipfile`'s for a seekable
file with `force_zip64=True` (the npz writer's setting before this module): a local
header with a zip64 extra field, rewritten in place once the CRC-32 and the sizes are
known; no data descriptor; the central directory and end records as `zipfile` writes
them, with zip64 fields only where a value passes `zipfile.ZIP64_LIMIT`. The local
headers come from `zipfile.ZipInfo.FileHeader`, which `zipfile` keeps as public API.
"""

from __future__ import annotations

import struct
import zipfile
from typing import TYPE_CHECKING

# (zipfile's record layouts: module constants that typeshed leaves out, as not public API)
from zipfile import (  # type: ignore[attr-defined]
    stringCentralDir,
    stringEndArchive,
    stringEndArchive64,
    stringEndArchive64Locator,
    structCentralDir,
    structEndArchive,
    structEndArchive64,
    structEndArchive64Locator,
)

from convert.io.checksums import crc32, crc32_join

if TYPE_CHECKING:
    import numpy as np

    from convert.core.tensor import Stored
    from convert.io.rawcopy import Output

_UTF8_NAME = 0x800


class StoredZipWriter:
    """Members appended to `out`; `close()` writes the central directory."""

    def __init__(self, out: Output):
        self.out = out
        self.members: list[zipfile.ZipInfo] = []

    def add(
        self,
        info: zipfile.ZipInfo,
        head: bytes,
        data: memoryview | np.ndarray | None = None,
        stored: Stored | None = None,
    ) -> None:
        """A member of `head` (its .npy header) and then `data`, or `stored`'s bytes
        copied file to file."""
        out = self.out
        info.compress_type = zipfile.ZIP_STORED
        info.flag_bits, info.compress_size, info.CRC = 0, 0, 0
        info.header_offset = out.position
        placeholder = info.FileHeader(True)  # (sizes unknown yet: rewritten below)
        out.write(placeholder)
        out.write(head)
        value = crc32(head)
        if stored is not None:
            size = stored.nbytes
            value = crc32_join(value, out.copy(stored, "crc32", f"member {info.filename}"), size)
        else:
            assert data is not None
            value = crc32(data, value)
            out.write(data)
            size = len(data)
        info.CRC = value
        info.file_size = info.compress_size = len(head) + size
        header = info.FileHeader(True)
        assert len(header) == len(placeholder)
        out.patch(info.header_offset, header)
        self.members.append(info)

    def close(self) -> None:
        start = self.out.position
        for info in self.members:
            self.out.write(_central_record(info))
        self.out.write(_end_records(len(self.members), start, self.out.position - start))


def _central_record(info: zipfile.ZipInfo) -> bytes:
    limit = zipfile.ZIP64_LIMIT
    big: list[int] = []
    file_size, compress_size, offset = info.file_size, info.compress_size, info.header_offset
    if file_size > limit or compress_size > limit:
        big += [file_size, compress_size]
        file_size = compress_size = 0xFFFFFFFF
    if offset > limit:
        big.append(offset)
        offset = 0xFFFFFFFF
    extra, min_version = info.extra, 0
    if big:
        extra = struct.pack("<HH" + "Q" * len(big), 1, 8 * len(big), *big) + extra
        min_version = zipfile.ZIP64_VERSION
    name, flags = _encoded_name(info)
    dt = info.date_time
    date = (dt[0] - 1980) << 9 | dt[1] << 5 | dt[2]
    time = dt[3] << 11 | dt[4] << 5 | (dt[5] // 2)
    return (
        struct.pack(
            structCentralDir,
            stringCentralDir,
            max(min_version, info.create_version),
            info.create_system,
            max(min_version, info.extract_version),
            info.reserved,
            flags,
            info.compress_type,
            time,
            date,
            info.CRC,
            compress_size,
            file_size,
            len(name),
            len(extra),
            len(info.comment),
            0,
            info.internal_attr,
            info.external_attr,
            offset,
        )
        + name
        + extra
        + info.comment
    )


def _end_records(count: int, start: int, size: int) -> bytes:
    """The end of central directory record, after zip64's two where a value needs them."""
    records = b""
    if (
        count > zipfile.ZIP_FILECOUNT_LIMIT
        or start > zipfile.ZIP64_LIMIT
        or size > zipfile.ZIP64_LIMIT
    ):
        records = struct.pack(
            structEndArchive64, stringEndArchive64, 44, 45, 45, 0, 0, count, count, size, start
        )
        records += struct.pack(
            structEndArchive64Locator, stringEndArchive64Locator, 0, start + size, 1
        )
        count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
    return records + struct.pack(
        structEndArchive, stringEndArchive, 0, 0, count, count, size, start, 0
    )


def _encoded_name(info: zipfile.ZipInfo) -> tuple[bytes, int]:
    """The name as `zipfile` stores it: ASCII, else UTF-8 with the flag saying so."""
    try:
        return info.filename.encode("ascii"), info.flag_bits
    except UnicodeEncodeError:
        return info.filename.encode("utf-8"), info.flag_bits | _UTF8_NAME
