"""Whole small models ported across frameworks: a CNN whose Dense reads a flattened
feature map (its order known only from a `.keras` config), and a transformer encoder
block (attention, LayerNorm, feed-forward), against torch's own TransformerEncoderLayer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import linen as nn

from convert import api

from .frameworks import EXT, Case, ChannelsLast, Side, keras, values


def cnn_keras(x):
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.layers.Dense(3)(x)


class CnnTorch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = ChannelsLast(
            torch.nn.Sequential(
                torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, eps=1e-5), torch.nn.ReLU()
            )
        )
        self.head = torch.nn.Linear(4 * 5 * 4, 3)

    def forward(self, x):  # the features come back channels-last: flatten them as torch does
        return self.head(self.features(x).permute(0, 3, 1, 2).flatten(1))


class CnnFlax(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding="VALID")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-5)(x))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def block_keras(x):
    h = keras.layers.MultiHeadAttention(2, 4)(x, x)
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x + h)
    h = keras.layers.Dense(16, activation="relu")(x)
    h = keras.layers.Dense(8)(h)
    return keras.layers.LayerNormalization(epsilon=1e-5)(x + h)


class BlockFlax(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, out_features=8)(x)
        x = nn.LayerNorm(epsilon=1e-5)(x + h)
        h = nn.relu(nn.Dense(16)(x))  # Linen numbers modules as it builds them: Dense_0 first
        h = nn.Dense(8)(h)
        return nn.LayerNorm(epsilon=1e-5)(x + h)


CNN = Case("cnn", (2, 7, 6, 3), cnn_keras, CnnTorch, CnnFlax)
BLOCK = Case(
    "block",
    (2, 5, 8),
    block_keras,
    lambda: torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
    BlockFlax,
)


class KerasArchive(Side):
    """Keras' side as a whole-model `.keras` archive (its config orders the layers)."""

    def save(self, path):
        self.model.save(path.with_suffix("").with_suffix(".keras"))
        return path.with_suffix("").with_suffix(".keras")


def _side(framework: str, case: Case, archive: bool) -> Side:
    return (KerasArchive if archive and framework == "keras" else Side)(framework, case)


def port(case, source, target, tmp_path, archive=False):
    src = _side(source, case, archive).build(11)
    src_file = src.save(tmp_path / f"src{EXT[source]}")
    dst = _side(target, case, archive).build()
    skel_file = dst.save(tmp_path / f"skeleton{EXT[target]}")
    out = tmp_path / f"out{skel_file.name[len('skeleton') :]}"
    report = api.convert(src_file, out, like=skel_file, emit_rules=tmp_path / "emitted.toml")
    # The alignment written back converts the same way, with the skeleton and without it.
    for like in (skel_file, None):
        again = out.with_name(f"again{out.name[len('out') :]}")
        if like is None and again.suffix == ".keras":  # (only a skeleton gives a config)
            again = again.with_name("again.weights.h5")
        api.convert(src_file, again, rules=tmp_path / "emitted.toml", like=like, overwrite=True)
        assert values(again) == values(out)
    dst.load(out)
    x = case.input()
    expected = src.run(x)
    np.testing.assert_allclose(
        dst.run(x), expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max())
    )
    return report


@pytest.mark.parametrize(
    ("source", "target"),
    [("keras", "torch"), ("torch", "keras"), ("keras", "flax"), ("flax", "keras")],
)
def test_cnn_flatten_order_from_the_keras_config(source, target, tmp_path):
    report = port(CNN, source, target, tmp_path, archive=True)
    kinds = {layer["kind"] for layer in report.rules["layers"]}
    assert "flatten_dense" in kinds


@pytest.mark.parametrize(
    ("source", "target"),
    [(a, b) for a in ("keras", "torch", "flax") for b in ("keras", "torch", "flax") if a != b],
)
def test_transformer_block(source, target, tmp_path):
    port(BLOCK, source, target, tmp_path)


def test_flatten_order_unknown_without_a_config_is_said(tmp_path):
    """A .weights.h5 records no Flatten: the port cannot know the order and says so."""
    src = Side("keras", CNN).build(11)
    src_file = src.save(tmp_path / "src.weights.h5")
    skeleton = Side("torch", CNN).build().save(tmp_path / "skeleton.pt")
    report = api.convert(src_file, tmp_path / "out.pt", like=skeleton)
    assert any(
        "flattened feature map" in note and "layers/dense" in note for note in report.notes
    ), report.notes
