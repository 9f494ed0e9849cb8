"""Reading the next tensor while the current one is written.

File reads, checksums and file writes all release the GIL, so one reader thread one
tensor ahead of the writer overlaps the two halves of a conversion. At most two tensor
values are in memory at once: the one being written and the one read ahead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .tensor import Tensor


def values(tensors: Iterable[Tensor]) -> Iterator[tuple[Tensor, np.ndarray]]:
    """Each tensor with its value, in order; the next one is read in the background."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-read") as pool:
        ahead: Future | None = None
        previous: Tensor | None = None
        for tensor in tensors:
            current = pool.submit(tensor.read)
            if ahead is not None:
                yield previous, ahead.result()
            ahead, previous = current, tensor
        if ahead is not None:
            yield previous, ahead.result()
