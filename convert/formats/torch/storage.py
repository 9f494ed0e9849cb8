"""Lazy tensors over storage bytes: strided views, read only when asked for.

A storage is a region of the file (`Record`); a tensor is a view of it (offset, size,
stride, in elements of the tensor's dtype). Reading a view fetches only the byte span it
touches, then lays it out C-contiguous: a permuted view is transposed in bands
(permute.py), any other non-contiguous view copied through numpy's `as_strided`.
Identical views of one storage give one Tensor object (tied weights stay tied).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convert.core.errors import ChecksumError, FormatError
from convert.core.meta import SOURCE_KEY, TORCH_PARAMETER, TORCH_REQUIRES_GRAD, TORCH_STORAGE
from convert.core.tensor import Check, Stored, Tensor
from convert.formats.torch.records import StorageRef, TensorRef, view_extent
from convert.io.checksums import crc32
from convert.io.permute import permuted, view_layout
from convert.io.reads import SourceFile

# An expanded view (stride 0) may claim more elements than its storage holds, as torch
# allows; beyond this many bytes such a claim is treated as a lie rather than allocated.
MAX_EXPANSION_BYTES = 64 << 20
_READ_WITH_HEADER = 4096  # a record's bytes up to this size are read with its local header


class Record:
    """Where one storage's bytes are: `nbytes` at `offset` of `path`, or a whole-read."""

    __slots__ = ("path", "name", "offset", "nbytes", "crc", "read_whole", "big_endian", "source")

    def __init__(
        self,
        path: str,
        name: str,
        offset: int,
        nbytes: int,
        crc: int | None = None,
        read_whole: Callable[[], bytes] | None = None,
        big_endian: bool = False,
        source: SourceFile | None = None,
    ):
        self.path, self.name, self.offset, self.nbytes = path, name, offset, nbytes
        self.crc = crc  # zip CRC-32 of the record, checked whenever it is read whole
        self.read_whole = read_whole  # compressed zip records
        self.big_endian = big_endian
        self.source = source if source is not None else SourceFile(path)  # (shared: one fd)

    def fetch(self, start: int, size: int, what: str) -> bytes | bytearray | memoryview:
        """`size` bytes from byte `start` of the storage, as they are in the file."""
        return self.source.read(self.offset + start, size, what)

    def data_offset(self, what: str) -> int:
        """Where the storage's bytes start in the file."""
        return self.offset

    def stored(
        self, start: int, size: int, dtype: np.dtype, shape: tuple[int, ...], what: str
    ) -> Stored | None:
        """Where `size` bytes from byte `start` of the storage lie in the file, with the
        record's CRC-32 when they are the whole record; None for records that are not
        stored as they are used (compressed, big-endian)."""
        if self.read_whole is not None or self.big_endian:
            return None
        if start < 0 or start + size > self.nbytes:
            raise FormatError(f"{what} lies outside its storage {self.name}", self.path)
        data = None
        if self.offset < 0 and size <= _READ_WITH_HEADER:  # (a small storage's first read
            data = self.fetch(start, size, what)  # brings its bytes with the header)
        offset = self.data_offset(what)
        check = None
        if self.crc is not None and size == self.nbytes:
            check = Check(
                "crc32",
                offset,
                size,
                self.crc,
                "storage {} does not match its CRC-32 (the file is corrupted)",
                self.name,
                self.path,
            )
        return Stored(self.source, offset + start, size, dtype, shape, check, data)

    def read(self, start: int, size: int, what: str) -> bytes | bytearray | memoryview:
        if start < 0 or start + size > self.nbytes:
            raise FormatError(f"{what} lies outside its storage {self.name}", self.path)
        if self.read_whole is not None:
            return self.read_whole()[start : start + size]
        data = self.fetch(start, size, what)
        if self.crc is not None and size == self.nbytes and crc32(data) != self.crc:
            raise ChecksumError(
                f"storage {self.name} does not match its CRC-32 (the file is corrupted)", self.path
            )
        return data


# locate(storage) -> (record, first byte of the storage in the record, bytes it holds)
Locate = Callable[[StorageRef], tuple[Record, int, int]]


