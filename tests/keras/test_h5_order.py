"""A legacy `.h5` is loaded by position, so its layer and weight order is its meaning.

From a tf_keras model's TF object checkpoint (`save_weights(prefix)`, the model at the
root; `tf.train.Checkpoint(model=m).write`, the model under an edge; a SavedModel) the
`.h5` is written in Keras' own order and a FRESH model's `load_weights` gives the same
weights and predictions; from sources that do not record the order (TF1 names,
safetensors, torch, npz) the conversion is refused and nothing is written. Optimizer state
is never a layer.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ..conftest import assert_one_line_error, listing
from .conftest import Golden, predict, randomize


def _dense_bn_dense(K):
    """The issue's model, with tf_keras' default layer names."""
    inputs = K.Input((4,))
    x = K.layers.Dense(3)(inputs)
    x = K.layers.BatchNormalization()(x)
    return K.Model(inputs, K.layers.Dense(2)(x))


def _conv_bn_lstm_dense(K):
    """Named layers, so that a fresh model of it loads by name too."""
    L = K.layers
    inputs = K.Input((6, 6, 2), name="image")
    x = L.Conv2D(3, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="norm")(x)
    x = L.Reshape((16, 3), name="rows")(x)
    x = L.LSTM(4, name="lstm")(x)
    return K.Model(inputs, L.Dense(2, name="head")(x))


def _wide(K):
    """The sub-object layers: an RNN cell inside Bidirectional, attention projections,
    TimeDistributed, plus Embedding and LayerNormalization."""
    L = K.layers
    tokens = K.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(7, 4, name="embed")(tokens)
    x = L.Bidirectional(L.GRU(3, return_sequences=True), name="bi")(x)
    x = L.MultiHeadAttention(num_heads=2, key_dim=2, name="attention")(x, x)
    x = L.TimeDistributed(L.Dense(2), name="per_step")(x)
    x = L.Flatten(name="flat")(x)
    return K.Model(tokens, L.LayerNormalization(name="ln")(x))


def _sequential(K):
    return K.Sequential(
        [K.Input((4,)), K.layers.Dense(3), K.layers.BatchNormalization(), K.layers.Dense(2)]
    )


def _inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(5)
    if name == "wide":
        return rng.integers(0, 7, size=(2, 5)).astype("int32")
    shape = (2, 6, 6, 2) if name == "conv_lstm" else (2, 4)
    return rng.standard_normal(shape).astype("float32")


BUILDERS = {
    "dense_bn": _dense_bn_dense,
    "conv_lstm": _conv_bn_lstm_dense,
    "wide": _wide,
    "fitted": _sequential,
}


@pytest.fixture(scope="session")
def models(tk, tmp_path_factory) -> dict[str, Golden]:
    """Each model with distinct random weights (BatchNormalization statistics too), saved by
    tf_keras itself: `Checkpoint(model=m).write`, `save_weights(prefix)`, and the `.h5`
    tf_keras writes (the reference). `fitted` is compiled and trained one step first, and
    also saved as a SavedModel and a full-model `.h5`."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("h5order")
    found = {}
    for seed, (name, builder) in enumerate(BUILDERS.items()):
        model = builder(tk)
        x = _inputs(name)
        if name == "fitted":
            model.compile(optimizer="adam", loss="mse")
            model.fit(x, np.ones((2, 2), "float32"), epochs=1, verbose=0)
        randomize(model, 100 + seed)
        gold = Golden(model, lambda b=builder: b(tk), x, predict(model, x))
        gold.files = {
            "checkpoint": d / f"{name}-ckpt",
            "prefix": d / f"{name}-weights",
            "reference": d / f"{name}-reference.h5",
        }
        tf.train.Checkpoint(model=model).write(str(gold.files["checkpoint"]))
        model.save_weights(str(gold.files["prefix"]))
        model.save_weights(str(gold.files["reference"]))
        if name == "fitted":
            gold.files["savedmodel"] = d / "fitted-savedmodel"
            model.save(str(gold.files["savedmodel"]), save_format="tf")
            gold.files["full"] = d / "fitted-full.h5"
            model.save(str(gold.files["full"]))
        found[name] = gold
    return found


def fresh(gold: Golden):
    model = gold.build()
    assert not np.array_equal(predict(model, gold.x), gold.y), "fresh model is not fresh"
    return model


