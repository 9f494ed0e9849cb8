"""Many conversions at once (`ckpt batch`, `convert.batch`): the items of `items.py` run
in worker processes (`workers.py`) or on a Dask cluster (`on_dask.py`), with their results
in the items' order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from convert.batches.items import (
    BatchError,
    Item,
    ItemResult,
    OnItemDone,
    absolute,
    check_items,
    remove_stale_temporaries,
    settle_format,
    to_item,
)
from convert.core.notes import binary_size

EXECUTORS = ("local", "dask")


def batch(
    items: Iterable[Item | Mapping[str, Any]],
    *,
    jobs: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    progress: OnItemDone | None = None,
    spellings: Mapping[str, str] | None = None,
) -> list[ItemResult]:
    """Run every item; the results are in the items' order. `jobs` worker processes
    (default: the cores this process may use); `executor="dask"` sends the items to the
    `dask.distributed` scheduler at `scheduler` (`"local:N"`: a LocalCluster of N
    processes). `resume` skips items whose output is complete from an earlier run."""
    todo = [settle_format(to_item(i)) for i in items]
    if executor not in EXECUTORS:
        raise BatchError(f"unknown executor {executor!r}; one of {', '.join(EXECUTORS)}")
    if scheduler is not None and executor != "dask":
        raise BatchError("a scheduler goes with the dask executor")
    check_items(todo)
    if jobs is not None and jobs < 1:
        raise BatchError("jobs must be at least 1")
    given = {(a.src, a.dst): (i.src, i.dst) for i, a in ((i, absolute(i)) for i in todo)}
    todo = [absolute(i) for i in todo]
    if not todo:
        return []
    if resume:
        remove_stale_temporaries(todo)
    _make_folders(todo)

    def as_given(result: ItemResult) -> ItemResult:
        # Workers get absolute paths (their working folder may differ); people read theirs.
        result.src, result.dst = given.get((result.src, result.dst), (result.src, result.dst))
        return result

    told = None if progress is None else (lambda result: progress(as_given(result)))
    if executor == "dask":
        from convert.batches import on_dask

        results = on_dask.run(todo, scheduler, resume, told, spellings)
    else:
        from convert.batches import workers

        count = jobs if jobs is not None else default_jobs()
        results = workers.run(todo, count, resume, told, spellings)
    return [as_given(r) for r in results]


def _make_folders(items: list[Item]) -> None:
    """The outputs' folders, made once here: two workers making one folder at once would
    race (one finds it made; and one abandoning its output removes it under the other)."""
    for item in items:
        with contextlib.suppress(OSError):  # (the item says why, when it runs)
            Path(item.dst).parent.mkdir(parents=True, exist_ok=True)


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def line(result: ItemResult) -> str:
    """An item's result as `ckpt batch` prints it."""
    if result.status == "failed":
        return f"failed   {result.error}"
    if result.status == "skipped":
        return f"skipped  {result.src} -> {result.dst} (complete from an earlier run)"
    return (
        f"ok       {result.src} -> {result.dst}: {result.tensors} tensors, "
        f"{binary_size(result.bytes)}, {result.seconds:.1f} s"
    )


def summary(results: list[ItemResult], seconds: float) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    return (
        f"{len(results)} items: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" in {seconds:.1f} s"
    )
