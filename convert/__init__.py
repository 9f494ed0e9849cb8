"""convert: move neural-network weights between TensorFlow, Keras, PyTorch and Flax."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convert.api import Report, convert, load, migrate, save
from convert.core.errors import ConvertError

__all__ = [
    "ConvertError",
    "DiffReport",
    "Entry",
    "Graph",
    "Item",
    "ItemResult",
    "Node",
    "Report",
    "Slot",
    "Tensor",
    "batch",
    "convert",
    "diff",
    "load",
    "migrate",
    "save",
]
__version__ = "0.1.0"  # (pyproject.toml reads it from here)

if TYPE_CHECKING:
    from convert.batches.items import Item, ItemResult
    from convert.batches.run import batch
    from convert.compare import DiffReport, diff
    from convert.core.graph import Entry, Graph, Node, Slot
    from convert.core.tensor import Tensor

_LAZY = {
    "Entry": "core.graph",
    "Graph": "core.graph",
    "Node": "core.graph",
    "Slot": "core.graph",
    "Tensor": "core.tensor",
    "diff": "compare",
    "DiffReport": "compare",
    "batch": "batches.run",
    "Item": "batches.items",
    "ItemResult": "batches.items",
}


def __getattr__(name: str) -> Any:
    """The graph's classes, `diff` and `batch`, imported on first use: they bring numpy,
    which `ckpt --version` and `ckpt formats` do without."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
