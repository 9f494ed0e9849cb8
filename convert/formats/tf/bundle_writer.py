"""Writing a TensorBundle: the data shard's tensors (each aligned, its CRC-32C kept) and then the
`.index` table of entries under the header (`bundle.py` reads them)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from convert.core.dtypes import STRING
from convert.core.tensor import Stored
from convert.formats.tf import protos
from convert.formats.tf.bundle import HEADER_KEY, dtype_to_enum
from convert.formats.tf.table import (
    TableWriter,
    mask,
    write_varint,
)
from convert.io.checksums import crc32c
from convert.io.outputs import open_output
from convert.io.rawcopy import Output


def encode_strings(array: np.ndarray) -> tuple[bytes, int]:
    """Serialise a string tensor as TF stores it; returns (bytes, masked entry CRC)."""
    items = [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)]
    lengths = b"".join(write_varint(len(x)) for x in items)
    crc = 0
    for x in items:
        crc = crc32c(struct.pack("<I" if len(x) < 2**32 else "<Q", len(x)), crc)
    length_crc = struct.pack("<I", mask(crc))
    body = b"".join(items)
    crc = crc32c(body, crc32c(length_crc, crc))
    return lengths + length_crc + body, mask(crc)


class BundleWriter:
    """Appends tensors to one data shard; `finish` writes the sorted index."""

    def __init__(self, index_file: Path, data_file: Path):
        self.index_file = index_file
        self.data = Output(data_file)  # closed in finish/close
        self.entries: dict[bytes, bytes] = {}

    @property
    def offset(self) -> int:
        return self.data.position

    def _entry(
        self, key: str, dtype: np.dtype, shape: tuple[int, ...]
    ) -> tuple[bytes, protos.BundleEntryProto]:
        raw_key = key.encode("utf-8")
        if raw_key in self.entries:
            raise ValueError(f"duplicate checkpoint key {key!r}")
        entry = protos.BundleEntryProto(dtype=dtype_to_enum(dtype))
        for d in shape:
            entry.shape.dim.add(size=d)
        entry.offset = self.offset
        return raw_key, entry

    def add(self, key: str, array: np.ndarray) -> int:
        raw_key, entry = self._entry(key, array.dtype, array.shape)
        data: bytes | np.ndarray
        if array.dtype == STRING:
            data, entry.crc32c = encode_strings(array)
        else:  # the array's own bytes, not a copy: tensors can be large
            data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            entry.crc32c = mask(crc32c(data))
        entry.size = len(data)
        self.data.write(data)
        self.entries[raw_key] = entry.SerializeToString()
        return len(data)

    def add_stored(self, key: str, stored: Stored) -> int:
        """Add a tensor whose bytes lie unchanged in a file: copied, not read in (its
        source checksum verified, its CRC-32C computed in the same pass)."""
        raw_key, entry = self._entry(key, stored.dtype, stored.shape)
        entry.crc32c = mask(self.data.copy(stored, "crc32c", f"tensor {key!r}"))
        entry.size = stored.nbytes
        self.entries[raw_key] = entry.SerializeToString()
        return stored.nbytes

    def finish(self) -> None:
        self.data.close()
        header = protos.BundleHeaderProto(num_shards=1)
        header.version.producer = 1
        with open_output(self.index_file) as f:
            table = TableWriter(f)
            table.add(HEADER_KEY, header.SerializeToString())
            for key in sorted(self.entries):
                table.add(key, self.entries[key])
            table.finish()

    def close(self) -> None:
        self.data.close()
