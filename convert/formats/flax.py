"""Flax msgpack checkpoints (`flax.serialization`), read and written without Flax or JAX.

`flax.serialization.to_bytes(tree)` is msgpack of a nested state dict (lists become maps
keyed "0", "1", ...). Arrays are msgpack extension 1, whose payload is itself msgpack:
`[shape, dtype name, raw C-order bytes]`; extension 3 is a numpy scalar (same payload,
shape `[]`); extension 2 a Python complex (`[real, imag]`). Arrays over `MAX_CHUNK_SIZE`
bytes are split into `{"__msgpack_chunked_array__": true, "shape": {...}, "chunks": {...}}`.

Why not just `msgpack.unpackb`: it hands every extension payload to Python as a fresh
`bytes` copy and never says where the payload lay in the file, so a checkpoint would sit in
memory twice and tensors could not be lazy. Here msgpack's streaming `Unpacker` decodes
map/array headers, keys and scalars, and the reader peeks at each value's first byte: an
extension is located from its header (a few fixed msgpack rules, in `_ext_header` and
`_bin_header`) and stepped over without being decoded (a large one is not even read: the
Unpacker restarts after it), so each Tensor reads its own bytes, by offset, when asked.
Reading the structure thus costs memory for the keys and scalars only.
The writer streams the same way: headers through `msgpack.Packer`, then each tensor's bytes;
its output is byte for byte what `to_bytes` writes for the same tree.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgpack
import numpy as np

from ..dtypes import STRING, dtype_name, from_name
from ..errors import ConvertError, FormatError, UnsupportedError
from ..fileio import OutputSet, SourceFile, open_output, read_region
from ..graph import Graph, Node
from ..graph import Path as GraphPath
from ..notes import count, dropped_values, some
from ..tensor import Tensor, array_from_bytes

# Flax splits arrays above this many bytes into chunks (msgpack objects stop at 2**32 - 1,
# Flax leaves a margin). A module constant so that tests can lower it.
MAX_CHUNK_SIZE = 2**30

CHUNKED_KEY = "__msgpack_chunked_array__"
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3

# Node.meta / Tensor.meta keys that let a Flax -> Flax round trip give the same bytes.
META_ARRAY = "msgpack_array"  # the map was a raw msgpack array, not a {"0": ...} map
META_ORDER = "msgpack_order"  # key order when tensors and non-tensor values interleave
META_INT_KEYS = "msgpack_int_keys"  # keys that were integers in the file
META_EXT = "flax_ext"  # "npscalar" for extension 3

_READ_SIZE = 64 * 1024  # the Unpacker's read-ahead while walking the structure
_SKIP_LIMIT = 1 << 20  # extensions up to this size are skipped by the Unpacker itself
_PAYLOAD_HEAD = 4096  # room for an array payload's shape and dtype name (rank <= 64)
_MAX_DEPTH = 128


# -- msgpack facts the library does not expose: where things lie ------------------------

def _family(first: int) -> str:
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return "map"
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        return "array"
    if 0xD4 <= first <= 0xD8 or 0xC7 <= first <= 0xC9:
        return "ext"
    return "scalar"


_KINDS = [_family(first) for first in range(256)]


def _kind(first: int) -> str:
    """Which msgpack family a value's first byte starts."""
    return _KINDS[first]


def _ext_header(head: bytes) -> tuple[int, int, int]:
    """(type code, payload length, header length) of an extension starting `head`."""
    first = head[0]
    if 0xD4 <= first <= 0xD8:  # fixext 1, 2, 4, 8, 16
        return struct.unpack_from("b", head, 1)[0], 1 << (first - 0xD4), 2
    fmt = {0xC7: ">Bb", 0xC8: ">Hb", 0xC9: ">Ib"}[first]
    length, code = struct.unpack_from(fmt, head, 1)
    return code, length, 1 + struct.calcsize(fmt)


