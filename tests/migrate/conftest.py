"""Golden files for `ckpt migrate`, written once per session by real TensorFlow and tf_keras:
a compiled and fitted functional model's `save_weights` (TF format and `.h5`) and
`tf.train.Checkpoint(model=m).save()`, and the checkpoint guide's `Regress`, `Net` and a
model that grew around an old one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")


@dataclass
class Trained:
    model: Any
    x: np.ndarray
    y: np.ndarray  # the model's predictions on x
    files: dict[str, Path] = field(default_factory=dict)


def functional(K=None):
    """Conv2D, BatchNormalization, Flatten, Dropout, Dense (tf_keras, or Keras 3 as K)."""
    K = K or tf_keras
    L = K.layers
    inp = K.Input((6, 6, 1))
    x = L.Conv2D(2, 3)(inp)
    x = L.BatchNormalization()(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.2)(x)
    return K.Model(inp, L.Dense(3)(x))


def predict(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False))


def fit(model, seed: int, optimizer: Any = "adam", epochs: int = 2) -> None:
    rng = np.random.default_rng(seed)
    shape = (8, *model.input_shape[1:])
    model.compile(optimizer, "mse")
    model.fit(
        rng.normal(size=shape).astype("float32"),
        rng.normal(size=(8, *model.output_shape[1:])).astype("float32"),
        epochs=epochs,
        batch_size=4,
        verbose=0,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    root = tmp_path_factory.mktemp("migrate")
    tf.random.set_seed(1)
    model = functional()
    fit(model, 1)
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 1)).astype("float32")
    out = Trained(model, x, predict(model, x))
    model.save_weights(str(root / "tf" / "weights"))
    out.files["save_weights"] = root / "tf" / "weights"
    model.save_weights(str(root / "w.h5"))
    out.files["h5"] = root / "w.h5"
    model.save(str(root / "full.h5"))  # with the optimizer's weights
    out.files["full_h5"] = root / "full.h5"
    out.files["checkpoint"] = Path(tf.train.Checkpoint(model=model).save(str(root / "ck" / "c")))
    return out
