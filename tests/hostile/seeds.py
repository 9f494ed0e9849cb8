"""Valid files written by the real frameworks: the seeds that the hostile corpus and the
fuzz targets damage. Each seed is a small model's weights in one format this project
reads; `write_seeds(directory)` writes them all (one framework import each) and returns
{seed name: (format, input path relative to `directory`)}."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Unusual dimensions, so that a shape can be found in a file's bytes and made to lie.
SHAPE = (7, 13)


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(14)
    return {
        "dense/kernel": rng.standard_normal(SHAPE).astype(np.float32),
        "dense/bias": rng.standard_normal(SHAPE[1]).astype(np.float32),
        "embed": rng.standard_normal((5, 3)).astype(np.float16),
    }


def _torch(directory: Path) -> dict[str, tuple[str, str]]:
    import torch
    from safetensors.torch import save_file

    state = {k: torch.from_numpy(v) for k, v in _arrays().items()}
    torch.save(state, directory / "model.pt")
    torch.save(state, directory / "legacy.pt", _use_new_zipfile_serialization=False)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    sharded = directory / "sharded"
    sharded.mkdir()
    weight_map, total = {}, 0
    for i, part in enumerate((["dense/kernel"], ["dense/bias", "embed"])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, sharded / name, metadata={"format": "pt"})
        for k in part:
            weight_map[k] = name
            total += state[k].numel() * state[k].element_size()
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    bins = directory / "sharded_bin"
    bins.mkdir()
    torch.save({"dense/kernel": state["dense/kernel"]}, bins / "pytorch_model-00001-of-00002.bin")
    torch.save(
        {k: state[k] for k in ("dense/bias", "embed")}, bins / "pytorch_model-00002-of-00002.bin"
    )
    (bins / "pytorch_model.bin.index.json").write_text(
        json.dumps(
            {
                "metadata": {"total_size": total},
                "weight_map": {
                    "dense/kernel": "pytorch_model-00001-of-00002.bin",
                    "dense/bias": "pytorch_model-00002-of-00002.bin",
                    "embed": "pytorch_model-00002-of-00002.bin",
                },
            },
            indent=2,
        )
    )
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # ("assuming the intent is to save in a single process")
        warnings.simplefilter("ignore")
        dcp.save({"model": state, "step": 7}, checkpoint_id=directory / "dcp")
    return {
        "dcp": ("dcp", "dcp"),
        "torch-zip": ("torch", "model.pt"),
        "torch-legacy": ("torch", "legacy.pt"),
        "safetensors": ("safetensors", "model.safetensors"),
        "sharded-safetensors": ("sharded", "sharded/model.safetensors.index.json"),
        "sharded-bin": ("sharded", "sharded_bin/pytorch_model.bin.index.json"),
    }


def _numpy(directory: Path) -> dict[str, tuple[str, str]]:
    arrays = {k.replace("/", "."): v for k, v in _arrays().items()}
    np.savez(directory / "arrays.npz", **arrays)
    np.savez_compressed(directory / "compressed.npz", **arrays)
    return {"npz": ("npz", "arrays.npz"), "npz-compressed": ("npz", "compressed.npz")}


def _tf(directory: Path) -> dict[str, tuple[str, str]]:
    import tensorflow as tf

    a = _arrays()
    ckpt = tf.train.Checkpoint(
        kernel=tf.Variable(a["dense/kernel"]),
        bias=tf.Variable(a["dense/bias"]),
        embed=tf.Variable(a["embed"]),
    )
    (directory / "tf").mkdir()
    ckpt.write(str(directory / "tf" / "ckpt"))
    return {"tf": ("tf", "tf/ckpt")}


def _keras_model(K):
    inputs = K.Input((SHAPE[0],))
    x = K.layers.Dense(SHAPE[1], name="dense")(inputs)
    outputs = K.layers.Dense(3, name="head")(x)
    return K.Model(inputs, outputs)


def _keras(directory: Path) -> dict[str, tuple[str, str]]:
    import keras
    import tf_keras

    legacy = _keras_model(tf_keras)
    legacy.save_weights(directory / "legacy_weights.h5")
    legacy.save(directory / "legacy_full.h5")
    model = _keras_model(keras)
    model.save_weights(directory / "model.weights.h5")
    model.save(directory / "model.keras")
    return {
        "keras-h5-weights": ("keras-h5", "legacy_weights.h5"),
        "keras-h5-full": ("keras-h5", "legacy_full.h5"),
        "keras-weights-h5": ("keras", "model.weights.h5"),
        "keras-archive": ("keras", "model.keras"),
    }


def _flax(directory: Path) -> dict[str, tuple[str, str]]:
    import jax
    from flax import linen as nn
    from flax import serialization

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.Dense(SHAPE[1])(x))

    params = Net().init(jax.random.PRNGKey(0), np.zeros((1, SHAPE[0]), np.float32))
    (directory / "model.msgpack").write_bytes(serialization.to_bytes(params))
    return {"flax": ("flax", "model.msgpack")}


def write_seeds(directory: Path) -> dict[str, tuple[str, str]]:
    directory.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, tuple[str, str]] = {}
    for make in (_numpy, _torch, _flax, _tf, _keras):
        seeds.update(make(directory))
    return seeds
