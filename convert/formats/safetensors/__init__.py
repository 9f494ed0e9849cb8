"""safetensors files, read and written natively (no safetensors package needed).

Layout: an 8-byte little-endian header length N, N bytes of JSON
(`{name: {dtype, shape, data_offsets: [begin, end]}}`, offsets relative to the data that
follows, plus an optional `__metadata__` of strings), then the tensors' raw bytes. The
header is checked before anything is trusted: N at most 100 MB and inside the file, no
duplicate names, known dtypes, sizes equal to shape x dtype, and offsets that tile the
data exactly. Keys map to paths by splitting on "." (see flatkeys.py), so
torch -> safetensors -> torch gives back identical keys. Shared tensors are written once
(safetensors has no aliasing); the report names the aliases folded. Writing: `writer.py`.

`__metadata__` `format` says whose the file is ("pt" as transformers writes it). transformers
4.x's TF classes wrote "tf" files: keys are TF weight names (`bert/pooler/dense/kernel:0`),
most without the model's own first scope (frameworks/transformers_tf.py says which). Such
keys map to paths by splitting on "/" (`:0` off), the root says `SAVED_BY` tf, and each
tensor carries its name: whole, or below the model's scope.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from convert.core.errors import FormatError, UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import (
    SAFETENSORS_FORMAT,
    SAVED_BY,
    SOURCE_KEY,
    TF1_NAMES,
    TF_NAME_BELOW_MODEL,
    VARIABLE_NAME,
)
from convert.core.tensor import Stored, Tensor, array_from_bytes
from convert.formats.safetensors.dtypes import SUBBYTE, numpy_dtype
from convert.frameworks import transformers_tf
from convert.frameworks.flatkeys import add_flat
from convert.frameworks.tf1_names import parse_names, restore_names
from convert.io.reads import SourceFile, read_region

MAX_HEADER_BYTES = 100_000_000


# --------------------------------------------------------------------------------------
# Reading


def sniff(path: Path) -> bool:
    """A plausible header, or the name (so a damaged file gets a precise error)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = f.seek(0, 2)
    except OSError:
        return False
    if path.name.lower().endswith(".safetensors"):
        return True
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # (in C: this runs for every tensor's own object too)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"header names {key!r} twice")
            seen.add(key)
    return result


def read_header(path: Path, start: int = 0) -> tuple[dict[str, dict], dict[str, str], int]:
    """(entries in header order, __metadata__, byte offset of the data), all checked; of
    the safetensors bytes from `start` to the end of the file (DCP's safetensors
    serialization appends them to other bytes)."""
    size = path.stat().st_size - start
    if size < 8:
        raise FormatError(f"is {size} bytes, too short for a safetensors header", path)
    (n,) = struct.unpack("<Q", read_region(path, start, 8, "header length"))
    if n > MAX_HEADER_BYTES:
        raise FormatError(
            f"declares a {n}-byte header (more than 100 MB): not a safetensors "
            "file, or a damaged one",
            path,
        )
    if 8 + n > size:
        raise FormatError(
            f"declares a {n}-byte header but the file has {size} bytes: the file is truncated", path
        )
    raw = bytes(read_region(path, start + 8, n, "header"))
    if not raw.startswith(b"{"):
        raise FormatError("header is not a JSON object", path)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except FormatError as exc:
        raise FormatError(exc.reason, path) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"header is not valid JSON ({exc})", path) from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object", path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("__metadata__ must map names to strings", path)
    data_start = 8 + n
    _check_entries(path, header, size - data_start)
    return header, metadata, start + data_start


_FIELDS = frozenset(("dtype", "shape", "data_offsets"))
_INTS = frozenset((int,))  # (element types checked as a set: in C, for every tensor)


