"""libc's fallocate(2) through ctypes, for reserving an output's blocks before they are
written (rawcopy.py says why). Hand-written: the standard library has only
`os.posix_fallocate`, which glibc emulates, where a filesystem has no fallocate, by
writing into every block; and no maintained package wraps the Linux call."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable

KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE: blocks allocated past the end, the size unchanged
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # (what writing would meet)


@functools.cache  # (looked up when first asked)
def fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's fallocate(2) (fd, mode, offset, length) -> 0 or -1, or None where there is
    none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate64
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def errno_now() -> int:
    """The errno of the last ctypes call on this thread."""
    import ctypes

    return ctypes.get_errno()
