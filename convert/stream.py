"""Reading the next tensor while the current one is written.

File reads, checksums, file writes and numpy's copies (a transpose) all release the GIL,
so one reader thread one large tensor ahead of the writer overlaps the two halves of a
conversion. At most two large tensor values are in memory at once: the one being written
and the one read ahead. Small tensors are read in place: handing one to a thread costs
more than reading it. A small tensor never stalls the read-ahead: models alternate large
kernels with small biases, and the next kernel is read while this one is written, the
biases between them read when their turn comes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .tensor import Tensor

INLINE_BYTES = 1 << 18  # below this a read is cheaper than a thread hand-off


def values(tensors: Iterable[Tensor]) -> Iterator[tuple[Tensor, np.ndarray]]:
    """Each tensor with its value, in order; large ones are read one ahead, in the
    background."""
    pool: ThreadPoolExecutor | None = None
    # What waits for its turn behind a large tensor being read: that one first (with its
    # read under way), then the small ones after it (read when they are handed out).
    waiting: deque[tuple[Tensor, Future | None]] = deque()
    try:
        for tensor in tensors:
            if tensor.nbytes < INLINE_BYTES:
                if waiting:
                    waiting.append((tensor, None))
                else:
                    value = tensor.read()
                    yield tensor, value
                    del value
                continue
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-read")
            # The next large one is read while the previous one (and what follows it) is
            # handed out: the writer has let go of every value before those.
            ahead = pool.submit(tensor.read)
            while waiting:
                yield _take(waiting)
            waiting.append((tensor, ahead))
            del ahead
        while waiting:
            yield _take(waiting)
    finally:
        waiting.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _take(waiting: deque[tuple[Tensor, Future | None]]) -> tuple[Tensor, np.ndarray]:
    tensor, future = waiting.popleft()
    return tensor, (future.result() if future is not None else tensor.read())
