"""The TensorFlow checkpoint guide's hand-built restores, done after the fact as one
`ckpt migrate` each, and restored by real TensorFlow / tf_keras."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from .conftest import predict
from .helpers import assert_listed_like_tf, migrate

L = tf_keras.layers


class Regress(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.dense1 = L.Dense(4)
        self.dense2 = L.Dense(1)

    def call(self, x):
        return self.dense2(self.dense1(x))


class RegressToRestore(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.dense3 = L.Dense(4)
        self.out = L.Dense(1)

    def call(self, x):
        return self.out(self.dense3(x))


def _data(seed: int, n: int = 8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def test_regress_dense1_into_another_models_dense3(tmp_path):
    """A full `Checkpoint(model=regress, opt=opt)` after fit, then `--pick model/dense1=zy
    --pick opt`: `Checkpoint(zy=model2.dense3, opt=opt2)` restores dense1's weights and
    Adam slots into dense3, and after fit `assert_consumed()` passes."""
    tf.random.set_seed(3)
    model, opt = Regress(), tf_keras.optimizers.legacy.Adam(0.1)
    model.compile(opt, "mse")
    model.fit(*_data(0), epochs=2, batch_size=4, verbose=0)
    full = tf.train.Checkpoint(model=model, opt=opt).save(str(tmp_path / "full" / "ckpt"))
    out = tmp_path / "zy"
    migrate(full, out, "--pick", "model/dense1=zy", "--pick", "opt")

    model2, opt2 = RegressToRestore(), tf_keras.optimizers.legacy.Adam(0.1)
    model2.compile(opt2, "mse")
    model2(_data(1)[0])
    status = tf.train.Checkpoint(zy=model2.dense3, opt=opt2).restore(str(out))
    for got, want in zip(model2.dense3.weights, model.dense1.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    opt2._create_all_weights(model2.trainable_variables)  # the slots, as fit makes them
    for got, want in zip(model2.dense3.weights, model.dense1.weights, strict=True):
        for slot in ("m", "v"):
            np.testing.assert_array_equal(
                np.asarray(opt2.get_slot(got, slot)), np.asarray(opt.get_slot(want, slot))
            )
    assert int(opt2.iterations) == int(opt.iterations)
    model2.fit(*_data(2), epochs=1, batch_size=4, verbose=0)
    status.assert_consumed()
    assert_listed_like_tf(out)


class Net(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.l1 = L.Dense(5)

    def call(self, x):
        return self.l1(x)


def test_sub_graph_restore_after_the_fact(tmp_path):
    """A CheckpointManager save of the guide's `Net` (with its step and optimizer; the
    guide's dataset iterator is left out: its state is a variant tensor, which the TF reader
    does not read), then `--pick net/l1/bias=bias`: `Checkpoint(bias=v)` restores l1's
    bias."""
    net, opt = Net(), tf_keras.optimizers.Adam(0.1)
    dataset = tf.data.Dataset.from_tensor_slices(_data(4, 16)).repeat().batch(4)
    iterator = iter(dataset)
    ckpt = tf.train.Checkpoint(step=tf.Variable(1), optimizer=opt, net=net)
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path / "tf_ckpts"), max_to_keep=3)
    for _ in range(3):
        x, y = next(iterator)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(net(x) - y))
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        ckpt.step.assign_add(1)
        manager.save()
    out = tmp_path / "bias"
    migrate(tmp_path / "tf_ckpts", out, "--pick", "net/l1/bias=bias")
    to_restore = tf.Variable(tf.zeros([5]))
    tf.train.Checkpoint(bias=to_restore).restore(str(out)).assert_consumed()
    np.testing.assert_array_equal(to_restore.numpy(), net.l1.bias.numpy())
    assert_listed_like_tf(out)


class Body(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.a = L.Dense(4)
        self.b = L.Dense(2)

    def call(self, x):
        return self.b(self.a(x))


class Grown(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.stem = L.Dense(3)
        self.body = Body()
        self.head = L.Dense(1)

    def call(self, x):
        return self.head(self.body(self.stem(x)))


def test_a_model_that_grew_around_an_old_one(tmp_path):
    """`--pick model=model/body`: every variable of the old model goes into the new model's
    `body`, its optimizer state with it."""
    old = Body()
    old.compile(tf_keras.optimizers.Adam(0.1), "mse")
    old.fit(_data(5)[0], np.zeros((8, 2), "float32"), epochs=2, batch_size=4, verbose=0)
    saved = tf.train.Checkpoint(model=old).save(str(tmp_path / "old" / "ckpt"))
    out = tmp_path / "grown"
    migrate(saved, out, "--pick", "model=model/body")
    grown = Grown()
    grown(_data(6)[0])
    status = tf.train.Checkpoint(model=grown).restore(str(out))
    status.assert_nontrivial_match()
    assert len(grown.body.weights) == len(old.weights) == 4
    for got, want in zip(grown.body.weights, old.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    x = np.random.default_rng(7).normal(size=(2, 3)).astype("float32")
    np.testing.assert_array_equal(predict(grown.body, x), predict(old, x))
    assert_listed_like_tf(out)
