"""Reading a Flax msgpack checkpoint: the walked tree (`walk.py`) into a Graph, maps as
Nodes, arrays as lazy Tensors (chunked arrays joined on read), other values as the Nodes'
values; and the sniff.

Apart from the walk because this is the tool's side of the format: how Flax's tree maps
onto Nodes, and the meta (`layout.py`) a Flax -> Flax round trip needs to give the same
bytes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from convert.core.errors import FormatError
from convert.core.graph import Graph, Node
from convert.core.meta import SOURCE_KEY
from convert.core.tensor import Stored, Tensor, array_from_bytes
from convert.formats.flax.layout import (
    CHUNKED_KEY,
    EXT_NDARRAY,
    EXT_NPSCALAR,
    META_ARRAY,
    META_CHUNKS,
    META_EXT,
    META_INT_KEYS,
    META_ORDER,
    kind,
)
from convert.formats.flax.walk import ArrayRef, MsgpackWalker, place
from convert.io.reads import SourceFile


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
        is_map, edges, values = isinstance(tree, dict), node.edges, node.values
        for key, value in items:
            if type(key) is str:
                name = key
            else:  # (the walk gives str and int keys only)
                name = str(key)
                if is_map:
                    int_keys.append(name)
            if name in edges or name in values:
                raise FormatError(
                    f"key {name!r} appears twice in {place('/'.join(where))}", self.path
                )
            if type(value) is ArrayRef:  # (most items: tested first)
                edges[name] = self.tensor([value], value.shape, where + (name,))
            elif isinstance(value, dict) and CHUNKED_KEY in value:
                edges[name] = self.chunked(value, where + (name,))
            elif isinstance(value, dict | list):
                edges[name] = self.node(value, where + (name,))
            else:
                values[name] = value
        if int_keys:
            node.meta[META_INT_KEYS] = int_keys
        if node.values and node.edges:
            node.meta[META_ORDER] = [
                str(k) for k in (tree if isinstance(tree, dict) else range(len(tree)))
            ]
        return node

    def tensor(
        self, parts: list[ArrayRef], shape: tuple[int, ...], where: tuple[str, ...]
    ) -> Tensor:
        self.tensors += 1
        meta: dict[str, Any] = {SOURCE_KEY: "/".join(where)}
        if parts[0].code == EXT_NPSCALAR:
            meta[META_EXT] = "npscalar"
        if len(parts) > 1 or parts[0].shape != shape:
            meta[META_CHUNKS] = len(parts)
        return Tensor(
            parts[0].dtype, shape, _Payload(self.source, parts, shape, meta[SOURCE_KEY]), meta
        )

    def chunked(self, value: dict, where: tuple[str, ...]) -> Tensor:
        key = "/".join(where)
        bad = f"{key}: chunked array is not {{{CHUNKED_KEY}, shape, chunks}}"
        if set(value) != {CHUNKED_KEY, "shape", "chunks"}:
            raise FormatError(bad, self.path)
        shape, chunks = _as_tuple(value["shape"]), _as_tuple(value["chunks"])
        if (
            shape is None
            or chunks is None
            or not chunks
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or not all(
                isinstance(c, ArrayRef)
                and c.code == EXT_NDARRAY
                and len(c.shape) == 1
                and c.dtype == chunks[0].dtype
                for c in chunks
            )
        ):
            raise FormatError(bad, self.path)
        stored = sum(c.shape[0] for c in chunks)
        if stored != math.prod(shape):
            raise FormatError(
                f"{key}: chunks hold {stored} elements, shape {list(shape)} "
                f"needs {math.prod(shape)}",
                self.path,
            )
        return self.tensor(list(chunks), tuple(shape), where)


def _as_tuple(value: Any) -> tuple | None:
    """Flax's tuple-as-map {"0": a, "1": b} (or a plain list) as a tuple; None if neither."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict) and list(value) == [str(i) for i in range(len(value))]:
        return tuple(value.values())
    return None


class _Payload:
    """A Tensor's loader: its array payload (or chunks, laid end to end), which, as one
    payload, also tells a writer where its bytes lie (`where_stored`: msgpack keeps them
    raw, in C order, little-endian)."""

    __slots__ = ("source", "parts", "shape", "key")

    def __init__(self, source: SourceFile, parts: list[ArrayRef], shape: tuple[int, ...], key: str):
        self.source, self.parts, self.shape, self.key = source, parts, shape, key

    def __call__(self) -> np.ndarray:
        source, parts, shape, key = self.source, self.parts, self.shape, self.key
        if len(parts) == 1:
            buf = source.read(parts[0].offset, parts[0].nbytes, key)
            return array_from_bytes(buf, parts[0].dtype, shape, key)
        out = np.empty(math.prod(shape), parts[0].dtype)
        done = 0
        for part in parts:
            buf = source.read(part.offset, part.nbytes, key)
            out[done : done + part.shape[0]] = array_from_bytes(buf, part.dtype, part.shape, key)
            done += part.shape[0]
        return out.reshape(shape)

    def where_stored(self) -> Stored | None:
        if len(self.parts) != 1 or not self.parts[0].nbytes:
            return None
        part = self.parts[0]
        return Stored(self.source, part.offset, part.nbytes, part.dtype, self.shape)


def sniff(path: Path) -> bool:
    """A msgpack map at the top whose first key is a string (pickles start 0x80 0x0N:
    an empty map followed by more bytes, which is not a msgpack file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
        if not head or kind(head[0]) != "map":
            return False
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(head)
        count = unpacker.read_map_header()
        if count == 0:
            return size == unpacker.tell()
        return head[unpacker.tell()] in range(0xA0, 0xC0) or head[unpacker.tell()] in (
            0xD9,
            0xDA,
            0xDB,
        )
    except Exception:  # sniff never raises
        return False


def read(path: Path) -> Graph:
    """The state dict as a Graph: maps are Nodes, arrays lazy Tensors, others values."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FormatError("is empty, not a Flax msgpack checkpoint", path)
        walker = MsgpackWalker(path, f, size)
        tree = walker.value()
        end = walker.tell()
        if end != size:
            raise FormatError(
                f"has {size - end} bytes after the msgpack value (which ends at byte {end})", path
            )
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
