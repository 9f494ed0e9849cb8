"""A Graph written as an Orbax checkpoint that `orbax.checkpoint` restores: the tree in
`_METADATA` as `PyTreeCheckpointHandler` writes it, each array a zarr array (v2, not
compressed: weights barely compress, and Orbax reads either) in the item's OCDBT database,
written through TensorStore one tensor at a time; scalars as 0-d arrays, strings in
`_strings.json`, `None` as Orbax marks it. Lists read from Orbax are written as lists;
a Flax state dict's lists are maps keyed "0", "1", ... already, and stay so.

DST named by a number (`ckpts/1000`) is a `CheckpointManager` step: the tree goes in its
item `default/`, `_CHECKPOINT_METADATA` beside it, so that the manager in `ckpts/` finds it;
any other name is a `StandardCheckpointer` folder (the step is the item). The whole folder
is written under a temporary name and renamed into place: nothing half-written is ever
a step a manager would pick.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from convert.core.dtypes import STRING
from convert.core.errors import UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.tensor import Tensor
from convert.formats.orbax.arrays import tensorstore
from convert.formats.orbax.layout import CHECKPOINT_METADATA, METADATA
from convert.formats.orbax.metadata import SEQUENCE
from convert.formats.orbax.reader import SEQUENCE_NODE, STRINGS
from convert.io.outputs import OutputSet

_DICT = 2  # key_type of a dict key
# What restores the item when no args say (a manager's `restore(step)`): the handler Orbax
# names for `StandardSave`, or, for a tree with strings (which it refuses), the PyTree one.
_HANDLERS = "orbax.checkpoint._src.handlers."
STANDARD = _HANDLERS + "standard_checkpoint_handler.StandardCheckpointHandler"
PYTREE = _HANDLERS + "pytree_checkpoint_handler.PyTreeCheckpointHandler"
MANAGER_ITEM = "default"


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Any = None,
    report: Any = None,
    **options: Any,
) -> None:
    ts = tensorstore()
    leaves = list(_leaves(graph.root, (), ()))
    with OutputSet(overwrite, inputs) as out:
        folder = out.directory(path)
        item = folder / MANAGER_ITEM if path.name.isdigit() else folder
        item.mkdir(exist_ok=True)
        context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
        tree: dict[str, Any] = {}
        strings: dict[str, str] = {}
        tensors = nbytes = 0
        for keys, in_sequence, value in leaves:
            name = ".".join(keys)
            value_type = _write_leaf(ts, context, item, name, value, strings)
            tree[repr(keys)] = {
                "key_metadata": [
                    {"key": k, "key_type": SEQUENCE if s else _DICT}
                    for k, s in zip(keys, in_sequence, strict=True)
                ],
                "value_metadata": {
                    "value_type": value_type,
                    "skip_deserialize": value_type in ("None", "Dict", "List"),
                },
            }
            if isinstance(value, Tensor):
                tensors, nbytes = tensors + 1, nbytes + value.nbytes
                if progress is not None:
                    progress(value.nbytes)
        if strings:
            (item / STRINGS).write_text(json.dumps(strings))
        top = {
            "tree_metadata": tree,
            "use_ocdbt": True,
            "use_zarr3": False,
            "store_array_data_equal_to_fill_value": True,
            "custom_metadata": None,
        }
        (item / METADATA).write_text(json.dumps(top))
        now = time.time_ns()
        handler = PYTREE if strings else STANDARD
        (folder / CHECKPOINT_METADATA).write_text(
            json.dumps(
                {
                    "item_handlers": {MANAGER_ITEM: handler} if item != folder else handler,
                    "metrics": {},
                    "performance_metrics": {},
                    "init_timestamp_nsecs": now,
                    "commit_timestamp_nsecs": now,
                    "custom_metadata": {},
                }
            )
        )
    if report is not None:
        report.tensors, report.bytes = tensors, nbytes
        report.files.append(str(path))


def _leaves(node: Node, keys: tuple[str, ...], in_sequence: tuple[bool, ...]):
    """(keys, whether each indexes a list, value) for every leaf, in the graph's order; an
    empty node is a leaf of its own (Orbax keeps empty dicts and lists)."""
    listed = bool(node.meta.get(SEQUENCE_NODE))
    if not node.edges and not node.values and keys:
        yield keys, in_sequence, node
        return
    for name, value in node.values.items():
        yield (*keys, name), (*in_sequence, listed), value
    for name, child in node.edges.items():
        if isinstance(child, Node):
            yield from _leaves(child, (*keys, name), (*in_sequence, listed))
        else:
            yield (*keys, name), (*in_sequence, listed), child


def _write_leaf(ts: Any, context: Any, item: Path, name: str, value: Any, strings: dict) -> str:
    if isinstance(value, Node):
        return "List" if value.meta.get(SEQUENCE_NODE) else "Dict"
    if value is None:
        return "None"
    if isinstance(value, str):
        strings[name] = value
        return "string"
    if isinstance(value, Tensor):
        if value.dtype == STRING:
            raise UnsupportedError(f"Orbax keeps no string tensors ({name})", item)
        array, value_type = value.read(), "np.ndarray"
    elif isinstance(value, bool | int | float | np.generic):
        array, value_type = np.asarray(value), "scalar"
    else:
        raise UnsupportedError(f"Orbax keeps no {type(value).__name__} value ({name})", item)
    spec = {
        "driver": "zarr",
        "kvstore": {
            "driver": "ocdbt",
            "base": {"driver": "file", "path": str(item.resolve()) + "/"},
            "path": name + "/",
        },
        "metadata": {"compressor": None, "chunks": list(array.shape) or []},
    }
    store = ts.open(
        spec, create=True, dtype=ts.dtype(array.dtype.name), shape=array.shape, context=context
    ).result()
    store.write(array).result()
    return value_type
