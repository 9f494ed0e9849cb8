"""tf_keras `.h5` files into TensorFlow checkpoints, loaded back by a fresh tf_keras model.

- `--tf-names` (name-based): each value under the variable's own name, as the `.h5` records
  it (`dense_2/kernel`, not the layer group's `block/dense_2/kernel`).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.matrix import models

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def h5_files(tmp_path_factory):
    import tf_keras

    root = tmp_path_factory.mktemp("h5_to_tf")
    out = {}
    for kind in ("sequential", "nested", "subclassed"):
        model = models.keras_model(tf_keras, kind, seed=3)
        model.save_weights(str(root / f"{kind}.h5"))
        out[kind] = (root / f"{kind}.h5", [np.asarray(w) for w in model.weights])
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _assert_restored(kind, out, weights, load):
    import tf_keras

    fresh = models.keras_model(tf_keras, kind, seed=99)
    load(fresh, str(out)).assert_existing_objects_matched()
    assert len(fresh.weights) == len(weights)
    for got, want in zip(fresh.weights, weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=got.name)


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
def test_h5_to_name_based_checkpoint_keeps_variable_names(h5_files, kind, tmp_path, ckpt):
    path, weights = h5_files[kind]
    out = tmp_path / "ckpt"
    assert ckpt("convert", path, out, "--to", "tf", "--tf-names").code == 0
    names = {name for name, _ in tf.train.list_variables(str(out))}
    import h5py

    with h5py.File(path) as f:
        recorded = {_text(w).rsplit(":", 1)[0] for layer in f.attrs["layer_names"]
                    for w in f[_text(layer)].attrs["weight_names"]}
    assert names == recorded
    _assert_restored(kind, out, weights, lambda m, p: m.load_weights(p))
