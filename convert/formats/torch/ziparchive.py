"""A zip writer laid out byte for byte as torch's (miniz) writer lays out `torch.save` files.

Why not `zipfile`: torch needs each record's data on a 64-byte boundary, padded through an
`FB` extra field, and `torch.load` may compute storage offsets itself assuming miniz's
exact layout (local header with sizes deferred to a data descriptor, zip64 extra data in
the local header only when the record or its offset passes 4 GiB, 16- or 24-byte data
descriptors). Records are always stored, never deflated, so `torch.load(mmap=True)` works.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

from convert.io.checksums import crc32

if TYPE_CHECKING:
    import numpy as np

    from convert.core.tensor import Stored
    from convert.io.rawcopy import Output

ALIGNMENT = 64
_U32 = 0xFFFFFFFF
_FLAGS = 0x0808  # bit 3: sizes in a data descriptor; bit 11: UTF-8 names


class _Entry(NamedTuple):
    name: bytes
    offset: int
    size: int
    crc: int


_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_DESCRIPTOR = struct.Struct("<4sIII")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_CRC_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-crc")
_INLINE_CRC = 1 << 20  # smaller records: a thread hand-off costs more than it saves
# The `FB` extra field padding a record's data by n bytes, for each n (built once: every
# storage needs one).
_PADDING = [b"FB" + struct.pack("<H", n) + b"Z" * n for n in range(ALIGNMENT)]


class AlignedZipWriter:
    """Append stored records to `stream` (a rawcopy.Output: `add_stored` copies into it
    file to file); `close()` writes the central directory."""

    def __init__(self, stream: Output):
        self.stream = stream
        self.position = 0
        self.entries: list[_Entry] = []

    def _write(self, data: bytes | memoryview) -> None:
        self.stream.write(data)
        self.position += len(data)

    def _header(self, encoded: bytes, size: int) -> tuple[bytes, bool]:
        """A record's local header (its data padded to ALIGNMENT), and whether it is
        zip64."""
        offset = self.position
        big = size >= _U32 or offset >= _U32
        zip64 = b""
        if big:
            fields = (struct.pack("<QQ", size, size) if size >= _U32 else b"") + (
                struct.pack("<Q", offset) if offset >= _U32 else b""
            )
            zip64 = struct.pack("<HH", 1, len(fields)) + fields
        start = offset + 30 + len(encoded) + len(zip64) + 4
        padding = -start % ALIGNMENT
        extra = zip64 + _PADDING[padding]
        header = (
            _LOCAL.pack(b"PK\x03\x04", 0, _FLAGS, 0, 0, 0, 0, 0, 0, len(encoded), len(extra))
            + encoded
            + extra
        )
        return header, big

    def add(self, name: str, data: bytes | memoryview | np.ndarray) -> None:
        encoded = name.encode("utf-8")
        # (an ndarray is a buffer: numpy's stubs say so only for Python >= 3.12)
        data = memoryview(data).cast("B")  # type: ignore[arg-type]
        size, offset = len(data), self.position
        header, big = self._header(encoded, size)
        if size <= _INLINE_CRC:  # one write of header, data and descriptor
            crc = crc32(data)
            self._write(b"".join([header, data, self._descriptor(crc, size, big)]))
        else:  # the CRC is computed while the data is written (both release the GIL)
            crc_future = _CRC_POOL.submit(crc32, data)
            self._write(header)
            self._write(data)
            crc = crc_future.result()
            self._write(self._descriptor(crc, size, big))
        self.entries.append(_Entry(encoded, offset, size, crc))

    def add_stored(self, name: str, stored: Stored) -> None:
        """A record of a tensor's bytes as they lie in a source file: copied file to file
        (see rawcopy.py), its CRC-32 computed in the pass that verifies the source's."""
        encoded = name.encode("utf-8")
        size, offset = stored.nbytes, self.position
        header, big = self._header(encoded, size)
        self._write(header)
        crc = self.stream.copy(stored, "crc32", f"record {name}")
        self.position += size
        self._write(self._descriptor(crc, size, big))
        self.entries.append(_Entry(encoded, offset, size, crc))

    @staticmethod
    def _descriptor(crc: int, size: int, big: bool) -> bytes:
        if size == 0:
            return b""  # miniz writes no descriptor for an empty record
        if big:
            return struct.pack("<4sIQQ", b"PK\x07\x08", crc, size, size)
        return _DESCRIPTOR.pack(b"PK\x07\x08", crc, size, size)

    def close(self) -> None:
        directory_start = self.position
        records = []
        for e in self.entries:
            fields = b""
            if e.size >= _U32:
                fields += struct.pack("<QQ", e.size, e.size)
            if e.offset >= _U32:
                fields += struct.pack("<Q", e.offset)
            extra = struct.pack("<HH", 1, len(fields)) + fields if fields else b""
            size32 = min(e.size, _U32)
            records.append(
                _CENTRAL.pack(
                    b"PK\x01\x02",
                    0,
                    0,
                    _FLAGS,
                    0,
                    0,
                    0,
                    e.crc,
                    size32,
                    size32,
                    len(e.name),
                    len(extra),
                    0,
                    0,
                    0,
                    0,
                    min(e.offset, _U32),
                )
                + e.name
                + extra
            )
        self._write(b"".join(records))
        directory_size = self.position - directory_start
        zip64_end = self.position
        count = len(self.entries)
        self._write(
            struct.pack(
                "<4sQHHIIQQQQ",
                b"PK\x06\x06",
                44,
                0x031E,
                45,
                0,
                0,
                count,
                count,
                directory_size,
                directory_start,
            )
        )
        self._write(struct.pack("<4sIQI", b"PK\x06\x07", 0, zip64_end, 1))
        self._write(
            struct.pack(
                "<4sHHHHIIH",
                b"PK\x05\x06",
                0,
                0,
                min(count, 0xFFFF),
                min(count, 0xFFFF),
                min(directory_size, _U32),
                min(directory_start, _U32),
                0,
            )
        )
