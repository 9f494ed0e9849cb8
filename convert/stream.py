"""Reading the next tensor while the current one is written.

File reads, checksums and file writes all release the GIL, so one reader thread one
tensor ahead of the writer overlaps the two halves of a conversion. At most two large
tensor values are in memory at once: the one being written and the one read ahead.
Small tensors are read in place: handing one to a thread costs more than reading it.
Tensors whose bytes lie unchanged in a file are not read at all (`contents`): the writer
copies them (rawcopy.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .tensor import Stored, Tensor

INLINE_BYTES = 1 << 18  # below this a read is cheaper than a thread hand-off


def values(tensors: Iterable[Tensor]) -> Iterator[tuple[Tensor, np.ndarray]]:
    """Each tensor with its value, in order; large ones are read one ahead, in the
    background."""
    pool: ThreadPoolExecutor | None = None
    ahead: Future | None = None
    previous: Tensor | None = None
    try:
        for tensor in tensors:
            if tensor.nbytes < INLINE_BYTES:
                value = tensor.read()
                if ahead is not None:
                    yield previous, ahead.result()
                    ahead = previous = None
                yield tensor, value
                del value
                continue
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-read")
            current = pool.submit(tensor.read)
            if ahead is not None:
                yield previous, ahead.result()
            ahead, previous = current, tensor
        if ahead is not None:
            yield previous, ahead.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def contents(tensors: Iterable[Tensor]) -> Iterator[tuple[Tensor, Stored | None,
                                                          np.ndarray | None]]:
    """Each tensor with where its bytes lie unchanged (`Tensor.stored()`), or else its
    value (read as `values` reads: large ones one ahead); exactly one is not None."""
    pending: list[Tensor] = []  # tensors to read, in a run between stored ones

    def flush() -> Iterator[tuple[Tensor, None, np.ndarray]]:
        for tensor, value in values(pending):
            yield tensor, None, value
        pending.clear()

    for tensor in tensors:
        stored = tensor.stored()
        if stored is None:
            pending.append(tensor)
            continue
        if pending:
            yield from flush()
        yield tensor, stored, None
    if pending:
        yield from flush()
