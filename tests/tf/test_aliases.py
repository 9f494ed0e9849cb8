"""Where several paths reach one tensor (a tf_keras SavedModel records `kernel`,
`variables/0`, `trainable_variables/0` and the root's `variables/N` for each weight), a
format without aliases gets the path TensorFlow names and restores the value by: its
checkpoint key, `layer_with_weights-0/kernel`, never the positional `variables/0`."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


def _sequential(seed: int):
    import tf_keras

    tf.random.set_seed(seed)
    model = tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.layers.Dense(3), tf_keras.layers.Dense(2)]
    )
    return model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = _sequential(1)
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)), verbose=0)
    path = tmp_path_factory.mktemp("aliases") / "sm"
    model.save(str(path), save_format="tf")
    return path, [np.asarray(w) for w in model.weights]


def test_flat_keys_are_the_attribute_names(saved_model, tmp_path, ckpt):
    from safetensors.numpy import load_file

    out = tmp_path / "x.safetensors"
    assert ckpt("convert", saved_model[0], out).code == 0
    keys = set(load_file(out))
    assert {
        "layer_with_weights-0.kernel",
        "layer_with_weights-0.bias",
        "layer_with_weights-1.kernel",
        "layer_with_weights-1.bias",
    } <= keys
    assert not [k for k in keys if ".variables." in k or k.startswith("variables.")]


@pytest.mark.parametrize("flat", ["x.safetensors", "x.npz", "x.msgpack", "x.h5"])
def test_saved_model_through_a_flat_format_restores(saved_model, tmp_path, ckpt, flat):
    path, weights = saved_model
    assert ckpt("convert", path, tmp_path / flat).code == 0
    assert ckpt("convert", tmp_path / flat, tmp_path / "back", "--to", "tf").code == 0
    fresh = _sequential(2)
    fresh.load_weights(str(tmp_path / "back")).assert_existing_objects_matched()
    for got, want in zip(fresh.weights, weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
