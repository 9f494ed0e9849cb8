"""A TF1 `Saver` checkpoint through a flat format and back to TF: the keys TF lists are the
first checkpoint's (`dense/kernel/Adam`, not the flat files' `Adam/dense/kernel`), and so
are the values, where the flat format keeps the TF1 names (safetensors, torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import convert
from tests.tf.conftest import tf


@pytest.fixture(scope="module")
def tf1_adam(tmp_path_factory) -> Path:
    """A real TF1 Saver checkpoint trained a step with Adam (slots `X/Adam`, `X/Adam_1`),
    with a scope whose name holds a `.`, the flat formats' separator."""
    root = tmp_path_factory.mktemp("tf1_adam")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, (None, 3))
        with v1.variable_scope("encoder/layer_0"):
            kernel = v1.get_variable("kernel", (3, 2), initializer=v1.random_normal_initializer())
            bias = v1.get_variable("bias", (2,), initializer=v1.zeros_initializer())
        with v1.variable_scope("head.0"):
            out = v1.get_variable("kernel", (2, 1), initializer=v1.random_normal_initializer())
        step = v1.train.get_or_create_global_step()
        loss = tf.reduce_sum(tf.matmul(tf.matmul(x, kernel) + bias, out))
        train = v1.train.AdamOptimizer(0.1).minimize(loss, global_step=step)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train, {x: np.ones((2, 3), np.float32)})
            return Path(v1.train.Saver().save(sess, str(root / "model.ckpt")))


def _listing(path: Path) -> dict[str, np.ndarray]:
    return {
        name: tf.train.load_variable(str(path), name)
        for name, _ in tf.train.list_variables(str(path))
    }


def _same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    assert any(k.endswith("/Adam") for k in got)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize(
    "flat", ["model.safetensors", "model.pt", "sharded.safetensors", "sharded.pt"]
)
def test_tf1_through_flat_format_comes_back_identical(tf1_adam, flat, tmp_path, ckpt):
    mid = tmp_path / flat
    more = ["--max-shard-size", "40B"] if flat.startswith("sharded") else []
    assert ckpt("convert", tf1_adam, mid, *more).code == 0
    if flat.startswith("sharded"):
        mid = tmp_path / f"{flat}.index.json"
    assert ckpt("convert", mid, tmp_path / "back.ckpt").code == 0  # name-based by itself
    _same(_listing(tmp_path / "back.ckpt"), _listing(tf1_adam))


def test_flat_files_keep_their_own_keys_and_loaders(tf1_adam, tmp_path, ckpt):
    """The TF1 names ride beside the tensors: safetensors and torch readers see the slots
    at their optimizer's path, as before, and the torch file still loads weights_only."""
    import torch
    from safetensors.numpy import load_file

    assert ckpt("convert", tf1_adam, tmp_path / "m.safetensors").code == 0
    assert ckpt("convert", tf1_adam, tmp_path / "m.pt").code == 0
    names = _listing(tf1_adam)
    flat = set()
    for name in names:  # a slot `X/Adam` sits at `Adam/X`: its optimizer (the root), then X
        variable, _, last = name.rpartition("/")
        flat.add(f"{last}.{variable}" if variable in names else name)
    flat = {k.replace("/", ".") for k in flat}
    assert set(load_file(tmp_path / "m.safetensors")) == flat
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)) == flat


def test_flat_to_flat_keeps_the_names(tf1_adam, tmp_path, ckpt):
    assert ckpt("convert", tf1_adam, tmp_path / "a.safetensors").code == 0
    assert ckpt("convert", tmp_path / "a.safetensors", tmp_path / "b.pt").code == 0
    assert ckpt("convert", tmp_path / "b.pt", tmp_path / "c.safetensors").code == 0
    assert (
        ckpt("convert", tmp_path / "c.safetensors", tmp_path / "back.ckpt", "--tf-names").code == 0
    )
    _same(_listing(tmp_path / "back.ckpt"), _listing(tf1_adam))


def test_a_foreign_value_under_the_key_stays_a_value(tmp_path):
    """A safetensors file from elsewhere whose metadata uses the key for something else is
    read as it is: a string value, no TF1 names."""
    from safetensors.numpy import save_file

    save_file(
        {"a.b": np.ones(2, np.float32)},
        tmp_path / "x.safetensors",
        metadata={"tf1_names": "[[[not ours"},
    )
    graph = convert.load(tmp_path / "x.safetensors")
    assert graph.values["tf1_names"] == "[[[not ours"
    assert graph.root.meta.get("tf_layout") is None
