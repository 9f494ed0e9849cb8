"""Keras weight files: legacy HDF5 (`keras-h5`) and Keras 3 `.weights.h5` / `.keras` (`keras`).

Both are HDF5 through h5py. Content decides which is which: a root (or `model_weights`)
attribute `layer_names` means Keras 2; object groups with `vars` and no `layer_names`
mean Keras 3. The Keras 3 format is registered first so that its stricter sniff wins;
the Keras 2 sniff then claims any other HDF5 file, so that a file that is HDF5 but not a
Keras file gets an error saying exactly that.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py

from ...registry import Format, register
from . import legacy, v3
from .hdf5 import signature_offset


def _open_quietly(path: Path) -> h5py.File | None:
    try:
        return h5py.File(path, "r")
    except Exception:
        return None


def sniff_keras3(path: Path) -> bool:
    try:
        if not path.is_file():
            return False
        name = path.name.lower()
        if name.endswith(".json"):
            return v3.looks_like_index(path)
        if name.endswith(".keras"):
            with open(path, "rb") as f:  # a zip; a damaged one gets the reader's message
                return f.read(2) == b"PK"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
            return "config.json" in names and any(n.startswith("model.weights") for n in names)
        if signature_offset(path) is None:
            return False
        handle = _open_quietly(path)
        if handle is None:  # damaged HDF5: the Keras 2 reader explains what is wrong
            return False
        with handle:
            return v3.sniff_h5(handle)
    except Exception:
        return False


def sniff_legacy(path: Path) -> bool:
    try:
        return path.is_file() and signature_offset(path) is not None
    except Exception:
        return False


register(Format(
    "keras",
    "Keras 3 .weights.h5, sharded .weights.json, .keras archive",
    (".weights.h5", ".weights.json", ".keras"),
    sniff_keras3, v3.read, v3.write,
))
register(Format(
    "keras-h5",
    "Keras 2 legacy HDF5 weights and full-model .h5 (tf.keras, tf_keras)",
    (".h5", ".hdf5"),
    sniff_legacy, legacy.read, legacy.write,
))
