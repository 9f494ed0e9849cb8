"""Writing HDF5 the way Keras does: files created (also as an unnamed temporary),
contiguous datasets (bfloat16 tagged like Keras 3), string-list attributes split when
long, and the checks that refuse what Keras could not load.

Apart from reading because the writers need none of the reading side's containment, and
the readers none of this.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from convert.core.dtypes import STRING, dtype_name, is_bfloat16
from convert.core.errors import UnsupportedError
from convert.core.tensor import Tensor
from convert.formats.keras.hdf5_files import one_line

# Keras splits a string-list attribute above this many bytes into `name0`, `name1`, …
HDF5_OBJECT_HEADER_LIMIT = 64512


def write_names(obj: h5py.HLObject, name: str, names: list[str]) -> None:
    """Store a list of names the way Keras does, split into chunks when too long."""
    data = [n.encode("utf8") for n in names]
    if any(len(x) > HDF5_OBJECT_HEADER_LIMIT for x in data):
        raise UnsupportedError(
            f"a name in {name!r} is longer than {HDF5_OBJECT_HEADER_LIMIT} "
            "bytes; HDF5 attributes cannot hold it"
        )
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


def check_writable(tensor: Tensor, what: str, allow_bfloat16: bool = True) -> None:
    """Refuse dtypes Keras cannot load from HDF5 (strings, float8, int4, …)."""
    dtype = tensor.dtype
    if dtype == STRING:
        raise UnsupportedError(f"{what} is a string tensor; Keras weight files hold numbers only")
    if is_bfloat16(dtype) and allow_bfloat16:
        return
    if dtype.kind not in "biufc":
        raise UnsupportedError(
            f"{what} is {dtype_name(dtype)}, which Keras weight files cannot store"
        )


def create(path: Path) -> h5py.File:
    """A new HDF5 file at `path`, to write. An output's unnamed temporary (a
    `/proc/self/fd/N` path, see io.outputs.OutputSet) is written through a file object:
    libhdf5 resolves a file's name to a real path, which an unnamed file has not."""
    if os.fspath(path).startswith("/proc/self/fd/"):
        stream = open(path, "w+b")  # noqa: SIM115  (closed with the HDF5 file)
        handle = h5py.File(stream, "w")
        handle._ckpt_stream = stream  # (the HDF5 file reads and writes through it)
        _STREAMS[handle.id.fileno] = stream
        return handle
    return h5py.File(path, "w")


# The streams of files `create` opened on unnamed files, by HDF5's serial number of the
# open file (a group's `.file` is a new File object each time; the number stays).
_STREAMS: weakref.WeakValueDictionary[int, BinaryIO] = weakref.WeakValueDictionary()


# From this size a dataset's bytes go to the file by `pwrite` at the place HDF5 gave them:
# handing them to libhdf5 costs a copy through h5py's file-object driver (0.6 GB/s here).
DIRECT_FROM = 1 << 16


def write_dataset(
    group: h5py.Group, name: str, array: np.ndarray, tag_bfloat16: bool = True
) -> h5py.Dataset:
    """One dataset, contiguous and unfiltered like Keras writes; bfloat16 tagged like Keras 3."""
    try:
        if array.nbytes >= DIRECT_FROM and array.flags.c_contiguous:
            ds = _written_directly(group, name, array)
        else:
            ds = group.create_dataset(name, data=array)
    except (ValueError, TypeError, KeyError) as exc:
        raise UnsupportedError(
            f"cannot create dataset {group.name.rstrip('/')}/{name} ({one_line(exc)})"
        ) from None
    if is_bfloat16(array.dtype) and tag_bfloat16:
        ds.attrs["dtype"] = "bfloat16"
    return ds


def _written_directly(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    """A dataset whose space HDF5 allocates at once (and never fills), its bytes then
    written there with `pwrite` on the file's own descriptor: libhdf5 writes only the
    metadata, elsewhere in the file."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    ds = group.create_dataset(
        name, shape=array.shape, dtype=array.dtype, dcpl=dcpl, fill_time="never"
    )
    offset = ds.id.get_offset()
    if offset is None:  # (no space allocated: let libhdf5 write it after all)
        ds[...] = array
        return ds
    data = array.reshape(-1).view(np.uint8).data
    stream = _STREAMS.get(group.file.id.fileno)
    fd = stream.fileno() if stream is not None else group.file.id.get_vfd_handle()
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
    return ds


def check_component(name: str, what: str) -> None:
    """HDF5 path components must be non-empty and not `.`."""
    for part in name.split("/"):
        if part in ("", "."):
            raise UnsupportedError(f"{what} {name!r} cannot be an HDF5 path (empty or '.' part)")
