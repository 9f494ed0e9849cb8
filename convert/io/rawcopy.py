"""Output files written at a known position, and stored tensor bytes copied into them
without passing through Python.

A writer puts its own small pieces (headers, pickles, descriptors) through one reused
buffer, and a tensor whose bytes lie unchanged in a source file (`Tensor.stored()`) goes
file to file in the kernel: `os.splice` through a 1 MiB pipe of the output's own, else
`os.copy_file_range`, else `os.sendfile`, else positioned reads into one reused buffer and
writes. The pipe comes first because a kernel copy lands in the output's page cache in
pieces of one pipe's size: copy_file_range's internal pipe holds 64 KiB, and where a
tensor's offset in the output is not its offset in the source modulo 64 KiB (nearly
always: headers differ in length) every piece straddles the large pages the kernel would
use, and the copy takes 1.4 times what `cp` does. Through a 1 MiB pipe it takes what `cp`
does at any offsets.

A writer reserves the blocks of the bytes it knows will follow (`reserve`: fallocate(2),
the file's size unchanged) before writing them, in one range: ext4 then skips the per-page
bookkeeping of delayed allocation, and the copy takes three quarters of the time; the file
stays in as few extents as delayed allocation would give it; and a full disk is met
before the first tensor is moved.

The source's checksum is verified alongside the kernel copy, from the page cache, by
positioned reads into one reused buffer (never a mapping: page faults of a mapping cost
more than the reads), and the checksum the output needs of the same bytes (a zip
record's CRC-32, a TensorFlow entry's CRC-32C) is computed in that same pass. A mismatch
raises ChecksumError before the writer returns, so the OutputSet around it removes the
output: nothing is committed.

Small tensors are read straight into the output's buffer (one pread, no array): for
checkpoints of many small tensors the per-tensor cost is what counts.
"""

from __future__ import annotations

import errno
import fcntl
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, overload

from convert.core.errors import ChecksumError, FormatError
from convert.core.tensor import Stored
from convert.io.checksums import crc32, crc32_join, crc32_joins, crc32c, region_checksum
from convert.io.fallocate import FULL as _FULL
from convert.io.fallocate import KEEP_SIZE as _KEEP_SIZE
from convert.io.fallocate import errno_now as _errno
from convert.io.fallocate import fallocate as _fallocate
from convert.io.outputs import open_output

if TYPE_CHECKING:
    import numpy as np

BUFFER = 1 << 20  # the output buffer, and the chunk of a checksum pass
KERNEL_FROM = 1 << 18  # below this a copy through the buffer costs fewer system calls
KERNEL = True  # False: every copy goes through the buffer (tests compare the two paths)
PIPE = 1 << 20  # the splice pipe: the default limit (fs/pipe-max-size) for any user
_CAN_SPLICE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")  # (Linux)
_CHECKSUMS = {"crc32": crc32, "crc32c": crc32c}
# errnos by which a filesystem (or a kernel) refuses an in-kernel copy: fall back
_REFUSED = {
    errno.EXDEV,
    errno.EOPNOTSUPP,
    errno.ENOSYS,
    errno.EINVAL,
    errno.EBADF,
    errno.ETXTBSY,
    errno.EPERM,
    getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
}
_POOL: ThreadPoolExecutor | None = None  # the checksum passes' thread, made when first used


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-check")
    return _POOL


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it makes a pool of its own."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


