"""Golden Keras files, written once per session by the real tf_keras (Keras 2) and Keras 3.

Every model is tiny, its weights are randomised (BatchNormalization statistics too) so
that no value is a default, and a builder makes a FRESH model of the same architecture
(differently initialised) to load our files into.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass
class Golden:
    """A model, how to build another like it, an input, its output, and its files."""

    model: Any
    build: Callable[[], Any]
    x: Any
    y: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="session")
def tk():
    import tf_keras

    return tf_keras


@pytest.fixture(scope="session")
def k3():
    import keras

    assert keras.backend.backend() == "tensorflow"
    return keras


def predict(model, x) -> np.ndarray:
    out = model(x, training=False)
    return np.asarray(out)


def randomize(model, seed: int) -> None:
    """Distinct random values in every weight; variances positive."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        current = np.asarray(w)
        value = rng.standard_normal(current.shape)
        if "variance" in w.name or "variance" in getattr(w, "path", ""):
            value = np.abs(value) + 0.5
        values.append(value.astype(current.dtype))
    model.set_weights(values)


def _all_layers(K):
    """Embedding, LSTM, GRU, MultiHeadAttention, Conv2D, BatchNormalization, a nested
    Sequential and Dense, as a two-input functional model. Layers are named, so that a
    fresh model has the same names (for `load_weights(by_name=True)`)."""
    L = K.layers
    tokens = K.Input((5,), dtype="int32", name="tokens")
    e = L.Embedding(7, 4, name="embed")(tokens)
    r = L.LSTM(3, return_sequences=True, name="lstm")(e)
    g = L.GRU(4, return_sequences=True, name="gru")(r)
    a = L.MultiHeadAttention(num_heads=2, key_dim=2, name="attention")(g, g)
    image = K.Input((4, 4, 2), name="image")
    c = L.Conv2D(3, 3, name="conv")(image)
    c = L.BatchNormalization(name="norm")(c)
    c = L.Flatten(name="flat_image")(c)
    inner = K.Sequential(
        [
            L.Dense(3, name="inner_dense"),
            L.BatchNormalization(name="inner_bn"),
            L.Dense(2, name="inner_out"),
        ],
        name="inner",
    )
    c = inner(c)
    out = L.Concatenate(name="concat")([L.Flatten(name="flat_seq")(a), c])
    out = L.Dense(2, name="head")(out)
    return K.Model([tokens, image], out)


def _all_inputs():
    rng = np.random.default_rng(7)
    return [
        rng.integers(0, 7, size=(2, 5)).astype("int32"),
        rng.standard_normal((2, 4, 4, 2)).astype("float32"),
    ]


def _sequential(K):
    L = K.layers
    return K.Sequential(
        [
            K.Input((4,)),
            L.Dense(3, name="first"),
            L.BatchNormalization(name="bn"),
            L.Dense(2, name="last"),
        ]
    )


def _seq_input():
    return np.random.default_rng(3).standard_normal((3, 4)).astype("float32")


def _subclassed_tk(K):
    class Sub(K.Model):
        def __init__(self):
            super().__init__()
            self.a = K.layers.Dense(3)
            self.blocks = [K.layers.Dense(3), K.layers.Dense(2)]
            self.norm = K.layers.BatchNormalization()
            self.scale = self.add_weight(name="scale", shape=(2,))  # top-level weight

        def call(self, x, training=False):
            x = self.a(x)
            for block in self.blocks:
                x = block(x)
            return self.norm(x, training=training) * self.scale

    model = Sub()
    model(_seq_input())
    return model


def _subclassed_k3(K):
    class Sub(K.Model):
        def __init__(self):
            super().__init__()
            self.a = K.layers.Dense(3)
            self.blocks = [K.layers.Dense(3), [K.layers.Dense(3)], {"x": K.layers.Dense(2)}]
            self.norm = K.layers.BatchNormalization()

        def call(self, x, training=False):
            x = self.a(x)
            x = self.blocks[0](x)
            x = self.blocks[1][0](x)
            x = self.blocks[2]["x"](x)
            return self.norm(x, training=training)

    model = Sub()
    model(_seq_input())
    return model


def _bfloat16(K):
    L = K.layers
    return K.Sequential(
        [
            K.Input((4,)),
            L.Dense(3, dtype="bfloat16"),
            L.BatchNormalization(dtype="bfloat16"),
            L.Dense(2, dtype="bfloat16"),
        ]
    )


