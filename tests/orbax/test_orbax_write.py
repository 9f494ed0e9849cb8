"""Orbax checkpoints written without JAX or Orbax, restored by the real orbax-checkpoint (as
numpy arrays and as jax.Arrays on one CPU device, by `StandardCheckpointer` and by a
`CheckpointManager`) and by Flax NNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
ocp = pytest.importorskip("orbax.checkpoint")
nnx = pytest.importorskip("flax.nnx")

from tests.conftest import assert_one_line_error, listing  # noqa: E402
from tests.orbax.test_orbax_read import LAYOUTS, _reference  # noqa: E402


def _flat(tree, where=""):
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        path = f"{where}/{key}" if where else str(key)
        if isinstance(value, dict | list | tuple):
            yield from _flat(value, path)
        else:
            yield path, value


def _assert_restores_as(tree, orbax_dir: Path, name: str) -> None:
    arrays, data, values = _reference(orbax_dir, name)
    got = dict(_flat(tree))
    assert set(got) == set(arrays) | set(values)
    for path, value in got.items():
        if path in arrays:
            array = np.asarray(value)
            assert [str(array.dtype), list(array.shape)] == arrays[path], path
            assert np.ascontiguousarray(array).tobytes() == data[path], path
        else:
            assert value == values[path], path


@pytest.mark.parametrize("name", LAYOUTS)
def test_orbax_restores_what_is_written_bit_for_bit(orbax_dir, tmp_path, ckpt, name):
    out = tmp_path / "out"
    result = ckpt("convert", orbax_dir / name, out, "--to", "orbax")
    assert result.code == 0, result.err
    _assert_restores_as(ocp.StandardCheckpointer().restore(out), orbax_dir, name)
    if name == "standard":  # (lists come back as lists)
        assert isinstance(ocp.StandardCheckpointer().restore(out)["params"]["blocks"], list)


def test_a_step_number_is_a_manager_step_restored_as_jax_arrays(orbax_dir, tmp_path, ckpt):
    root = tmp_path / "run"
    for step in (3, 10):
        result = ckpt("convert", orbax_dir / "standard", root / str(step))
        assert result.code == 0, result.err  # (a folder named by a number inside: orbax)
    with ocp.CheckpointManager(root) as manager:
        assert manager.all_steps() == [3, 10] and manager.latest_step() == 10
        restored = manager.restore(10)
        _assert_restores_as(restored, orbax_dir, "standard")
        device = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])

        def abstract(x):
            x = np.asarray(x)
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device) if x.ndim else x

        target = jax.tree_util.tree_map(abstract, restored)
        as_jax = manager.restore(3, args=ocp.args.StandardRestore(target))
    leaves = [v for _, v in _flat(as_jax) if np.ndim(v) > 0]
    assert leaves and all(isinstance(v, jax.Array) for v in leaves)
    _assert_restores_as(jax.tree_util.tree_map(np.asarray, as_jax), orbax_dir, "standard")


def test_an_nnx_model_takes_what_is_written(orbax_dir, tmp_path, ckpt):
    from tests.orbax.orbax_job import Net

    arrays, data, _ = _reference(orbax_dir, "nnx")
    for source in (orbax_dir / "nnx.msgpack", orbax_dir / "nnx"):
        out = tmp_path / source.name.replace(".", "-")
        assert ckpt("convert", source, out, "--to", "orbax").code == 0
        fresh = Net(nnx.Rngs(7))
        state = nnx.state(fresh)
        if source.suffix == ".msgpack":  # a pure dict, as Flax's NNX guide restores one
            nnx.replace_by_pure_dict(state, ocp.StandardCheckpointer().restore(out))
        else:  # an NNX State saved as it is: restored into the model's abstract state
            abstract = nnx.eval_shape(lambda: Net(nnx.Rngs(0)))
            state = ocp.StandardCheckpointer().restore(out, nnx.state(abstract))
        nnx.update(fresh, state)
        got = dict(_flat(nnx.to_pure_dict(nnx.state(fresh))))
        assert {k: np.asarray(v).tobytes() for k, v in got.items()} == data


def test_orbax_to_msgpack_to_orbax_is_bit_for_bit(orbax_dir, tmp_path, ckpt):
    there = tmp_path / "tree.msgpack"
    assert ckpt("convert", orbax_dir / "sharded", there).code == 0
    back = tmp_path / "back"
    assert ckpt("convert", there, back, "--to", "orbax").code == 0
    compared = ckpt("diff", orbax_dir / "sharded", back)
    assert compared.code == 0 and "equal, bit for bit" in compared.out + compared.err


def test_an_existing_folder_is_kept_unless_overwrite(orbax_dir, tmp_path, ckpt):
    out = tmp_path / "out"
    assert ckpt("convert", orbax_dir / "nnx", out, "--to", "orbax").code == 0
    before = listing(tmp_path)
    result = ckpt("convert", orbax_dir / "standard", out, "--to", "orbax")
    assert_one_line_error(result, "exists already")
    assert listing(tmp_path) == before
    result = ckpt("convert", orbax_dir / "standard", out, "--to", "orbax", "--overwrite")
    assert result.code == 0, result.err
    _assert_restores_as(ocp.StandardCheckpointer().restore(out), orbax_dir, "standard")
    assert {p.split("/")[0] for p in listing(tmp_path)} == {"out"}  # (nothing left aside)
    inside = out / "more"
    result = ckpt("convert", out, out, "--to", "orbax", "--overwrite")
    assert_one_line_error(result, "input of this conversion")
    assert not inside.exists() and json.loads((out / "_METADATA").read_text())


def test_a_number_inside_a_managers_folder_is_its_next_step(orbax_dir, tmp_path, ckpt):
    run = tmp_path / "run"
    assert ckpt("convert", orbax_dir / "nnx.msgpack", run / "1", "--to", "orbax").code == 0
    result = ckpt("convert", orbax_dir / "nnx.msgpack", run / "2")  # (no --to: the folder says)
    assert result.code == 0, result.err
    assert (run / "2" / "default" / "_METADATA").is_file()
    with ocp.CheckpointManager(run) as manager:
        assert manager.all_steps() == [1, 2]
        restored = manager.restore(2)
    arrays, data, _ = _reference(orbax_dir, "nnx")
    assert {k: np.asarray(v).tobytes() for k, v in _flat(restored)} == data