class Output:
    """A new output file written from its start: `write` appends bytes, `copy` appends a
    stored tensor's; `position` is the byte offset the next one goes to."""

    def __init__(self, path: str | os.PathLike):
        self._file = open_output(path, buffering=0)
        self.fd = self._file.fileno()
        self.position = 0
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self._fill = 0
        self._scratch: memoryview | None = None  # the checksum pass's buffer, made once
        # The kernel's ways of copying, best first; one the kernel refuses is dropped for
        # the rest of this output, and with none left every copy goes through the buffer.
        self._calls = [self._splice] if _CAN_SPLICE else []
        self._calls += [_copy_file_range, _sendfile]
        if not KERNEL:
            self._calls = []
        self._pipe: tuple[int, int] | None = None  # (read end, write end), made when used
        self._reserving = _fallocate() is not None  # (off once the filesystem refuses)

    # -- own bytes -----------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        if type(data) is not bytes:  # (headers are bytes: written as they are, per tensor)
            # (an ndarray is a buffer: numpy's stubs say so only for Python >= 3.12)
            data = memoryview(data).cast("B")  # type: ignore[arg-type]
        n = len(data)
        if self._fill + n > BUFFER:
            self.flush()
        if n > BUFFER:
            self._write_all(data)
        else:
            self._view[self._fill : self._fill + n] = data
            self._fill += n
        self.position += n

    def flush(self) -> None:
        if self._fill:
            self._write_all(self._view[: self._fill])
            self._fill = 0

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes written before at `offset` (a header whose sizes and checksum
        are known only after the data it heads)."""
        buffered = self.position - self._fill  # (the first byte not yet in the file)
        if offset >= buffered:
            self._view[offset - buffered : offset - buffered + len(data)] = data
            return
        if offset + len(data) > buffered:  # (partly flushed: all of it into the file)
            self.flush()
        if os.pwrite(self.fd, data, offset) != len(data):
            raise OSError(errno.EIO, f"{len(data)} bytes could not be written back")

    def _write_all(self, data: bytes | memoryview) -> None:
        data = memoryview(data)
        while data:
            data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._close_pipe()
            self._file.close()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stored bytes --------------------------------------------------------------
    @overload
    def copy(self, stored: Stored, want: str, what: str = ...) -> int: ...
    @overload
    def copy(self, stored: Stored, want: None = None, what: str = ...) -> int | None: ...

    def copy(self, stored: Stored, want: str | None = None, what: str = "tensor") -> int | None:
        """Append `stored`'s bytes, verified against its source's checksum; returns their
        `want` checksum ("crc32", "crc32c"), or None when none is wanted."""
        if stored.parts is not None:
            return self._copy_parts(stored.parts, want, what)
        check = stored.check
        start, size = (check.offset, check.nbytes) if check else (stored.offset, stored.nbytes)
        if size <= KERNEL_FROM and size <= BUFFER:
            return self._copy_small(stored, start, size, want, what)
        self.flush()
        copied = False
        result: int | None = None
        if self._calls:
            pending = _pool().submit(self._checksums, stored, start, size, want, what)
            try:
                copied = self._copy_in_kernel(stored, what)
            finally:
                result = pending.result()  # (raises ChecksumError: nothing is committed)
        if not copied:
            result = self._copy_buffered(stored, start, size, want, what)
        self.position += stored.nbytes
        return result

    def _copy_parts(self, parts: tuple[Stored, ...], want: str | None, what: str) -> int | None:
        """Each part in turn; the `want` checksum of them all joined from each one's
        (CRC-32, with zlib-ng), else taken in a pass over the bytes just copied."""
        joins = want == "crc32" and crc32_joins()
        value = 0
        for part in parts:
            found = self.copy(part, want if joins else None, what)
            value = crc32_join(value, found, part.nbytes) if joins and found is not None else value
        if want is None or joins:
            return value if joins else None
        for part in parts:
            value = region_checksum(part.source, part.offset, part.nbytes, want, value)
        return value

    def _copy_small(
        self, stored: Stored, start: int, size: int, want: str | None, what: str
    ) -> int | None:
        if self._fill + size > BUFFER:
            self.flush()
        place = self._view[self._fill : self._fill + size]
        if stored.data is not None and len(stored.data) == size:  # (read with a header)
            place[:] = stored.data
        elif os.preadv(stored.source.fileno(), [place], start) != size:  # (one, nearly always)
            _pread_into(stored, place, start, what)
        check = stored.check
        if check is not None and _CHECKSUMS[check.kind](place) != check.value:
            raise ChecksumError(check.message(), check.path)
        lead = stored.offset - start
        data = place[lead : lead + stored.nbytes]
        result = _wanted(want, check, data, lead == 0 and size == stored.nbytes)
        if lead:  # (the region began with bytes not copied: move the tensor's down)
            place[: stored.nbytes] = bytes(data)
        self._fill += stored.nbytes
        self.position += stored.nbytes
        return result

    def _copy_in_kernel(self, stored: Stored, what: str) -> bool:
        """Copy with splice (else copy_file_range, else sendfile); False when the kernel
        refuses every one before copying anything (then nothing was written)."""
        source_fd = stored.source.fileno()
        offset, left = stored.offset, stored.nbytes
        calls = self._calls
        while left:
            try:
                n = calls[0](source_fd, self.fd, left, offset)
            except OSError as exc:
                if exc.errno not in _REFUSED or left != stored.nbytes:
                    raise
                calls.pop(0)
                if not calls:
                    return False
                continue
            if n == 0:
                raise _past_end(stored, what)
            offset += n
            left -= n
        return True

    def reserve(self, nbytes: int) -> None:
        """Blocks for the `nbytes` after `position`: at most what will be written there
        (blocks reserved past the end stay the file's until it is truncated)."""
        if not self._reserving or nbytes <= 0:
            return
        fallocate = _fallocate()
        assert fallocate is not None  # (`_reserving` starts True only where there is one)
        if fallocate(self.fd, _KEEP_SIZE, self.position, nbytes) == 0:
            return
        code = _errno()
        if code in _FULL:  # (what writing would meet: said before the copy, not inside)
            raise OSError(code, os.strerror(code))  # (the OutputSet names the output)
        self._reserving = False  # (a filesystem without fallocate, or refusing this file)

    def _splice(self, source_fd: int, fd: int, count: int, offset: int) -> int:
        """Up to one pipe's worth of the source moved into the output, by reference
        into the pipe and copied once out of it."""
        read_end, write_end = self._pipe or self._open_pipe()
        n = os.splice(source_fd, write_end, min(count, PIPE), offset_src=offset)
        left = n
        try:
            while left:
                left -= os.splice(read_end, fd, left)
        except OSError as exc:
            self._close_pipe()  # (it may hold bytes that would land in the next copy)
            if left == n:  # (nothing written: the output refuses, the caller falls back)
                raise
            raise OSError(errno.EIO, f"the output took {n - left} of {n} bytes: {exc}") from exc
        return n

    def _open_pipe(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        try:
            if fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE) < PIPE:
                raise OSError(errno.EINVAL, "the pipe is smaller than asked")
        except OSError as exc:  # (a lower pipe-max-size, or the user's pipe quota:
            os.close(read_end)  # a smaller pipe gains nothing over copy_file_range)
            os.close(write_end)
            raise OSError(errno.EOPNOTSUPP, f"no {PIPE}-byte pipe: {exc}") from exc
        self._pipe = read_end, write_end
        return self._pipe

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None

    def _checksums(
        self, stored: Stored, start: int, size: int, want: str | None, what: str
    ) -> int | None:
        """Beside a kernel copy: read the checked region (or the tensor's bytes) once,
        verify it, and compute the `want` checksum of the tensor's bytes."""
        if stored.check is None and want is None:
            return None
        return self._pass(stored, start, size, want, what, write=False)

    def _copy_buffered(
        self, stored: Stored, start: int, size: int, want: str | None, what: str
    ) -> int | None:
        """The fallback: the region read in chunks into one buffer, checked and written."""
        return self._pass(stored, start, size, want, what, write=True)

    def _pass(
        self, stored: Stored, start: int, size: int, want: str | None, what: str, write: bool
    ) -> int | None:
        """One pass over the region in chunks: verified against its source's checksum,
        the tensor's own bytes checksummed as `want` and, if `write`, appended."""
        check = stored.check
        whole = start == stored.offset and size == stored.nbytes
        if whole and check is not None and want == check.kind:
            want = None  # (the verified value is the one wanted)
        verify = _CHECKSUMS[check.kind] if check is not None else None
        make = _CHECKSUMS[want] if want is not None else None
        if self._scratch is None:
            self._scratch = memoryview(bytearray(BUFFER))
        value = result = 0
        end, position = stored.offset + stored.nbytes, start
        while position < start + size:
            n = min(BUFFER, start + size - position)
            chunk = self._scratch[:n]
            _pread_into(stored, chunk, position, what)
            if verify is not None:
                value = verify(chunk, value)
            lo, hi = max(position, stored.offset), min(position + n, end)
            if lo < hi and (make is not None or write):
                part = chunk[lo - position : hi - position]
                if make is not None:
                    result = make(part, result)
                if write:
                    self._write_all(part)
            position += n
        if check is not None and value != check.value:
            raise ChecksumError(check.message(), check.path)
        if make is None:
            return check.value if (whole and check is not None) else None
        return result


def _wanted(want: str | None, check, data: memoryview, whole: bool) -> int | None:
    if want is None:
        return None
    if whole and check is not None and check.kind == want:
        return check.value  # (just verified)
    return _CHECKSUMS[want](data)


def _pread_into(stored: Stored, place: memoryview, offset: int, what: str) -> None:
    fd, done = stored.source.fileno(), 0
    while done < len(place):
        n = os.preadv(fd, [place[done:]], offset + done)
        if n <= 0:
            raise _past_end(stored, what)
        done += n


def _copy_file_range(source_fd: int, fd: int, count: int, offset: int) -> int:
    return os.copy_file_range(source_fd, fd, count, offset)


def _sendfile(source_fd: int, fd: int, count: int, offset: int) -> int:
    return os.sendfile(fd, source_fd, offset, count)


def _past_end(stored: Stored, what: str) -> FormatError:
    path = Path(stored.source.path)
    return FormatError(
        f"{what} at bytes {stored.offset}..{stored.offset + stored.nbytes} "
        "lies past the end of the file: it was truncated while being read",
        path,
    )


if not hasattr(os, "copy_file_range"):  # (not Linux: sendfile, else the buffer)
    _copy_file_range = _sendfile  # noqa: F811
