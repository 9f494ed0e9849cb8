"""Writing a Flax msgpack checkpoint that `flax.serialization.from_bytes` restores: a
Graph planned into nested maps (each tensor once, under its first path), then streamed,
headers through `msgpack.Packer` and each tensor's bytes after them, one tensor in memory
at a time. Its output is byte for byte what `to_bytes` writes for the same tree (chunked
arrays included).

Apart from the reader because it shares nothing with it but the layout (`layout.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np

from convert.core.dtypes import STRING
from convert.core.errors import ConvertError, UnsupportedError
from convert.core.graph import Graph, GraphPath, Node
from convert.core.notes import count, dropped_values, some
from convert.core.tensor import Tensor
from convert.formats.flax.layout import (
    CHUNKED_KEY,
    EXT_COMPLEX,
    EXT_NDARRAY,
    EXT_NPSCALAR,
    META_ARRAY,
    META_EXT,
    META_INT_KEYS,
    META_ORDER,
    pack_bin_header,
    pack_ext_header,
)
from convert.io.reads import OutputSet, open_output

# Flax splits arrays above this many bytes into chunks (msgpack objects stop at 2**32 - 1,
# Flax leaves a margin). A module constant so that tests can lower it.
MAX_CHUNK_SIZE = 2**30


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
        self.keep_values = graph.format == "flax"  # foreign values would pollute the tree
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
        names = [n for n in node.meta.get(META_ORDER, ()) if n in node.edges or n in node.values]
        names += [n for n in node.edges if n not in names]
        names += [n for n in node.values if n not in names]
        items: dict[str | int, Any] = {}
        for name in names:
            value = self.item(node, name, where + (name,))
            if value is not None:
                items[int(name) if name in int_keys else name] = value
        array = bool(node.meta.get(META_ARRAY)) and list(items) == [
            str(i) for i in range(len(items))
        ]
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
        value = node.values[name]
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
                raise UnsupportedError(
                    f"optimizer slot {'/'.join(path)} would nest under a tensor in the Flax tree"
                )
            plan = nxt
        plan.items[path[-1]] = tensor

    def notes(self) -> list[str]:
        notes = []
        if self.aliases:
            notes.append(
                f"{count(self.aliases, 'path')} that repeat an object or tensor "
                "(aliases, tied weights) written once, under the first path"
            )
        if self.dropped_strings:
            notes.append(
                f"dropped {count(len(self.dropped_strings), 'string tensor')} (Flax "
                f"stores numeric arrays only): {some(self.dropped_strings)}"
            )
        note = dropped_values(
            [*self.dropped_values, *map(str, self.graph.values)],
            "a Flax state dict holds arrays only",
        )
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
            self.ext(EXT_NDARRAY, flat[start : start + step])

    def ext(self, code: int, array: np.ndarray) -> None:
        head = (
            b"\x93"
            + self.packer.pack(list(array.shape))
            + self.packer.pack(array.dtype.name)
            + pack_bin_header(array.nbytes)
        )
        self.file.write(pack_ext_header(code, len(head) + array.nbytes) + head)
        # (an ndarray is a buffer: numpy's stubs say so only for Python >= 3.12)
        self.file.write(array.reshape(-1).view(np.uint8))  # type: ignore[call-overload]


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Callable[[int], None] | None = None,
    report: Any = None,
    **options: Any,
) -> None:
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
            raise ConvertError("has no numeric tensors to write to a Flax checkpoint", graph.source)
    if report is not None:
        report.tensors += writer.tensors
        report.bytes += writer.bytes
        report.files.append(os.fspath(path))
        report.notes.extend(planner.notes())