def assert_same_model(gold: Golden, path, **kwargs) -> None:
    """A fresh model loads `path` with every weight and the predictions equal."""
    model = fresh(gold)
    model.load_weights(str(path), **kwargs)
    assert len(model.weights) == len(gold.model.weights)
    for mine, theirs in zip(model.weights, gold.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=mine.name)
    np.testing.assert_array_equal(predict(model, gold.x), gold.y)


def text_list(group, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in group.attrs[name]]


def assert_like_reference(path, reference) -> None:
    """Layer for layer what tf_keras writes: the layer list (weightless layers, whose names
    a checkpoint does not record, at their places) and each weight list."""
    with h5py.File(path) as mine, h5py.File(reference) as theirs:
        names, expected = text_list(mine, "layer_names"), text_list(theirs, "layer_names")
        assert len(names) == len(expected)
        for i, (name, want) in enumerate(zip(names, expected, strict=True)):
            weights = text_list(theirs[want], "weight_names")
            assert name == (want if weights else f"layer-{i}")
            assert text_list(mine[name], "weight_names") == weights
            for weight in weights:
                np.testing.assert_array_equal(mine[name][weight][()], theirs[want][weight][()])
        assert mine.attrs["keras_version"] and mine.attrs["backend"] == theirs.attrs["backend"]


@pytest.mark.parametrize("layout", ["checkpoint", "prefix"])
@pytest.mark.parametrize("name", ["dense_bn", "conv_lstm", "wide"])
def test_keras_checkpoint_to_h5(models, ckpt, tmp_path, name, layout):
    gold = models[name]
    out = tmp_path / "out.h5"
    result = ckpt("convert", gold.files[layout], out)
    assert result.code == 0, result.err
    assert_like_reference(out, gold.files["reference"])
    assert_same_model(gold, out)
    if name != "dense_bn":  # named layers: a fresh model has the same names
        assert_same_model(gold, out, by_name=True)


@pytest.mark.parametrize("middle", ["names", "x.safetensors", "x.pt", "x.npz"])
@pytest.mark.parametrize("name", ["dense_bn", "conv_lstm"])
def test_sources_without_the_order_are_refused(models, ckpt, tmp_path, name, middle):
    """Keras' order does not survive a name-based checkpoint or a flat format: refused,
    never written in path or sorted order."""
    gold = models[name]
    between = tmp_path / middle
    extra = ["--tf-names"] if middle == "names" else []
    result = ckpt("convert", gold.files["checkpoint"], between, *extra)
    assert result.code == 0, result.err
    before = listing(tmp_path)
    assert_one_line_error(
        ckpt("convert", between, tmp_path / "out.h5"),
        str(between),
        "does not record that order",
        ".keras",
    )
    assert listing(tmp_path) == before


@pytest.mark.parametrize("layout", ["prefix", "checkpoint", "savedmodel"])
def test_fitted_model_optimizer_is_not_a_layer(models, ckpt, tmp_path, layout):
    gold = models["fitted"]
    out = tmp_path / "fit.h5"
    result = ckpt("convert", gold.files[layout], out)
    assert result.code == 0, result.err
    assert_same_model(gold, out)
    with h5py.File(out) as f:
        assert len(text_list(f, "layer_names")) == 3
        assert "optimizer" not in f and "keras_api" not in f
    assert_like_reference(out, gold.files["reference"])
    assert "optimizer: " in result.err and "not written" in result.err


@pytest.mark.parametrize("middle", ["x.safetensors", "x.npz", "x.pt"])
def test_full_h5_with_optimizer_through_another_format(models, ckpt, tmp_path, middle):
    """A full-model .h5 keeps its optimizer when written as .h5 directly; through a format
    that loses Keras' order it is refused, never given an `optimizer` layer."""
    gold = models["fitted"]
    direct = tmp_path / "direct.h5"
    assert ckpt("convert", gold.files["full"], direct).code == 0
    with h5py.File(direct) as f:
        assert text_list(f["model_weights"], "layer_names") == text_list(
            h5py.File(gold.files["full"])["model_weights"], "layer_names"
        )
        assert "optimizer_weights" in f
    assert_same_model(gold, direct)
    between = tmp_path / middle
    assert ckpt("convert", gold.files["full"], between).code == 0
    before = listing(tmp_path)
    assert_one_line_error(
        ckpt("convert", between, tmp_path / "out.h5"), str(between), "does not record that order"
    )
    assert listing(tmp_path) == before


