"""Bounded reads from untrusted files: regions read or mapped read-only, each checked
against the file's size first. (Outputs, which appear whole or not at all, are in
outputs.py; `OutputSet` and `open_output` are importable from here too.)"""

from __future__ import annotations

import json
import mmap
import os
import weakref

from convert.core.errors import FormatError
from convert.io.outputs import OutputSet as OutputSet
from convert.io.outputs import open_output as open_output

# Large regions are mapped, not read: the bytes are used where the page cache holds
# them (no copy, no fresh memory to fault in, which costs more than the copy). The mapping
# is shared and read-only: a private (copy-on-write) one made writing 64 MiB out of it
# take 3x as long (78 ms against 243 ms writable, 35 ms shared), its page faults landing
# inside write(). Arrays over a mapped region are therefore read-only, like the file.
_MAP_FROM = 1 << 20


def read_region(
    path: str | os.PathLike, offset: int, size: int, what: str = "data"
) -> bytearray | memoryview:
    """Exactly `size` bytes at `offset`; a short file is a FormatError, not a short read.

    Returns a bytearray, or for large regions a read-only memoryview of a shared mapping
    of the file (unmapped when the last view of it is dropped): callers must not write
    into what they get."""
    source = SourceFile(path)
    try:
        return source.read(offset, size, what)
    finally:
        source.close()


def read_small(
    path: str | os.PathLike, max_bytes: int, what: str = "a settings file"
) -> bytes | None:
    """A small side file's bytes (`params.json`, `checklist.chk`, Orbax's `_METADATA`), or
    None where there is none; bigger than `max_bytes` is a FormatError naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > max_bytes:
        raise FormatError(f"is more than {max_bytes >> 10} KiB: not {what}", path)
    return data


def read_json(path: str | os.PathLike, max_bytes: int, what: str = "a settings file") -> object:
    """A small JSON file (`read_small`), or None where there is none; not JSON is a
    FormatError naming it."""
    data = read_small(path, max_bytes, what)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"is not valid JSON ({exc})", path) from None


class SourceFile:
    """An input file that many tensors are read from, opened once (on the first read) and
    closed when the last tensor that refers to it is dropped: an open and close per tensor
    costs more than reading a small tensor does."""

    __slots__ = ("path", "_fd", "_closer", "__weakref__")

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._fd: int | None = None
        self._closer: weakref.finalize | None = None

    def _open(self) -> int:
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)
        return fd

    def fileno(self) -> int:
        """The open file's descriptor (opened now if need be), for positioned reads and
        kernel copies of its regions."""
        return self._fd if self._fd is not None else self._open()

    def close(self) -> None:
        """Close the file now (a later read opens it again; mapped regions stay valid)."""
        if self._closer is not None:
            self._closer()
            self._fd = self._closer = None

    def read(self, offset: int, size: int, what: str = "data") -> bytearray | memoryview:
        """Exactly `size` bytes at `offset` (see `read_region`). Positioned reads: threads
        may share one SourceFile."""
        if offset < 0 or size < 0:
            raise FormatError(f"{what} has a negative offset or size", self.path)
        fd = self._fd if self._fd is not None else self._open()
        if size >= _MAP_FROM:
            return self._map(fd, offset, size, what)
        return self._pread(fd, offset, size, what)

    def _pread(self, fd: int, offset: int, size: int, what: str) -> bytearray:
        buf = bytearray(size)
        view = memoryview(buf)
        done = 0
        while done < size:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise self._past_end(fd, offset, size, what)
            done += n
        return buf

    def _map(self, fd: int, offset: int, size: int, what: str) -> bytearray | memoryview:
        # The size is checked right before mapping: touching a mapped page past the end
        # of a file kills the process (SIGBUS) instead of raising.
        if offset + size > os.fstat(fd).st_size:
            raise self._past_end(fd, offset, size, what)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            # (Populating it at once, MAP_POPULATE, made writing it out unchanged take 1.8x
            # as long: paired runs, TF -> safetensors, 1.34 GB.)
            mapped = mmap.mmap(
                fd, offset + size - start, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start
            )
        except (OSError, ValueError):  # not mappable (a pipe, some network mounts)
            return self._pread(fd, offset, size, what)
        return memoryview(mapped)[offset - start : offset - start + size]

    def _past_end(self, fd: int, offset: int, size: int, what: str) -> FormatError:
        end = os.fstat(fd).st_size
        return FormatError(
            f"{what} at bytes {offset}..{offset + size} lies past the end of the file "
            f"({end} bytes): the file is truncated or the index is wrong",
            self.path,
        )