def _bin_header(head: bytes) -> tuple[int, int] | None:
    """(length, header length) of a bin or str value (old writers stored bytes as str)."""
    first = head[0]
    if 0xA0 <= first <= 0xBF:
        return first & 0x1F, 1
    fmt = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}.get(first)
    if fmt is None:
        return None
    return struct.unpack_from(fmt, head, 1)[0], 1 + struct.calcsize(fmt)


def _pack_ext_header(code: int, length: int) -> bytes:
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


def _pack_bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


# -- reading ----------------------------------------------------------------------------

class _ArrayRef(NamedTuple):
    """An array payload found in the file: where its raw bytes are, nothing read."""

    code: int
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class _Window:
    """The file's bytes around where the walk is, read again when the walk moves on: the
    walk peeks at every value's header, and a system call per peek would cost more than the
    rest of the walk. (Not a mapping of the whole file: the kernel maps whole large folios
    of it, so the pages around a few thousand headers grow the RSS by most of the file.)"""

    SIZE = 16 * 1024

    def __init__(self, fd: int):
        self.fd = fd
        self.start = 0
        self.data = b""

    def read(self, offset: int, size: int) -> bytes:
        at = offset - self.start
        if at < 0 or at + size > len(self.data):
            self.data = os.pread(self.fd, max(size, self.SIZE), offset)
            self.start, at = offset, 0
        return self.data[at:at + size]


