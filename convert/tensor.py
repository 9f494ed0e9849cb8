"""Lazy tensor leaves of the intermediate graph.

A Tensor knows its dtype and shape without touching data; `read()` fetches the bytes
(from the file region the reader pointed at, usually with one positioned read) and
returns a fresh numpy array that the caller may drop as soon as it is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .dtypes import STRING, dtype_name, itemsize
from .errors import FormatError

Loader = Callable[[], np.ndarray]


class Tensor:
    """A leaf: dtype, shape, a loader, and format-specific facts in `meta`.

    `meta` holds what a format knows about the tensor beyond its value, e.g. `key`
    (the source file's own key), a TF `full_name`, a Keras weight name and position.
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
                f"tensor {self.meta.get('key', '?')!r} declared "
                f"{self.dtype_name}{list(self.shape)} "
                f"but holds {dtype_name(array.dtype)}{list(array.shape)}"
            )
        return array

    def __repr__(self) -> str:
        return f"Tensor({self.dtype_name}, {list(self.shape)})"


def array_from_bytes(data: bytes | bytearray | memoryview, dtype: np.dtype, shape: tuple[int, ...],
                     what: str = "tensor") -> np.ndarray:
    """View raw little-endian C-order bytes as an array, checking the byte count first."""
    dtype = np.dtype(dtype)
    if dtype == STRING:
        raise TypeError("strings have no fixed-size byte layout")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise FormatError(f"{what}: {len(data)} bytes stored, {expected} expected for "
                          f"{dtype_name(dtype)}{list(shape)}")
    # Every supported host is little-endian, like the files, so this is a view, not a copy.
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The value's bytes as files store them (the inverse of `array_from_bytes`): C order,
    little-endian, as a flat uint8 array (a view where the array already is so)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.reshape(-1).view(np.uint8)
