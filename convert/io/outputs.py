"""Outputs that appear whole or not at all: a set of files written under temporary
names (unnamed files where Linux has them) and put in place together at commit."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from convert.core.errors import FileAccessError, OutputExistsError


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
    """A set of output files written under temporary names, put in place at commit.

    Use as a context manager: on an exception every temporary file is removed and no
    destination is touched; on success all are put in place. Destinations that exist are
    refused unless `overwrite`, and an input file is never a destination.

    On Linux each temporary is an unnamed file (`O_TMPFILE`) in the destination's
    directory, written through its `/proc/self/fd/N` path and linked into place at commit:
    a process killed before then (SIGKILL, a power cut) leaves nothing behind. Elsewhere,
    or where the filesystem has no unnamed files, and for directories, it is a hidden
    sibling named after this process (`.NAME.ckpt-PID-XXXX.tmp`); those of processes that
    no longer run are removed by the next output to the same destination."""

    def __init__(self, overwrite: bool = False, inputs: tuple[str | os.PathLike, ...] = ()):
        self.overwrite = overwrite
        self.inputs = [Path(p) for p in inputs]
        # (temporary path, destination or None for scratch, fd of an unnamed file or None)
        self._pending: list[tuple[Path, Path | None, int | None]] = []
        self._made_dirs: list[Path] = []  # removed again if the output is abandoned

    def path(self, destination: str | os.PathLike, replace: bool = False) -> Path:
        """A temporary path to write now that becomes `destination` at commit
        (`replace`: the destination is a file this output updates, like a state file)."""
        destination = Path(destination)
        self.check(destination, replace)
        try:
            self._make_parents(destination.parent, destination)
            _remove_stale(destination)
            tmp, fd = self._new_temporary(destination.parent, destination.name)
        except OSError as exc:  # named by the destination, never by the temporary name
            raise FileAccessError.from_os_error(exc, destination) from None
        self._pending.append((tmp, destination, fd))
        return tmp

    def scratch(self, directory: str | os.PathLike, name: str = "scratch") -> Path:
        """A temporary file to write and read back while writing (never put in place;
        removed with the others)."""
        try:
            tmp, fd = self._new_temporary(Path(directory), name)
        except OSError as exc:
            raise FileAccessError.from_os_error(exc, Path(directory) / name) from None
        self._pending.append((tmp, None, fd))
        return tmp

    def directory(self, destination: str | os.PathLike) -> Path:
        """A temporary directory to fill now (TensorStore writes Orbax's files there) that
        becomes `destination` at commit, in one rename (an old one is moved aside first)."""
        destination = Path(destination)
        if not (destination.is_dir() and self.overwrite):
            self.check(destination)  # (an existing file, or a directory not to overwrite)
        elif any(destination.resolve() in (p.resolve(), *p.resolve().parents) for p in self.inputs):
            raise OutputExistsError("holds an input of this conversion", destination)
        try:
            self._make_parents(destination.parent, destination)
            _remove_stale(destination)
            tmp = _own_directory(destination)
        except OSError as exc:
            raise FileAccessError.from_os_error(exc, destination) from None
        self._pending.append((tmp, destination, None))
        return tmp

    def _new_temporary(self, directory: Path, name: str) -> tuple[Path, int | None]:
        mode = _new_file_mode(directory / name)
        fd = _unnamed_file(directory, mode) if len(self._pending) < _MAX_UNNAMED else None
        if fd is not None:
            return Path(f"/proc/self/fd/{fd}"), fd
        fd, tmp = tempfile.mkstemp(
            prefix=f".{name}{_OWN_TAG}{os.getpid()}-", suffix=".tmp", dir=directory
        )
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return Path(tmp), None

    def check(self, destination: Path, replace: bool = False) -> None:
        for src in self.inputs:
            if src.exists() and destination.exists() and os.path.samefile(src, destination):
                raise OutputExistsError(
                    "is an input of this conversion; refusing to write over it", destination
                )
        if destination.exists() and not (self.overwrite or replace):
            raise OutputExistsError(
                "exists already (pass {overwrite} to replace it)",
                destination,
                {"overwrite": "overwrite=True"},
            )
        if destination.is_dir():
            raise OutputExistsError("is a directory", destination)

    def _make_parents(self, directory: Path, destination: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        if not directory.is_dir():
            raise FileAccessError(
                f"cannot be written: {directory} is a file, not a directory", destination
            )
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # (made meanwhile by another conversion: not ours)
                continue
            self._made_dirs.append(d)

    def commit(self) -> None:
        # Replacing a file makes ext4 write the new one's data out first (auto_da_alloc),
        # inside the renames. Written out here instead, the set's files then replace the
        # old ones within microseconds of each other, and nothing a kill can interrupt
        # lasts longer than that.
        for _, dest, fd in self._pending:
            if dest is not None and fd is not None and dest.exists():
                try:
                    os.fdatasync(fd)
                except OSError as exc:  # (a full disk may only show now)
                    raise FileAccessError.from_os_error(exc, dest) from None
        placing = [(tmp, dest, fd) for tmp, dest, fd in self._pending if dest is not None]
        if len(placing) == 1:
            tmp, dest, fd = placing[0]
            try:
                if tmp.is_dir():
                    _replace_directory(tmp, dest)
                elif fd is None:
                    os.replace(tmp, dest)
                else:
                    _link_into_place(fd, dest)
            except OSError as exc:
                raise FileAccessError.from_os_error(exc, dest) from None
        elif placing:
            self._replace_together(placing)
        self._release(unlink=False)

    @staticmethod
    def _replace_together(placing: Sequence[tuple[Path, Path | None, int | None]]) -> None:
        """A set of files put in place by one call each, one right after another. An
        unnamed file that replaces an existing one is first linked under a temporary name
        (a kill then leaves that, which the next run removes), so that the moment a kill
        leaves part of an old set beside part of the new one is one system call long."""
        moves: list[tuple[Path | int, Path]] = []  # (a name to rename, or an fd to link)
        linked: list[Path] = []  # (names given here; the set's own temporaries go at abort)
        for tmp, dest, fd in placing:
            assert dest is not None
            if fd is None or not dest.exists():
                moves.append((tmp if fd is None else fd, dest))
                continue
            try:
                linked.append(_link_temporary(fd, dest))
            except OSError as exc:
                for made in linked:
                    made.unlink(missing_ok=True)
                raise FileAccessError.from_os_error(exc, dest) from None
            moves.append((linked[-1], dest))
        for source, dest in moves:
            try:
                if isinstance(source, int):
                    _link_into_place(source, dest)
                else:
                    os.replace(source, dest)
            except OSError as exc:
                raise FileAccessError.from_os_error(exc, dest) from None

    def abort(self) -> None:
        self._release(unlink=True)
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):  # something else was put there meanwhile
                d.rmdir()
        self._made_dirs.clear()

    def _release(self, unlink: bool) -> None:
        for tmp, dest, fd in self._pending:
            if fd is not None:
                os.close(fd)  # (an unnamed file not linked is gone with its last fd)
            elif tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)  # (put in place: no longer there)
            elif unlink or dest is None:
                tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            written = [dest for _, dest, _ in self._pending if dest is not None]
            self.abort()
            if isinstance(exc, OSError) and written and not isinstance(exc, BrokenPipeError):
                # A write failed (a full disk, a file size limit): name the output being
                # written, never its temporary (an unnamed file's /proc/self/fd path).
                raise FileAccessError(
                    f"cannot be written: {exc.strerror or exc}", written[-1]
                ) from None


_OWN_TAG = ".ckpt-"  # in the name of this package's named temporaries, before the pid
_MAX_UNNAMED = 256  # unnamed files stay open until commit: past this many, named ones


def _unnamed_file(directory: Path, mode: int) -> int | None:
    """An fd of a new unnamed file in `directory`, or None where there are none (or
    where one cannot be linked into place, which is learnt once per filesystem)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = os.open(directory, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # (the filesystem or kernel has no unnamed files)
        raise
    device = os.fstat(fd).st_dev
    if device not in _LINKABLE:
        _LINKABLE[device] = _try_link(directory, flag)
    if not _LINKABLE[device]:
        os.close(fd)
        return None
    os.fchmod(fd, mode)
    return fd


_LINKABLE: dict[int, bool] = {}  # by st_dev: whether unnamed files can be linked there


def _try_link(directory: Path, flag: int) -> bool:
    """Whether an unnamed file in `directory` can be linked (tried on a throwaway one: a
    file linked once and unlinked again cannot be linked any more)."""
    probe = directory / f".ckpt-link-probe{_OWN_TAG}{os.getpid()}.tmp"
    fd = os.open(directory, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        _link_fd(fd, probe)
    except OSError:
        return False
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return True


def _link_fd(fd: int, name: Path) -> None:
    """linkat(2) the open file `fd` to `name`: through /proc/self/fd (any user), else by
    the descriptor itself (AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH)."""
    try:
        os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)
        return
    except (FileExistsError, FileNotFoundError, PermissionError):
        raise
    except OSError as first:  # (EXDEV where /proc's links do not cross mounts)
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(name), _AT_EMPTY_PATH) != 0:
            number = ctypes.get_errno()
            if number == errno.EEXIST:
                raise FileExistsError(number, os.strerror(number), str(name)) from None
            raise first from None


_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000


def _link_into_place(fd: int, destination: Path) -> None:
    """Give the unnamed file `fd` the name `destination`, replacing what is there."""
    try:
        _link_fd(fd, destination)
        return
    except FileExistsError:
        pass
    # link() never replaces: link under a fresh name, then rename over the old file.
    tmp = _link_temporary(fd, destination)
    try:
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _link_temporary(fd: int, destination: Path) -> Path:
    """Give the unnamed file `fd` a fresh temporary name beside `destination` (one that
    `_remove_stale` removes once this process has ended)."""
    for attempt in range(100):
        tmp = destination.with_name(f".{destination.name}{_OWN_TAG}{os.getpid()}-{attempt}.tmp")
        try:
            _link_fd(fd, tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(destination))


def _own_directory(destination: Path) -> Path:
    prefix = f".{destination.name}{_OWN_TAG}{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=destination.parent))


def _replace_directory(tmp: Path, destination: Path) -> None:
    """`tmp` renamed to `destination`; an old one there moved aside, then removed."""
    aside = _own_directory(destination) if destination.exists() else None
    if aside is not None:
        os.replace(destination, aside / "old")
    os.replace(tmp, destination)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _remove_stale(destination: Path) -> None:
    """Remove named temporaries of `destination` left by processes of this package that
    no longer run (killed before they could clean up)."""
    prefixes = (f".{destination.name}{_OWN_TAG}", f".ckpt-link-probe{_OWN_TAG}")
    try:
        names = os.listdir(destination.parent)
    except OSError:
        return
    for name in names:
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None or not name.endswith(".tmp"):
            continue
        pid_text = name[len(prefix) :].split("-", 1)[0].removesuffix(".tmp")
        if pid_text.isdigit() and not _running(int(pid_text)):
            stale = destination.parent / name
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    stale.unlink()


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # (someone else's process, or no way to tell: leave its files)
    return True