class _MsgpackWalker:
    """Walks a msgpack file into dicts, lists, scalars and `_ArrayRef`s (no array data)."""

    def __init__(self, path: Path, file: BinaryIO, size: int):
        self.path, self.file, self.size = path, file, size
        self.window = _Window(file.fileno())
        self._restart(0)

    # the Unpacker is dropped and re-made after a large extension, so it never buffers one
    def _restart(self, offset: int) -> None:
        self.file.seek(offset)
        self.base = offset
        self.unpacker = msgpack.Unpacker(
            self.file, read_size=_READ_SIZE, raw=False, strict_map_key=False,
            max_buffer_size=max(_READ_SIZE, min(self.size, 2**31 - 1)))

    def tell(self) -> int:
        return self.base + self.unpacker.tell()

    def _call(self, where: str, fn: Callable[[], Any], at: int) -> Any:
        """Run one Unpacker step on the value at byte `at`, turning its exceptions into
        one-line FormatErrors."""
        try:
            return fn()
        except msgpack.OutOfData:
            raise self._truncated(where, at) from None
        except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise FormatError(f"invalid msgpack at byte {at} ({_where(where)}): {exc}",
                              self.path) from None

    def _truncated(self, where: str, at: int) -> FormatError:
        return FormatError(f"ends after {self.size} bytes, inside {_where(where)} (at a value "
                           f"that starts at byte {at}): the file is truncated", self.path)

    def value(self, where: str = "", depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise FormatError(f"nested deeper than {_MAX_DEPTH} levels at {_where(where)}",
                              self.path)
        at = self.tell()
        head = self.window.read(at, 1)
        if not head:
            raise self._truncated(where, at)
        kind = _KINDS[head[0]]
        if kind == "map":
            return self._map(where, depth, at)
        if kind == "array":
            count = self._call(where, self.unpacker.read_array_header, at)
            self._check_count(count, 1, where)
            return [self.value(_join(where, str(i)), depth + 1) for i in range(count)]
        if kind == "ext":
            return self._ext(at, where)
        return self._call(where, self.unpacker.unpack, at)

    def _check_count(self, count: int, min_bytes: int, where: str) -> None:
        if count * min_bytes > self.size - self.tell():
            raise self._truncated(where, self.tell())

    def _map(self, where: str, depth: int, at: int) -> dict:
        count = self._call(where, self.unpacker.read_map_header, at)
        self._check_count(count, 2, where)
        out: dict = {}
        for _ in range(count):
            at = self.tell()
            head = self.window.read(at, 1)
            if not head:
                raise self._truncated(where, at)
            key = (self._call(where, self.unpacker.unpack, at) if _KINDS[head[0]] == "scalar"
                   else None)
            if type(key) is not str and type(key) is not int:
                raise FormatError(f"map key at byte {at} in {_where(where)} is not a string",
                                  self.path)
            if key in out:
                raise FormatError(f"key {key!r} appears twice in {_where(where)}", self.path)
            out[key] = self.value(_join(where, str(key)), depth + 1)
        return out

    def _ext(self, at: int, where: str) -> Any:
        head = self.window.read(at, 6)
        if len(head) < {0xC7: 3, 0xC8: 4, 0xC9: 6}.get(head[0], 2):
            raise self._truncated(where, at)
        code, length, header = _ext_header(head)
        start, end = at + header, at + header + length
        if end > self.size:
            raise self._truncated(where, at)
        if length <= _SKIP_LIMIT:
            self._call(where, self.unpacker.skip, at)
        else:
            self._restart(end)
        if code in (EXT_NDARRAY, EXT_NPSCALAR):
            return self._array_ref(code, start, length, where)
        if code == EXT_COMPLEX:
            return self._complex(start, length, where)
        raise FormatError(f"{_where(where)} is msgpack extension type {code}; Flax writes only "
                          "1 (array), 2 (complex) and 3 (numpy scalar)", self.path)

    def _array_ref(self, code: int, start: int, length: int, where: str) -> _ArrayRef:
        """Parse `[shape, dtype name, bytes]` from the payload's first bytes only."""
        head = self.window.read(start, min(length, _PAYLOAD_HEAD))
        bad = f"{_where(where)}: array payload at byte {start} is not [shape, dtype, bytes]"
        shape, name, data_at = _plain_payload_head(head) or self._payload_head(head, bad)
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if (type(shape) is not list or len(shape) > 64 or type(name) is not str
                or not _INTS.issuperset(map(type, shape)) or (shape and min(shape) < 0)):
            raise FormatError(bad, self.path)
        binary = _bin_header(head[data_at:data_at + 5]) if data_at < len(head) else None
        if binary is None or data_at + binary[1] > len(head):
            raise FormatError(bad, self.path)
        stored, bin_header = binary
        dtype = _dtype(name, where, self.path)
        expected = math.prod(shape) * dtype.itemsize
        if stored != expected or data_at + bin_header + stored != length:
            held = min(stored, length - data_at - bin_header)
            raise FormatError(
                f"{_where(where)}: extension payload declares {name}{shape} = {expected} bytes "
                f"but holds {held} bytes", self.path)
        return _ArrayRef(code, dtype, tuple(shape), start + data_at + bin_header, stored)

    def _payload_head(self, head: bytes, bad: str) -> tuple[Any, Any, int]:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(head)
        try:
            if unpacker.read_array_header() != 3:
                raise FormatError(bad, self.path)
            return unpacker.unpack(), unpacker.unpack(), unpacker.tell()
        except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError):
            raise FormatError(bad, self.path) from None

    def _complex(self, start: int, length: int, where: str) -> complex:
        try:
            real, imag = msgpack.unpackb(read_region(self.path, start, length, _where(where)))
            return complex(real, imag)
        except (msgpack.UnpackException, ValueError, TypeError):
            raise FormatError(f"{_where(where)}: complex payload is not [real, imag]",
                              self.path) from None


def _plain_payload_head(head: bytes) -> tuple[list[int], str, int] | None:
    """(shape, dtype name, where the bytes' header starts) of the spelling Flax gives small
    arrays (a fixarray of 3; a fixarray of positive fixints; a fixstr), decoded without an
    Unpacker, which costs more than the rest of listing such an array. None otherwise."""
    if len(head) < 2 or head[0] != 0x93 or not 0x90 <= head[1] <= 0x9F:
        return None
    at = 2 + head[1] - 0x90
    shape = list(head[2:at])
    if at >= len(head) or (shape and max(shape) > 0x7F) or not 0xA0 <= head[at] <= 0xBF:
        return None
    end = at + 1 + head[at] - 0xA0
    name = head[at + 1:end]
    if end > len(head) or not name.isascii():
        return None
    return shape, name.decode("ascii"), end