def _make(build, x, seed: int) -> Golden:
    model = build()
    randomize(model, seed)
    return Golden(model, build, x, predict(model, x))


def _train_one_step(model, x, seed: int) -> None:
    model.compile(optimizer="adam", loss="mse")
    target = np.random.default_rng(seed).standard_normal(np.asarray(model(x)).shape)
    model.fit(x, target.astype("float32"), epochs=1, batch_size=len(target), verbose=0)


@pytest.fixture(scope="session")
def goldens(tk, k3, tmp_path_factory) -> dict[str, Golden]:
    """All golden models and the files the real frameworks wrote from them."""
    d = tmp_path_factory.mktemp("golden")
    g: dict[str, Golden] = {}

    g["tk_seq"] = _make(lambda: _sequential(tk), _seq_input(), 1)
    g["tk_all"] = _make(lambda: _all_layers(tk), _all_inputs(), 2)
    g["tk_sub"] = _make(lambda: _subclassed_tk(tk), _seq_input(), 3)
    for name in ("tk_seq", "tk_all", "tk_sub"):
        g[name].files["h5"] = d / f"{name}.h5"
        g[name].model.save_weights(g[name].files["h5"])

    full = _make(lambda: _all_layers(tk), _all_inputs(), 4)
    _train_one_step(full.model, full.x, 40)
    full.y = predict(full.model, full.x)
    full.files["full"] = d / "tk_full.h5"
    full.model.save(full.files["full"])
    g["tk_full"] = full

    g["k3_seq"] = _make(lambda: _sequential(k3), _seq_input(), 5)
    g["k3_sub"] = _make(lambda: _subclassed_k3(k3), _seq_input(), 6)
    g["k3_bf16"] = _make(lambda: _bfloat16(k3), _seq_input(), 7)
    k3_all = _make(lambda: _all_layers(k3), _all_inputs(), 8)
    _train_one_step(k3_all.model, k3_all.x, 80)
    k3_all.y = predict(k3_all.model, k3_all.x)
    g["k3_all"] = k3_all
    for name in ("k3_seq", "k3_sub", "k3_bf16", "k3_all"):
        g[name].files["weights"] = d / f"{name}.weights.h5"
        g[name].model.save_weights(g[name].files["weights"])
    for name in ("k3_seq", "k3_all", "k3_bf16"):
        g[name].files["keras"] = d / f"{name}.keras"
        g[name].model.save(g[name].files["keras"])
    g["k3_bf16"].files["full"] = d / "k3_bf16_full.h5"
    g["k3_bf16"].model.save(g["k3_bf16"].files["full"])
    k3_all.files["full"] = d / "k3_all_full.h5"
    k3_all.model.save(k3_all.files["full"])
    k3_all.files["sharded"] = d / "k3_all_sharded.weights.json"
    k3_all.model.save_weights(k3_all.files["sharded"], max_shard_size=1e-6)  # ~1 KiB shards
    return g


@pytest.fixture(scope="session")
def k3_reference_of_tk_full(k3, goldens) -> Golden:
    """A Keras 3 model of the tf_keras full model's architecture, loaded by Keras 3 itself
    from the tf_keras file: what a converted Keras 3 file must reproduce."""
    full = goldens["tk_full"]
    model = _all_layers(k3)
    model.load_weights(full.files["full"])
    return Golden(model, lambda: _all_layers(k3), full.x, predict(model, full.x))


def h5_structure(path: Path) -> dict[str, tuple]:
    """Every group and dataset of an HDF5 file: kind, attributes, dtype and shape."""
    import h5py

    found: dict[str, tuple] = {}

    def attrs(obj) -> dict:
        out = {}
        for k, v in obj.attrs.items():
            v = np.asarray(v)
            out[k] = (
                v.dtype.kind,
                v.shape,
                [x.decode() if isinstance(x, bytes) else x for x in v.reshape(-1).tolist()],
            )
        return out

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = ("dataset", str(obj.dtype), obj.shape, attrs(obj))
        else:
            found[name] = ("group", attrs(obj))

    with h5py.File(path, "r") as f:
        found[""] = ("group", attrs(f))
        f.visititems(visit)
    return found
