"""The msgpack walk: a Flax file's structure decoded into dicts, lists, scalars and
`ArrayRef`s (where each array's bytes lie), reading no array data.

Why not just `msgpack.unpackb`: it hands every extension payload to Python as a fresh
`bytes` copy and never says where the payload lay in the file, so a checkpoint would sit in
memory twice and tensors could not be lazy. Here msgpack's streaming `Unpacker` decodes
map/array headers, keys and scalars, and the walk peeks at each value's first byte: an
extension is located from its header (the rules in `layout.py`) and stepped over without
being decoded (a large one is not even read: the Unpacker restarts after it), so each
Tensor reads its own bytes, by offset, when asked. Reading the structure thus costs memory
for the keys and scalars only.

Apart from `reader.py` because this is the part that meets hostile bytes: every bound,
truncation and malformed payload is checked here, before any Node or Tensor is made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgpack
import numpy as np

from convert.core.dtypes import STRING, from_name
from convert.core.errors import FormatError
from convert.formats.flax.layout import (
    EXT_COMPLEX,
    EXT_NDARRAY,
    EXT_NPSCALAR,
    KINDS,
    parse_bin_header,
    parse_ext_header,
)
from convert.io.reads import read_region

_READ_SIZE = 64 * 1024  # the Unpacker's read-ahead while walking the structure
_SKIP_LIMIT = 1 << 20  # extensions up to this size are skipped by the Unpacker itself
_PAYLOAD_HEAD = 4096  # room for an array payload's shape and dtype name (rank <= 64)
_MAX_DEPTH = 128
_EXT_HEADER_MIN = {0xC7: 3, 0xC8: 4, 0xC9: 6}  # ext 8/16/32 header bytes (fixext: 2)


class ArrayRef(NamedTuple):
    """An array payload found in the file: where its raw bytes are, nothing read."""

    code: int
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class _Window:
    """The file's bytes around where the walk is, read again when the walk moves on: the
    walk peeks at every value's header, and a system call per peek would cost more than the
    rest of the walk. (Not a mapping of the whole file: the kernel maps whole large folios
    of it, so the pages around a few thousand headers grow the RSS by most of the file.)"""

    SIZE = 16 * 1024

    def __init__(self, fd: int):
        self.fd = fd
        self.start = 0
        self.data = b""

    def read(self, offset: int, size: int) -> bytes:
        at = offset - self.start
        if at < 0 or at + size > len(self.data):
            self.data = os.pread(self.fd, max(size, self.SIZE), offset)
            self.start, at = offset, 0
        return self.data[at : at + size]


class MsgpackWalker:
    """Walks a msgpack file into dicts, lists, scalars and `ArrayRef`s (no array data)."""

    def __init__(self, path: Path, file: BinaryIO, size: int):
        self.path, self.file, self.size = path, file, size
        self.window = _Window(file.fileno())
        self._restart(0)

    # the Unpacker is dropped and re-made after a large extension, so it never buffers one
    def _restart(self, offset: int) -> None:
        self.file.seek(offset)
        self.base = offset
        self.unpacker = msgpack.Unpacker(
            self.file,
            read_size=_READ_SIZE,
            raw=False,
            strict_map_key=False,
            max_buffer_size=max(_READ_SIZE, min(self.size, 2**31 - 1)),
        )

    def tell(self) -> int:
        return self.base + self.unpacker.tell()

    def _call(self, where: str, fn: Callable[[], Any], at: int) -> Any:
        """Run one Unpacker step on the value at byte `at`, turning its exceptions into
        one-line FormatErrors."""
        try:
            return fn()
        except msgpack.OutOfData:
            raise self._truncated(where, at) from None
        except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise FormatError(
                f"invalid msgpack at byte {at} ({place(where)}): {exc}", self.path
            ) from None

    def _truncated(self, where: str, at: int) -> FormatError:
        return FormatError(
            f"ends after {self.size} bytes, inside {place(where)} (at a value "
            f"that starts at byte {at}): the file is truncated",
            self.path,
        )

    def value(self, where: str = "", depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise FormatError(
                f"nested deeper than {_MAX_DEPTH} levels at {place(where)}", self.path
            )
        at = self.tell()
        head = self.window.read(at, 1)
        if not head:
            raise self._truncated(where, at)
        kind = KINDS[head[0]]
        if kind == "map":
            return self._map(where, depth, at)
        if kind == "array":
            count = self._call(where, self.unpacker.read_array_header, at)
            self._check_count(count, 1, where)
            return [self.value(_join(where, str(i)), depth + 1) for i in range(count)]
        if kind == "ext":
            return self._ext(at, where)
        return self._call(where, self.unpacker.unpack, at)

    def _check_count(self, count: int, min_bytes: int, where: str) -> None:
        if count * min_bytes > self.size - self.tell():
            raise self._truncated(where, self.tell())

    def _map(self, where: str, depth: int, at: int) -> dict:
        count = self._call(where, self.unpacker.read_map_header, at)
        self._check_count(count, 2, where)
        out: dict = {}
        for _ in range(count):
            at = self.tell()
            head = self.window.read(at, 1)
            if not head:
                raise self._truncated(where, at)
            key = (
                self._call(where, self.unpacker.unpack, at) if KINDS[head[0]] == "scalar" else None
            )
            if type(key) is not str and type(key) is not int:
                raise FormatError(
                    f"map key at byte {at} in {place(where)} is not a string", self.path
                )
            if key in out:
                raise FormatError(f"key {key!r} appears twice in {place(where)}", self.path)
            out[key] = self.value(_join(where, str(key)), depth + 1)
        return out

    def _ext(self, at: int, where: str) -> Any:
        head = self.window.read(at, 6)
        if len(head) < _EXT_HEADER_MIN.get(head[0], 2):
            raise self._truncated(where, at)
        code, length, header = parse_ext_header(head)
        start, end = at + header, at + header + length
        if end > self.size:
            raise self._truncated(where, at)
        if length <= _SKIP_LIMIT:
            self._call(where, self.unpacker.skip, at)
        else:
            self._restart(end)
        if code in (EXT_NDARRAY, EXT_NPSCALAR):
            return self._array_ref(code, start, length, where)
        if code == EXT_COMPLEX:
            return self._complex(start, length, where)
        raise FormatError(
            f"{place(where)} is msgpack extension type {code}; Flax writes only "
            "1 (array), 2 (complex) and 3 (numpy scalar)",
            self.path,
        )

    def _array_ref(self, code: int, start: int, length: int, where: str) -> ArrayRef:
        """Parse `[shape, dtype name, bytes]` from the payload's first bytes only."""
        head = self.window.read(start, min(length, _PAYLOAD_HEAD))
        shape, name, data_at = _plain_payload_head(head) or self._payload_head(head, start, where)
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if (
            type(shape) is not list
            or len(shape) > 64
            or type(name) is not str
            or not _INTS.issuperset(map(type, shape))
            or (shape and min(shape) < 0)
        ):
            raise self._bad_payload(start, where)
        binary = parse_bin_header(head[data_at : data_at + 5]) if data_at < len(head) else None
        if binary is None or data_at + binary[1] > len(head):
            raise self._bad_payload(start, where)
        stored, bin_header = binary
        dtype = _dtype(name, where, self.path)
        expected = math.prod(shape) * dtype.itemsize
        if stored != expected or data_at + bin_header + stored != length:
            held = min(stored, length - data_at - bin_header)
            raise FormatError(
                f"{place(where)}: extension payload declares {name}{shape} = {expected} bytes "
                f"but holds {held} bytes",
                self.path,
            )
        return ArrayRef(code, dtype, tuple(shape), start + data_at + bin_header, stored)

    def _bad_payload(self, start: int, where: str) -> FormatError:
        return FormatError(
            f"{place(where)}: array payload at byte {start} is not [shape, dtype, bytes]", self.path
        )

    def _payload_head(self, head: bytes, start: int, where: str) -> tuple[Any, Any, int]:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(head)
        try:
            if unpacker.read_array_header() != 3:
                raise self._bad_payload(start, where)
            return unpacker.unpack(), unpacker.unpack(), unpacker.tell()
        except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError):
            raise self._bad_payload(start, where) from None

    def _complex(self, start: int, length: int, where: str) -> complex:
        try:
            real, imag = msgpack.unpackb(read_region(self.path, start, length, place(where)))
            return complex(real, imag)
        except (msgpack.UnpackException, ValueError, TypeError):
            raise FormatError(
                f"{place(where)}: complex payload is not [real, imag]", self.path
            ) from None


