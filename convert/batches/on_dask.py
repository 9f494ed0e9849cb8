"""A batch on a `dask.distributed` cluster: each item is one task, run by the same
`batches.run_item` as a local worker runs, and its result names the Dask worker's address.

`dask[distributed]` is an optional extra (`pip install ckpt-convert[dask]`). The workers
need this package installed and the items' paths on a file system they all see (paths are
sent absolute). `local:N` starts a LocalCluster of N worker processes on this machine,
listening on the loopback interface only, and closes it at the end.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

from convert.batches.items import BatchError, Item, ItemResult, OnItemDone, run_item

_MISSING = (
    "the dask executor needs dask.distributed, which is not installed: "
    "pip install 'ckpt-convert[dask]'"
)


def run(
    items: list[Item],
    scheduler: str | None,
    resume: bool,
    progress: OnItemDone | None,
    spellings: Mapping[str, str] | None,
) -> list[ItemResult]:
    try:
        import distributed
    except ImportError:
        raise BatchError(_MISSING) from None
    if not scheduler:
        raise BatchError(
            "the dask executor needs a scheduler: its address "
            "(tcp://host:8786) or local:N for a cluster on this machine"
        )
    with ExitStack() as stack:
        client = _client(distributed, scheduler, stack)
        return _submit(distributed, client, items, resume, progress, dict(spellings or {}))


def _client(distributed: Any, scheduler: str, stack: ExitStack) -> Any:
    local = re.fullmatch(r"local:(\d+)", scheduler)
    try:
        if local:
            workers = int(local.group(1))
            if workers < 1:
                raise BatchError("local:N needs at least one worker")
            # (its HTTP server takes another port when 8787 is taken: no need to say so)
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            )
            return stack.enter_context(distributed.Client(cluster))
        return stack.enter_context(distributed.Client(scheduler, timeout=30))
    except (OSError, TimeoutError, ValueError) as exc:
        raise BatchError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def _submit(
    distributed: Any,
    client: Any,
    items: list[Item],
    resume: bool,
    progress: OnItemDone | None,
    spellings: dict[str, str],
) -> list[ItemResult]:
    batch_id = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            run_item, item, resume, spellings, pure=False, key=f"ckpt-batch-{batch_id}-{i}"
        ): i
        for i, item in enumerate(items)
    }
    results: list[ItemResult | None] = [None] * len(items)
    for future in distributed.as_completed(futures):
        index = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # (the task's worker died more often than Dask retries)
            item = items[index]
            result = ItemResult(
                item.src, item.dst, "failed", f"the Dask task failed: {type(exc).__name__}: {exc}"
            )
        results[index] = result
        if progress is not None:
            progress(result)
    return [r for r in results if r is not None]