def _dtype(name: str, where: str, path: Path) -> np.dtype:
    dtype = _DTYPES.get(name)
    if dtype is not None:
        return dtype
    try:
        dtype = from_name(name)
    except (KeyError, ValueError):  # np.dtype raises ValueError for some malformed names
        dtype = STRING
    if dtype == STRING:
        raise FormatError(f"{_where(where)}: unknown array dtype {name!r}", path)
    _DTYPES[name] = dtype
    return dtype


_DTYPES: dict[str, np.dtype] = {}  # dtype names seen (a model repeats a few thousands of times)
_INTS = frozenset((int,))  # (element types checked as a set: in C)


def _join(where: str, name: str) -> str:
    return f"{where}/{name}" if where else name


def _where(where: str) -> str:
    return where or "the top-level map"


class _GraphBuilder:
    """Turns the walked tree into Nodes and lazy Tensors."""

    def __init__(self, path: Path):
        self.path = path
        self.source = SourceFile(path)
        self.tensors = 0

    def node(self, tree: dict | list, where: tuple[str, ...]) -> Node:
        node = Node()
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        if isinstance(tree, list):
            node.meta[META_ARRAY] = True
        int_keys = []
        for key, value in items:
            name = str(key)
            if isinstance(key, int) and isinstance(tree, dict):
                int_keys.append(name)
            if name in node.edges or name in node.metadata:
                raise FormatError(f"key {name!r} appears twice in {_where('/'.join(where))}",
                                  self.path)
            here = where + (name,)
            if isinstance(value, dict) and CHUNKED_KEY in value:
                node.edges[name] = self.chunked(value, here)
            elif isinstance(value, dict | list):
                node.edges[name] = self.node(value, here)
            elif isinstance(value, _ArrayRef):
                node.edges[name] = self.tensor([value], value.shape, here)
            else:
                node.metadata[name] = value
        if int_keys:
            node.meta[META_INT_KEYS] = int_keys
        if node.metadata and node.edges:
            node.meta[META_ORDER] = [str(k) for k in (tree if isinstance(tree, dict)
                                                      else range(len(tree)))]
        return node

    def tensor(self, parts: list[_ArrayRef], shape: tuple[int, ...],
               where: tuple[str, ...]) -> Tensor:
        self.tensors += 1
        meta: dict[str, Any] = {"key": "/".join(where)}
        if parts[0].code == EXT_NPSCALAR:
            meta[META_EXT] = "npscalar"
        if len(parts) > 1 or parts[0].shape != shape:
            meta["chunks"] = len(parts)
        return Tensor(parts[0].dtype, shape, _loader(self.source, parts, shape, meta["key"]),
                      meta)

    def chunked(self, value: dict, where: tuple[str, ...]) -> Tensor:
        key = "/".join(where)
        bad = f"{key}: chunked array is not {{{CHUNKED_KEY}, shape, chunks}}"
        if set(value) != {CHUNKED_KEY, "shape", "chunks"}:
            raise FormatError(bad, self.path)
        shape, chunks = _as_tuple(value["shape"]), _as_tuple(value["chunks"])
        if (shape is None or chunks is None or not chunks
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape)
                or not all(isinstance(c, _ArrayRef) and c.code == EXT_NDARRAY
                           and len(c.shape) == 1 and c.dtype == chunks[0].dtype
                           for c in chunks)):
            raise FormatError(bad, self.path)
        stored = sum(c.shape[0] for c in chunks)
        if stored != math.prod(shape):
            raise FormatError(f"{key}: chunks hold {stored} elements, shape {list(shape)} "
                              f"needs {math.prod(shape)}", self.path)
        return self.tensor(list(chunks), tuple(shape), where)