def _plain_payload_head(head: bytes) -> tuple[list[int], str, int] | None:
    """(shape, dtype name, where the bytes' header starts) of the spelling Flax gives small
    arrays (a fixarray of 3; a fixarray of positive fixints; a fixstr), decoded without an
    Unpacker, which costs more than the rest of listing such an array. None otherwise."""
    if len(head) < 2 or head[0] != 0x93 or not 0x90 <= head[1] <= 0x9F:
        return None
    at = 2 + head[1] - 0x90
    shape = list(head[2:at])
    if at >= len(head) or (shape and max(shape) > 0x7F) or not 0xA0 <= head[at] <= 0xBF:
        return None
    end = at + 1 + head[at] - 0xA0
    name = head[at + 1 : end]
    if end > len(head) or not name.isascii():
        return None
    return shape, name.decode("ascii"), end


def _dtype(name: str, where: str, path: Path) -> np.dtype:
    dtype = _DTYPES.get(name)
    if dtype is not None:
        return dtype
    try:
        dtype = from_name(name)
    except (KeyError, ValueError):  # np.dtype raises ValueError for some malformed names
        dtype = STRING
    if dtype == STRING:
        raise FormatError(f"{place(where)}: unknown array dtype {name!r}", path)
    _DTYPES[name] = dtype
    return dtype


_DTYPES: dict[str, np.dtype] = {}  # dtype names seen (a model repeats a few thousands of times)
_INTS = frozenset((int,))  # (element types checked as a set: in C)


def _join(where: str, name: str) -> str:
    return f"{where}/{name}" if where else name


def place(where: str) -> str:
    return where or "the top-level map"
