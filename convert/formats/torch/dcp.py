"""`torch.distributed.checkpoint` (DCP) directories, read without torch: what FSDP, FSDP2,
torchtitan and accelerate's `SHARDED_STATE_DICT` leave on disk (`.metadata` beside
`__<rank>_<n>.distcp` files).

The metadata (dcp_metadata.py) lists every key of the flattened state and, for a tensor,
the chunks the ranks wrote; each chunk is a `torch.save` archive at a byte range of a
`.distcp` file, read by zipreader.py as any archive is. Written with DCP's safetensors
serialization, a rank's file ends with one safetensors file of all its chunks instead
(each by its key, the chunk's offsets in its `DCP_SHARDING_INFO` metadata), read by the
safetensors format's reader, reached through the registry. A tensor is one lazy Tensor: a
tensor of one chunk is that chunk's tensor (its bytes copied file to file when unchanged),
one of several is assembled when read, chunk by chunk into one array, so a conversion
holds one tensor (and one chunk) at a time. The chunks must tile the tensor: each inside
it, none overlapping another, all of it covered. A bytes item (a pickled value: a
learning rate, a step) is read through the same restricted unpickler when the directory
is, and kept as a value; one that is not plain data is left out, and the notes say so.

Keys split on "." into the graph's path (`model.0.weight` is `model/0/weight`), as torch's
flat keys do: `--pick`-style selection and the rules see the nested state.
"""

from __future__ import annotations

import importlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from convert.core import registry
from convert.core.errors import ConvertError, FormatError, UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import DEFAULT_PICK, SOURCE_KEY
from convert.core.tensor import Stored, Tensor, stored_in_parts
from convert.formats.torch.dcp_metadata import MAX_METADATA_BYTES, Chunk, Item, Where, parse
from convert.formats.torch.tree import is_plain
from convert.formats.torch.zipreader import read_zip, read_zip_object

METADATA = ".metadata"


def is_dcp(path: Path) -> bool:
    return path.is_dir() and (path / METADATA).is_file()


def read(path: Path) -> Graph:
    file = path / METADATA
    size = file.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise FormatError(f"has a {METADATA} of {size} bytes: too large for DCP metadata", path)
    where = str(path)
    try:
        parsed = parse(file.read_bytes(), where)
    except ConvertError as exc:
        if exc.path is None:
            exc.path = f"{where}/{METADATA}"
        raise
    graph = Graph(format="dcp", source=where, files=[str(file)])
    files: dict[str, tuple[Path, int]] = {}  # each file named, with its size (one stat)
    blobs = _Blobs()
    for item in parsed.items:
        parts = tuple(item.key.split("."))
        if not all(parts):
            raise FormatError(f"{METADATA} has the key {item.key!r}, with an empty part", path)
        if item.dtype is None:
            _add_value(graph, parts, item, _place(parsed.storage, item.key, None, path, files))
            continue
        _check_tiling(item, path)
        places = [_place(parsed.storage, item.key, c.offsets, path, files) for c in item.chunks]
        tensor = _tensor(item, places, blobs)
        tensor.meta[SOURCE_KEY] = item.key
        try:
            graph.add(parts, tensor)
        except ValueError as exc:
            raise FormatError(f"key {item.key!r}: {exc}", path) from None
    graph.files.extend(str(p) for p, _ in files.values())
    wrapping = list(graph.root.edges.items())
    if len(wrapping) == 1 and isinstance(wrapping[0][1], Node):
        # One part wrapping the state (accelerate saves `{"model": state_dict}`): a
        # conversion writes the state dict itself, as accelerate's merge-weights does.
        graph.root.meta[DEFAULT_PICK] = wrapping[0][0]
    return graph