def _as_tuple(value: Any) -> tuple | None:
    """Flax's tuple-as-map {"0": a, "1": b} (or a plain list) as a tuple; None if neither."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict) and list(value) == [str(i) for i in range(len(value))]:
        return tuple(value.values())
    return None


def _loader(source: SourceFile, parts: list[_ArrayRef], shape: tuple[int, ...], key: str):
    def load() -> np.ndarray:
        if len(parts) == 1:
            buf = source.read(parts[0].offset, parts[0].nbytes, key)
            return array_from_bytes(buf, parts[0].dtype, shape, key)
        out = np.empty(math.prod(shape), parts[0].dtype)
        done = 0
        for part in parts:
            buf = source.read(part.offset, part.nbytes, key)
            out[done:done + part.shape[0]] = array_from_bytes(buf, part.dtype, part.shape, key)
            done += part.shape[0]
        return out.reshape(shape)

    return load


def sniff(path: Path) -> bool:
    """A msgpack map at the top whose first key is a string (pickles start 0x80 0x0N:
    an empty map followed by more bytes, which is not a msgpack file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
        if not head or _kind(head[0]) != "map":
            return False
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(head)
        count = unpacker.read_map_header()
        if count == 0:
            return size == unpacker.tell()
        return head[unpacker.tell()] in range(0xA0, 0xC0) or head[unpacker.tell()] in (
            0xD9, 0xDA, 0xDB)
    except Exception:  # sniff never raises
        return False


def read(path: Path) -> Graph:
    """The state dict as a Graph: maps are Nodes, arrays lazy Tensors, others metadata."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FormatError("is empty, not a Flax msgpack checkpoint", path)
        walker = _MsgpackWalker(path, f, size)
        tree = walker.value()
        end = walker.tell()
        if end != size:
            raise FormatError(f"has {size - end} bytes after the msgpack value "
                              f"(which ends at byte {end})", path)
    if not isinstance(tree, dict | list):
        raise FormatError("holds a single msgpack value, not a map of arrays", path)
    builder = _GraphBuilder(path)
    if isinstance(tree, dict) and CHUNKED_KEY in tree:
        root = Node()
        root.edges["array"] = builder.chunked(tree, ("array",))
    else:
        root = builder.node(tree, ())
    if builder.tensors == 0:
        raise FormatError("is a msgpack map that holds no arrays: not a Flax checkpoint", path)
    return Graph(root=root, format="flax", source=os.fspath(path), files=[os.fspath(path)])


# -- writing ----------------------------------------------------------------------------

@dataclass
class _Packed:
    """A non-tensor value, already packed."""

    data: bytes


@dataclass
class _MapPlan:
    items: dict[str | int, Any]  # key -> _MapPlan | Tensor | _Packed
    array: bool = False


def _pack_default(obj: Any) -> Any:
    """Flax's msgpack extensions for values that plain msgpack does not know."""
    if isinstance(obj, np.ndarray) and obj.dtype != STRING:
        return msgpack.ExtType(EXT_NDARRAY, _array_payload(obj))
    if isinstance(obj, np.generic) and not isinstance(obj, np.object_ | np.str_ | np.bytes_):
        return msgpack.ExtType(EXT_NPSCALAR, _array_payload(np.asarray(obj)))
    if isinstance(obj, complex):
        return msgpack.ExtType(EXT_COMPLEX, msgpack.packb((obj.real, obj.imag)))
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in msgpack")


def _array_payload(array: np.ndarray) -> bytes:
    return msgpack.packb((array.shape, array.dtype.name, array.tobytes("C")), use_bin_type=True)


def _packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, strict_types=True, default=_pack_default)


