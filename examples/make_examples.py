#!/usr/bin/env python3
"""Write the small example files that `scripts/demo` converts, with the real frameworks.

Run it from the test environment (`scripts/test` installs TensorFlow, tf_keras, Keras 3 and
torch), from the repository's root: `.venv/bin/python examples/make_examples.py`. The results
are committed; the demo itself installs none of these frameworks.

- `regress/`: TensorFlow's checkpoint guide's `Net` (one Dense(5)), trained a few steps on a
  toy regression with Adam and saved by a `tf.train.CheckpointManager`.
- `guide/easy_checkpoint`: the same trained `Net` saved as the guide's Keras section saves it,
  `net.save_weights('easy_checkpoint')`: a TF-format file rooted at the model, which
  `tf.train.Checkpoint(model=net)` could not restore before TF 2.4 (`ckpt migrate` fixes that).
- `keras-torch/model.keras`: a Keras 3 model (Conv2D, BatchNormalization, ReLU, Flatten,
  Dense), and `keras-torch/fresh.pt.json`: what `ckpt ls --json` lists of the equivalent
  PyTorch model's fresh `state_dict()`, the skeleton of the port.

The model definitions live here too, so that the suite (tests/test_demo.py) builds the same
models to check the demo's outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = Path(__file__).resolve().parent
INPUT_SHAPE = (8, 8, 1)  # the Keras model's input, channels last (torch: (1, 8, 8))


def guide_net():
    """The checkpoint guide's `Net`: a linear model, one Dense(5), in tf_keras."""
    import tf_keras

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.l1 = tf_keras.layers.Dense(5)

        def call(self, x):
            return self.l1(x)

    return Net()


def keras_model():
    """The Keras 3 side of the port. Flatten of a (6, 6, 4) map makes the Dense kernel's
    rows (h, w, c) ordered, which torch's flatten of (c, h, w) is not: the port reorders
    them from the shape the `.keras` config records."""
    import keras

    L = keras.layers
    inputs = keras.Input(INPUT_SHAPE)
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="norm")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x), name="small_cnn")


def torch_model():
    """The PyTorch model the Keras model's weights are ported into (channels first). Its
    BatchNorm's eps is Keras' default, 1e-3: eps is a setting, not a weight, so it is the
    model's to match."""
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.norm = nn.BatchNorm2d(4, eps=1e-3)
            self.head = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.flatten(torch.relu(self.norm(self.conv(x))), 1))

    return SmallCNN()


def _train_guide_net(target: Path) -> None:
    import numpy as np
    import tensorflow as tf
    import tf_keras

    regress, guide = target / "regress", target / "guide"
    for folder in (regress, guide):
        shutil.rmtree(folder, ignore_errors=True)
    tf.random.set_seed(0)
    net, optimizer = guide_net(), tf_keras.optimizers.legacy.Adam(0.1)
    checkpoint = tf.train.Checkpoint(step=tf.Variable(1), optimizer=optimizer, net=net)
    manager = tf.train.CheckpointManager(checkpoint, str(regress), max_to_keep=3)
    inputs = tf.range(10.0)[:, None]
    labels = inputs * 5 + tf.range(5.0)[None, :]
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(net(inputs) - labels))
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        checkpoint.step.assign_add(1)
    print("saved", manager.save(), "loss", float(loss), np.round(net.l1.bias.numpy(), 3))
    net.save_weights(str(guide / "easy_checkpoint"))
    print("saved", guide / "easy_checkpoint")


def _keras_and_skeleton(target: Path) -> None:
    import numpy as np
    import torch

    folder = target / "keras-torch"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    model = keras_model()
    # Weights drawn at random rather than trained: every value (the batch-norm statistics
    # too) is far from its initial one, so a port that drops or misplaces one shows.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = [
            rng.normal(scale=0.3, size=w.shape).astype("float32") for w in layer.get_weights()
        ]
        if layer.name == "norm":  # gamma, beta, moving mean, moving variance (> 0)
            weights[3] = rng.uniform(0.5, 2.0, size=weights[3].shape).astype("float32")
        layer.set_weights(weights)
    model.save(folder / "model.keras")
    print("saved", folder / "model.keras")

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fresh.pt"
        torch.save(torch_model().state_dict(), fresh)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        listing = subprocess.run(
            [sys.executable, "-m", "convert", "ls", "--json", str(fresh)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    (folder / "fresh.pt.json").write_text(listing)
    print("saved", folder / "fresh.pt.json")


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    _train_guide_net(target)
    _keras_and_skeleton(target)


if __name__ == "__main__":
    main()
