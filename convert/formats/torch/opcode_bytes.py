"""The bytes of the pickle opcodes the pickler writes most: ints, globals, strings and
tuples of ints in their shortest forms, and the memo's PUT and GET."""

from __future__ import annotations

import pickle
import struct

BINPUT = [b"q" + bytes([i]) for i in range(256)]


BINGET = [b"h" + bytes([i]) for i in range(256)]


LONG_MEMO = struct.Struct("<cI")  # LONG_BINPUT / LONG_BINGET and a 4-byte index


BININT1 = [b"K" + bytes([i]) for i in range(256)]
TUPLE_N = {1: b"\x85", 2: b"\x86", 3: b"\x87"}


def int_opcode(value: int) -> bytes:
    """An int as protocol 2 writes it."""
    if 0 <= value < 256:
        return BININT1[value]
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = pickle.encode_long(value)
    return (
        (b"\x8a" + bytes([len(data)]))
        if len(data) < 256
        else (b"\x8b" + struct.pack("<i", len(data)))
    ) + data


def global_opcode(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def str_opcode(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def int_tuple_opcodes(value: tuple[int, ...]) -> bytes:
    """A non-empty tuple of ints, without its memo entry."""
    if len(value) > 3:
        return b"".join([b"(", *map(int_opcode, value), b"t"])
    return b"".join([*map(int_opcode, value), TUPLE_N[len(value)]])
