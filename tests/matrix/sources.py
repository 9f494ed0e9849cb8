"""The matrix's sources: one file (or directory) per kind, each saved by its framework's own
call, with what is needed to load a converted file back the way that framework's users do.

`build(directory, names)` writes the sources (once per session) and returns them by name."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import models

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass
class Source:
    name: str
    family: str  # tf_keras | keras3 | torch | safetensors | flax
    path: Path
    home: str  # the matrix target that is this source's own format (for round trips)
    model: str = ""  # models.KERAS_MODELS / torch_modules kind
    layout: str = ""  # tf_keras TF files: "checkpoint" (tf.train.Checkpoint) or "model"
    reference: Any = None  # predictions of the saved model, or its exact values
    values: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)  # every tensor
    weights: list[np.ndarray] = field(default_factory=list)  # the model's own weights
    extra: dict[str, Any] = field(default_factory=dict)


def _tf_keras_sources(directory: Path, wanted: Callable[[str], bool]) -> list[Source]:
    import tensorflow as tf
    import tf_keras as K

    found = []

    def add(name, kind, trained, save, layout="", home="tf", seed=None):
        if not wanted(name):
            return
        model = models.keras_model(K, kind, seed or 10 + len(found), trained)
        path = save(model, directory / name)
        weights = [np.asarray(w) for w in model.weights]
        found.append(
            Source(
                name,
                "tf_keras",
                Path(path),
                home,
                kind,
                layout,
                models.keras_predict(model),
                weights=weights,
            )
        )

    def checkpoint(with_optimizer):
        def save(model, where):
            objects = {"model": model}
            if with_optimizer:
                objects["optimizer"] = model.optimizer
            return tf.train.Checkpoint(**objects).write(str(where / "ckpt"))

        return save

    def weights_prefix(model, where):
        model.save_weights(str(where / "weights"))
        return where / "weights"

    def h5_weights(model, where):
        where.mkdir(parents=True)
        model.save_weights(str(where / "w.h5"))
        return where / "w.h5"

    def h5_full(model, where):
        where.mkdir(parents=True)
        model.save(str(where / "full.h5"))
        return where / "full.h5"

    def saved_model(model, where):
        model.save(str(where), save_format="tf")
        return where

    add("tfk-checkpoint", "sequential", False, checkpoint(False), "checkpoint")
    add("tfk-checkpoint+opt", "sequential", True, checkpoint(True), "checkpoint")
    add("tfk-prefix", "sequential", False, weights_prefix, "model")
    add("tfk-prefix+opt", "sequential", True, weights_prefix, "model")
    add("tfk-prefix-nested", "nested", False, weights_prefix, "model")
    add("tfk-h5", "sequential", False, h5_weights, home="keras-h5")
    add("tfk-h5-nested", "nested", False, h5_weights, home="keras-h5")
    add("tfk-h5-subclassed", "subclassed", False, h5_weights, home="keras-h5")
    add("tfk-h5-full", "sequential", False, h5_full, home="keras-h5")
    add("tfk-h5-full+opt", "sequential", True, h5_full, home="keras-h5")
    add("tfk-h5-full-nested", "nested", False, h5_full, home="keras-h5")
    add("tfk-savedmodel", "sequential", False, saved_model, "model")
    add("tfk-savedmodel+opt", "sequential", True, saved_model, "model")
    for source in found:
        source.values = _tf_or_h5_values(source.path)
    return found


def _tf_or_h5_values(path: Path) -> dict[tuple[str, ...], np.ndarray]:
    from . import readers

    if path.suffix == ".h5":
        return readers.h5_datasets(path)
    return readers.tf_values(path)


def _keras3_sources(directory: Path, wanted: Callable[[str], bool]) -> list[Source]:
    import keras as K

    found = []
    for name, suffix, trained in (
        ("k3-weights.h5", ".weights.h5", False),
        ("k3-keras", ".keras", True),
    ):
        if not wanted(name):
            continue
        model = models.keras_model(K, "sequential", 30 + len(found), trained)
        (directory / name).mkdir(parents=True)
        path = directory / name / f"model{suffix}"
        (model.save_weights if suffix == ".weights.h5" else model.save)(str(path))
        home = "keras" if suffix == ".weights.h5" else "keras-archive"
        from . import readers

        found.append(
            Source(
                name,
                "keras3",
                path,
                home,
                "sequential",
                reference=models.keras_predict(model),
                values=readers.keras3_values(path),
                weights=[np.asarray(w) for w in model.weights],
            )
        )
    return found


def _torch_sources(directory: Path, wanted: Callable[[str], bool]) -> list[Source]:
    import torch

    from . import readers

    found = []

    def add(name, kind, payload, dtype=None, extra=None):
        if not wanted(name):
            return
        module = models.torch_model(kind, 50 + len(found), dtype)
        (directory / name).mkdir(parents=True)
        path = directory / name / "model.pt"
        obj = payload(module)
        torch.save(obj, path)
        found.append(
            Source(
                name,
                "torch",
                path,
                "torch",
                kind,
                reference=models.torch_predict(module),
                values=readers.flatten(readers.torch_tree(obj)),
                weights=[readers.torch_array(t) for t in module.state_dict().values()],
                extra=extra or {},
            )
        )

    def training(module):
        opt = torch.optim.Adam(module.parameters(), lr=0.01)
        module.train()
        module(torch.from_numpy(models.inputs())).sum().backward()
        opt.step()
        module.eval()
        return {"model": module.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}

    add("torch-state-dict", "net", lambda m: m.state_dict())
    add("torch-training", "net", training, extra={"nested": "model"})
    add("torch-tied", "tied", lambda m: m.state_dict())
    add("torch-bf16", "net", lambda m: m.state_dict(), torch.bfloat16)
    for source in found:  # the training step changed the module: take its saved weights
        if source.extra.get("nested"):
            obj = torch.load(source.path, weights_only=True)
            source.weights = [readers.torch_array(t) for t in obj["model"].values()]
            fresh = models.torch_model(source.model, 0)
            fresh.load_state_dict(obj["model"])
            source.reference = models.torch_predict(fresh)
    return found


def _safetensors_source(directory: Path, wanted: Callable[[str], bool]) -> list[Source]:
    if not wanted("safetensors"):
        return []
    import ml_dtypes
    from safetensors.numpy import save_file

    rng = np.random.default_rng(70)
    values = {
        "encoder.layer.0.weight": rng.standard_normal((4, 3)).astype("float32"),
        "encoder.layer.0.bias": rng.standard_normal(4).astype("float16"),
        "encoder.norm.weight": rng.standard_normal(4).astype(ml_dtypes.bfloat16),
        "head.weight": rng.standard_normal((2, 4)).astype("float64"),
        "steps": np.array(7, dtype="int64"),
    }
    (directory / "safetensors").mkdir(parents=True)
    path = directory / "safetensors" / "model.safetensors"
    save_file(values, str(path), metadata={"format": "pt"})
    flat = {tuple(k.split(".")): v for k, v in values.items()}
    return [
        Source(
            "safetensors",
            "safetensors",
            path,
            "safetensors",
            values=flat,
            weights=list(values.values()),
        )
    ]


def _flax_source(directory: Path, wanted: Callable[[str], bool]) -> list[Source]:
    if not wanted("flax"):
        return []
    from flax import serialization

    from . import readers

    variables = models.flax_variables(80)
    (directory / "flax").mkdir(parents=True)
    path = directory / "flax" / "model.msgpack"
    path.write_bytes(serialization.to_bytes(variables))
    values = readers.flatten(variables)
    return [
        Source(
            "flax",
            "flax",
            path,
            "flax",
            reference=models.flax_predict(variables),
            values=values,
            weights=list(values.values()),
        )
    ]


BUILDERS = (_tf_keras_sources, _keras3_sources, _torch_sources, _safetensors_source, _flax_source)


def build(directory: Path, names: set[str] | None = None) -> dict[str, Source]:
    """Every source (or those named), written under `directory`."""
    wanted = (lambda n: True) if names is None else (lambda n: n in names)
    found: dict[str, Source] = {}
    for builder in BUILDERS:
        for source in builder(directory, wanted):
            found[source.name] = source
    return found
