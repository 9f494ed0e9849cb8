"""Keras weight files: legacy HDF5 (`keras-h5`) and Keras 3 `.weights.h5` / `.keras` (`keras`).

Both are HDF5 through h5py. Content decides which is which: a root (or `model_weights`)
attribute `layer_names` means Keras 2; object groups with `vars` and no `layer_names`
mean Keras 3. The Keras 3 format is sniffed first so that its stricter sniff wins;
the Keras 2 sniff then claims any other HDF5 file, so that a file that is HDF5 but not a
Keras file gets an error saying exactly that.

The registry calls `keras3_*` and `legacy_*` here; h5py and the readers are imported
only when a file is HDF5 (listing a TensorFlow checkpoint never loads them).

- v3_reader.py / v3_writer.py: Keras 3 `.weights.h5`, sharded `.weights.json`, `.keras`;
- legacy_reader.py / legacy_writer.py: Keras 2 `.h5` (weights-only and full-model; the
  reader also reads a shard of a Hugging Face sharded TF set, `legacy_shard_key`);
- layout.py: a model config's layers <-> Keras 2 layer/weight order and Keras 3 object
  paths (what lets one be written as the other);
- tfgraph.py: a tf_keras model found in a TF object checkpoint (a `.h5`'s order);
- hdf5_files.py (opening, with probe.py's crash containment), hdf5_reader.py,
  hdf5_writer.py: the h5py plumbing both formats share.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from convert.core.graph import Graph


def _open_quietly(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception:
        return None


def keras3_sniff(path: Path) -> bool:
    try:
        if not path.is_file():
            return False
        name = path.name.lower()
        if name.endswith(".json"):
            from convert.formats.keras.v3_reader import looks_like_index

            return looks_like_index(path)
        if name.endswith(".keras"):
            with open(path, "rb") as f:  # a zip; a damaged one gets the reader's message
                return f.read(2) == b"PK"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
            return "config.json" in names and any(n.startswith("model.weights") for n in names)
        from convert.formats.keras.hdf5_files import signature_offset

        if signature_offset(path) is None:
            return False
        handle = _open_quietly(path)
        if handle is None:  # damaged HDF5: the Keras 2 reader explains what is wrong
            return False
        from convert.formats.keras.v3_reader import sniff_h5

        with handle:
            return sniff_h5(handle)
    except Exception:
        return False


def keras3_read(path: Path) -> Graph:
    from convert.formats.keras import v3_reader

    return v3_reader.read(path)


def keras3_write(graph: Graph, path: Path, **options: Any) -> None:
    from convert.formats.keras import v3_writer

    v3_writer.write(graph, path, **options)


def legacy_read(path: Path) -> Graph:
    from convert.formats.keras import legacy_reader

    return legacy_reader.read(path)


def legacy_shard_key(weight_name: str) -> str:
    """The `key` a shard of a Hugging Face sharded TF set gives the weight its index names
    `weight_name` (the hook `sharded.py` asks a shard's format for): its dataset's name."""
    from convert.formats.keras import legacy_reader

    return legacy_reader.hf_shard_name(weight_name)


def legacy_write(graph: Graph, path: Path, **options: Any) -> None:
    from convert.formats.keras import legacy_writer

    legacy_writer.write(graph, path, **options)


def legacy_sniff(path: Path) -> bool:
    from convert.formats.keras.hdf5_files import signature_offset

    try:
        return path.is_file() and signature_offset(path) is not None
    except Exception:
        return False
