"""Flax's msgpack layout: the extension codes and the chunked-array key of
`flax.serialization`, the meta keys this tool keeps for exact round trips, and the msgpack
header rules the `msgpack` library does not expose (where an extension's or a bin's bytes
lie, and how to write those headers by hand).

Apart because both the walk (reading) and the writer speak it, and neither needs the
other: the reader locates payloads with these rules, the writer streams tensors after
headers packed with them.
"""

from __future__ import annotations

import struct

from convert.core.errors import UnsupportedError

CHUNKED_KEY = "__msgpack_chunked_array__"
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3

# Node.meta / Tensor.meta keys that let a Flax -> Flax round trip give the same bytes (Flax's
# own: only this package writes and reads them; listed in convert/core/meta.py).
META_ARRAY = "msgpack_array"  # the map was a raw msgpack array, not a {"0": ...} map
META_ORDER = "msgpack_order"  # key order when tensors and non-tensor values interleave
META_INT_KEYS = "msgpack_int_keys"  # keys that were integers in the file
META_EXT = "flax_ext"  # "npscalar" for extension 3
META_CHUNKS = "chunks"  # how many chunks a chunked array was stored in


# -- msgpack facts the library does not expose: where things lie ------------------------


def _family(first: int) -> str:
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return "map"
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        return "array"
    if 0xD4 <= first <= 0xD8 or 0xC7 <= first <= 0xC9:
        return "ext"
    return "scalar"


KINDS = [_family(first) for first in range(256)]


def kind(first: int) -> str:
    """Which msgpack family a value's first byte starts."""
    return KINDS[first]


# (the variable-length headers' fields, by first byte: parsed once for every array)
_EXT_FIELDS = {
    first: struct.Struct(fmt) for first, fmt in ((0xC7, ">Bb"), (0xC8, ">Hb"), (0xC9, ">Ib"))
}
_BIN_FIELDS = {
    first: struct.Struct(fmt)
    for first, fmt in (
        (0xC4, ">B"),
        (0xC5, ">H"),
        (0xC6, ">I"),
        (0xD9, ">B"),
        (0xDA, ">H"),
        (0xDB, ">I"),
    )
}
_FIXEXT_CODE = struct.Struct("b")


def parse_ext_header(head: bytes) -> tuple[int, int, int]:
    """(type code, payload length, header length) of an extension starting `head`."""
    first = head[0]
    if 0xD4 <= first <= 0xD8:  # fixext 1, 2, 4, 8, 16
        return _FIXEXT_CODE.unpack_from(head, 1)[0], 1 << (first - 0xD4), 2
    fields = _EXT_FIELDS[first]
    length, code = fields.unpack_from(head, 1)
    return code, length, 1 + fields.size


def parse_bin_header(head: bytes) -> tuple[int, int] | None:
    """(length, header length) of a bin or str value (old writers stored bytes as str)."""
    first = head[0]
    if 0xA0 <= first <= 0xBF:
        return first & 0x1F, 1
    fields = _BIN_FIELDS.get(first)
    if fields is None:
        return None
    return fields.unpack_from(head, 1)[0], 1 + fields.size


def pack_ext_header(code: int, length: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(length)
    if fixed is not None:
        return struct.pack(">Bb", fixed, code)
    if length < 1 << 8:
        return struct.pack(">BBb", 0xC7, length, code)
    if length < 1 << 16:
        return struct.pack(">BHb", 0xC8, length, code)
    if length < 1 << 32:
        return struct.pack(">BIb", 0xC9, length, code)
    raise UnsupportedError(f"an array of {length} bytes does not fit one msgpack extension")


def pack_bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)
