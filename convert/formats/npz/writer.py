"""Writing `.npz` files: each tensor once, a `.npy` member named by its path joined with
`/`. Stored members go through storedzip.py (zipfile's layout), so a tensor whose bytes lie
unchanged in a file is copied file to file; deflated ones (`compress=True`) go through
`zipfile`, from the arrays. ml_dtypes types are written with their name as the header's
descr (see the package doc).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.lib import format as npy

from convert.core.dtypes import STRING
from convert.core.errors import ConvertError, UnsupportedError
from convert.core.graph import Graph
from convert.core.notes import count, dropped_values, non_tensor_values, some
from convert.formats.npz.storedzip import StoredZipWriter
from convert.io.checksums import crc32_joins
from convert.io.outputs import OutputSet
from convert.io.rawcopy import Output
from convert.io.stream import contents

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: the same tensors give the same file


def _descr(dtype: np.dtype) -> str:
    """The .npy header descr: numpy's own, or the ml_dtypes name (see the module doc)."""
    # (numpy's descr is a list only for a structured dtype: not one of these kinds)
    return cast(str, npy.dtype_to_descr(dtype)) if _is_numpy_native(dtype) else dtype.name


def _is_numpy_native(dtype: np.dtype) -> bool:
    return dtype.kind in "biufc"  # ml_dtypes types are kind "V" (user-defined)


def _header_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The .npy header numpy writes for a C-ordered array of `dtype` and `shape`."""
    header = {"descr": _descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    f = io.BytesIO()
    try:
        npy.write_array_header_1_0(f, header)
    except ValueError:  # a header over 64 KiB needs format 2.0
        npy.write_array_header_2_0(f, header)
    return f.getvalue()


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Callable[[int], None] | None = None,
    report: Any = None,
    compress: bool = False,
    **options: Any,
) -> None:
    """Write each tensor once, as `<path joined with />.npy`, one member at a time.

    `compress=True` deflates the members (like np.savez_compressed)."""
    if options:
        raise UnsupportedError(f"the npz writer has no option {', '.join(options)}", path)
    entries = graph.entries()
    names: dict[str, tuple[str, ...]] = {}
    aliases = 0
    for entry in entries:
        aliases += len(entry.paths) - 1
        key = "/".join(entry.path)
        if key in names:
            raise UnsupportedError(
                f"paths {names[key]} and {entry.path} would both be stored as {key!r}", path
            )
        names[key] = entry.path
    numeric = [entry for entry in entries if entry.tensor.dtype != STRING]
    strings = ["/".join(entry.path) for entry in entries if entry.tensor.dtype == STRING]
    ml_named = {
        entry.tensor.dtype.name for entry in numeric if not _is_numpy_native(entry.tensor.dtype)
    }
    if not numeric:
        raise ConvertError("has no numeric tensors to write to an npz file", graph.source)
    with OutputSet(overwrite, inputs) as outputs:
        tmp = outputs.path(path)
        if compress or not crc32_joins():
            written = _write_through_zipfile(numeric, tmp, compress, progress)
        else:
            written = _write_stored(numeric, tmp, progress)
    tensors = len(numeric)
    if report is not None:
        report.tensors += tensors
        report.bytes += written
        report.files.append(os.fspath(path))
        report.notes.extend(_notes(graph, strings, aliases, ml_named))


def _member(entry) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("/".join(entry.path) + ".npy", date_time=_FIXED_TIME)
    info.external_attr = 0o644 << 16
    return info


def _write_stored(entries: list, tmp: Path, progress: Callable[[int], None] | None) -> int:
    """Stored members in zipfile's layout (storedzip.py): a tensor's bytes that lie
    unchanged in a file go file to file."""
    written = 0
    with Output(tmp) as out:
        out.reserve(sum(entry.tensor.nbytes for entry in entries))
        archive = StoredZipWriter(out)
        for entry, (tensor, stored, array) in zip(
            entries, contents(entry.tensor for entry in entries), strict=True
        ):
            info = _member(entry)
            if stored is not None and tensor.dtype.byteorder != ">":
                archive.add(info, _header_bytes(tensor.dtype, tensor.shape), stored=stored)
            else:  # (stored bytes are little-endian: only a tensor without them gets here)
                assert array is not None  # (`contents`: no stored bytes, so the value)
                array = _little_endian(array)
                archive.add(
                    info,
                    _header_bytes(array.dtype, array.shape),
                    data=array.reshape(-1).view(np.uint8),
                )
            written += tensor.nbytes
            if progress is not None:
                progress(tensor.nbytes)
            del array
        archive.close()
    return written


def _write_through_zipfile(
    entries: list, tmp: Path, compress: bool, progress: Callable[[int], None] | None
) -> int:
    """Deflated members (or stored ones where CRC-32s cannot be joined): through
    zipfile, from the arrays."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    written = 0
    with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as archive:
        for entry in entries:
            array = _little_endian(entry.tensor.read())
            info = _member(entry)
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as f:
                f.write(_header_bytes(array.dtype, array.shape))
                # (an ndarray is a buffer: numpy's stubs say so only for Python >= 3.12)
                f.write(array.reshape(-1).view(np.uint8))  # type: ignore[call-overload]
            written += array.nbytes
            if progress is not None:
                progress(array.nbytes)
            del array
    return written


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.require(array, requirements="C")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def _notes(graph: Graph, strings: list[str], aliases: int, ml_named: set[str]) -> list[str]:
    notes = []
    if aliases:
        notes.append(
            f"{count(aliases, 'extra path')} to shared tensors (aliases, tied "
            "weights) folded: each tensor is stored once, under its first path"
        )
    if strings:
        notes.append(
            f"dropped {count(len(strings), 'string tensor')} (npz without pickles "
            f"holds numbers): {some(strings)}"
        )
    if ml_named:
        notes.append(
            f"{', '.join(sorted(ml_named))} stored with the dtype name as .npy descr: "
            "np.load reads it once ml_dtypes is imported (as JAX does)"
        )
    note = dropped_values(non_tensor_values(graph), "npz holds arrays only")
    if note:
        notes.append(note)
    return notes
