"""HDF5 plumbing shared by the Keras formats, all through h5py.

What lives here: spotting the HDF5 signature, opening files (plain, or a member of a
`.keras` zip) with every h5py failure turned into one clear FormatError, walking groups
without following soft or external links, turning datasets into lazy Tensors, reading
and writing Keras' string-list attributes (split into `name0`, `name1`, … when long).

Tensor data is read lazily: a contiguous, unfiltered dataset is fetched with one
positioned read at the offset h5py reports (no HDF5 parsing of our own); anything else
(chunked, compressed, compact) reopens the file with h5py and reads the dataset.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...dtypes import STRING, dtype_name, from_name, is_bfloat16
from ...errors import FormatError, UnsafeInputError, UnsupportedError
from ...fileio import read_region
from ...tensor import Tensor, array_from_bytes
from .probe import probe

SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Keras splits a string-list attribute above this many bytes into `name0`, `name1`, …
HDF5_OBJECT_HEADER_LIMIT = 64512
# A dataset may declare far more than it stores (compression, fill values); past this
# size it must store at least 1/1000 of what it declares (Keras' own guard).
_BOMB_FLOOR = 1 << 32
_BOMB_RATIO = 1000


def signature_offset(path: Path) -> int | None:
    """Where the HDF5 superblock starts (0, 512, 1024, …), or None. Never raises."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + len(SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(SIGNATURE)) == SIGNATURE:
                    return offset
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return None
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _from_h5py(exc: BaseException) -> bool:
    """Whether `exc` was raised inside h5py (a damaged file), not by this package."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "h5py" in last.replace("\\", "/").split("/site-packages/")[-1]


# -- where the HDF5 bytes are ---------------------------------------------------------

class _Window(io.RawIOBase):
    """A read-only, seekable view of `size` bytes at `start` of a file (a stored zip member)."""

    def __init__(self, path: str, start: int, size: int):
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115  (closed by close())
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if n == 0:
            return 0
        got = os.preadv(self._f.fileno(), [memoryview(buf)[:n]], self._start + self._pos)
        self._pos += got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class Source:
    """An HDF5 file to (re)open: a plain file, or a member of a zip archive.

    `base` is where the HDF5 bytes start in `path` when they can be read in place
    (a plain file, or a zip member stored uncompressed), else None."""

    path: str
    member: str | None = None
    base: int | None = 0
    size: int | None = None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    def _identity(self) -> tuple:
        st = os.stat(self.path)
        return (self.path, self.member, st.st_ino, st.st_size, st.st_mtime_ns)

    def _open_apart(self) -> h5py.File:
        """The file as `open` opens it (for the probe's child, which never closes it)."""
        if self.member is None:
            return h5py.File(self.path, "r")
        if self.base is not None:
            return h5py.File(_Window(self.path, self.base, self.size or 0), "r")
        return h5py.File(zipfile.ZipFile(self.path).open(self.member), "r")

    @contextmanager
    def open(self) -> Iterator[h5py.File]:
        stack: list[Any] = []
        try:
            try:
                probe(self._open_apart, self._identity(), self.label)
                if self.member is None:
                    handle = h5py.File(self.path, "r")
                elif self.base is not None:
                    window = _Window(self.path, self.base, self.size or 0)
                    stack.append(window)
                    handle = h5py.File(window, "r")
                else:
                    archive = zipfile.ZipFile(self.path)
                    stack.append(archive)
                    member = archive.open(self.member)
                    stack.append(member)
                    handle = h5py.File(member, "r")
            except FileNotFoundError:
                raise
            except (OSError, ValueError, RuntimeError, zipfile.BadZipFile, KeyError) as exc:
                where = f"member {self.member} " if self.member else ""
                raise FormatError(f"{where}cannot be opened as HDF5 ({_one_line(exc)})",
                                  self.path) from None
            stack.append(handle)
            try:
                yield handle
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                if isinstance(exc, FileNotFoundError) or not _from_h5py(exc):
                    raise
                # The file opened, but a structure inside it is damaged (h5py meets it
                # only when a group, attribute or dataset is walked).
                raise FormatError(f"is damaged HDF5: {_one_line(exc)}", self.label) from None
        finally:
            for item in reversed(stack):
                # Closing a damaged file may complain; there is nothing left to save.
                with contextlib.suppress(Exception):
                    item.close()


def zip_member_source(path: Path, member: str) -> Source:
    """A Source for `member` of the zip at `path`: read in place when stored uncompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member)
            if info.compress_type != zipfile.ZIP_STORED:
                return Source(os.fspath(path), member, None, info.file_size)
            with open(path, "rb") as raw:
                raw.seek(info.header_offset)
                header = raw.read(30)
                file_size = os.fstat(raw.fileno()).st_size
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise FormatError(f"cannot read member {member} of the archive ({_one_line(exc)})",
                          path) from None
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"member {member}: bad local zip header", path)
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > file_size:
        raise FormatError(f"member {member} runs past the end of the archive: the file is "
                          "truncated", path)
    return Source(os.fspath(path), member, start, info.file_size)


# -- walking ----------------------------------------------------------------------------

def child(group: h5py.Group, name: str, where: Source) -> h5py.Group | h5py.Dataset | None:
    """`group[name]` through hard links only (`name` may hold `/`); None if absent."""
    item: Any = group
    for part in name.split("/"):
        if not isinstance(item, h5py.Group):
            return None
        try:
            link = item.get(part, getlink=True)
        except Exception:  # names h5py cannot even look up (e.g. empty) are simply absent
            return None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise UnsafeInputError(f"{item.name}/{part} is a {type(link).__name__}; "
                                   "links to other places or files are refused", where.label)
        item = item[part]
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
        raise FormatError(f"attribute {name!r} of {obj.name} cannot be read "
                          f"({_one_line(exc)})", where.label) from None
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
            raise FormatError(f"attribute {part!r} of {obj.name} cannot be read "
                              f"({_one_line(exc)})", where.label) from None
        if value.size == 0:
            continue
        for item in value.reshape(-1):
            if isinstance(item, bytes):
                names.append(item.decode("utf8", errors="replace"))
            elif isinstance(item, str):
                names.append(item)
            else:
                raise FormatError(f"attribute {part!r} of {obj.name} holds {type(item).__name__}"
                                  " values, not names", where.label)
    return names


def write_names(obj: h5py.HLObject, name: str, names: list[str]) -> None:
    """Store a list of names the way Keras does, split into chunks when too long."""
    data = [n.encode("utf8") for n in names]
    if any(len(x) > HDF5_OBJECT_HEADER_LIMIT for x in data):
        raise UnsupportedError(f"a name in {name!r} is longer than {HDF5_OBJECT_HEADER_LIMIT} "
                               "bytes; HDF5 attributes cannot hold it")
    array = np.asarray(data)
    chunks = 1
    split = np.array_split(array, chunks)
    while any(x.nbytes > HDF5_OBJECT_HEADER_LIMIT for x in split):
        chunks += 1
        split = np.array_split(array, chunks)
    if chunks > 1:
        for i, chunk in enumerate(split):
            obj.attrs[f"{name}{i}"] = chunk
    else:
        obj.attrs[name] = data


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
    raise FormatError(f"dataset {ds.name} holds {dt} values, which are not numeric weights",
                      where.label)


def dataset_tensor(ds: h5py.Dataset, where: Source, meta: dict[str, Any]) -> Tensor:
    """A lazy Tensor for `ds`; checks what can be checked without reading the data."""
    if ds.external:
        raise UnsafeInputError(f"dataset {ds.name} keeps its data in external files; refused",
                               where.label)
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
        raise UnsafeInputError(f"dataset {key} declares {nbytes} bytes but stores "
                               f"{ds.id.get_storage_size()}; refusing to inflate it",
                               where.label)
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
            raise FormatError(f"dataset {key} lies past the end of the file: the file is "
                              "truncated", where.label)
        stored_dtype = dtype if is_bfloat16(dtype) else ds.dtype
        return Tensor(dtype, shape, _positioned(where, key, where.base + offset, nbytes,
                                                stored_dtype, dtype, shape), meta)
    return Tensor(dtype, shape, _through_h5py(where, key, dtype, shape), meta)


def _positioned(where: Source, key: str, offset: int, nbytes: int, stored: np.dtype,
                dtype: np.dtype, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        buf = read_region(where.path, offset, nbytes, f"dataset {key}")
        array = array_from_bytes(buf, stored, shape, f"{where.label}: dataset {key}")
        return array.astype(dtype, copy=False) if array.dtype != dtype else array
    return load


def _through_h5py(where: Source, key: str, dtype: np.dtype, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        with where.open() as f:
            ds = child(f, key, where)
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(f"dataset {key} disappeared from the file", where.label)
            declared = math.prod(shape) * dtype.itemsize
            stored = ds.id.get_storage_size()
            if declared > _BOMB_FLOOR and declared > _BOMB_RATIO * stored:
                raise UnsafeInputError(f"dataset {key} declares {declared} bytes but stores "
                                       f"{stored}; refusing to inflate it", where.label)
            try:
                array = ds[()]
            except Exception as exc:
                raise FormatError(f"dataset {key} cannot be read ({_one_line(exc)})",
                                  where.label) from None
        array = np.asarray(array)
        if is_bfloat16(dtype):
            array = array.view(dtype)
        return np.ascontiguousarray(array.astype(dtype, copy=False)).reshape(shape)
    return load


# -- writing ----------------------------------------------------------------------------

def check_writable(tensor: Tensor, what: str, allow_bfloat16: bool = True) -> None:
    """Refuse dtypes Keras cannot load from HDF5 (strings, float8, int4, …)."""
    dtype = tensor.dtype
    if dtype == STRING:
        raise UnsupportedError(f"{what} is a string tensor; Keras weight files hold numbers only")
    if is_bfloat16(dtype) and allow_bfloat16:
        return
    if dtype.kind not in "biufc":
        raise UnsupportedError(f"{what} is {dtype_name(dtype)}, which Keras weight files cannot "
                               "store")


def create(path: Path) -> h5py.File:
    """A new HDF5 file at `path`, to write. An output's unnamed temporary (a
    `/proc/self/fd/N` path, see fileio.OutputSet) is written through a file object:
    libhdf5 resolves a file's name to a real path, which an unnamed file has not."""
    if os.fspath(path).startswith("/proc/self/fd/"):
        stream = open(path, "w+b")  # noqa: SIM115  (closed with the HDF5 file)
        handle = h5py.File(stream, "w")
        handle._ckpt_stream = stream  # (the HDF5 file reads and writes through it)
        return handle
    return h5py.File(path, "w")


def write_dataset(group: h5py.Group, name: str, array: np.ndarray,
                  tag_bfloat16: bool = True) -> h5py.Dataset:
    """One dataset, contiguous and unfiltered like Keras writes; bfloat16 tagged like Keras 3."""
    try:
        ds = group.create_dataset(name, data=array)
    except (ValueError, TypeError, KeyError) as exc:
        raise UnsupportedError(f"cannot create dataset {group.name.rstrip('/')}/{name} "
                               f"({_one_line(exc)})") from None
    if is_bfloat16(array.dtype) and tag_bfloat16:
        ds.attrs["dtype"] = "bfloat16"
    return ds


def check_component(name: str, what: str) -> None:
    """HDF5 path components must be non-empty and not `.`."""
    for part in name.split("/"):
        if part in ("", "."):
            raise UnsupportedError(f"{what} {name!r} cannot be an HDF5 path (empty or '.' part)")