def test_several_models_are_refused_by_name(tk, ckpt, tmp_path):
    import tensorflow as tf

    prefix = tmp_path / "two"
    tf.train.Checkpoint(generator=_dense_bn_dense(tk), critic=_sequential(tk)).write(str(prefix))
    before = listing(tmp_path)
    assert_one_line_error(
        ckpt("convert", prefix, tmp_path / "out.h5"),
        "2 Keras models",
        "generator",
        "critic",
        "ckpt migrate --root",
    )
    assert listing(tmp_path) == before


def test_checkpoint_without_a_keras_model_is_refused(ckpt, tmp_path):
    import tensorflow as tf

    prefix = tmp_path / "plain"
    module = tf.Module()
    module.w = tf.Variable(np.ones((2, 2), "float32"))
    module.b = tf.Variable(np.zeros(2, "float32"))
    tf.train.Checkpoint(net=module).write(str(prefix))
    assert_one_line_error(
        ckpt("convert", prefix, tmp_path / "out.h5"),
        "no tf_keras Sequential or functional model",
        ".keras",
    )
    assert listing(tmp_path) == {"plain.index", "plain.data-00000-of-00001"}


def test_nested_model_checkpoint_is_refused(tk, ckpt, tmp_path):
    """A nested model's .h5 weight list is trainable-first, which a checkpoint cannot tell."""
    inner = _sequential(tk)
    inputs = tk.Input((4,))
    outer = tk.Model(inputs, tk.layers.Dense(1)(inner(inputs)))
    prefix = tmp_path / "nested"
    outer.save_weights(str(prefix))
    assert_one_line_error(
        ckpt("convert", prefix, tmp_path / "out.h5"), "nested model", "layer_with_weights-0"
    )
    assert not (tmp_path / "out.h5").exists()


def _nested(K, frozen: bool):
    inner = _sequential(K)
    inner.trainable = not frozen
    inputs = K.Input((4,))
    return K.Model(inputs, K.layers.Dense(1)(inner(inputs)))


@pytest.mark.parametrize("frozen", [False, True])
def test_nested_model_saved_model(tk, ckpt, tmp_path, frozen):
    """A SavedModel lists each layer's trainable and non-trainable variables, which give a
    nested model's .h5 order (trainable first) whether or not it is frozen."""
    model = _nested(tk, frozen)
    x = _inputs("fitted")
    randomize(model, 7)
    gold = Golden(model, lambda: _nested(tk, frozen), x, predict(model, x))
    saved, reference, out = tmp_path / "saved", tmp_path / "reference.h5", tmp_path / "out.h5"
    model.save(str(saved), save_format="tf")
    model.save_weights(str(reference))
    result = ckpt("convert", saved, out)
    assert result.code == 0, result.err
    assert_same_model(gold, out)
    with h5py.File(out) as mine, h5py.File(reference) as theirs:
        nested = text_list(theirs, "layer_names")[1]
        assert text_list(mine["layer_with_weights-0"], "weight_names") == text_list(
            theirs[nested], "weight_names"
        )


def test_keras3_weights_from_a_checkpoint_is_refused(models, ckpt, tmp_path):
    """A `.weights.h5` assigns `vars/N` by position too; a TF checkpoint gives no Keras 3
    object paths."""
    source = models["dense_bn"].files["prefix"]
    assert_one_line_error(
        ckpt("convert", source, tmp_path / "x.weights.h5"),
        str(source),
        "Keras 3 object paths",
        "not known",
    )
    assert listing(tmp_path) == set()


def test_layer_of_unknown_kind_is_refused(tk, ckpt, tmp_path):
    """Variables no known layer kind orders (a custom layer's `w`, `b`): refused, as Keras
    puts trainable ones first and the checkpoint does not say which those are."""

    class Affine(tk.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight("w", shape=(shape[-1], 2))
            self.b = self.add_weight("b", shape=(2,))

        def call(self, x):
            return x @ self.w + self.b

    inputs = tk.Input((3,))
    prefix = tmp_path / "custom"
    tk.Model(inputs, Affine(name="affine")(inputs)).save_weights(str(prefix))
    assert_one_line_error(
        ckpt("convert", prefix, tmp_path / "out.h5"), "layer_with_weights-0 holds variables w, b"
    )
    assert not (tmp_path / "out.h5").exists()
