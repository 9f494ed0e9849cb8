"""An Orbax item's arrays, through TensorStore (the library Orbax itself writes them with).

Each array is a zarr array (v2: `.zarray`; v3: `zarr.json`), chunked as its shards were,
zstd-compressed or not, either in its own folder (`params.dense.kernel/`) or as keys of the
item's OCDBT database (`manifest.ocdbt`, its data files under `d/` and per-process
`ocdbt.process_N/`). Reading zarr chunks and OCDBT's b-tree is TensorStore's job: it is an
optional extra (`pip install 'ckpt-convert[orbax]'`), imported only here.

A TensorStore error is one line naming the array (its message without the spec it
appends); shapes and dtypes come from each array's metadata when the item is opened, in one
round of concurrent opens, and values one array at a time, whatever sharding wrote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convert.core.errors import FormatError, UnsupportedError

EXTRA = "pip install 'ckpt-convert[orbax]'"


def tensorstore() -> Any:
    try:
        import tensorstore as ts
    except ImportError:
        raise UnsupportedError(
            f"reading Orbax checkpoints needs TensorStore, the library Orbax uses: {EXTRA}"
        ) from None
    return ts


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(" [tensorstore_spec=")[0].split(" [source locations=")[0][:300]


class Arrays:
    """The arrays of one item folder."""

    def __init__(self, item: Path, zarr3: bool, all_chunks: bool):
        self.ts = tensorstore()
        self.item = item
        self.folder = str(item.resolve()) + "/"
        base: dict[str, Any] = {"driver": "file", "path": self.folder}
        self.ocdbt = (item / "manifest.ocdbt").is_file()
        self.base: dict[str, Any] = {"driver": "ocdbt", "base": base} if self.ocdbt else base
        self.driver = "zarr3" if zarr3 else "zarr"
        self.all_chunks = all_chunks
        # (one context: the OCDBT manifest and b-tree nodes are read once for all arrays;
        # no chunk cache, since each array is read once)
        self.context = self.ts.Context({"cache_pool": {"total_bytes_limit": 0}})

    def _spec(self, name: str) -> dict[str, Any]:
        if self.ocdbt:
            kvstore = {**self.base, "path": name + "/"}
        else:
            kvstore = {**self.base, "path": self.folder + name + "/"}
        # (where Orbax wrote every chunk, a missing one is an error, not fill values: a
        # shape the metadata overstates, or a chunk file deleted)
        return {
            "driver": self.driver,
            "kvstore": kvstore,
            "fill_missing_data_reads": not self.all_chunks,
        }

    def open(self, names: list[str]) -> dict[str, Any]:
        """Each array opened (its metadata read, no data), all at once."""
        futures = {
            name: self.ts.open(self._spec(name), open=True, read=True, context=self.context)
            for name in names
        }
        opened = {}
        for name, future in futures.items():
            try:
                store = future.result()
            except Exception as exc:  # (TensorStore raises ValueError and others)
                raise FormatError(f"array {name}: {_reason(exc)}", self.item) from None
            if any(origin != 0 for origin in store.domain.origin):
                raise FormatError(f"array {name} does not start at index 0", self.item)
            opened[name] = store
        return opened

    def read(self, name: str, store: Any) -> np.ndarray:
        try:
            return np.asarray(store.read().result())
        except Exception as exc:
            raise FormatError(f"array {name}: {_reason(exc)}", self.item) from None


def spec_of(store: Any) -> tuple[np.dtype, tuple[int, ...]]:
    return np.dtype(store.dtype.numpy_dtype), tuple(int(d) for d in store.shape)
