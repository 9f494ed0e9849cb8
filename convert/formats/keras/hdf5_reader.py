"""Reading HDF5 for the Keras formats: walking groups through hard links only (soft and
external links are refused), Keras' string and string-list attributes (split into
`name0`, `name1`, … when long), and datasets as lazy Tensors.

Tensor data is read lazily: a contiguous, unfiltered dataset is fetched with one
positioned read at the offset h5py reports (no HDF5 parsing of our own); anything else
(chunked, compressed, compact) reopens the file with h5py and reads the dataset. Apart
from `hdf5_files.py` (opening) and `hdf5_writer.py` because these are the checks a hostile
file meets once open: links, attribute types, declared against stored sizes.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from convert.core.dtypes import from_name, is_bfloat16
from convert.core.errors import FormatError, UnsafeInputError
from convert.core.tensor import Stored, Tensor, array_from_bytes
from convert.formats.keras.hdf5_files import Source, one_line
from convert.io.reads import SourceFile

# A dataset may declare far more than it stores (compression, fill values); past this
# size it must store at least 1/1000 of what it declares (Keras' own guard).
_BOMB_FLOOR = 1 << 32
_BOMB_RATIO = 1000


# -- walking ----------------------------------------------------------------------------


def child(
    group: h5py.Group, name: str, where: Source, known: dict[str, Any] | None = None
) -> h5py.Group | h5py.Dataset | None:
    """`group[name]` through hard links only (`name` may hold `/`); None if absent.

    `known`, kept by a caller that looks up many names below one group, remembers the
    groups met on the way: a Hugging Face TF layer lists hundreds of weights nine levels
    deep, and each level looked up again cost a millisecond per weight."""
    item: Any = group
    parts = name.split("/")
    start = 0
    if known is not None:
        for depth in range(len(parts) - 1, 0, -1):
            found = known.get("/".join(parts[:depth]))
            if found is not None:
                item, start = found, depth
                break
    for depth in range(start, len(parts)):
        part = parts[depth]
        if not isinstance(item, h5py.Group):
            return None
        try:
            link = item.get(part, getlink=True)
        except Exception:  # names h5py cannot even look up (e.g. empty) are simply absent
            return None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise UnsafeInputError(
                f"{item.name}/{part} is a {type(link).__name__}; "
                "links to other places or files are refused",
                where.label,
            )
        item = item[part]
        if known is not None and depth < len(parts) - 1:
            known["/".join(parts[: depth + 1])] = item
    return item


def members(group: h5py.Group, where: Source) -> Iterator[tuple[str, h5py.Group | h5py.Dataset]]:
    """The hard-linked children of `group`, in HDF5's (name) order."""
    for name in group:
        found = child(group, name, where)
        if found is not None:
            yield name, found


def has_attr(obj: h5py.HLObject, name: str) -> bool:
    return name in obj.attrs or f"{name}0" in obj.attrs


def read_text(obj: h5py.HLObject, name: str, where: Source) -> str | None:
    """A string attribute (stored as bytes or str by various Keras versions), or None."""
    if name not in obj.attrs:
        return None
    try:
        value = obj.attrs[name]
    except Exception as exc:
        raise FormatError(
            f"attribute {name!r} of {obj.name} cannot be read ({one_line(exc)})", where.label
        ) from None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf8", errors="replace")
    if isinstance(value, str):
        return value
    raise FormatError(f"attribute {name!r} of {obj.name} is not a string", where.label)


def read_names(obj: h5py.HLObject, name: str, where: Source) -> list[str]:
    """A list-of-strings attribute such as `layer_names`, joined from `name0`, `name1`, …"""
    if name in obj.attrs:
        parts = [name]
    else:
        parts = []
        while f"{name}{len(parts)}" in obj.attrs:
            parts.append(f"{name}{len(parts)}")
    names: list[str] = []
    for part in parts:
        try:
            value = np.asarray(obj.attrs[part])
        except Exception as exc:
            raise FormatError(
                f"attribute {part!r} of {obj.name} cannot be read ({one_line(exc)})", where.label
            ) from None
        if value.size == 0:
            continue
        for item in value.reshape(-1):
            if isinstance(item, bytes):
                names.append(item.decode("utf8", errors="replace"))
            elif isinstance(item, str):
                names.append(item)
            else:
                raise FormatError(
                    f"attribute {part!r} of {obj.name} holds {type(item).__name__}"
                    " values, not names",
                    where.label,
                )
    return names


# -- datasets as lazy tensors -------------------------------------------------------------


def dataset_dtype(ds: h5py.Dataset, where: Source) -> np.dtype:
    """The numpy dtype a dataset holds: numbers, bool, or Keras' tagged bfloat16."""
    dt = ds.dtype
    if dt.kind == "V" and dt.itemsize == 2 and dt.fields is None:
        tag = ds.attrs.get("dtype")
        if isinstance(tag, bytes):
            tag = tag.decode("ascii", errors="replace")
        if tag in (None, "bfloat16"):
            # Keras 3 tags bfloat16 with a `dtype` attribute; its legacy .h5 writer
            # stores the same 2-byte opaque type untagged. Nothing else writes V2.
            return from_name("bfloat16")
    if dt.kind in "biufc" and dt.fields is None and dt.subdtype is None:
        return dt.newbyteorder("<") if dt.itemsize > 1 else dt
    raise FormatError(
        f"dataset {ds.name} holds {dt} values, which are not numeric weights", where.label
    )