def _check_entries(path: Path, header: dict[str, Any], data_size: int) -> None:
    spans = []
    for name, info in header.items():
        if type(info) is not dict or info.keys() != _FIELDS:
            raise FormatError(f"tensor {name!r} needs exactly dtype, shape and data_offsets", path)
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        dtype = numpy_dtype(code)
        if dtype is None:
            if type(code) is str and code in SUBBYTE:
                raise UnsupportedError(
                    f"tensor {name!r} is {code}, a sub-byte type this tool does not convert", path
                )
            raise FormatError(f"tensor {name!r} has unknown dtype {str(code)[:20]!r}", path)
        if (
            type(shape) is not list
            or not _INTS.issuperset(map(type, shape))
            or (shape and min(shape) < 0)
        ):
            raise FormatError(f"tensor {name!r} has a bad shape {str(shape)[:60]}", path)
        if (
            type(offsets) is not list
            or len(offsets) != 2
            or not _INTS.issuperset(map(type, offsets))
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise FormatError(f"tensor {name!r} has bad data_offsets {str(offsets)[:60]}", path)
        expected = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != expected:
            raise FormatError(
                f"tensor {name!r} ({code}{shape}) needs {expected} bytes but its "
                f"data_offsets span {offsets[1] - offsets[0]}",
                path,
            )
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise FormatError(
                f"tensor {name!r} starts at data byte {begin}, expected "
                f"{position}: offsets must tile the data exactly",
                path,
            )
        position = end
    if position != data_size:
        raise FormatError(
            f"the tensors cover {position} data bytes but the file holds "
            f"{data_size}: truncated or padded",
            path,
        )


def read(path: Path) -> Graph:
    return read_from(path, 0)


def read_from(path: Path, start: int) -> Graph:
    """The graph of the safetensors bytes from `start` to the end of the file (DCP's
    safetensors serialization appends them to other bytes)."""
    header, metadata, data_start = read_header(path, start)
    source = SourceFile(path)
    pairs = []
    for name, info in header.items():
        dtype = numpy_dtype(info["dtype"])
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        pairs.append(
            (
                name,
                Tensor(
                    dtype,
                    shape,
                    _Region(source, data_start + begin, end - begin, dtype, shape, name),
                    {SOURCE_KEY: name},
                ),
            )
        )
    metadata = dict(metadata)
    names = _kept_names(metadata.get(TF1_NAMES))
    if names is not None:  # a format fact (a TF1 checkpoint's keys), not a value
        del metadata[TF1_NAMES]
    graph = Graph(values=metadata, format="safetensors", source=str(path), files=[str(path)])
    if metadata.get(SAFETENSORS_FORMAT) == "tf":
        _add_tf_names(graph, pairs, path)
        return graph
    add_flat(graph.root, pairs)
    if names is not None:
        restore_names(graph, names, ".")
    return graph


def _add_tf_names(graph: Graph, pairs: list[tuple[str, Tensor]], path: Path) -> None:
    graph.root.meta[SAVED_BY] = "tf"
    seen: dict[tuple[str, ...], str] = {}
    for key, tensor in pairs:
        suffix = transformers_tf.SUFFIX
        name = key[: -len(suffix)] if key.endswith(suffix) else key
        parts = tuple(name.split("/"))
        if not all(parts):
            raise FormatError(f"TF weight name {key!r} has an empty scope", path)
        whole = transformers_tf.kept_whole(name)
        tensor.meta[VARIABLE_NAME if whole else TF_NAME_BELOW_MODEL] = name
        if parts in seen:
            raise FormatError(f"TF weights {seen[parts]!r} and {key!r} are one name", path)
        seen[parts] = key
        try:
            graph.add(parts, tensor)
        except ValueError as exc:
            raise FormatError(f"TF weight {key!r}: {exc}", path) from None
    if sum(1 for _ in graph.tensors()) != len(pairs):  # (`a:0` put where `a/b:0` was)
        raise FormatError("a TF weight's name is another one's scope", path)


def _kept_names(text: str | None) -> dict[str, str] | None:
    try:
        return parse_names(json.loads(text)) if text is not None else None
    except (ValueError, RecursionError):  # not ours: it stays a value
        return None


class _Region:
    """A tensor's loader: its bytes at `offset` of the file, which also tell a writer where
    they lie (`where_stored`). (An object, not a closure: no more per tensor than the closure's
    cells, and the bytes are described without reading them.)"""

    __slots__ = ("source", "offset", "size", "dtype", "shape", "name")

    def __init__(
        self,
        source: SourceFile,
        offset: int,
        size: int,
        dtype: Any,
        shape: tuple[int, ...],
        name: str,
    ):
        self.source, self.offset, self.size = source, offset, size
        self.dtype, self.shape, self.name = dtype, shape, name

    def __call__(self):
        what = f"tensor {self.name!r}"
        return array_from_bytes(
            self.source.read(self.offset, self.size, what), self.dtype, self.shape, what
        )

    def where_stored(self) -> Stored:
        return Stored(self.source, self.offset, self.size, self.dtype, self.shape)


# --------------------------------------------------------------------------------------
# Writing


def write(graph: Graph, path: Path, **options: Any) -> None:
    """Write `graph` as a safetensors file (`writer.py`, imported when first used: listing
    and reading need none of it)."""
    from convert.formats.safetensors.writer import write as write_file

    write_file(graph, path, **options)
