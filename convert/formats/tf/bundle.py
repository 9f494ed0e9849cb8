"""TensorBundle V2: the `.index` table of BundleEntryProtos and the `.data-*` shards.

Reads lazily (entries are parsed up front, tensor bytes only on `read`), verifies each
entry's CRC-32C as TensorFlow does, decodes string tensors, and reassembles sliced
tensors. The writer (`bundle_writer.py`) streams tensors into one data shard and
writes the index last.
"""

from __future__ import annotations

import math
import os
import re
import struct
from pathlib import Path

import numpy as np

from convert.core.dtypes import STRING, dtype_name, from_name, is_extra
from convert.core.errors import ChecksumError, FormatError, UnsupportedError
from convert.core.tensor import Check, Stored, Tensor, array_from_bytes
from convert.formats.tf import protos, slices
from convert.formats.tf.table import (
    TableReader,
    read_varint,
    unmask,
)
from convert.io.checksums import crc32c
from convert.io.reads import SourceFile

HEADER_KEY = b""
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    7: STRING,
    8: np.dtype(np.complex64),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    17: np.dtype(np.uint16),
    18: np.dtype(np.complex128),
    19: np.dtype(np.float16),
    22: np.dtype(np.uint32),
    23: np.dtype(np.uint64),
}
_ENUMS = {dtype: enum for enum, dtype in _DTYPES.items()}
# ml_dtypes types by name: ml_dtypes is imported only when a checkpoint holds one.
_EXTRA_ENUMS = {
    14: "bfloat16",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
    26: "float8_e4m3fnuz",
    27: "float8_e4m3b11fnuz",
    28: "float8_e5m2fnuz",
    29: "int4",
    30: "uint4",
}
_EXTRA_BY_NAME = {name: enum for enum, name in _EXTRA_ENUMS.items()}
_QUANTIZED = {
    11: "qint8",
    12: "quint8",
    13: "qint32",
    15: "qint16",
    16: "quint16",
    20: "resource",
    21: "variant",
}


def dtype_from_enum(enum: int, where: str, path: Path) -> np.dtype:
    dtype = _DTYPES.get(enum)
    if dtype is not None:
        return dtype
    if enum in _EXTRA_ENUMS:
        try:
            dtype = _DTYPES[enum] = from_name(_EXTRA_ENUMS[enum])
            return dtype
        except KeyError:  # an ml_dtypes too old for this type
            pass
    name = _QUANTIZED.get(enum, f"DataType {enum}")
    raise UnsupportedError(f"tensor {where!r} has dtype {name}, which this tool cannot read", path)