def dataset_tensor(ds: h5py.Dataset, where: Source, meta: dict[str, Any]) -> Tensor:
    """A lazy Tensor for `ds`; checks what can be checked without reading the data."""
    if ds.external:
        raise UnsafeInputError(
            f"dataset {ds.name} keeps its data in external files; refused", where.label
        )
    if ds.is_virtual:
        raise UnsafeInputError(f"dataset {ds.name} is a virtual dataset; refused", where.label)
    if ds.shape is None:
        raise FormatError(f"dataset {ds.name} has no shape (empty dataspace)", where.label)
    dtype = dataset_dtype(ds, where)
    shape = tuple(int(d) for d in ds.shape)
    nbytes = math.prod(shape) * dtype.itemsize
    key = ds.name.lstrip("/")
    if nbytes > _BOMB_FLOOR and nbytes > _BOMB_RATIO * ds.id.get_storage_size():
        # (checked when listing too: a 4 TiB tensor from a 15 KB file is no checkpoint)
        raise UnsafeInputError(
            f"dataset {key} declares {nbytes} bytes but stores "
            f"{ds.id.get_storage_size()}; refusing to inflate it",
            where.label,
        )
    offset = None
    try:
        if ds.chunks is None and where.base is not None and nbytes > 0:
            offset = ds.id.get_offset()
            stored = ds.id.get_storage_size()
            if offset is not None and stored != nbytes:
                offset = None
    except Exception:
        offset = None
    if offset is not None:
        limit = where.size if where.member else os.path.getsize(where.path)
        if limit is not None and offset + nbytes > limit:
            raise FormatError(
                f"dataset {key} lies past the end of the file: the file is truncated", where.label
            )
        stored_dtype = dtype if is_bfloat16(dtype) else ds.dtype
        return Tensor(
            dtype,
            shape,
            _Positioned(where, key, where.base + offset, nbytes, stored_dtype, dtype, shape),
            meta,
        )
    return Tensor(dtype, shape, _through_h5py(where, key, dtype, shape), meta)


class _Positioned:
    """A contiguous dataset's bytes, read where they lie in the file; unchanged (stored as
    the tensor's dtype, little-endian) they are also copied out by the kernel
    (`where_stored`, io/rawcopy.py) or transposed in bands from the file's pages."""

    __slots__ = ("source", "label", "key", "offset", "nbytes", "stored", "dtype", "shape")

    def __init__(
        self,
        where: Source,
        key: str,
        offset: int,
        nbytes: int,
        stored: np.dtype,
        dtype: np.dtype,
        shape: tuple[int, ...],
    ):
        self.source = _source_file(where.path)
        self.label, self.key, self.offset, self.nbytes = where.label, key, offset, nbytes
        self.stored, self.dtype, self.shape = stored, dtype, shape

    def __call__(self) -> np.ndarray:
        buf = self.source.read(self.offset, self.nbytes, f"dataset {self.key}")
        array = array_from_bytes(buf, self.stored, self.shape, f"{self.label}: dataset {self.key}")
        return array.astype(self.dtype, copy=False) if array.dtype != self.dtype else array

    def where_stored(self) -> Stored | None:
        if self.stored != self.dtype:  # (big-endian, or bfloat16 stored opaque)
            return None
        return Stored(self.source, self.offset, self.nbytes, self.dtype, self.shape)


# One open file for all the datasets of a file (an open and close per tensor costs more
# than reading a small one); it closes when the last tensor reading it is dropped. Keyed
# by the file's identity too: a file written anew under the same name is another file.
_OPEN: weakref.WeakValueDictionary[tuple, SourceFile] = weakref.WeakValueDictionary()


def _source_file(path: str) -> SourceFile:
    st = os.stat(path)
    key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    found = _OPEN.get(key)
    if found is None:
        found = _OPEN[key] = SourceFile(path)
    return found


def _through_h5py(where: Source, key: str, dtype: np.dtype, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        with where.open() as f:
            ds = child(f, key, where)
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(f"dataset {key} disappeared from the file", where.label)
            declared = math.prod(shape) * dtype.itemsize
            stored = ds.id.get_storage_size()
            if declared > _BOMB_FLOOR and declared > _BOMB_RATIO * stored:
                raise UnsafeInputError(
                    f"dataset {key} declares {declared} bytes but stores "
                    f"{stored}; refusing to inflate it",
                    where.label,
                )
            try:
                array = ds[()]
            except Exception as exc:
                raise FormatError(
                    f"dataset {key} cannot be read ({one_line(exc)})", where.label
                ) from None
        array = np.asarray(array)
        if is_bfloat16(dtype):
            array = array.view(dtype)
        return np.ascontiguousarray(array.astype(dtype, copy=False)).reshape(shape)

    return load
