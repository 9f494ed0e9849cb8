"""Every tensor of a file as its own framework's reader gives it, keyed by path tuples:
what "values by key" compares. No code of this project is used here."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
Flat = dict[tuple[str, ...], np.ndarray]


def unescape(part: str) -> str:
    return part.replace(".S", "/").replace("..", ".")


def tf_values(path: Path) -> Flat:
    """tf.train.load_checkpoint; object keys lose `.ATTRIBUTES/VARIABLE_VALUE`, slots
    (`var/.OPTIMIZER_SLOT/opt/m`) become `opt/m/var`."""
    import tensorflow as tf

    if (path / "saved_model.pb").is_file():
        path = path / "variables" / "variables"
    reader = tf.train.load_checkpoint(str(path))
    out: Flat = {}
    for key in reader.get_variable_to_shape_map():
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        value = np.asarray(reader.get_tensor(key))
        name = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else key
        if "/.OPTIMIZER_SLOT/" in name:
            variable, rest = name.split("/.OPTIMIZER_SLOT/")
            optimizer, slot = rest.rsplit("/", 1)
            name = f"{optimizer}/{slot}/{variable}"
        out[tuple(unescape(p) for p in name.split("/"))] = value
    return out


def h5_datasets(path: Path) -> Flat:
    """A legacy `.h5` by its own lists: layer_names, then each layer's weight_names
    (without `:0`); any other file every dataset by its path."""
    import h5py

    out: Flat = {}
    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        if "layer_names" in group.attrs:
            for layer in _names(group.attrs["layer_names"]):
                for weight in _names(group[layer].attrs["weight_names"]):
                    out[tuple(weight.rsplit(":", 1)[0].split("/"))] = _array(group[layer][weight])
            if "optimizer_weights" in f:
                opt = f["optimizer_weights"]
                for weight in _names(opt.attrs["weight_names"]):
                    out[("optimizer_weights",) + tuple(weight.rsplit(":", 1)[0].split("/"))] = (
                        _array(opt[weight])
                    )
            return out
        f.visititems(
            lambda name, obj: (
                out.__setitem__(tuple(name.split("/")), _array(obj))
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return out


def _names(value) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]


def _array(ds) -> np.ndarray:
    value = ds[()]
    if ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        import ml_dtypes

        value = np.asarray(value).view(ml_dtypes.bfloat16).reshape(ds.shape)
    return np.asarray(value)


def keras3_values(path: Path) -> Flat:
    """A `.weights.h5` or `.keras` archive's datasets by path (via h5py)."""
    if path.suffix == ".keras":
        import tempfile

        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as tmp:
            archive.extract("model.weights.h5", tmp)
            return h5_datasets(Path(tmp) / "model.weights.h5")
    return h5_datasets(path)


def torch_array(t) -> np.ndarray:
    import ml_dtypes
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def torch_tree(obj: Any) -> Any:
    """A torch.load result with numpy leaves (tensors only; other values kept)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return torch_array(obj)
    if isinstance(obj, dict):
        return {str(k): torch_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return {str(i): torch_tree(v) for i, v in enumerate(obj)}
    return obj


def flatten(tree: Any, prefix: tuple[str, ...] = ()) -> Flat:
    """Array leaves of a nested dict (dict keys split on `.` for torch keys)."""
    out: Flat = {}
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for key, value in tree.items():
            parts = tuple(str(key).split(".")) if isinstance(key, str) else (str(key),)
            out.update(flatten(value, prefix + parts))
    elif isinstance(tree, np.ndarray) or hasattr(tree, "__array__") and hasattr(tree, "shape"):
        out[prefix] = np.asarray(tree)
    return out


def read(target: str, path: Path) -> Flat:
    """The output of a matrix target, by that target's own library."""
    if target in ("tf", "tf-names"):
        return tf_values(path)
    if target == "safetensors":
        from safetensors.numpy import load_file

        return {tuple(k.split(".")): v for k, v in load_file(str(path)).items()}
    if target == "sharded":
        from safetensors.numpy import load_file

        index = json.loads(path.read_text())
        out: Flat = {}
        for shard in sorted(set(index["weight_map"].values())):
            out.update(
                {tuple(k.split(".")): v for k, v in load_file(str(path.parent / shard)).items()}
            )
        return out
    if target == "torch":
        import torch

        return flatten(torch_tree(torch.load(path, weights_only=True)))
    if target == "npz":
        with np.load(path) as archive:
            return {tuple(k.split("/")): archive[k] for k in archive.files}
    if target == "flax":
        from flax import serialization

        return flatten(serialization.msgpack_restore(path.read_bytes()))
    if target in ("keras", "keras-archive"):
        return keras3_values(path)
    if target == "keras-h5":
        return h5_datasets(path)
    raise ValueError(target)
