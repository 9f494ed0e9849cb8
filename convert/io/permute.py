"""Contiguous copies of permuted arrays, a large matrix's transpose done in bands.

numpy copies in the destination's order: one strided copy of a whole large matrix reads
each element of an output row from another source row, a page or more apart (0.2 GB/s
here at 4096 x 4096 float32). A band of 16 rows is read as 16 sequential streams while
each output row gets 16 adjacent elements, a cache line of float32. How fast that is
depends on the machine (0.8 GB/s on one 2-core machine here, 3-4 GB/s on another; 64 x 64
tiles, a numpy call per tile, were no faster anywhere): numpy's strided copy loop moves one
element at a time. numpy lets go of the GIL while it copies, so a large matrix's bands
are shared among threads, one per core (up to `_THREADS`): on 2 cores that doubled the
rate, and a port's transposes are what it spends its time on.

Two kinds of caller: the rules' transposes (a port's kernels), and readers whose files
hold tensors as permuted views of their bytes (torch's `w.t()`, channels_last conv
weights). In the bands, elements move as unsigned integers of their size, so any dtype
(bfloat16, float8) takes numpy's plain copy loops; every path keeps the bytes exactly
(NaN payloads, signed zeros).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BANDED_BYTES = 1 << 20  # below this a matrix fits in cache and numpy's copy is as fast
_BAND = 16  # source rows per band: one cache line of float32 in each output row
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SHARED_BYTES = 1 << 22  # from this size a matrix's bands are shared among threads
_THREADS = max(1, min(os.cpu_count() or 1, 4))
_helpers: ThreadPoolExecutor | None = None  # made at the first large transpose


def banded_transpose(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A matrix transposed a band of `_BAND` source rows at a time, into `out` if given
    (C-contiguous, of the transposed shape)."""
    rows, cols = array.shape
    if out is None:
        out = np.empty((cols, rows), array.dtype)
    unsigned = _UNSIGNED.get(array.dtype.itemsize)
    if unsigned is None or not array.flags.c_contiguous or array.dtype.hasobject:
        out[...] = array.T
        return out
    source, target = array.view(unsigned), out.view(unsigned)
    parts = min(_THREADS, rows // _BAND) if array.nbytes >= _SHARED_BYTES else 1
    if parts <= 1:
        _bands(source, target, 0, rows)
        return out
    global _helpers
    if _helpers is None:
        _helpers = ThreadPoolExecutor(_THREADS - 1, thread_name_prefix="convert-transpose")
    # Whole bands to each part; this thread does the first part itself.
    edges = [_BAND * (rows // _BAND * k // parts) for k in range(parts)] + [rows]
    helping = [
        _helpers.submit(_bands, source, target, edges[k], edges[k + 1]) for k in range(1, parts)
    ]
    _bands(source, target, edges[0], edges[1])
    for done in helping:
        done.result()
    return out


def _bands(source: np.ndarray, target: np.ndarray, start: int, stop: int) -> None:
    """Source rows [start, stop) into the target's columns, a band at a time."""
    for band in range(start, stop, _BAND):
        end = min(band + _BAND, stop)
        target[:, band:end] = source[band:end].T


def permuted(array: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """`np.transpose(array, axes)`, C-contiguous, in bands where it swaps the two halves
    of a large matrix (a kernel's (1, 0); (0, 2, 1) per leading index, as channels_last
    conv weights are laid out)."""
    axes = tuple(axes)
    swap = None
    if array.nbytes >= BANDED_BYTES and array.flags.c_contiguous:
        swap = _as_swap(array.shape, axes)
    if swap is not None and swap[1] * swap[2] * array.dtype.itemsize >= BANDED_BYTES:
        lead, rows, cols = swap
        source = array.reshape(lead, rows, cols)
        out = np.empty((lead, cols, rows), array.dtype)
        for i in range(lead):
            banded_transpose(source[i], out[i])
        return out.reshape([array.shape[a] for a in axes])
    return np.ascontiguousarray(np.transpose(array, axes))  # (a same-dtype copy: bytes kept)


def view_layout(
    shape: Sequence[int], stride: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """For a strided view (strides in elements) whose elements are a whole C-contiguous
    array in another axis order: that array's shape, and the axes that permute it into
    the view. None for views with gaps, overlaps or broadcast axes."""
    moving = [i for i, size in enumerate(shape) if size != 1]  # (a size-1 axis's stride
    order = sorted(moving, key=lambda i: -stride[i])  # is anything)
    step = 1
    for i in reversed(order):
        if stride[i] != step:
            return None
        step *= shape[i]
    # The view's size-1 axes go first in the source, where they change no byte.
    ones = [i for i, size in enumerate(shape) if size == 1]
    source = ones + order
    position = {axis: n for n, axis in enumerate(source)}
    return tuple(shape[i] for i in source), tuple(position[i] for i in range(len(shape)))


def _as_swap(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(lead, rows, cols) when `axes` moves a (lead, rows, cols) reshape of the array to
    (lead, cols, rows): runs of axes that stay together merged, size-1 axes ignored."""
    kept = [a for a in axes if shape[a] != 1]
    runs: list[list[int]] = []
    for a in kept:
        if runs and a == runs[-1][-1] + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    sizes = [math.prod(shape[a] for a in run) for run in runs]
    starts = [run[0] for run in runs]
    if len(runs) == 2 and starts[0] > starts[1]:
        return 1, sizes[1], sizes[0]
    if len(runs) == 3 and starts[0] < starts[2] < starts[1]:
        return sizes[0], sizes[2], sizes[1]
    return None
