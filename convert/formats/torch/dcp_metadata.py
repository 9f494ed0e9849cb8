"""The `.metadata` file of a `torch.distributed.checkpoint` (DCP) directory, read without
torch: a pickle of DCP's own dataclasses, run through this package's restricted machine
with a table of its own (`ALLOWED`: torch.save's names plus DCP's record classes, each
an inert marker that makes a `PickledRecord`). Nothing is imported or called; a name
outside the table is refused at its GLOBAL opcode, naming it.

What it holds (torch/distributed/checkpoint/metadata.py, filesystem.py):
- `Metadata.state_dict_metadata`: each flattened key (`model.0.weight`,
  `optim.state.0.weight.exp_avg`, `optim.param_groups.0.lr`) → `TensorStorageMetadata`
  (`properties` (dtype, layout, ...), `size`, `chunks`: `ChunkStorageMetadata(offsets,
  sizes)`, the pieces ranks wrote) or `BytesStorageMetadata` (a pickled Python value);
- `Metadata.storage_data`: `MetadataIndex(fqn, offset)` (a chunk by its offsets; None for
  a bytes item) → `_StorageInfo(relative_path, offset, length, transform_descriptors)`:
  the byte range of a `.distcp` file that holds it, a `torch.save` archive for a tensor
  chunk (or, written with DCP's safetensors serialization, part of a safetensors file);
- `planner_data` (each key's nested path), `storage_meta`, `version`.

`parse` turns the records into the plain `Item`s and `Where`s below, checking every field's
type; the chunks' geometry is checked by the reader (dcp.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convert.core.errors import FormatError, UnsupportedError
from convert.formats.torch.allowlist import ALLOWED as TORCH_ALLOWED
from convert.formats.torch.records import Global, PickledRecord, TorchDtype, record_class, short
from convert.formats.torch.unpickler import Unpickler

MAX_METADATA_BYTES = 512 << 20  # (a million keys' worth)
_DCP = "torch.distributed.checkpoint"
RECORD_CLASSES = (
    f"{_DCP}.metadata.Metadata",
    f"{_DCP}.metadata.TensorStorageMetadata",
    f"{_DCP}.metadata.BytesStorageMetadata",
    f"{_DCP}.metadata.ChunkStorageMetadata",
    f"{_DCP}.metadata.TensorProperties",
    f"{_DCP}.metadata.MetadataIndex",
    f"{_DCP}.metadata.StorageMeta",
    f"{_DCP}.filesystem._StorageInfo",
)


@dataclass(frozen=True)
class Chunk:
    """A piece of a tensor: where it starts in each dimension, and its sizes."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Item:
    """One key of the flattened state: a tensor (dtype, shape, chunks) or, with `dtype`
    None, a pickled value."""

    key: str
    dtype: np.dtype | None
    shape: tuple[int, ...]
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class Where:
    """The bytes of a chunk or a value: a file of the directory, an offset and a length."""

    file: str
    offset: int
    length: int


@dataclass(frozen=True)
class Parsed:
    items: list[Item]
    storage: dict[tuple[str, tuple[int, ...] | None], Where]
    version: str | None


def _layout(args: tuple) -> str:
    if args != ("torch.strided",):
        raise UnsupportedError(f"holds tensors of layout {short(args)}; only dense ones convert")
    return "strided"


def _memory_format(args: tuple) -> int:
    if len(args) != 1 or type(args[0]) is not int:
        raise FormatError(f"a memory format of {short(args)}")
    return args[0]


def _path(args: tuple) -> str:
    if not all(isinstance(a, str) for a in args):
        raise FormatError(f"a path of {short(args)}")
    return "/".join(args)


def _allowed() -> dict[str, Any]:
    table = dict(TORCH_ALLOWED)
    for name in RECORD_CLASSES:
        table[name] = record_class(name.rsplit(".", 1)[1])
    table["torch.serialization._get_layout"] = Global("_get_layout", _layout)
    table[f"{_DCP}.metadata._MEM_FORMAT_ENCODING"] = Global("_MEM_FORMAT_ENCODING", _memory_format)
    for cls in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"):
        table[f"pathlib.{cls}"] = Global(f"pathlib.{cls}", _path)  # (the checkpoint's own id)
    return table