class TensorFactory:
    """Makes the graph's Tensors from TensorRefs, one per distinct view."""

    def __init__(self, path: str, locate: Locate):
        self.path = path
        self.locate = locate
        self.by_view: dict[tuple, Tensor] = {}
        # (shape, stride) -> numel, extent, whether the view is its bytes as they are
        self.sizes: dict[tuple, tuple[int, int, bool]] = {}

    def __call__(self, ref: TensorRef, key: str) -> Tensor:
        record, base, limit = self.locate(ref.storage)
        dtype, shape, stride, offset = ref.dtype.numpy, ref.shape, ref.stride, ref.offset
        assert dtype is not None  # the unpickler refuses dtypes numpy cannot hold
        itemsize = dtype.itemsize
        sizes = self.sizes.get((shape, stride))  # (views repeat; the unpickler checked them)
        if sizes is None:
            numel = math.prod(shape)
            sizes = self.sizes[shape, stride] = (
                numel,
                view_extent(shape, stride),
                numel > 0 and _is_contiguous(shape, stride),
            )
        numel, extent, plain = sizes
        start = base + offset * itemsize
        span = extent * itemsize
        if extent and offset * itemsize + span > limit:
            raise FormatError(
                f"tensor {key!r} ({dtype.name}{list(shape)}, offset {offset}, stride "
                f"{list(stride)}) reaches past the end of its storage {record.name} "
                f"({limit} bytes)",
                self.path,
            )
        if numel * itemsize > max(span, MAX_EXPANSION_BYTES):
            raise FormatError(
                f"tensor {key!r} claims {numel * itemsize} bytes from a "
                f"{span}-byte region (overlapping strides)",
                self.path,
            )
        # (torch dtype names map 1:1 to numpy dtypes)
        identity = (record.name, start, ref.dtype.name, shape, stride)
        tensor = self.by_view.get(identity)
        if tensor is None:
            meta: dict[str, Any] = {SOURCE_KEY: key, TORCH_STORAGE: record.name}
            if ref.parameter:
                meta[TORCH_PARAMETER] = True
                meta[TORCH_REQUIRES_GRAD] = ref.requires_grad
            loader = _View(record, start, span, dtype, shape, stride, key, plain)
            tensor = self.by_view[identity] = Tensor(dtype, shape, loader, meta)
        return tensor


class _View:
    """A Tensor's loader: its strided view of the storage's bytes, laid out C-contiguous.
    (An object, not a closure: a closure over seven values is eight allocations, made for
    every tensor of a checkpoint when it is listed.)"""

    __slots__ = ("record", "start", "span", "dtype", "shape", "stride", "key", "plain")

    def __init__(
        self,
        record: Record,
        start: int,
        span: int,
        dtype: np.dtype,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        key: str,
        plain: bool,
    ):
        self.record, self.start, self.span, self.dtype = record, start, span, dtype
        self.shape, self.stride, self.key = shape, stride, key
        self.plain = plain  # non-empty and contiguous (the factory's, for each layout)

    def __call__(self) -> np.ndarray:
        dtype, shape, stride = self.dtype, self.shape, self.stride
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        data = self.record.read(self.start, self.span, f"tensor {self.key!r}")
        if self.plain:
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            array = _laid_out(data, dtype, shape, stride)
        return _to_little_endian(array) if self.record.big_endian else array

    def where_stored(self) -> Stored | None:
        """Where the view's bytes lie, when they are the tensor's as stored (contiguous,
        little-endian)."""
        if not self.plain:
            return None
        return self.record.stored(
            self.start, self.span, self.dtype, self.shape, f"tensor {self.key!r}"
        )


def _laid_out(
    data: bytes | bytearray | memoryview,
    dtype: np.dtype,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
) -> np.ndarray:
    """A non-contiguous view's elements, C-contiguous: a permuted whole (`w.t()`, a
    channels_last conv weight) is transposed in bands; any other view (gaps, overlaps,
    broadcast axes) is copied element by element."""
    layout = view_layout(shape, stride)
    if layout is not None:
        whole, axes = layout
        source = np.frombuffer(data, dtype=dtype, count=math.prod(shape)).reshape(whole)
        return permuted(source, axes)
    # Stride in bytes over an opaque same-size element, so any dtype (bfloat16, float8,
    # complex) is laid out without numpy interpreting the values.
    flat = np.frombuffer(data, dtype=f"V{dtype.itemsize}")
    view = as_strided(flat, shape, [s * dtype.itemsize for s in stride], writeable=False)
    return np.ascontiguousarray(view).view(dtype)


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for size, step in zip(reversed(shape), reversed(stride), strict=True):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True


def _to_little_endian(array: np.ndarray) -> np.ndarray:
    unit = array.dtype.itemsize // (2 if array.dtype.kind == "c" else 1)
    if unit == 1:
        return array
    flat = array.reshape(-1).view(f"<u{unit}").byteswap()
    return flat.view(array.dtype).reshape(array.shape)