def _place(
    storage: dict,
    key: str,
    offsets: tuple[int, ...] | None,
    root: Path,
    files: dict[str, tuple[Path, int]],
) -> tuple[Path, Where]:
    where = storage.get((key, offsets))
    if where is None:
        at = "" if offsets is None else f" at {list(offsets)}"
        raise FormatError(f"{METADATA} says where nothing of {key!r}{at} is stored", root)
    known = files.get(where.file)
    if known is None:
        name = where.file
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise FormatError(f"names the file {name[:80]!r}, not one of its own", root)
        if not (root / name).is_file():
            raise FormatError(f"{name} (named by {METADATA}) is missing", root)
        known = files[where.file] = (root / name, (root / name).stat().st_size)
    file, size = known
    if where.offset + where.length > size:
        raise FormatError(
            f"{key!r} is stored at bytes {where.offset}..{where.offset + where.length} of "
            f"{file.name}, past its end: truncated?",
            root,
        )
    return file, where


def _check_tiling(item: Item, root: Path) -> None:
    """Every chunk inside the tensor, none overlapping another, together all of it."""
    shape = item.shape
    total = 0
    for chunk in item.chunks:
        if (
            len(chunk.offsets) != len(shape)
            or len(chunk.sizes) != len(shape)
            or any(o + s > n for o, s, n in zip(chunk.offsets, chunk.sizes, shape, strict=True))
        ):
            raise FormatError(
                f"{item.key!r} {list(shape)} has a chunk at {list(chunk.offsets)} of "
                f"{list(chunk.sizes)}, outside it",
                root,
            )
        total += math.prod(chunk.sizes)
    # (sorted by their first offsets, a chunk can overlap only those that start before it
    # ends there; ranks write few chunks per tensor, so the pairs are few)
    ordered = sorted(item.chunks, key=lambda c: c.offsets)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if shape and second.offsets[0] >= first.offsets[0] + first.sizes[0]:
                break
            if _overlap(first, second):
                raise FormatError(
                    f"{item.key!r} has overlapping chunks at {list(first.offsets)} and "
                    f"{list(second.offsets)}",
                    root,
                )
    if total != math.prod(shape):
        raise FormatError(
            f"{item.key!r} {list(shape)} is {math.prod(shape)} elements but its chunks "
            f"cover {total}: a hole",
            root,
        )


def _overlap(a: Chunk, b: Chunk) -> bool:
    return all(
        ao < bo + bs and bo < ao + as_ and as_ and bs
        for ao, as_, bo, bs in zip(a.offsets, a.sizes, b.offsets, b.sizes, strict=True)
    )


class _Blobs:
    """The safetensors part of each `.distcp` file that has one, read once: its tensors by
    key, and each key's chunk offsets."""

    def __init__(self) -> None:
        self.read: dict[tuple[Path, int], tuple[dict[str, Tensor], dict[str, Any]]] = {}

    def chunk(self, item: Item, chunk: Chunk, file: Path, where: Where, label: str) -> Tensor:
        found = self.read.get((file, where.offset))
        if found is None:
            fmt = registry.get("safetensors")
            blob = importlib.import_module(fmt.module).read_from(file, where.offset)
            info = _sharding_info(blob.values.get(SHARDING_INFO), label)
            tensors = {str(e.tensor.meta[SOURCE_KEY]): e.tensor for e in blob.entries()}
            found = self.read[(file, where.offset)] = (tensors, info)
        tensors, info = found
        value = tensors.get(item.key)
        saved = (info.get(item.key) or {}).get("saved_offsets")
        if value is None or saved is None or tuple(saved) != chunk.offsets:
            raise FormatError(
                f"its safetensors part holds no {item.key!r} at {list(chunk.offsets)}", label
            )
        return value


SHARDING_INFO = "DCP_SHARDING_INFO"


def _sharding_info(text: Any, label: str) -> dict[str, Any]:
    try:
        info = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise FormatError(f"its safetensors part has no {SHARDING_INFO} of chunk offsets", label)
    return info


def _is_safetensors(file: Path, where: Where) -> bool:
    """Whether a stored item's bytes begin a safetensors header (a length, then `{`)."""
    with open(file, "rb") as f:
        f.seek(where.offset)
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1