ALLOWED = _allowed()


def parse(data: bytes, where: str) -> Parsed:
    """The `.metadata` file's bytes as plain items and byte ranges (see the module doc)."""
    root = Unpickler(data, len(data), None, "DCP metadata", ALLOWED).load()
    fields = _fields(root, "Metadata", "the file")
    state = fields.get("state_dict_metadata")
    storage = fields.get("storage_data")
    if not isinstance(state, dict) or not isinstance(storage, dict):
        raise FormatError("has no state_dict_metadata and storage_data dicts")
    items = [_item(key, value) for key, value in state.items()]
    places: dict[tuple[str, tuple[int, ...] | None], Where] = {}
    for index, info in storage.items():
        index_fields = _fields(index, "MetadataIndex", "a storage_data key")
        fqn, offset = index_fields.get("fqn"), index_fields.get("offset")
        if not isinstance(fqn, str) or not (offset is None or _is_ints(offset)):
            raise FormatError(f"a storage_data key names {short(fqn)} at {short(offset)}")
        places[(fqn, None if offset is None else tuple(offset))] = _where(fqn, info)
    version = fields.get("version")
    return Parsed(items, places, version if isinstance(version, str) else None)


def _fields(value: Any, kind: str, what: str) -> dict[str, Any]:
    if type(value) is not PickledRecord or value.kind != kind:
        raise FormatError(f"{what} is {short(value)}, not a DCP {kind}")
    return value.fields


def _is_ints(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(type(v) is int and v >= 0 for v in value)


def _item(key: Any, value: Any) -> Item:
    if not isinstance(key, str):
        raise FormatError(f"state_dict_metadata has a key {short(key)}, not a string")
    if type(value) is PickledRecord and value.kind == "BytesStorageMetadata":
        return Item(key, None, (), ())
    fields = _fields(value, "TensorStorageMetadata", f"the entry of {key!r}")
    properties = _fields(fields.get("properties"), "TensorProperties", f"{key!r}'s properties")
    state = fields["properties"].state or tuple(properties.get(n) for n in ("dtype", "layout"))
    dtype = state[0] if state else None
    if type(dtype) is not TorchDtype:
        raise FormatError(f"tensor {key!r} has the dtype {short(dtype)}")
    if len(state) > 1 and state[1] not in (None, "strided"):
        raise UnsupportedError(f"tensor {key!r} is not dense ({short(state[1])})")
    if dtype.numpy is None:
        raise UnsupportedError(f"tensor {key!r} is torch.{dtype.name}, which numpy cannot hold")
    shape = fields.get("size")
    chunks = fields.get("chunks")
    if not _is_ints(shape) or not isinstance(chunks, list):
        raise FormatError(f"tensor {key!r} has the size {short(shape)} and chunks {short(chunks)}")
    pieces = []
    for chunk in chunks:
        chunk_fields = _fields(chunk, "ChunkStorageMetadata", f"a chunk of {key!r}")
        offsets, sizes = chunk_fields.get("offsets"), chunk_fields.get("sizes")
        if not (_is_ints(offsets) and _is_ints(sizes)):
            raise FormatError(
                f"a chunk of {key!r} has offsets {short(offsets)}, sizes {short(sizes)}"
            )
        pieces.append(Chunk(tuple(offsets or ()), tuple(sizes or ())))
    return Item(key, dtype.numpy, tuple(shape or ()), tuple(pieces))


def _where(fqn: str, info: Any) -> Where:
    fields = _fields(info, "_StorageInfo", f"the storage of {fqn!r}")
    file, offset, length = (fields.get(n) for n in ("relative_path", "offset", "length"))
    if not isinstance(file, str) or type(offset) is not int or type(length) is not int:
        raise FormatError(f"the storage of {fqn!r} is {short(fields)}")
    if offset < 0 or length < 0:
        raise FormatError(f"the storage of {fqn!r} has offset {offset}, length {length}")
    if fields.get("transform_descriptors"):
        raise UnsupportedError(
            f"{fqn!r} is stored through {short(fields['transform_descriptors'])} "
            "(a DCP storage extension, such as compression), which this tool does not undo"
        )
    return Where(file, offset, length)
