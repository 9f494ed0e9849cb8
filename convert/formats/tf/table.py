"""The sorted string table behind a TensorBundle `.index` file (LevelDB's layout).

Hand-written because no maintained Python library reads or writes this table without
TensorFlow; the LevelDB bindings that exist need a database directory, not one file.
Every block's CRC-32C is verified, snappy blocks from old writers are inflated, and
every length and offset is checked against the bytes before it is used.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from convert.core.errors import ChecksumError, FormatError
from convert.io.checksums import crc32c

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5
_MASK_DELTA = 0xA282EAD8


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def read_varint(
    buf: bytes | bytearray | memoryview, pos: int, limit: int, max_bytes: int = 10
) -> tuple[int, int]:
    """Decode a little-endian base-128 varint at `pos`; returns (value, next position)."""
    result = shift = 0
    for i in range(max_bytes):
        if pos + i >= limit:
            raise ValueError("varint runs past the end")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    raise ValueError("varint too long")


def write_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class TableReader:
    """All (key, value) pairs of one table file, read and verified eagerly (index files
    are small: about 100 bytes per tensor)."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()

    def _fail(self, what: str) -> FormatError:
        return FormatError(f"not a valid checkpoint index: {what}", self.path)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        data = self.data
        if len(data) < FOOTER_SIZE:
            raise self._fail(
                f"{len(data)} bytes is shorter than the {FOOTER_SIZE}-byte footer (truncated?)"
            )
        if struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
            raise self._fail(
                "no table magic number at the end (truncated, or another kind of file)"
            )
        footer = len(data) - FOOTER_SIZE
        try:
            _, pos = self._handle(footer, footer + 40)  # metaindex: always empty in TF files
            index_handle, _ = self._handle(pos, footer + 40)
        except ValueError as exc:
            raise self._fail(f"bad footer ({exc})") from None
        previous: bytes | None = None
        for _, handle_bytes in self._block_entries(self._block(*index_handle, "index block")):
            try:
                handle, _ = self._handle(0, len(handle_bytes), handle_bytes)
            except ValueError as exc:
                raise self._fail(f"bad block handle in the index block ({exc})") from None
            for key, value in self._block_entries(self._block(*handle, "data block")):
                if previous is not None and key <= previous:
                    raise self._fail(f"keys out of order at {key!r}")
                previous = key
                yield key, value

    def _handle(
        self, pos: int, limit: int, buf: bytes | None = None
    ) -> tuple[tuple[int, int], int]:
        buf = self.data if buf is None else buf
        offset, pos = read_varint(buf, pos, limit)
        size, pos = read_varint(buf, pos, limit)
        return (offset, size), pos

    def _block(self, offset: int, size: int, what: str) -> bytes:
        end = offset + size + BLOCK_TRAILER
        if end > len(self.data) - FOOTER_SIZE:
            raise self._fail(
                f"{what} at {offset}+{size} runs past the end of the file (truncated?)"
            )
        raw = self.data[offset : offset + size]
        kind = self.data[offset + size]
        stored = struct.unpack_from("<I", self.data, offset + size + 1)[0]
        if unmask(stored) != crc32c(bytes([kind]), crc32c(raw)):
            raise ChecksumError(
                f"checksum mismatch in the {what} at byte {offset}: the index file is corrupted",
                self.path,
            )
        if kind == 0:
            return raw
        if kind == 1:
            import cramjam

            try:
                return bytes(cramjam.snappy.decompress_raw(raw))
            except Exception as exc:
                raise self._fail(f"{what} at byte {offset} is not valid snappy ({exc})") from None
        raise self._fail(f"{what} at byte {offset} has unknown compression type {kind}")

    def _block_entries(self, block: bytes) -> Iterator[tuple[bytes, bytes]]:
        if len(block) < 4:
            raise self._fail("block too short")
        restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
        limit = len(block) - 4 - 4 * restarts
        if restarts < 1 or limit < 0:
            raise self._fail("bad restart array in a block")
        pos, key = 0, b""
        try:
            while pos < limit:
                if (
                    pos + 3 <= limit
                    and block[pos] < 0x80
                    and block[pos + 1] < 0x80
                    and block[pos + 2] < 0x80
                ):  # three one-byte varints: the usual case
                    shared, unshared, value_len = block[pos], block[pos + 1], block[pos + 2]
                    pos += 3
                else:
                    shared, pos = read_varint(block, pos, limit, 5)
                    unshared, pos = read_varint(block, pos, limit, 5)
                    value_len, pos = read_varint(block, pos, limit, 5)
                if shared > len(key) or pos + unshared + value_len > limit:
                    raise ValueError("entry runs past its block")
                key = key[:shared] + block[pos : pos + unshared]
                pos += unshared
                yield key, block[pos : pos + value_len]
                pos += value_len
        except ValueError as exc:
            raise self._fail(str(exc)) from None


class TableWriter:
    """Writes sorted (key, value) pairs as TF does: 256 KiB data blocks with a restart
    every 16 keys, an index block with a restart at every key, an empty metaindex."""

    BLOCK_SIZE = 256 * 1024
    RESTART_INTERVAL = 16

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.offset = 0
        self.index: list[tuple[bytes, bytes]] = []
        self.block = _BlockBuilder(self.RESTART_INTERVAL)
        self.last_key: bytes | None = None

    def add(self, key: bytes, value: bytes) -> None:
        if self.last_key is not None and key <= self.last_key:
            raise ValueError(f"keys must be added in increasing order: {key!r}")
        self.block.add(key, value)
        self.last_key = key
        if self.block.size() >= self.BLOCK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if self.block.empty():
            return
        handle = self._write_block(self.block.finish())
        assert self.last_key is not None  # (a block is not empty until a key is added)
        self.index.append((self.last_key, handle))
        self.block = _BlockBuilder(self.RESTART_INTERVAL)

    def _write_block(self, raw: bytes) -> bytes:
        trailer = b"\x00" + struct.pack("<I", mask(crc32c(b"\x00", crc32c(raw))))
        self.file.write(raw + trailer)
        handle = write_varint(self.offset) + write_varint(len(raw))
        self.offset += len(raw) + len(trailer)
        return handle

    def finish(self) -> None:
        self._flush()
        meta_handle = self._write_block(_BlockBuilder(1).finish())
        index = _BlockBuilder(1)
        for key, handle in self.index:
            index.add(key, handle)
        index_handle = self._write_block(index.finish())
        footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
        self.file.write(footer)


class _BlockBuilder:
    def __init__(self, restart_interval: int):
        self.interval = restart_interval
        self.parts: list[bytes] = []
        self.restarts = [0]
        self.length = 0
        self.count = 0
        self.last = b""

    def empty(self) -> bool:
        return self.count == 0

    def size(self) -> int:
        return self.length + 4 * len(self.restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count % self.interval == 0:
            if self.count:
                self.restarts.append(self.length)
        else:
            limit = min(len(key), len(self.last))
            while shared < limit and key[shared] == self.last[shared]:
                shared += 1
        part = (
            write_varint(shared)
            + write_varint(len(key) - shared)
            + write_varint(len(value))
            + key[shared:]
            + value
        )
        self.parts.append(part)
        self.length += len(part)
        self.count += 1
        self.last = key

    def finish(self) -> bytes:
        restarts = b"".join(struct.pack("<I", r) for r in self.restarts)
        return b"".join(self.parts) + restarts + struct.pack("<I", len(self.restarts))
