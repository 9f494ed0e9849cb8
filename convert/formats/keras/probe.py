"""A first walk of an HDF5 file in a forked child, before this process trusts libhdf5
with it: some damaged files make libhdf5 loop forever (a cycle in its metadata, met while
reading an attribute) or crash, inside C code that holds the GIL, where no signal handler
or thread of ours can run. The child opens the file as the reader will and touches every
object, attribute, dtype and shape; if it takes longer than `PROBE_SECONDS` it is killed
and the file refused, and if it dies of a signal the file is refused too. A file whose
walk ends is then read here as usual (the same bytes parse the same way).

Only where os.fork exists (elsewhere the probe is skipped); each file is probed once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from convert.core.errors import FormatError

PROBE_SECONDS = 3.0
_probed: set[tuple] = set()


def _walk(handle: Any) -> None:
    def visit(_name: str, obj: Any) -> None:
        for key in obj.attrs:
            obj.attrs[key]
        if hasattr(obj, "dtype"):
            obj.dtype, obj.shape, obj.chunks, obj.compression  # noqa: B018

    for key in handle.attrs:
        handle.attrs[key]
    handle.visititems(visit)


def probe(open_file: Callable[[], Any], key: tuple, label: str) -> None:
    """Walk what `open_file()` opens (an h5py.File) in a child process; raise a
    FormatError naming `label` if the walk hangs or crashes. Errors the walk raises are
    left for the real read to report."""
    if not hasattr(os, "fork") or key in _probed:
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns to the caller's code
        try:
            handle = open_file()
            _walk(handle)
        except BaseException:  # noqa: BLE001  (the parent's own read says what is wrong)
            pass
        os._exit(0)
    status = _wait(pid, PROBE_SECONDS)
    if status is None:
        raise FormatError(
            f"libhdf5 did not finish walking its structures within "
            f"{PROBE_SECONDS:g} s (a loop in damaged metadata); refused",
            label,
        )
    if os.WIFSIGNALED(status):
        raise FormatError(
            f"libhdf5 crashed walking its structures (signal "
            f"{os.WTERMSIG(status)}): the file is damaged",
            label,
        )
    _probed.add(key)


def _wait(pid: int, seconds: float) -> int | None:
    """The child's wait status, or None after killing it when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    pause = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