def dtype_to_enum(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    enum = _EXTRA_BY_NAME.get(dtype.name) if is_extra(dtype) else _ENUMS.get(dtype)
    if enum is None:
        raise UnsupportedError(f"TensorFlow checkpoints cannot hold {dtype_name(dtype)}")
    return enum


def data_path(prefix: str | os.PathLike, shard: int, num_shards: int) -> Path:
    return Path(f"{os.fspath(prefix)}.data-{shard:05d}-of-{num_shards:05d}")


_BUNDLE_VERSION = 1  # TensorFlow's kTensorBundleVersion
_CORRUPTED = "checksum does not match for tensor {!r}: the data shard is corrupted"


class BundleReader:
    """The entries of one bundle, keyed by their raw key bytes, with readers for values."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = os.fspath(prefix)  # (text: the prefix `dir/` names `dir/.index`)
        self.index_path = Path(f"{self.prefix}.index")
        self.entries: dict[bytes, object] = {}
        header = None
        for key, value in TableReader(self.index_path).items():
            if key == HEADER_KEY:
                header = self._parse(protos.BundleHeaderProto, value, "the bundle header")
            else:
                self.entries[key] = value  # parsed on demand: most are never all needed
        if header is None:
            raise FormatError("checkpoint index has no bundle header", self.index_path)
        if (
            header.version.min_consumer > _BUNDLE_VERSION
            or _BUNDLE_VERSION in header.version.bad_consumers
        ):
            raise UnsupportedError(
                f"was written for readers of bundle version "
                f"{header.version.min_consumer} or later (this reads "
                f"{_BUNDLE_VERSION}, as TensorFlow does)",
                self.index_path,
            )
        if header.endianness != 0:
            raise UnsupportedError("big-endian checkpoints are not supported", self.index_path)
        if not 1 <= header.num_shards <= 100000:
            raise FormatError(f"bundle header claims {header.num_shards} shards", self.index_path)
        self.num_shards = header.num_shards
        self.shards = [data_path(self.prefix, i, self.num_shards) for i in range(self.num_shards)]
        self.shard_files = [SourceFile(shard) for shard in self.shards]
        self.shard_names = [str(shard) for shard in self.shards]
        for shard in self.shards:
            if not shard.is_file():
                raise FormatError(
                    f"data shard {shard.name} of this checkpoint is missing", self.index_path
                )
        self.shard_sizes = [shard.stat().st_size for shard in self.shards]

    def _parse(self, cls, value: bytes, what: str):
        message = cls()
        try:
            message.ParseFromString(value)
        except Exception:
            raise FormatError(f"{what} is not a valid message", self.index_path) from None
        return message

    def entry(self, key: bytes):
        value = self.entries[key]
        if isinstance(value, bytes):
            value = self.entries[key] = self._parse(
                protos.BundleEntryProto, value, f"entry {key!r}"
            )
        return value

    def tensor_keys(self) -> list[bytes]:
        """Tensor keys, slice keys left out (they belong to their full-name entry)."""
        return [k for k in self.entries if not slices.is_slice_key(k)]

    def dtype_shape(self, key: bytes, entry=None) -> tuple[np.dtype, tuple[int, ...]]:
        entry = self.entry(key) if entry is None else entry
        shape_proto = entry.shape
        shape = tuple([d.size for d in shape_proto.dim])
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None or shape_proto.unknown_rank or (shape and min(shape) < 0):
            name = key.decode("utf-8", "replace")
            if shape_proto.unknown_rank:
                raise FormatError(f"tensor {name!r} has unknown rank", self.index_path)
            if shape and min(shape) < 0:
                raise FormatError(f"tensor {name!r} has a negative dimension", self.index_path)
            dtype = dtype_from_enum(entry.dtype, name, self.index_path)
        return dtype, shape

    def tensor(self, key: bytes, meta: dict) -> Tensor:
        """The lazy Tensor of `key`; its dtype and shape, and that its bytes lie inside
        their shard (a truncated shard is found by listing), are checked here, once."""
        entry = self.entry(key)
        dtype, shape = self.dtype_shape(key, entry)
        parts = entry.slices
        if not parts:  # (when listing: a lying index is found without the data)
            self._check_entry(key, entry, dtype, shape)
            shard = entry.shard_id  # (the common case inline: runs for every tensor)
            if entry.offset + entry.size > self.shard_sizes[shard]:
                self._check_extent(key)
        else:
            for part in [slices.slice_key(key, s) for s in parts]:
                if part in self.entries:  # (a missing slice is reported when read)
                    self._check_extent(part)
        return Tensor(dtype, shape, _Entry(self, key, dtype, shape), meta)

    def stored(self, key: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> Stored | None:
        """Where the bytes of `key` lie in their shard, with the entry's CRC-32C; None for
        values that are assembled or decoded (slices, strings)."""
        entry = self.entry(key)
        if entry.slices or dtype == STRING:
            return None
        # (`tensor` checked the entry against its dtype and shape, and its shard)
        offset, size, shard = entry.offset, entry.size, entry.shard_id
        check = Check(
            "crc32c",
            offset,
            size,
            unmask(entry.crc32c),
            _CORRUPTED,
            key.decode("utf-8", "replace"),
            self.shard_names[shard],
        )
        return Stored(self.shard_files[shard], offset, size, dtype, shape, check)

    def _check_entry(self, key: bytes, entry, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        """The entry's shard exists and its size is what its dtype and shape need."""
        if 0 <= entry.shard_id < self.num_shards and (
            dtype == STRING or entry.size == math.prod(shape) * dtype.itemsize
        ):
            return  # (the name is made only for an error)
        name = key.decode("utf-8", "replace")
        if not 0 <= entry.shard_id < self.num_shards:
            raise FormatError(
                f"tensor {name!r} points at shard {entry.shard_id} of {self.num_shards}",
                self.index_path,
            )
        if dtype != STRING and entry.size != math.prod(shape) * dtype.itemsize:
            raise FormatError(
                f"tensor {name!r}: index says {entry.size} bytes, "
                f"{dtype_name(dtype)}{list(shape)} needs "
                f"{math.prod(shape) * dtype.itemsize}",
                self.index_path,
            )

    def _check_extent(self, key: bytes) -> None:
        entry = self.entry(key)
        if (
            0 <= entry.shard_id < self.num_shards
            and entry.offset + entry.size > self.shard_sizes[entry.shard_id]
        ):
            shard = self.shards[entry.shard_id]
            raise FormatError(
                f"tensor {key.decode('utf-8', 'replace')!r} lies at bytes {entry.offset}.."
                f"{entry.offset + entry.size} of data shard {shard.name}, which holds "
                f"{self.shard_sizes[entry.shard_id]}: the shard is truncated",
                shard,
            )

    def read(
        self, key: bytes, dtype: np.dtype | None = None, shape: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """The value of `key`; `dtype` and `shape` when the caller already checked them."""
        if dtype is None or shape is None:
            dtype, shape = self.dtype_shape(key)
        entry = self.entry(key)
        if entry.slices:
            return self._assemble(key, dtype, shape, entry)
        return self._read_stored(key, entry, dtype, shape)

    def _read_stored(
        self, key: bytes, entry, dtype: np.dtype, shape: tuple[int, ...]
    ) -> np.ndarray:
        name = key.decode("utf-8", "replace")
        self._check_entry(key, entry, dtype, shape)
        shard = self.shards[entry.shard_id]
        source = self.shard_files[entry.shard_id]
        data = source.read(entry.offset, entry.size, f"tensor {name!r}")
        if dtype == STRING:
            return self._decode_strings(data, shape, entry.crc32c, name, shard)
        if crc32c(data) != unmask(entry.crc32c):
            raise ChecksumError(
                f"checksum does not match for tensor {name!r}: the data shard is corrupted", shard
            )
        return array_from_bytes(data, dtype, shape, f"tensor {name!r}")

    def _decode_strings(
        self, data: bytearray, shape: tuple[int, ...], stored_crc: int, name: str, shard: Path
    ) -> np.ndarray:
        count = math.prod(shape)
        pos, lengths = 0, []
        try:
            for _ in range(count):
                length, pos = read_varint(data, pos, len(data))
                lengths.append(length)
        except ValueError:
            raise FormatError(f"string tensor {name!r} has corrupt lengths", shard) from None
        crc = 0
        for length in lengths:
            crc = crc32c(struct.pack("<I" if length < 2**32 else "<Q", length), crc)
        if pos + 4 > len(data) or unmask(struct.unpack_from("<I", data, pos)[0]) != crc:
            raise ChecksumError(
                f"checksum does not match for the lengths of string tensor "
                f"{name!r}: the data shard is corrupted",
                shard,
            )
        crc = crc32c(data[pos : pos + 4], crc)
        pos += 4
        if pos + sum(lengths) != len(data):
            raise FormatError(f"string tensor {name!r}: lengths do not add up to its size", shard)
        out = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            out[i] = bytes(data[pos : pos + length])
            pos += length
        crc = crc32c(data[len(data) - sum(lengths) :], crc)
        if crc != unmask(stored_crc):
            raise ChecksumError(
                f"checksum does not match for string tensor {name!r}: the data shard is corrupted",
                shard,
            )
        return out.reshape(shape)

    def _assemble(self, key: bytes, dtype: np.dtype, shape: tuple[int, ...], entry) -> np.ndarray:
        """A tensor saved in slices: read each slice's own entry into place."""
        name = key.decode("utf-8", "replace")
        out = np.zeros(shape, dtype=dtype)
        for proto in entry.slices:
            extents = slices.extents(proto, shape)
            if extents is None:
                raise FormatError(
                    f"a slice of tensor {name!r} lies outside its shape", self.index_path
                )
            slice_key = slices.slice_key(key, proto)
            if slice_key not in self.entries:
                raise FormatError(
                    f"slice {extents} of tensor {name!r} is missing from the index", self.index_path
                )
            part_shape = tuple(length for _, length in extents)
            part = self._read_stored(slice_key, self.entry(slice_key), dtype, part_shape)
            out[tuple(slice(s, s + n) for s, n in extents)] = part
        return out


class _Entry:
    """A Tensor's loader: the value of `key`, which also says where its bytes lie."""

    __slots__ = ("reader", "key", "dtype", "shape")

    def __init__(self, reader: BundleReader, key: bytes, dtype: np.dtype, shape: tuple[int, ...]):
        self.reader, self.key, self.dtype, self.shape = reader, key, dtype, shape

    def __call__(self) -> np.ndarray:
        return self.reader.read(self.key, self.dtype, self.shape)

    def where_stored(self) -> Stored | None:
        return self.reader.stored(self.key, self.dtype, self.shape)


_DATA_RE = re.compile(r"\.data-\d{5}-of-\d{5}$")


def strip_suffix(path: str) -> str | None:
    """The prefix named by a `.index` or `.data-NNNNN-of-NNNNN` path, else None."""
    if path.endswith(".index"):
        return path[: -len(".index")]
    match = _DATA_RE.search(path)
    return path[: match.start()] if match else None
