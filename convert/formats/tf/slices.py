"""Keys of tensor slices: TensorFlow's order-preserving encoding of (0, name, rank, then
start and length of every dimension), with length -1 for a whole dimension."""

from __future__ import annotations

_HEADER_BITS = [
    (0, 0),
    (0x80, 0),
    (0xC0, 0),
    (0xE0, 0),
    (0xF0, 0),
    (0xF8, 0),
    (0xFC, 0),
    (0xFE, 0),
    (0xFF, 0),
    (0xFF, 0x80),
    (0xFF, 0xC0),
]


def _num_increasing(value: int) -> bytes:
    """An unsigned number: one length byte, then big-endian bytes without leading zeros."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def _string(value: bytes) -> bytes:
    return value.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _signed_increasing(value: int) -> bytes:
    """A signed number in 1..10 bytes; the leading bits of the first bytes give the length."""
    magnitude = ~value if value < 0 else value
    if magnitude < 64:
        return bytes([(_HEADER_BITS[1][0] ^ value) & 0xFF])
    length = (magnitude.bit_length() + 1 + 6) // 7  # 7 payload bits a byte, plus a sign bit
    raw = bytearray((value & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))
    raw[0] ^= _HEADER_BITS[length][0]
    raw[1] ^= _HEADER_BITS[length][1]
    return bytes(raw)


def slice_key(name: bytes, proto) -> bytes:
    """The key under which the slice `proto` (a TensorSliceProto) of tensor `name` is stored."""
    out = _num_increasing(0) + _string(name) + _num_increasing(len(proto.extent))
    for ext in proto.extent:
        whole = not ext.HasField("length")
        out += _signed_increasing(0 if whole else ext.start)
        out += _signed_increasing(-1 if whole else ext.length)
    return out


def extents(proto, shape: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """(start, length) per dimension, whole dimensions filled in; None if out of bounds."""
    if len(proto.extent) not in (0, len(shape)):
        return None
    out = []
    for dim, size in enumerate(shape):
        ext = proto.extent[dim] if proto.extent else None
        if ext is None or not ext.HasField("length"):
            start, length = 0, size
        else:
            start, length = ext.start, ext.length
        if start < 0 or length < 0 or start + length > size:
            return None
        out.append((start, length))
    return out


def is_slice_key(key: bytes) -> bool:
    """Slice keys start with the encoded 0 (a zero byte); tensor names never do."""
    return key[:1] == b"\x00"
