"""Golden TensorFlow checkpoints, written once per session by real TensorFlow and tf_keras.

Each fixture returns what a test needs to rebuild the objects it saved (to prove that a
checkpoint written by this project restores into them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


@dataclass
class Golden:
    path: Path  # what a user would pass: a prefix, usually
    make: Any = None  # builds fresh objects: () -> dict of trackables for tf.train.Checkpoint


def _tf_keras_functional():
    import tf_keras

    inp = tf_keras.Input((6,))
    x = tf_keras.layers.Dense(5, activation="relu", name="hidden")(inp)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    out = tf_keras.layers.Dense(2, name="head")(x)
    return tf_keras.Model(inp, out)


def _tf_keras_subclassed():
    import tf_keras

    class Block(tf_keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(4)
            self.scale = self.add_weight(name="scale", shape=(4,), initializer="ones")

        def call(self, x):
            return self.dense(x) * self.scale

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.blocks = [Block(), Block()]
            self.out_layer = tf_keras.layers.Dense(3)

        def call(self, x):
            for block in self.blocks:
                x = block(x)
            return self.out_layer(x)

    return Net()


def _train_one_step(model, optimizer, width: int, seed: int = 0) -> None:
    x = np.random.default_rng(seed).normal(size=(8, width)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))


def _trained(build, width: int, seed: int):
    import tf_keras

    tf.random.set_seed(seed)
    model = build()
    optimizer = tf_keras.optimizers.legacy.Adam(0.01)
    _train_one_step(model, optimizer, width, seed)
    return model, optimizer


def fresh_trained(build, width: int):
    """A differently initialised model and optimizer with every slot created."""
    return _trained(build, width, seed=99)


@pytest.fixture(scope="session")
def goldens(tmp_path_factory) -> dict[str, Golden]:
    root = tmp_path_factory.mktemp("tf_goldens")
    out: dict[str, Golden] = {}

    # tf_keras functional + subclassed, trained a step with a legacy Adam (slots).
    for name, build, width in (
        ("functional", _tf_keras_functional, 6),
        ("subclassed", _tf_keras_subclassed, 4),
    ):
        model, optimizer = _trained(build, width, seed=1)
        path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(root / name / "ckpt"))
        out[name] = Golden(Path(path), (build, width))

    # A Keras 3 functional model.
    import keras

    inp = keras.Input((3,))
    k3 = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(4)(inp)))
    out["keras3"] = Golden(Path(tf.train.Checkpoint(model=k3).write(str(root / "keras3" / "w"))))

    # TF-format save_weights (the model itself is the root).
    model, _ = _trained(_tf_keras_functional, 6, seed=2)
    model.save_weights(str(root / "save_weights" / "weights"))
    out["save_weights"] = Golden(root / "save_weights" / "weights", (_tf_keras_functional, 6))

    # CheckpointManager keeping two of three saves.
    variable = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=variable), str(root / "managed"), max_to_keep=2
    )
    for i in range(3):
        variable.assign_add(tf.ones_like(variable) * i)
        manager.save()
    out["managed"] = Golden(root / "managed")

    # Every dtype a variable can hold, plus scalars and empty tensors.
    values = {
        "f16": np.linspace(-2, 2, 6, dtype=np.float16).reshape(2, 3),
        "f32": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32),
        "f64": np.arange(5, dtype=np.float64) / 7,
        "i8": np.array([-128, 0, 127], np.int8),
        "i16": np.array([-3, 4], np.int16),
        "i32": np.array([[1, -2]], np.int32),
        "i64": np.array(2**40, np.int64),
        "u8": np.array([0, 255], np.uint8),
        "u16": np.array([65535], np.uint16),
        "u32": np.array([2**32 - 1], np.uint32),
        "u64": np.array([2**64 - 1], np.uint64),
        "flag": np.array([True, False, True]),
        "c64": np.array([1 + 2j, -3j], np.complex64),
        "c128": np.array([[0.5 - 1j]], np.complex128),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.float32(3.5),
    }
    variables = {k: tf.Variable(v) for k, v in values.items()}
    variables["bf16"] = tf.Variable(tf.constant([1.5, -2.25, 3e38], tf.bfloat16))
    variables["text"] = tf.Variable([[b"hello", b""], [b"\x00\xff binary", "ünï".encode()]])
    variables["long_text"] = tf.Variable(b"x" * 300)
    path = tf.train.Checkpoint(**variables).write(str(root / "dtypes" / "all"))
    out["dtypes"] = Golden(Path(path))

    # Several shards with sliced tensors.
    big = {
        f"w{i}": tf.Variable(np.random.default_rng(i).normal(size=(64, 48)).astype(np.float32))
        for i in range(3)
    }
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=4000)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    path = tf.train.Checkpoint(**big).write(str(root / "sharded" / "s"), options=options)
    out["sharded"] = Golden(Path(path))

    # A TF1 Saver checkpoint (names, no object graph), with Adam slots named var/Adam.
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        x = v1.placeholder(tf.float32, (None, 3))
        with v1.variable_scope("bert/encoder/layer_0"):
            kernel = v1.get_variable("kernel", (3, 2), initializer=v1.random_normal_initializer())
            bias = v1.get_variable("bias", (2,), initializer=v1.zeros_initializer())
        step = v1.train.get_or_create_global_step()
        loss = tf.reduce_sum(tf.matmul(x, kernel) + bias)
        train = v1.train.AdamOptimizer(0.1).minimize(loss, global_step=step)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train, {x: np.ones((2, 3), np.float32)})
            path = v1.train.Saver().save(sess, str(root / "tf1" / "model.ckpt"))
    out["tf1"] = Golden(Path(path))

    # An object saved by a registered saver (its values go to a file of the saver's own).
    from tensorflow.python.saved_model import registration

    class Part(tf.Module):
        def __init__(self):
            self.v = tf.Variable([1.0, 2.0])

    def save_part(trackables, file_prefix):
        for name, part in trackables.items():
            tf.io.write_file(
                tf.strings.join([file_prefix, "_", name]), tf.io.serialize_tensor(part.v)
            )
        return []

    registration.register_checkpoint_saver(
        package="ConvertTests",
        name="Part",
        predicate=lambda x: isinstance(x, Part),
        save_fn=save_part,
        restore_fn=lambda trackables, prefix: None,
    )
    path = tf.train.Checkpoint(part=Part(), w=tf.Variable(3.0)).write(str(root / "reg" / "ck"))
    out["registered"] = Golden(Path(path))

    # A SavedModel directory.
    module = tf.Module()
    module.w = tf.Variable(np.arange(4, dtype=np.float32))
    module.f = tf.function(lambda x: x * module.w, input_signature=[tf.TensorSpec([4])])
    tf.saved_model.save(module, str(root / "saved_model"))
    out["saved_model"] = Golden(root / "saved_model")
    return out


def tf_values(path: Path | str) -> dict[str, np.ndarray]:
    """Every tensor as TensorFlow's own reader returns it (object graph left out)."""
    reader = tf.train.load_checkpoint(str(path))
    return {
        k: reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if k != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def tf_prefix(golden: Golden) -> str:
    path = str(golden.path)
    if Path(path).is_dir():
        saved = Path(path) / "variables" / "variables"
        return str(saved) if Path(f"{saved}.index").exists() else tf.train.latest_checkpoint(path)
    return path
