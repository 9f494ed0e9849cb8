"""Tools for damaging files: the layout of a zip, a msgpack walker, hand-built pickles,
and payload objects whose unpickling would run code (each creates the marker file)."""

from __future__ import annotations

import io
import random
import struct
import zipfile

# -- bytes ------------------------------------------------------------------------------


def cut(data: bytes, at: int) -> bytes:
    return data[: max(0, min(at, len(data)))]


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    buf = bytearray(data)
    buf[pos % len(buf)] ^= 1 << bit
    return bytes(buf)


def put(data: bytes, pos: int, raw: bytes) -> bytes:
    return data[:pos] + raw + data[pos + len(raw) :]


def random_cuts(data: bytes, rng: random.Random, n: int) -> list[int]:
    return sorted(rng.randrange(1, len(data)) for _ in range(n))


# -- zip --------------------------------------------------------------------------------


def zip_boundaries(data: bytes) -> dict[str, int]:
    """Offsets of each member's local header, data and end, the central directory and
    the end-of-central-directory record."""
    marks: dict[str, int] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for i, info in enumerate(z.infolist()):
            n, e = struct.unpack_from("<HH", data, info.header_offset + 26)
            start = info.header_offset + 30 + n + e
            marks[f"local{i}"] = info.header_offset
            marks[f"data{i}"] = start
            marks[f"mid{i}"] = start + info.compress_size // 2
    eocd = data.rfind(b"PK\x05\x06")
    marks["cd"] = struct.unpack_from("<I", data, eocd + 16)[0]
    marks["cd_mid"] = (marks["cd"] + eocd) // 2
    marks["eocd"] = eocd
    marks["eocd_end"] = len(data) - 1
    return marks


def rezip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        for name, payload in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), payload, method)
    return out.getvalue()


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def set_declared_size(data: bytes, member: str, size: int) -> bytes:
    """The zip with `member`'s uncompressed size declared as `size` (both headers)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    raw = struct.pack("<I", min(size, 0xFFFFFFFE))
    data = put(data, info.header_offset + 22, raw)
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + n] == member.encode():
            data = put(data, pos + 24, raw)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return data


def rename_local(data: bytes, member: str, new: str) -> bytes:
    """The local header of `member` names `new` (same length); the directory does not."""
    assert len(new) == len(member)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    return put(data, info.header_offset + 30, new.encode())


# -- msgpack ----------------------------------------------------------------------------


def msgpack_starts(data: bytes) -> list[int]:
    """The offset where each msgpack object of `data` starts, containers included."""
    starts: list[int] = []

    def obj(p: int) -> int:
        starts.append(p)
        b = data[p]
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            return p + 1
        if 0x80 <= b <= 0x8F:
            return items(p + 1, 2 * (b & 0x0F))
        if 0x90 <= b <= 0x9F:
            return items(p + 1, b & 0x0F)
        if 0xA0 <= b <= 0xBF:
            return p + 1 + (b & 0x1F)
        fixed = {
            0xCC: 1,
            0xCD: 2,
            0xCE: 4,
            0xCF: 8,
            0xD0: 1,
            0xD1: 2,
            0xD2: 4,
            0xD3: 8,
            0xCA: 4,
            0xCB: 8,
        }
        if b in fixed:
            return p + 1 + fixed[b]
        sized = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
        if b in sized:
            w = sized[b]
            return p + 1 + w + int.from_bytes(data[p + 1 : p + 1 + w], "big")
        if b in (0xC7, 0xC8, 0xC9):
            w = {0xC7: 1, 0xC8: 2, 0xC9: 4}[b]
            return p + 2 + w + int.from_bytes(data[p + 1 : p + 1 + w], "big")
        if 0xD4 <= b <= 0xD8:
            return p + 2 + (1 << (b - 0xD4))
        if b in (0xDC, 0xDD, 0xDE, 0xDF):
            w = 2 if b in (0xDC, 0xDE) else 4
            n = int.from_bytes(data[p + 1 : p + 1 + w], "big")
            return items(p + 1 + w, n * (2 if b >= 0xDE else 1))
        raise ValueError(f"msgpack byte {b:#x}")

    def items(p: int, n: int) -> int:
        for _ in range(n):
            p = obj(p)
        return p

    obj(0)
    return starts


# -- pickles ----------------------------------------------------------------------------


def pk_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def pk_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def pk_int(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def pk_tuple(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def pk_call(func: bytes, *args: bytes) -> bytes:
    return func + pk_tuple(*args) + b"R"


def pk(body: bytes, proto: int = 2) -> bytes:
    return b"\x80" + bytes([proto]) + body + b"."


class Payload:
    """An object whose unpickling calls `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _Import:  # __import__(name), callable so that pickle takes it as a reducer's func
    def __init__(self, name):
        self.name = name

    def __call__(self, *a):
        raise AssertionError("never called here")

    def __reduce__(self):
        return __import__, (self.name,)


class AttrOf:
    """getattr(__import__(module), name): a builtins.getattr chain."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *a):
        raise AssertionError("never called here")

    def __reduce__(self):
        return getattr, (_Import(self.module), self.name)
