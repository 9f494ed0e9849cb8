"""Opening HDF5 for the Keras formats, through h5py: spotting the signature, and a `Source`
(a plain file, or a member of a `.keras` zip, read in place when stored) that opens with
every h5py failure turned into one clear FormatError, a damaged file probed in a child
process first (`probe.py`).

Apart from reading and writing (`hdf5_reader.py`, `hdf5_writer.py`) because this is where a
file becomes an h5py handle at all: the containment of a library that can crash on
hostile bytes, shared by every Keras reader.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from convert.core.errors import FormatError
from convert.formats.keras.probe import probe

SIGNATURE = b"\x89HDF\r\n\x1a\n"


def signature_offset(path: Path) -> int | None:
    """Where the HDF5 superblock starts (0, 512, 1024, …), or None. Never raises."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + len(SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(SIGNATURE)) == SIGNATURE:
                    return offset
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return None
    return None


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (h5py's messages span several)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _from_h5py(exc: BaseException) -> bool:
    """Whether `exc` was raised inside h5py (a damaged file), not by this package."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "h5py" in last.replace("\\", "/").split("/site-packages/")[-1]


# -- where the HDF5 bytes are ---------------------------------------------------------


class _Window(io.RawIOBase):
    """A read-only, seekable view of `size` bytes at `start` of a file (a stored zip member)."""

    def __init__(self, path: str, start: int, size: int):
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115  (closed by close())
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if n == 0:
            return 0
        got = os.preadv(self._f.fileno(), [memoryview(buf)[:n]], self._start + self._pos)
        self._pos += got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class Source:
    """An HDF5 file to (re)open: a plain file, or a member of a zip archive.

    `base` is where the HDF5 bytes start in `path` when they can be read in place
    (a plain file, or a zip member stored uncompressed), else None."""

    path: str
    member: str | None = None
    base: int | None = 0
    size: int | None = None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    def _identity(self) -> tuple:
        st = os.stat(self.path)
        return (self.path, self.member, st.st_ino, st.st_size, st.st_mtime_ns)

    def _open_apart(self) -> h5py.File:
        """The file as `open` opens it (for the probe's child, which never closes it)."""
        if self.member is None:
            return h5py.File(self.path, "r")
        if self.base is not None:
            return h5py.File(_Window(self.path, self.base, self.size or 0), "r")
        return h5py.File(zipfile.ZipFile(self.path).open(self.member), "r")

    @contextmanager
    def open(self) -> Iterator[h5py.File]:
        stack: list[Any] = []
        try:
            try:
                probe(self._open_apart, self._identity(), self.label)
                if self.member is None:
                    handle = h5py.File(self.path, "r")
                elif self.base is not None:
                    window = _Window(self.path, self.base, self.size or 0)
                    stack.append(window)
                    handle = h5py.File(window, "r")
                else:
                    archive = zipfile.ZipFile(self.path)
                    stack.append(archive)
                    member = archive.open(self.member)
                    stack.append(member)
                    handle = h5py.File(member, "r")
            except FileNotFoundError:
                raise
            except (OSError, ValueError, RuntimeError, zipfile.BadZipFile, KeyError) as exc:
                where = f"member {self.member} " if self.member else ""
                raise FormatError(
                    f"{where}cannot be opened as HDF5 ({one_line(exc)})", self.path
                ) from None
            stack.append(handle)
            try:
                yield handle
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                if isinstance(exc, FileNotFoundError) or not _from_h5py(exc):
                    raise
                # The file opened, but a structure inside it is damaged (h5py meets it
                # only when a group, attribute or dataset is walked).
                raise FormatError(f"is damaged HDF5: {one_line(exc)}", self.label) from None
        finally:
            for item in reversed(stack):
                # Closing a damaged file may complain; there is nothing left to save.
                with contextlib.suppress(Exception):
                    item.close()


def zip_member_source(path: Path, member: str) -> Source:
    """A Source for `member` of the zip at `path`: read in place when stored uncompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member)
            if info.compress_type != zipfile.ZIP_STORED:
                return Source(os.fspath(path), member, None, info.file_size)
            with open(path, "rb") as raw:
                raw.seek(info.header_offset)
                header = raw.read(30)
                file_size = os.fstat(raw.fileno()).st_size
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise FormatError(
            f"cannot read member {member} of the archive ({one_line(exc)})", path
        ) from None
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"member {member}: bad local zip header", path)
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > file_size:
        raise FormatError(
            f"member {member} runs past the end of the archive: the file is truncated", path
        )
    return Source(os.fspath(path), member, start, info.file_size)
