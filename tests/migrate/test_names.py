"""A TF1 `Saver` checkpoint (names, no object graph): the checkpoint itself keeps the slots,
so they follow their variables to a new place; `--no-optimizer` drops them."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .helpers import assert_listed_like_tf, migrate, value


def _tf1_checkpoint(prefix) -> None:
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        x = v1.placeholder(tf.float32, (None, 3))
        with v1.variable_scope("layer"):
            kernel = v1.get_variable("kernel", (3, 2))
        train = v1.train.AdamOptimizer().minimize(tf.reduce_sum(tf.matmul(x, kernel)))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            session.run(train, {x: [[1.0, 2.0, 3.0]]})
            v1.train.Saver().save(session, str(prefix))


def test_tf1_slots_follow_a_picked_variable(tmp_path):
    source = tmp_path / "model.ckpt"
    _tf1_checkpoint(source)
    out = tmp_path / "picked"
    migrate(source, out, "--pick", "layer=net/layer")
    names = {name for name, _ in tf.train.list_variables(str(out))}
    assert names == {"net/layer/kernel", "net/layer/kernel/Adam", "net/layer/kernel/Adam_1"}
    for slot in ("", "/Adam", "/Adam_1"):
        np.testing.assert_array_equal(
            value(out, "net/layer/kernel" + slot), value(source, "layer/kernel" + slot)
        )
    assert_listed_like_tf(out)
    bare = tmp_path / "bare"
    migrate(source, bare, "--no-optimizer")
    assert {n for n, _ in tf.train.list_variables(str(bare))} == {
        "layer/kernel",
        "beta1_power",
        "beta2_power",
    }  # (names do not say these are Adam's)
    assert_listed_like_tf(bare)
