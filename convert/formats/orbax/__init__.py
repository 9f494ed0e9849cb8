"""Orbax checkpoints (JAX, Flax NNX and Linen, MaxText, Gemma), read without JAX or Orbax.

The parts, each with its reason to be apart in its docstring:

- layout.py: which folders hold the trees (a `CheckpointManager` root, a step, an item);
- metadata.py: an item's `_METADATA`, the tree without its arrays;
- arrays.py: the arrays, zarr (v2 or v3) with or without OCDBT, through TensorStore (the
  optional extra `ckpt-convert[orbax]`);
- reader.py: the items as one Graph;
- writer.py: a Graph as a folder `orbax.checkpoint` restores (OCDBT, zarr v2).

The registry reads `sniff`, `read` and `write` from this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convert.core.graph import Graph


def sniff(path: Path) -> bool:
    from convert.formats.orbax.layout import is_orbax

    try:
        return is_orbax(path)
    except OSError:
        return False


def read(path: Path) -> Graph:
    from convert.formats.orbax.reader import read as read_orbax

    return read_orbax(path)


def write(graph: Graph, path: Path, **options: Any) -> None:
    from convert.formats.orbax.writer import write as write_orbax

    write_orbax(graph, path, **options)