class _Planner:
    """The nested maps to write, built from a Graph: each tensor once, under its first path."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.keep_values = graph.format == "flax"  # foreign metadata would pollute the tree
        self.first_path = {id(e.tensor): e.path for e in graph.entries()}
        self.packer = _packer()
        self.dropped_values: list[str] = []
        self.dropped_strings: list[str] = []
        self.aliases = 0
        self.seen_nodes: set[int] = set()

    def plan(self) -> _MapPlan:
        self.seen_nodes.add(id(self.graph.root))
        root = self.node(self.graph.root, ()) or _MapPlan({})
        for entry in self.graph.entries():
            if entry.slot is not None:
                self.put(root, entry.path, entry.tensor)
        return root

    def node(self, node: Node, where: GraphPath) -> _MapPlan | None:
        int_keys = set(node.meta.get(META_INT_KEYS, ()))
        names = [n for n in node.meta.get(META_ORDER, ())
                 if n in node.edges or n in node.metadata]
        names += [n for n in node.edges if n not in names]
        names += [n for n in node.metadata if n not in names]
        items: dict[str | int, Any] = {}
        for name in names:
            value = self.item(node, name, where + (name,))
            if value is not None:
                items[int(name) if name in int_keys else name] = value
        array = bool(node.meta.get(META_ARRAY)) and list(items) == [
            str(i) for i in range(len(items))]
        if not items and not self.keep_values:
            return None  # an object without weights (an activation layer, say)
        return _MapPlan(items, array)

    def item(self, node: Node, name: str, here: GraphPath) -> Any:
        item = node.edges.get(name)
        if isinstance(item, Tensor):
            if self.first_path.get(id(item)) != here:
                self.aliases += 1
                return None
            if item.dtype == STRING:
                self.dropped_strings.append("/".join(here))
                return None
            return item
        if isinstance(item, Node):
            if id(item) in self.seen_nodes:
                self.aliases += 1
                return None
            self.seen_nodes.add(id(item))
            return self.node(item, here)
        value = node.metadata[name]
        if not self.keep_values:
            self.dropped_values.append("/".join(here))
            return None
        try:
            return _Packed(self.packer.pack(value))
        except (TypeError, ValueError, OverflowError):
            self.dropped_values.append("/".join(here))
            return None

    def put(self, root: _MapPlan, path: GraphPath, tensor: Tensor) -> None:
        plan = root
        for name in path[:-1]:
            nxt = plan.items.setdefault(name, _MapPlan({}))
            if not isinstance(nxt, _MapPlan):
                raise UnsupportedError(f"optimizer slot {'/'.join(path)} would nest under a "
                                       "tensor in the Flax tree")
            plan = nxt
        plan.items[path[-1]] = tensor

    def notes(self) -> list[str]:
        notes = []
        if self.aliases:
            notes.append(f"{count(self.aliases, 'path')} that repeat an object or tensor "
                         "(aliases, tied weights) written once, under the first path")
        if self.dropped_strings:
            notes.append(f"dropped {count(len(self.dropped_strings), 'string tensor')} (Flax "
                         f"stores numeric arrays only): {some(self.dropped_strings)}")
        note = dropped_values([*self.dropped_values, *map(str, self.graph.metadata)],
                              "a Flax state dict holds arrays only")
        if note:
            notes.append(note)
        return notes


class _StreamWriter:
    """Writes a `_MapPlan` as msgpack, reading and writing one tensor at a time."""

    def __init__(self, file: BinaryIO, progress: Callable[[int], None] | None):
        self.file, self.progress = file, progress
        self.packer = _packer()
        self.tensors = self.bytes = 0

    def map(self, plan: _MapPlan) -> None:
        if plan.array:
            self.file.write(self.packer.pack_array_header(len(plan.items)))
        else:
            self.file.write(self.packer.pack_map_header(len(plan.items)))
        for key, value in plan.items.items():
            if not plan.array:
                self.file.write(self.packer.pack(key))
            if isinstance(value, _MapPlan):
                self.map(value)
            elif isinstance(value, _Packed):
                self.file.write(value.data)
            else:
                self.tensor(value)

    def tensor(self, tensor: Tensor) -> None:
        array = np.require(tensor.read(), requirements="C")  # keeps 0-d arrays 0-d
        if array.dtype.byteorder == ">":  # Flax stores little-endian bytes
            array = array.astype(array.dtype.newbyteorder("<"))
        if tensor.meta.get(META_EXT) == "npscalar" and array.shape == ():
            self.ext(EXT_NPSCALAR, array)
        elif array.nbytes > MAX_CHUNK_SIZE:
            self.chunked(array)
        else:
            self.ext(EXT_NDARRAY, array)
        self.tensors += 1
        self.bytes += array.nbytes
        if self.progress is not None:
            self.progress(array.nbytes)

    def chunked(self, array: np.ndarray) -> None:
        """Flax's layout: flat chunks of MAX_CHUNK_SIZE // itemsize elements."""
        step = max(1, int(MAX_CHUNK_SIZE / array.dtype.itemsize))
        flat = array.reshape(-1)
        starts = range(0, flat.size, step)
        pack, write = self.packer.pack, self.file.write
        write(self.packer.pack_map_header(3) + pack(CHUNKED_KEY) + pack(True) + pack("shape"))
        write(self.packer.pack_map_header(array.ndim))
        for i, dim in enumerate(array.shape):
            write(pack(str(i)) + pack(dim))
        write(pack("chunks") + self.packer.pack_map_header(len(starts)))
        for i, start in enumerate(starts):
            write(pack(str(i)))
            self.ext(EXT_NDARRAY, flat[start:start + step])

    def ext(self, code: int, array: np.ndarray) -> None:
        head = (b"\x93" + self.packer.pack(list(array.shape)) + self.packer.pack(array.dtype.name)
                + _pack_bin_header(array.nbytes))
        self.file.write(_pack_ext_header(code, len(head) + array.nbytes) + head)
        self.file.write(array.reshape(-1).view(np.uint8))


