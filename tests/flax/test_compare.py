"""compare_to_target: what flax.serialization.from_bytes lets through silently."""

from __future__ import annotations

import jax
import numpy as np
from flax import serialization

import convert
from convert.formats.flax import compare_to_target


def test_same_model_has_no_mismatch(linen_cnn, tmp_path):
    target = tmp_path / "template.msgpack"
    target.write_bytes(serialization.to_bytes(linen_cnn.template))
    assert compare_to_target(convert.load(linen_cnn.path), convert.load(target)) == []


def test_shape_and_dtype_mismatches_flax_would_accept(linen_block, linen_bf16, tmp_path):
    # Flax restores a bfloat16 checkpoint into a float32 template without a word ...
    restored = serialization.from_bytes(linen_block.template, linen_bf16.path.read_bytes())
    assert restored["params"]["Dense_0"]["kernel"].dtype != np.float32
    problems = compare_to_target(convert.load(linen_bf16.path), convert.load(linen_block.path))
    kernel = linen_block.template["params"]["Dense_0"]["kernel"]
    assert (
        "params/Dense_0/kernel: dtype bfloat16 in the checkpoint, float32 in the target" in problems
    )
    # one line per tensor (every parameter is bfloat16), nothing else
    assert len(problems) == len(jax.tree_util.tree_leaves(linen_block.template))
    # ... and a checkpoint of another width: shape lines
    wide = {"params": {"Dense_0": {"kernel": np.zeros((kernel.shape[0], 9), np.float32)}}}
    (tmp_path / "wide.msgpack").write_bytes(serialization.to_bytes(wide))
    problems = compare_to_target(
        convert.load(tmp_path / "wide.msgpack"), convert.load(linen_block.path)
    )
    assert (
        f"params/Dense_0/kernel: shape [{kernel.shape[0]}, 9] in the checkpoint, "
        f"{list(kernel.shape)} in the target"
    ) in problems
    assert any(p.startswith("params/Dense_1/kernel: missing") for p in problems)


def test_extra_tensors_are_reported(linen_cnn, tmp_path):
    tree = serialization.msgpack_restore(linen_cnn.path.read_bytes())
    tree["params"]["extra"] = np.ones(2, np.float32)
    (tmp_path / "more.msgpack").write_bytes(serialization.to_bytes(tree))
    problems = compare_to_target(
        convert.load(tmp_path / "more.msgpack"), convert.load(linen_cnn.path)
    )
    assert problems == ["params/extra: not in the target (float32[2]; from_bytes would ignore it)"]
