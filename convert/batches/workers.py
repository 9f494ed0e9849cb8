"""Worker processes for a batch: N processes, one item each at a time.

Not `concurrent.futures.ProcessPoolExecutor`: when one of its processes dies (a SIGBUS
from a file truncated while it was mapped, the kernel's OOM killer), every pending item
fails with it. Here each worker holds one item; a worker that dies fails that item alone,
and a new worker takes the next. Workers are spawned (a fresh interpreter, no inherited
threads or locks) and, on Linux, die with the batch's process (`PR_SET_PDEATHSIG`): a
killed batch leaves nothing running that would write an output after it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

from convert.batches.items import Item, ItemResult, OnItemDone, run_item


def run(
    items: list[Item],
    jobs: int,
    resume: bool,
    progress: OnItemDone | None,
    spellings: Mapping[str, str] | None,
) -> list[ItemResult]:
    context = multiprocessing.get_context("spawn")
    queue = deque(enumerate(items))
    results: list[ItemResult | None] = [None] * len(items)
    pool: list[_Worker] = []
    try:
        for _ in range(min(jobs, len(items))):
            pool.append(_Worker(context))
        for worker in pool:
            worker.give(queue, resume, spellings)
        while any(w.index is not None for w in pool):
            busy = [w for w in pool if w.index is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    result = worker.collect()
                    results[result[0]] = result[1]
                    if progress is not None:
                        progress(result[1])
                    if not worker.process.is_alive() and queue:
                        pool[pool.index(worker)] = worker = _Worker(context)
                    worker.give(queue, resume, spellings)
    finally:
        for worker in pool:
            worker.stop()
    return [r for r in results if r is not None]


class _Worker:
    def __init__(self, context: Any):
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, os.getpid()), daemon=True, name="ckpt-batch-worker"
        )
        self.process.start()
        child.close()
        self.index: int | None = None
        self.item: Item | None = None
        self.before: tuple[int, int] | None = None

    def give(self, queue: deque, resume: bool, spellings: Mapping[str, str] | None) -> None:
        """The next item, if any is left (and this worker is alive)."""
        self.index = self.item = None
        if not queue or not self.process.is_alive():
            return
        self.index, self.item = queue.popleft()
        self.before = _stamp(self.item.dst)
        with contextlib.suppress(OSError):  # (died meanwhile: collect() reports it)
            self.conn.send((self.item, resume, dict(spellings or {})))

    def collect(self) -> tuple[int, ItemResult]:
        """The result of this worker's item, or its failure if the worker died."""
        index, item = self.index, self.item
        assert index is not None and item is not None  # (asked only of a busy worker)
        try:
            if self.conn.poll():
                return index, self.conn.recv()
        except (EOFError, OSError):
            pass
        self.process.join(5)
        why = _death(self.process.exitcode)
        if _stamp(item.dst) != self.before:  # died between its commit and its report
            why = why.replace(
                "while converting this item",
                "after writing this item's output (whole: outputs appear at "
                "once), before reporting it",
            )
        return index, ItemResult(
            item.src, item.dst, "failed", why, worker=f"local:{self.process.pid}"
        )

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _stamp(dst: str) -> tuple[int, int] | None:
    """Which file the output is now (inode, change time), or None: a TF output is named by
    its prefix, its `.index` written last."""
    for path in (dst, dst.rstrip("/") + ".index", os.path.join(dst, "checkpoint")):
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not os.path.isdir(path):
            return info.st_ino, info.st_ctime_ns
    return None


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process was killed by {name} while converting this item"
    return f"the worker process ended (exit status {code}) while converting this item"


def _serve(conn: Connection, parent: int) -> None:
    """A worker's loop: items in, results out, until told to stop or the batch is gone."""
    _die_with_parent()
    if os.getppid() != parent:  # (the batch ended before the line above took effect)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (Ctrl-C reaches the batch, which stops us)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        item, resume, spellings = message
        conn.send(run_item(item, resume, spellings))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the batch's process ends, SIGKILL too."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
