"""Reading the next tensor while the current one is written.

File reads, checksums, file writes and numpy's copies (a transpose) all release the GIL,
so one reader thread one large tensor ahead of the writer overlaps the two halves of a
conversion. At most two large tensor values are in memory at once: the one being written
and the one read ahead. Small tensors are read in place: handing one to a thread costs
more than reading it. Tensors whose bytes lie unchanged in a file are not read at all
(`contents`): the writer copies them (rawcopy.py).

Neither a small tensor nor a copied one stalls the read-ahead: models alternate large
kernels with small biases (a port transposes the kernels and copies the biases), and the
next kernel is read while this one is written, what lies between them handed out when its
turn comes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from convert.core.tensor import Stored, Tensor

INLINE_BYTES = 1 << 18  # below this a read is cheaper than a thread hand-off

# (tensor, where its bytes lie unchanged, its value): exactly one of the last two is set
Prefetched = tuple[Tensor, Stored | None, np.ndarray | None]


def values(tensors: Iterable[Tensor]) -> Iterator[tuple[Tensor, np.ndarray]]:
    """Each tensor with its value, in order; large ones are read one ahead, in the
    background."""
    for tensor, _, value in _stream(tensors, copies=False):
        assert value is not None  # (no stored bytes asked for: every value is read)
        yield tensor, value


def contents(tensors: Iterable[Tensor]) -> Iterator[Prefetched]:
    """Each tensor with where its bytes lie unchanged (`Tensor.stored()`), or else its
    value (read as `values` reads: large ones one ahead); exactly one is not None."""
    return _stream(tensors, copies=True)


def _stream(tensors: Iterable[Tensor], copies: bool) -> Iterator[Prefetched]:
    pool: ThreadPoolExecutor | None = None
    # What waits for its turn behind a large tensor being read: that one first (with its
    # read under way), then the small or copied ones after it (read when handed out).
    waiting: deque[tuple[Tensor, Stored | None, Future | None]] = deque()
    try:
        for tensor in tensors:
            stored = tensor.stored() if copies else None
            if stored is not None or tensor.nbytes < INLINE_BYTES:
                if waiting:
                    waiting.append((tensor, stored, None))
                else:
                    yield _now(tensor, stored)
                continue
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-read")
            # The next large one is read while the previous one (and what follows it) is
            # handed out: the writer has let go of every value before those.
            ahead = pool.submit(tensor.read)
            while waiting:
                yield _take(waiting)
            waiting.append((tensor, None, ahead))
            del ahead
        while waiting:
            yield _take(waiting)
    finally:
        waiting.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _now(tensor: Tensor, stored: Stored | None) -> Prefetched:
    return (tensor, stored, None) if stored is not None else (tensor, None, tensor.read())


def _take(waiting: deque[tuple[Tensor, Stored | None, Future | None]]) -> Prefetched:
    tensor, stored, future = waiting.popleft()
    if future is not None:
        return tensor, None, future.result()
    return _now(tensor, stored)