def write(graph: Graph, path: Path, *, overwrite: bool = False, inputs: tuple = (),
          progress: Callable[[int], None] | None = None, report: Any = None,
          **options: Any) -> None:
    """Write `graph` as a Flax state dict that `flax.serialization.from_bytes` restores."""
    if options:
        raise UnsupportedError(f"the flax writer has no option {', '.join(options)}", path)
    planner = _Planner(graph)
    plan = planner.plan()
    with OutputSet(overwrite, inputs) as outputs:
        tmp = outputs.path(path)
        with open_output(tmp) as f:
            writer = _StreamWriter(f, progress)
            writer.map(plan)
        if writer.tensors == 0:
            raise ConvertError("has no numeric tensors to write to a Flax checkpoint",
                               graph.source)
    if report is not None:
        report.tensors += writer.tensors
        report.bytes += writer.bytes
        report.files.append(os.fspath(path))
        report.notes.extend(planner.notes())


# -- checking against a target ------------------------------------------------------------

def compare_to_target(graph: Graph, target: Graph) -> list[str]:
    """One line per difference that `flax.serialization.from_bytes` would not report:
    shape or dtype mismatches (it checks neither), tensors the target lacks (it ignores
    them) and, for completeness, tensors the checkpoint lacks (from_bytes fails on those)."""
    have: dict[GraphPath, Tensor] = {}
    for entry in graph.entries():
        for path in entry.paths:
            have[path] = entry.tensor
    wanted: dict[GraphPath, Tensor] = {}
    for entry in target.entries():
        for path in entry.paths:
            wanted[path] = entry.tensor
    problems = []
    for path, want in wanted.items():
        key = "/".join(path)
        got = have.get(path)
        if got is None:
            problems.append(f"{key}: missing from the checkpoint (target: {_describe(want)})")
            continue
        if got.shape != want.shape:
            problems.append(f"{key}: shape {list(got.shape)} in the checkpoint, "
                            f"{list(want.shape)} in the target")
        if got.dtype != want.dtype:
            problems.append(f"{key}: dtype {dtype_name(got.dtype)} in the checkpoint, "
                            f"{dtype_name(want.dtype)} in the target")
    for path, got in have.items():
        if path not in wanted:
            problems.append(f"{'/'.join(path)}: not in the target ({_describe(got)}; "
                            "from_bytes would ignore it)")
    return problems


def _describe(tensor: Tensor) -> str:
    return f"{tensor.dtype_name}{list(tensor.shape)}"
