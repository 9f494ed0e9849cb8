"""Checkpoints written here are restored by real TensorFlow (`assert_consumed`, equal
values), and a TF -> TF rewrite of each golden file reads back identical."""

from __future__ import annotations

import numpy as np
import pytest

import convert

from .conftest import fresh_trained, tf, tf_prefix, tf_values
from .test_read import ALL, assert_bits_equal


@pytest.mark.parametrize("name", ALL)
def test_rewrite_reads_back_identical(goldens, name, tmp_path, ckpt):
    out = tmp_path / "rewritten"
    result = ckpt("convert", goldens[name].path, out, "--to", "tf")
    assert result.code == 0, result.err
    theirs = tf_values(tf_prefix(goldens[name]))
    rewritten = tf_values(out)
    assert set(rewritten) == set(theirs)
    for key, value in theirs.items():
        assert_bits_equal(np.asarray(rewritten[key]), value, key)
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["functional", "subclassed"])
def test_model_and_optimizer_restore(goldens, name, tmp_path):
    golden = goldens[name]
    convert.convert(golden.path, tmp_path / "out", to="tf")
    original_model, original_opt = fresh_trained(*golden.make)
    tf.train.Checkpoint(model=original_model, optimizer=original_opt).restore(
        str(golden.path)
    ).assert_consumed()

    model, optimizer = fresh_trained(*golden.make)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(str(tmp_path / "out"))
    status.assert_consumed()
    for ours, theirs in zip(model.variables, original_model.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for ours, theirs in zip(optimizer.variables(), original_opt.variables(), strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    x = np.ones((2, golden.make[1]), np.float32)
    np.testing.assert_array_equal(model(x).numpy(), original_model(x).numpy())


def test_save_weights_file_loads_with_load_weights(goldens, tmp_path):
    golden = goldens["save_weights"]
    convert.convert(golden.path, tmp_path / "weights", to="tf")
    build, width = golden.make
    original, fresh = build(), build()
    original.load_weights(str(golden.path)).assert_consumed()
    fresh.load_weights(str(tmp_path / "weights")).assert_consumed()
    x = np.ones((3, width), np.float32)
    np.testing.assert_array_equal(fresh(x).numpy(), original(x).numpy())


def test_all_dtypes_restore(goldens, tmp_path):
    convert.convert(goldens["dtypes"].path, tmp_path / "d", to="tf")
    expected = tf_values(goldens["dtypes"].path)
    names = {k.split("/")[0] for k in expected}
    variables = {}
    for name in names:
        value = np.asarray(expected[f"{name}/.ATTRIBUTES/VARIABLE_VALUE"])
        variables[name] = tf.Variable(
            tf.zeros_like(value) if value.dtype != object else tf.fill(value.shape, b"")
        )
    tf.train.Checkpoint(**variables).read(str(tmp_path / "d")).assert_consumed()
    for name, variable in variables.items():
        assert_bits_equal(variable.numpy(), expected[f"{name}/.ATTRIBUTES/VARIABLE_VALUE"], name)


def test_name_based_restores_with_saver(goldens, tmp_path, ckpt):
    out = tmp_path / "names.ckpt"
    assert ckpt("convert", goldens["tf1"].path, out, "--tf-names").code == 0
    expected = tf_values(goldens["tf1"].path)
    assert set(tf_values(out)) == set(expected)
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        variables = [
            v1.get_variable(
                k, v.shape, dtype=tf.as_dtype(v.dtype), initializer=v1.zeros_initializer()
            )
            for k, v in expected.items()
        ]
        with v1.Session(graph=graph) as sess:
            v1.train.Saver(variables).restore(sess, str(out))
            for variable, value in zip(variables, sess.run(variables), strict=True):
                np.testing.assert_array_equal(value, expected[variable.op.name])


def test_object_checkpoint_to_name_based_uses_variable_names(goldens, tmp_path):
    convert.convert(goldens["keras3"].path, tmp_path / "n", to="tf", name_based=True)
    names = set(tf_values(tmp_path / "n"))
    full_names = {
        e.tensor.meta["tf_full_name"] for e in convert.load(goldens["keras3"].path).entries()
    }
    assert names == full_names


def test_manager_directory_keeps_newest(goldens, tmp_path, ckpt):
    directory = tmp_path / "managed"
    for _ in range(4):
        result = ckpt("convert", goldens["managed"].path, directory, "--max-to-keep", "2")
        assert result.code == 0, result.err
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-4")
    assert sorted(p.name for p in directory.glob("*.index")) == ["ckpt-3.index", "ckpt-4.index"]
    variable = tf.Variable(np.zeros((2, 3), np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(directory), 2)
    manager.checkpoint.restore(manager.latest_checkpoint).assert_consumed()
    expected = tf_values(tf.train.latest_checkpoint(str(goldens["managed"].path)))
    np.testing.assert_array_equal(variable.numpy(), expected["v/.ATTRIBUTES/VARIABLE_VALUE"])
    # and our own reader follows the state file to the newest
    assert convert.load(directory).source == str(directory)


def test_refuses_existing_output_unless_overwrite(goldens, tmp_path, ckpt):
    out = tmp_path / "o"
    assert ckpt("convert", goldens["keras3"].path, out, "--to", "tf").code == 0
    again = ckpt("convert", goldens["keras3"].path, out, "--to", "tf")
    assert again.code == 2 and "--overwrite" in again.err
    assert ckpt("convert", goldens["keras3"].path, out, "--to", "tf", "--overwrite").code == 0
    assert set(tf_values(out)) == set(tf_values(goldens["keras3"].path))


def test_a_legacy_h5_keeps_top_level_names_in_tf1(goldens, tmp_path, ckpt):
    """`beta1_power` (a tensor at the top) is a .h5 layer `beta1_power` with the weight
    `beta1_power:0`, and goes to TF1 names as `beta1_power`, not `beta1_power/beta1_power`.
    (TF1 -> .h5 itself is refused: a TF1 checkpoint does not record Keras' layer order.)"""
    import h5py

    source = str(goldens["tf1"].path)
    refused = ckpt("convert", source, tmp_path / "m.h5")
    assert refused.code == 2 and "does not record that order" in refused.err
    original = tf.train.load_checkpoint(source)
    kept = ["beta1_power", "global_step"]
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.attrs["layer_names"] = [k.encode() for k in kept]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.15.0"
        for key in kept:
            group = f.create_group(key)
            group.attrs["weight_names"] = [f"{key}:0".encode()]
            group[f"{key}:0"] = original.get_tensor(key)
    result = ckpt(
        "convert", tmp_path / "m.h5", tmp_path / "back" / "model.ckpt", "--to", "tf", "--tf-names"
    )
    assert result.code == 0, result.err
    back = tf.train.load_checkpoint(str(tmp_path / "back" / "model.ckpt"))
    assert set(back.get_variable_to_shape_map()) == set(kept)
    for key in kept:
        np.testing.assert_array_equal(back.get_tensor(key), original.get_tensor(key))
