"""The checksums formats carry: CRC-32C (TensorBundle index blocks and entries) and
CRC-32 (zip records: torch files, npz members).

Both come from C libraries that take any buffer without copying it and release the GIL
while they run: `crc32c` (hardware CRC-32C) and zlib-ng's CRC-32, which runs at about
12 GB/s here against 3.5 GB/s for the standard library's zlib.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from convert.core.tensor import SourceFile, Stored


def _load_crc32c() -> Callable:
    """The `crc32c` package's C function, loaded without the package's `__init__`, which
    also imports importlib.metadata and argparse for its version and command line: 40 ms,
    a tenth of listing a checkpoint."""
    spec = importlib.util.find_spec("crc32c")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            location = os.path.join(folder, "_crc32c" + suffix)
            if os.path.isfile(location):
                module_spec = importlib.util.spec_from_file_location("crc32c._crc32c", location)
                # (an extension module's path always has a loader: ExtensionFileLoader)
                assert module_spec is not None and module_spec.loader is not None
                module = importlib.util.module_from_spec(module_spec)
                module_spec.loader.exec_module(module)
                return module.crc32c
    import crc32c  # (a layout this does not know: the ordinary import)

    return crc32c.crc32c


_crc32c_c = _load_crc32c()

_crc32_combine: Callable[[int, int, int], int] | None
try:
    from zlib_ng.zlib_ng import crc32 as _crc32
    from zlib_ng.zlib_ng import crc32_combine as _crc32_combine
except ImportError:  # a platform without a zlib-ng wheel: same values, slower
    from zlib import crc32 as _crc32

    _crc32_combine = None

Buffer = bytes | bytearray | memoryview


def crc32c(data: Buffer | np.ndarray, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of `data`, continuing from `value`."""
    return _crc32c_c(data, value)


def crc32(data: Buffer | np.ndarray, value: int = 0) -> int:
    """CRC-32 (the zip and zlib polynomial) of `data`, continuing from `value`."""
    return _crc32(data, value)


def crc32_joins() -> bool:
    """Whether `crc32_join` is available (zlib-ng's; the standard library has none)."""
    return _crc32_combine is not None


def crc32_join(first: int, second: int, second_length: int) -> int:
    """The CRC-32 of two byte strings one after the other, from the CRC-32 of each."""
    assert _crc32_combine is not None  # (callers ask `crc32_joins` first)
    return _crc32_combine(first, second, second_length)


CHUNK = 16 << 20  # (a pass over a region reads it in pieces of this size)


def region_checksum(source: SourceFile, offset: int, nbytes: int, kind: str, value: int = 0) -> int:
    """The `kind` checksum ("crc32", "crc32c") of a file region, continuing from `value`,
    read in chunks."""
    function = crc32 if kind == "crc32" else crc32c
    for at in range(offset, offset + nbytes, CHUNK):
        value = function(source.read(at, min(CHUNK, offset + nbytes - at)), value)
    return value


def verify_stored(stored: Stored) -> None:
    """Read the region a stored tensor's checksum covers, in chunks, and raise
    ChecksumError if it does not match: for a reader that then reads only part of it."""
    from convert.core.errors import ChecksumError

    check = stored.check
    if check is None:
        return
    if region_checksum(stored.source, check.offset, check.nbytes, check.kind) != check.value:
        raise ChecksumError(check.message(), check.path)
