"""Keras 3 names a layer's group in a `.weights.h5` after its class; `keras_names.snake_case`
(which the Keras format and the rules share) must give the names real Keras writes."""

from __future__ import annotations

import h5py

from convert.frameworks.keras.names import snake_case


def test_snake_case_gives_the_groups_keras_writes(k3, tmp_path):
    layers = k3.layers
    inputs = k3.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    x = layers.Conv2DTranspose(4, 3, padding="same")(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.PReLU()(x)
    x = layers.Reshape((64, 4))(x)
    x = layers.LayerNormalization()(x)
    x = layers.MultiHeadAttention(2, 4)(x, x)
    x = layers.Conv1D(4, 3)(x)
    x = layers.GRU(4, return_sequences=True)(x)
    x = layers.LSTM(4)(x)
    outputs = layers.Dense(2)(x)
    model = k3.Model(inputs, outputs)
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5", "r") as f:
        groups = set(f["layers"])
    weighted = {type(layer).__name__ for layer in model.layers if layer.weights}
    assert len(weighted) == 11
    assert {snake_case(name) for name in weighted} <= groups
    assert groups <= {snake_case(type(layer).__name__) for layer in model.layers}


def test_numbered_gives_the_groups_keras_writes_for_repeated_classes(k3, tmp_path):
    """Three Dense and two Conv2D in one model: `dense`, `dense_1`, `dense_2`, `conv2d`,
    `conv2d_1`, the names `keras_names.numbered` gives for the model's layers."""
    from convert.frameworks.keras.names import numbered

    layers = k3.layers
    model = k3.Sequential(
        [
            k3.Input((6, 6, 2)),
            layers.Conv2D(3, 3),
            layers.Conv2D(3, 3),
            layers.Flatten(),
            layers.Dense(4),
            layers.Dense(4),
            layers.Dense(2),
        ]
    )
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5", "r") as f:
        groups = {name for name in f["layers"] if len(f["layers"][name]["vars"])}
    names = numbered(type(layer).__name__ for layer in model.layers)
    assert names == ["conv2d", "conv2d_1", "flatten", "dense", "dense_1", "dense_2"]
    assert groups == {n for n in names if n != "flatten"}
