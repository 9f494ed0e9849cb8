"""Lazy tensor leaves of the intermediate graph.

A Tensor knows its dtype and shape without touching data; `read()` fetches the bytes
(from the file region the reader pointed at, usually with one positioned read) and
returns a numpy array that the caller may drop as soon as it is written (read-only when
it views a mapping of the file: callers never write into it).

A tensor whose bytes lie in a file exactly as an output stores them (C order,
little-endian, nothing to compute) also says where (`stored()`): writers then move them
file to file in the kernel (rawcopy.py) instead of reading them in. Its loader says so
(`where_stored()`), not the Tensor, so a tensor a rule made from it, which has a loader
of its own, never claims the source's bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from convert.core.dtypes import STRING, dtype_name, itemsize
from convert.core.errors import FormatError
from convert.core.meta import SOURCE_KEY


class SourceFile(Protocol):
    """A file tensors are read from (`io.reads.SourceFile`), as the core sees it: declared
    here, so that the core does not import the layer above it."""

    path: str | os.PathLike[str]

    def fileno(self) -> int: ...
    def read(self, offset: int, size: int, what: str = "data") -> bytearray | memoryview: ...


Loader = Callable[[], np.ndarray]


class Check(NamedTuple):
    """The checksum a file keeps over a region holding a tensor's bytes (TensorFlow's
    CRC-32C of an entry, a zip record's CRC-32), to verify whenever they are used. The
    region may start before them (an npz member's .npy header) but holds them whole."""

    kind: str  # "crc32c" | "crc32"
    offset: int
    nbytes: int
    value: int  # (unmasked)
    reason: str  # the ChecksumError's reason when it does not match, with {} for `subject`
    subject: str  # (formatted in only then: made for every tensor, used almost never)
    path: str

    def message(self) -> str:
        return self.reason.format(self.subject)


class Stored(NamedTuple):
    """A tensor's bytes as they lie in a file, ready to be copied out unchanged: `nbytes`
    at `offset` of `source`, C order, little-endian, for `dtype` and `shape`; or (`parts`)
    as several such pieces, one after another (a tensor the ranks of a training run saved
    in row blocks)."""

    source: SourceFile
    offset: int
    nbytes: int
    dtype: np.dtype
    shape: tuple[int, ...]
    check: Check | None = None
    data: Any = None  # the bytes themselves, when the reader read them anyway (a buffer)
    parts: tuple[Stored, ...] | None = None  # (then `source` and `offset` are the first's)


def stored_in_parts(parts: list[Stored], dtype: np.dtype, shape: tuple[int, ...]) -> Stored:
    """A tensor whose bytes are `parts`' bytes one after another."""
    first = parts[0]
    total = sum(part.nbytes for part in parts)
    return Stored(first.source, first.offset, total, dtype, shape, None, None, tuple(parts))


class Tensor:
    """A leaf: dtype, shape, a loader, and format-specific facts in `meta`.

    `meta` holds what a format knows about the tensor beyond its value, e.g. `key`
    (the source file's own key), a TF `full_name`, a Keras weight name and position (its
    keys: `convert.core.meta`).
    """

    __slots__ = ("dtype", "shape", "_load", "meta")

    def __init__(
        self,
        dtype: np.dtype,
        shape: tuple[int, ...],
        load: Loader,
        meta: dict[str, Any] | None = None,
    ):
        self.dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        self.shape = tuple(map(int, shape))
        self._load = load
        self.meta = meta if meta is not None else {}

    @classmethod
    def from_array(cls, array: Any, meta: dict[str, Any] | None = None) -> Tensor:
        array = np.asarray(array)
        return cls(array.dtype, array.shape, lambda: array, meta)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the value in memory (strings: unknown until read, 0)."""
        return self.size * itemsize(self.dtype)

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def read(self) -> np.ndarray:
        """The value, checked against the declared dtype and shape."""
        array = self._load()
        if array.dtype != self.dtype or array.shape != self.shape:
            raise FormatError(
                f"tensor {self.meta.get(SOURCE_KEY, '?')!r} declared "
                f"{self.dtype_name}{list(self.shape)} "
                f"but holds {dtype_name(array.dtype)}{list(array.shape)}"
            )
        return array

    def stored(self) -> Stored | None:
        """Where the value's bytes lie unchanged in a file, if they do (see the module
        doc); None when they must be computed (a rule's output, a strided view, another
        byte order, a compressed record)."""
        where = getattr(self._load, "where_stored", None)
        if where is None:
            return None
        found: Stored | None = where()
        if found is None or found.dtype != self.dtype or found.shape != self.shape:
            return None  # (a loader reused under another dtype or shape: read and check)
        return found

    def __repr__(self) -> str:
        return f"Tensor({self.dtype_name}, {list(self.shape)})"


def array_from_bytes(
    data: bytes | bytearray | memoryview,
    dtype: np.dtype,
    shape: tuple[int, ...],
    what: str = "tensor",
) -> np.ndarray:
    """View raw little-endian C-order bytes as an array, checking the byte count first."""
    dtype = np.dtype(dtype)
    if dtype == STRING:
        raise TypeError("strings have no fixed-size byte layout")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise FormatError(
            f"{what}: {len(data)} bytes stored, {expected} expected for "
            f"{dtype_name(dtype)}{list(shape)}"
        )
    # Every supported host is little-endian, like the files, so this is a view, not a copy.
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The value's bytes as files store them (the inverse of `array_from_bytes`): C order,
    little-endian, as a flat uint8 array (a view where the array already is so)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.reshape(-1).view(np.uint8)
