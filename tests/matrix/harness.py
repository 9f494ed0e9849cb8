"""The conversion matrix: convert each source to each target, then load the result the way
that target's users would, and say whether it is *right* (loads, equal values or
predictions), *refused* (a one-line ConvertError, nothing written) or *wrong*.

Loading, by target and source:
- TF (`tf`, `tf-names`) from tf_keras: a fresh model's `load_weights` (or
  `tf.train.Checkpoint(model=fresh).read` for a checkpoint that had a `model` root), with
  `assert_existing_objects_matched`;
- `.h5`: tf_keras `load_weights`; `.weights.h5` / `.keras`: Keras 3;
- torch from torch: `load_state_dict(strict=True)`; Flax from Flax: `from_bytes`;
- otherwise: values by key (flat sources: the same keys, tied aliases may fold; framework
  models: every weight's value present and nothing foreign), and then the round trip back to
  the source's own format, loaded the source's way.
A model's weights must come back bit for bit; predictions must match as well.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import models, readers
from .sources import Source

# name -> (file name in the cell's directory, convert() options)
TARGETS: dict[str, tuple[str, dict[str, Any]]] = {
    "tf": ("ckpt", {"to": "tf"}),
    "tf-names": ("ckpt", {"to": "tf", "name_based": True}),
    "safetensors": ("model.safetensors", {}),
    "sharded": ("model.safetensors.index.json", {"max_shard_size": 300}),
    "torch": ("model.pt", {}),
    "npz": ("model.npz", {}),
    "flax": ("model.msgpack", {}),
    "keras": ("model.weights.h5", {}),
    "keras-archive": ("model.keras", {}),
    "keras-h5": ("model.h5", {}),
}
RIGHT, REFUSED, WRONG = "right", "refused", "wrong"


class Wrong(Exception):
    """The converted file does not load, or loads with other values."""


@dataclass
class Cell:
    source: str
    target: str
    status: str
    detail: str = ""
    back: str = ""  # the round trip to the source's own format: right/refused/wrong, or ""
    back_detail: str = ""

    @property
    def worst(self) -> str:
        return WRONG if WRONG in (self.status, self.back) else self.status


def convert_to(src: Path, target: str, directory: Path) -> tuple[Path | None, str]:
    """Run the conversion; (output, "") or (None, the refusal). A refusal that wrote
    anything, or took more than one line, is wrong."""
    from convert import api
    from convert.core.errors import ConvertError

    directory.mkdir(parents=True, exist_ok=True)
    name, options = TARGETS[target]
    out = directory / name
    try:
        api.convert(src, out, **options)
    except ConvertError as exc:
        left = sorted(p.name for p in directory.iterdir())
        if left:
            raise Wrong(f"refused but left {left}: {exc}") from None
        if "\n" in str(exc):
            raise Wrong(f"refused with more than one line: {exc}") from None
        return None, str(exc)
    return out, ""


def digest(value: np.ndarray) -> tuple:
    value = np.ascontiguousarray(value)
    dtype = value.dtype
    name = "bfloat16" if dtype.kind == "V" and dtype.itemsize == 2 else dtype.name
    return name, value.shape, hashlib.sha1(value.tobytes()).hexdigest()


# -- loading as the target's users do -----------------------------------------------------


def check(source: Source, target: str, out: Path, via: str | None = None) -> str:
    """Raise Wrong unless `out` loads right; returns how it was checked. `via`: the format
    a round trip went through."""
    loader = NATIVE.get((source.family, target))
    if loader is not None:
        how = loader(source, target, out, via)
        if how is not False:
            return how or "loaded"
    check_values(source, target, out, keys=source.family in ("torch", "safetensors", "flax"))
    return "values"


def _same_weights(source: Source, weights: list[np.ndarray], predicted: np.ndarray) -> None:
    if len(weights) != len(source.weights):
        raise Wrong(f"{len(weights)} weights loaded, the source has {len(source.weights)}")
    for i, (got, want) in enumerate(zip(weights, source.weights, strict=True)):
        if digest(got) != digest(want):
            raise Wrong(f"weight {i} {list(want.shape)} differs from the source's")
    if not np.allclose(predicted, source.reference, rtol=1e-5, atol=1e-5):
        raise Wrong("predictions differ from the source model's")


def _tf_keras(source: Source, target: str, out: Path, via: str | None = None):
    import tensorflow as tf
    import tf_keras

    if target == "keras-h5" or source.family == "tf_keras":
        fresh = models.keras_model(tf_keras, source.model, seed=999)
    else:
        return False
    try:
        # A .h5 records no root edge: back from one, a checkpoint is rooted at the model
        # (the conversion says so), as save_weights writes it.
        if target == "tf" and source.layout == "checkpoint" and via != "keras-h5":
            tf.train.Checkpoint(model=fresh).read(str(out)).assert_existing_objects_matched()
        elif target in ("tf", "tf-names"):
            fresh.load_weights(str(out)).assert_existing_objects_matched()
        else:
            fresh.load_weights(str(out))
    except Exception as exc:  # what a user would see
        raise Wrong(f"tf_keras cannot load it: {type(exc).__name__}: {_first_line(exc)}") from None
    _same_weights(source, [np.asarray(w) for w in fresh.weights], models.keras_predict(fresh))


def _keras3(source: Source, target: str, out: Path, via: str | None = None):
    import keras

    if source.model == "subclassed":
        return False
    try:
        if target == "keras-archive":
            fresh = keras.saving.load_model(str(out), compile=False)
        else:
            fresh = models.keras_model(keras, source.model, seed=999)
            fresh.load_weights(str(out))
    except Exception as exc:
        raise Wrong(f"Keras 3 cannot load it: {type(exc).__name__}: {_first_line(exc)}") from None
    _same_weights(source, [np.asarray(w) for w in fresh.weights], models.keras_predict(fresh))


def _torch(source: Source, target: str, out: Path, via: str | None = None):
    """`load_state_dict(strict=True)`; where a flat format folded tied weights or flattened
    a nested checkpoint, those losses are said and the rest is checked by key."""
    import torch

    fresh = models.torch_model(
        source.model, seed=999, dtype=torch.bfloat16 if source.name.endswith("bf16") else None
    )
    try:
        obj = torch.load(out, weights_only=True)
    except Exception as exc:
        raise Wrong(f"torch.load: {_first_line(exc)}") from None
    nested = source.extra.get("nested")
    if nested and not isinstance(obj.get(nested), dict):
        check_values(source, target, out, keys=True)
        return "values by key (lost: the nesting, non-tensor values)"
    state = obj[nested] if nested else obj
    try:
        result = fresh.load_state_dict(state, strict=False)
    except Exception as exc:
        raise Wrong(f"load_state_dict: {_first_line(exc)}") from None
    if result.unexpected_keys:
        raise Wrong(f"load_state_dict(strict=True): unexpected {result.unexpected_keys}")
    lost = ""
    if result.missing_keys:
        present = {digest(readers.torch_array(v)) for v in state.values()}
        prefix = (nested,) if nested else ()
        if any(
            digest(source.values[prefix + tuple(k.split("."))]) not in present
            for k in result.missing_keys
        ):
            raise Wrong(f"load_state_dict(strict=True): missing {result.missing_keys}")
        lost = f" (lost: tied aliases {result.missing_keys}, strict=True fails)"
    _same_weights(
        source,
        [readers.torch_array(t) for t in fresh.state_dict().values()],
        models.torch_predict(fresh),
    )
    if nested:  # the rest of the checkpoint: by key
        check_values(source, target, out, keys=True)
    return "loaded" + lost


def _flax(source: Source, target: str, out: Path, via: str | None = None):
    import jax
    from flax import serialization

    template = models.flax_variables(999)
    try:
        restored = serialization.from_bytes(template, out.read_bytes())
    except Exception as exc:
        raise Wrong(f"from_bytes: {_first_line(exc)}") from None
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(restored)]
    want = [np.asarray(v) for v in jax.tree_util.tree_leaves(template)]
    if [a.shape for a in leaves] != [a.shape for a in want]:
        raise Wrong("from_bytes gave another tree")
    check_values(source, target, out, keys=True)
    if not np.allclose(models.flax_predict(restored), source.reference, rtol=1e-5, atol=1e-5):
        raise Wrong("predictions differ from the source model's")


NATIVE = {
    **{("tf_keras", t): _tf_keras for t in ("tf", "tf-names", "keras-h5")},
    **{("tf_keras", t): _keras3 for t in ("keras", "keras-archive")},
    **{("keras3", t): _keras3 for t in ("keras", "keras-archive")},
    ("keras3", "keras-h5"): _tf_keras,
    ("torch", "torch"): _torch,
    ("flax", "flax"): _flax,
}


def check_values(source: Source, target: str, out: Path, keys: bool) -> None:
    """Every model weight's value is in the output and nothing else is; with `keys`, every
    output key is a source key with the same value (a missing key may be a folded alias)."""
    got = readers.read(target, out)
    have = {digest(v) for v in got.values()}
    known = {digest(v) for v in source.values.values()}
    for i, weight in enumerate(source.weights):
        if digest(weight) not in have:
            raise Wrong(f"weight {i} {list(weight.shape)} is missing")
    for key, value in got.items():
        if digest(value) not in known:
            raise Wrong(f"{'/'.join(key)} holds a value the source does not have")
        if keys and (key not in source.values or digest(source.values[key]) != digest(value)):
            raise Wrong(f"{'/'.join(key)}: not the source's key for this value")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else ""


# -- cells ----------------------------------------------------------------------------------


def run_cell(source: Source, target: str, directory: Path, round_trip: bool = True) -> Cell:
    shutil.rmtree(directory, ignore_errors=True)
    cell = Cell(source.name, target, REFUSED)
    try:
        out, refusal = convert_to(source.path, target, directory / "out")
        if out is None:
            cell.detail = refusal
            return cell
        cell.detail = check(source, target, out)
        cell.status = RIGHT
    except Wrong as exc:
        cell.status, cell.detail = WRONG, str(exc)
        return cell
    if round_trip and target != source.home:
        try:
            back, refusal = convert_to(out, source.home, directory / "back")
            if back is None:
                cell.back, cell.back_detail = REFUSED, refusal
            else:
                cell.back_detail = check(source, source.home, back, via=target)
                cell.back = RIGHT
        except Wrong as exc:
            cell.back, cell.back_detail = WRONG, str(exc)
    return cell
