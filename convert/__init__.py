"""convert: move neural-network weights between TensorFlow, Keras, PyTorch and Flax."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import Report, convert, load, migrate, save
from .errors import ConvertError

__all__ = ["ConvertError", "DiffReport", "Entry", "Graph", "Item", "ItemResult", "Node",
           "Report", "Slot", "Tensor", "batch", "convert", "diff", "load", "migrate", "save"]
__version__ = "0.1.0"  # (pyproject.toml reads it from here)

if TYPE_CHECKING:
    from .batches import Item, ItemResult, batch
    from .compare import DiffReport, diff
    from .graph import Entry, Graph, Node, Slot
    from .tensor import Tensor

_LAZY = {"Entry": "graph", "Graph": "graph", "Node": "graph", "Slot": "graph",
         "Tensor": "tensor", "diff": "compare", "DiffReport": "compare", "batch": "batches",
         "Item": "batches", "ItemResult": "batches"}


def __getattr__(name: str) -> Any:
    """The graph's classes, `diff` and `batch`, imported on first use: they bring numpy,
    which `ckpt --version` and `ckpt formats` do without."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
