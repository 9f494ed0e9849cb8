"""Keras 2 (tf_keras) files as either side of a port: legacy `.h5` weights and TF-format
`save_weights`. Their layer kinds come from the weight names and ranks (and a default
layer name's class); their order from the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convert import api

tf_keras = pytest.importorskip("tf_keras")


def cnn_keras():
    return tf_keras.Sequential(
        [
            tf_keras.Input((6, 6, 3)),
            tf_keras.layers.Conv2D(4, 3),
            tf_keras.layers.BatchNormalization(epsilon=1e-5),
            tf_keras.layers.ReLU(),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(3),
        ]
    )


class CnnTorch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3),
            torch.nn.BatchNorm2d(4, eps=1e-5),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 3),
        )

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


def seq_keras():
    return tf_keras.Sequential(
        [
            tf_keras.Input((5,), dtype="int32"),
            tf_keras.layers.Embedding(10, 4),
            tf_keras.layers.LSTM(6),
            tf_keras.layers.Dense(2),
        ]
    )


class SeqTorch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.rnn = torch.nn.LSTM(4, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.rnn(self.embed(x.long()))[0][:, -1])


MODELS = {
    "cnn": (cnn_keras, CnnTorch, lambda rng: rng.normal(size=(2, 6, 6, 3)).astype("float32")),
    "seq": (seq_keras, SeqTorch, lambda rng: rng.integers(0, 10, (2, 5)).astype("int32")),
}


def randomised_keras(build, seed):
    model = build()
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(size=v.shape).astype("float32") * 0.5
        v.assign(np.abs(value) + 0.5 if "variance" in v.name else value)
    return model


def randomised_torch(build, seed):
    model = build().eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                value = rng.normal(size=tuple(p.shape)).astype("float32") * 0.5
                p.copy_(torch.from_numpy(np.abs(value) + 0.5 if "running_var" in name else value))
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("layout", ["w.h5", "ckpt"])
def test_keras2_to_torch(name, layout, tmp_path):
    build_keras, build_torch, make_x = MODELS[name]
    source = randomised_keras(build_keras, 4)
    source.save_weights(str(tmp_path / layout))
    skeleton = tmp_path / "skeleton.pt"
    torch.save(build_torch().state_dict(), skeleton)
    report = api.convert(tmp_path / layout, tmp_path / "out.pt", like=skeleton)
    target = build_torch().eval()
    target.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True), strict=True)
    x = make_x(np.random.default_rng(0))
    expected = source(x, training=False).numpy()
    with torch.no_grad():
        got = target(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert not report.rules["unused"]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("layout", ["w.h5", "ckpt"])
def test_torch_to_keras2(name, layout, tmp_path):
    build_keras, build_torch, make_x = MODELS[name]
    source = randomised_torch(build_torch, 5)
    torch.save(source.state_dict(), tmp_path / "src.pt")
    build_keras().save_weights(str(tmp_path / f"skeleton-{layout}"))
    out = tmp_path / f"out-{layout}"
    api.convert(tmp_path / "src.pt", out, like=tmp_path / f"skeleton-{layout}")
    target = build_keras()
    target.load_weights(str(out))
    x = make_x(np.random.default_rng(0))
    with torch.no_grad():
        expected = source(torch.from_numpy(x)).numpy()
    got = target(x, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# -- Keras to Keras: tf_keras files into a model's own file, aligned by kind and order ------

keras3 = pytest.importorskip("keras")


def dense_bn_keras(K):
    return K.Sequential(
        [
            K.Input((4,)),
            K.layers.Dense(3),
            K.layers.BatchNormalization(epsilon=1e-5),
            K.layers.Dense(2),
        ]
    )


def _predict(model, x):
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("layout", ["w.h5", "ckpt", "names"])
def test_tf_keras_files_into_keras3(layout, tmp_path):
    """A tf_keras model's weights (legacy .h5, TF-format save_weights, or TF1 names) into a
    Keras 3 model's .weights.h5: Keras 3 loads it and predicts what tf_keras did."""
    source = randomised_keras(lambda: dense_bn_keras(tf_keras), 8)
    if layout == "names":
        source.save_weights(str(tmp_path / "ckpt"))
        api.convert(tmp_path / "ckpt", tmp_path / "names", to="tf", name_based=True)
    else:
        source.save_weights(str(tmp_path / layout))
    skeleton = dense_bn_keras(keras3)
    skeleton.save_weights(tmp_path / "skeleton.weights.h5")
    report = api.convert(
        tmp_path / layout, tmp_path / "out.weights.h5", like=tmp_path / "skeleton.weights.h5"
    )
    target = dense_bn_keras(keras3)
    target.load_weights(tmp_path / "out.weights.h5")
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(_predict(target, x), _predict(source, x), rtol=1e-5, atol=1e-6)
    assert report.rules["rules"] == "keras-keras" and not report.rules["unused"]


def test_tf1_names_into_a_models_own_h5(tmp_path):
    """TF1 names do not record Keras' order (refused for .h5 alone); with the model's own
    .h5 as the skeleton, layers align by kind and by Keras' per-class counters."""
    source = randomised_keras(lambda: dense_bn_keras(tf_keras), 9)
    source.save_weights(str(tmp_path / "ckpt"))
    api.convert(tmp_path / "ckpt", tmp_path / "names", to="tf", name_based=True)
    dense_bn_keras(tf_keras).save_weights(str(tmp_path / "skeleton.h5"))
    api.convert(tmp_path / "names", tmp_path / "out.h5", like=tmp_path / "skeleton.h5")
    target = dense_bn_keras(tf_keras)
    target.load_weights(str(tmp_path / "out.h5"))
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    np.testing.assert_array_equal(_predict(target, x), _predict(source, x))
