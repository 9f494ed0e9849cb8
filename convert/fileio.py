"""Bounded reads from untrusted files, and outputs that appear whole or not at all."""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import weakref
from pathlib import Path
from typing import BinaryIO

from .errors import FileAccessError, FormatError, OutputExistsError

_MAP_FLAGS = mmap.MAP_PRIVATE

# Large regions are mapped, not read: the bytes are used where the page cache holds
# them (no copy, no fresh memory to fault in, which costs more than the copy). Writes to
# the mapping are private (copy-on-write), so callers get a writable buffer as before.
_MAP_FROM = 1 << 20


def read_region(path: str | os.PathLike, offset: int, size: int, what: str = "data"
                ) -> bytearray | memoryview:
    """Exactly `size` bytes at `offset`; a short file is a FormatError, not a short read.

    Returns a writable buffer: a bytearray, or for large regions a memoryview of a private
    mapping of the file (unmapped when the last view of it is dropped)."""
    source = SourceFile(path)
    try:
        return source.read(offset, size, what)
    finally:
        source.close()


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
            # Private (copy-on-write: the caller may write to its array, the file never
            # changes). Populating it at once (MAP_POPULATE) copies every page: a transpose
            # reading it gets faster, but writing it out unchanged, the usual case, took
            # 1.8x as long (paired runs, TF -> safetensors, 1.34 GB).
            mapped = mmap.mmap(fd, offset + size - start, flags=_MAP_FLAGS, offset=start)
        except (OSError, ValueError):  # not mappable (a pipe, some network mounts)
            return self._pread(fd, offset, size, what)
        return memoryview(mapped)[offset - start:offset - start + size]

    def _past_end(self, fd: int, offset: int, size: int, what: str) -> FormatError:
        end = os.fstat(fd).st_size
        return FormatError(
            f"{what} at bytes {offset}..{offset + size} lies past the end of the file "
            f"({end} bytes): the file is truncated or the index is wrong", self.path)


def open_output(path: str | os.PathLike, buffering: int = -1) -> BinaryIO:
    """Open `path` to write it from its start (created if missing), like open(path, "wb"),
    but without truncating a file that is already empty, such as OutputSet's fresh
    temporary files: on ext4, closing a truncated file first writes its data to disk
    (auto_da_alloc), which takes as long as writing it did."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        return open(fd, "wb", buffering=buffering)  # (an fd: "wb" does not truncate)
    except BaseException:
        os.close(fd)
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can
    only be read by setting it, which races with files other threads create)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(destination: Path) -> int:
    """The mode `open(destination, "w")` would leave: an existing file's own, else 0666
    under the umask (mkstemp makes its files 0600)."""
    try:
        return destination.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


class OutputSet:
    """A set of output files written under temporary sibling names, renamed at commit.

    Use as a context manager: on an exception every temporary file is removed and no
    destination is touched; on success all are renamed into place. Destinations that
    exist are refused unless `overwrite`, and an input file is never a destination.
    """

    def __init__(self, overwrite: bool = False, inputs: tuple[str | os.PathLike, ...] = ()):
        self.overwrite = overwrite
        self.inputs = [Path(p) for p in inputs]
        self._pending: list[tuple[Path, Path]] = []
        self._made_dirs: list[Path] = []  # removed again if the output is abandoned

    def path(self, destination: str | os.PathLike, replace: bool = False) -> Path:
        """A temporary path to write now that becomes `destination` at commit
        (`replace`: the destination is a file this output updates, like a state file)."""
        destination = Path(destination)
        self.check(destination, replace)
        try:
            self._make_parents(destination.parent, destination)
            fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp",
                                       dir=destination.parent)
        except OSError as exc:  # named by the destination, never by the temporary name
            raise FileAccessError.from_os_error(exc, destination) from None
        self._pending.append((Path(tmp), destination))
        try:
            os.fchmod(fd, _new_file_mode(destination))
        finally:
            os.close(fd)
        return Path(tmp)

    def check(self, destination: Path, replace: bool = False) -> None:
        for src in self.inputs:
            if src.exists() and destination.exists() and os.path.samefile(src, destination):
                raise OutputExistsError("is an input of this conversion; refusing to write over it",
                                        destination)
        if destination.exists() and not (self.overwrite or replace):
            raise OutputExistsError("exists already (pass {overwrite} to replace it)",
                                    destination, {"overwrite": "overwrite=True"})
        if destination.is_dir():
            raise OutputExistsError("is a directory", destination)

    def _make_parents(self, directory: Path, destination: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        if not directory.is_dir():
            raise FileAccessError(f"cannot be written: {directory} is a file, not a directory",
                                  destination)
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # (made meanwhile by another conversion: not ours)
                continue
            self._made_dirs.append(d)

    def commit(self) -> None:
        for tmp, dest in self._pending:
            os.replace(tmp, dest)
        self._pending.clear()

    def abort(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):  # something else was put there meanwhile
                d.rmdir()
        self._made_dirs.clear()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