def _chunk_tensor(item: Item, chunk: Chunk, file: Path, where: Where, blobs: _Blobs) -> Tensor:
    """The tensor a chunk's bytes hold, checked against what the metadata says."""
    label = f"{file.parent}: {item.key} at {list(chunk.offsets)} ({file.name})"
    if where.length == 0 and math.prod(chunk.sizes) > 0:
        raise FormatError("is stored in no bytes", label)
    if _is_safetensors(file, where):
        value = blobs.chunk(item, chunk, file, where, label)
    else:
        graph = read_zip(file, (where.offset, where.length), label)
        found = graph.root.edges.get("value")
        if not isinstance(found, Tensor) or len(graph.root.edges) != 1:
            raise FormatError("is not a torch.save archive of one tensor", label)
        value = found
    if value.dtype != item.dtype or value.shape != chunk.sizes:
        raise FormatError(
            f"holds {value.dtype_name}{list(value.shape)}, where {METADATA} says "
            f"{np.dtype(item.dtype).name}{list(chunk.sizes)}",
            label,
        )
    return value


def _tensor(item: Item, places: list[tuple[Path, Where]], blobs: _Blobs) -> Tensor:
    assert item.dtype is not None
    if len(item.chunks) == 1:  # (the whole tensor: the chunk's own, bytes and all)
        (file, where), chunk = places[0], item.chunks[0]
        return _chunk_tensor(item, chunk, file, where, blobs)
    return Tensor(np.dtype(item.dtype), item.shape, _Assembled(item, places, blobs), {})


class _Assembled:
    """A tensor of several chunks: read chunk by chunk into one array, or, where the
    chunks are blocks of whole rows (as FSDP shards a parameter), their bytes copied file
    to file one after another (`where_stored`)."""

    def __init__(self, item: Item, places: list[tuple[Path, Where]], blobs: _Blobs):
        self.item, self.places, self.blobs = item, places, blobs

    def _pieces(self) -> list[tuple[Chunk, Tensor]]:
        item = self.item
        return [
            (chunk, _chunk_tensor(item, chunk, file, where, self.blobs))
            for chunk, (file, where) in zip(item.chunks, self.places, strict=True)
        ]

    def __call__(self) -> np.ndarray:
        assert self.item.dtype is not None  # (a tensor's item)
        out = np.empty(self.item.shape, self.item.dtype)
        for chunk, value in self._pieces():
            box = tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes, strict=True))
            out[box] = value.read()
        return out

    def where_stored(self) -> Stored | None:
        shape = self.item.shape
        if not shape or any(c.offsets[1:] != (0,) * (len(shape) - 1) for c in self.item.chunks):
            return None
        if any(c.sizes[1:] != shape[1:] for c in self.item.chunks):
            return None
        parts = []
        for _, value in sorted(self._pieces(), key=lambda p: p[0].offsets[0]):
            stored = value.stored()
            if stored is None:
                return None
            if stored.nbytes:
                parts.append(stored)
        if not parts:
            return None
        return stored_in_parts(parts, np.dtype(self.item.dtype), shape)


def _add_value(graph: Graph, parts: tuple[str, ...], item: Item, place: tuple[Path, Where]) -> None:
    file, where = place
    label = f"{file.parent}: {item.key} ({file.name})"
    try:
        value = read_zip_object(file, (where.offset, where.length), label)
    except (FormatError, UnsupportedError) as exc:
        graph.notes.append(f"left out the value {item.key} ({exc})")
        return
    if not is_plain(value):
        graph.notes.append(f"left out the value {item.key}: not plain data")
        return
    node = graph.root
    for name in parts[:-1]:
        nxt = node.edges.get(name)
        if nxt is None:
            nxt = node.edges[name] = Node()
        if not isinstance(nxt, Node):
            raise FormatError(f"key {item.key!r} lies below the tensor {name!r}", file.parent)
        node = nxt
    node.values[parts[-1]] = value
