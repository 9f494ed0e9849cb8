"""The index table on its own: blocks written by old TensorFlow with snappy compression,
and keys that are raw bytes."""

from __future__ import annotations

import io
import struct

import cramjam
import numpy as np

import convert
from convert.formats.tf import table

from .conftest import tf_values
from .test_read import assert_bits_equal


def snappy_table(items: list[tuple[bytes, bytes]], every: int) -> bytes:
    """A table whose data blocks are snappy-compressed, as writers before TF 1.x did
    when compression saved at least an eighth (the index block stays plain)."""
    out = io.BytesIO()
    index = table._BlockBuilder(1)
    for start in range(0, len(items), every):
        block = table._BlockBuilder(16)
        for key, value in items[start : start + every]:
            block.add(key, value)
        raw = bytes(cramjam.snappy.compress_raw(block.finish()))
        offset = out.tell()
        crc = table.mask(table.crc32c(b"\x01", table.crc32c(raw)))
        out.write(raw + b"\x01" + struct.pack("<I", crc))
        index.add(
            items[min(start + every, len(items)) - 1][0],
            table.write_varint(offset) + table.write_varint(len(raw)),
        )
    meta = out.tell()
    empty = table._BlockBuilder(1).finish()
    out.write(
        empty + b"\x00" + struct.pack("<I", table.mask(table.crc32c(b"\x00", table.crc32c(empty))))
    )
    index_offset = out.tell()
    raw = index.finish()
    out.write(
        raw + b"\x00" + struct.pack("<I", table.mask(table.crc32c(b"\x00", table.crc32c(raw))))
    )
    handles = (
        table.write_varint(meta)
        + table.write_varint(len(empty))
        + table.write_varint(index_offset)
        + table.write_varint(len(raw))
    )
    out.write(handles.ljust(40, b"\x00") + struct.pack("<Q", table.MAGIC))
    return out.getvalue()


def test_snappy_compressed_index_blocks(goldens, tmp_path):
    source = goldens["dtypes"].path
    items = list(table.TableReader(f"{source}.index").items())
    prefix = tmp_path / "old"
    (tmp_path / "old.index").write_bytes(snappy_table(items, every=3))
    data = source.parent / (source.name + ".data-00000-of-00001")
    (tmp_path / "old.data-00000-of-00001").write_bytes(data.read_bytes())
    theirs = tf_values(source)
    ours = {e.tensor.meta["key"]: e.tensor for e in convert.load(prefix).entries()}
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert_bits_equal(ours[key].read(), value, key)


def test_binary_keys_round_trip(tmp_path):
    keys = sorted({bytes([i, 0, 255 - i]) + b"\xff\x00" * (i % 3) for i in range(200)})
    path = tmp_path / "t.index"
    with open(path, "wb") as f:
        writer = table.TableWriter(f)
        writer.BLOCK_SIZE = 256  # many blocks, so the index block is exercised
        for key in keys:
            writer.add(key, key[::-1] * 3)
        writer.finish()
    assert list(table.TableReader(path).items()) == [(k, k[::-1] * 3) for k in keys]


def test_crc32c_is_castagnoli_and_masking_inverts():
    assert table.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    for value in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert table.unmask(table.mask(value)) == value
    assert np.uint32(table.mask(0)) == np.uint32(0xA282EAD8)
