"""Ways of naming a checkpoint, and what a path that names none gets told.

TF1 `saver.save(sess, "model_dir/")` writes the prefix `model_dir/`: files
`model_dir/.index`, `model_dir/.data-00000-of-00001` and a `checkpoint` state file that
names "."."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error
from tests.tf.conftest import tf


@pytest.fixture(scope="session")
def slash_prefix(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A real TF1 Saver checkpoint saved under the prefix `model_dir/`, and its values."""
    root = tmp_path_factory.mktemp("tf1_slash")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        kernel = v1.get_variable(
            "dense/kernel", initializer=np.arange(6.0, dtype="f4").reshape(2, 3)
        )
        bias = v1.get_variable("dense/bias", initializer=np.array([0.5, -1.5, 2.0], "f4"))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            saved = v1.train.Saver().save(sess, f"{root / 'model_dir'}/")
            values = dict(
                zip(["dense/kernel", "dense/bias"], sess.run([kernel, bias]), strict=True)
            )
    assert saved.endswith("/") and (root / "model_dir" / ".index").is_file()
    return root / "model_dir", values


def _namings(directory: Path) -> dict[str, str]:
    bare = directory.parent / "no_state"
    if not bare.exists():
        shutil.copytree(directory, bare)
        (bare / "checkpoint").unlink()
    return {
        "index": f"{directory}/.index",
        "data": f"{directory}/.data-00000-of-00001",
        "directory": str(directory),
        "prefix": f"{directory}/",
        "directory without state file": str(bare),
    }


@pytest.mark.parametrize(
    "naming", ["index", "data", "directory", "prefix", "directory without state file"]
)
def test_slash_prefix_lists_and_converts(slash_prefix, naming, tmp_path, ckpt):
    from safetensors.numpy import load_file

    directory, values = slash_prefix
    source = _namings(directory)[naming]
    listed = ckpt("ls", source, "--json")
    assert listed.code == 0, listed.err
    import json

    assert {row["key"] for row in json.loads(listed.out)} == set(values)
    result = ckpt("convert", source, tmp_path / "w.safetensors")
    assert result.code == 0, result.err
    written = load_file(str(tmp_path / "w.safetensors"))
    assert set(written) == {"dense.kernel", "dense.bias"}
    for key, value in values.items():
        np.testing.assert_array_equal(written[key.replace("/", ".")], value)


def test_slash_prefix_rewritten_restores_with_saver(slash_prefix, tmp_path, ckpt):
    directory, values = slash_prefix
    result = ckpt("convert", f"{directory}/.index", tmp_path / "again" / "model.ckpt", "--to", "tf")
    assert result.code == 0, result.err
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        made = {k: v1.get_variable(k, shape=v.shape) for k, v in values.items()}
        with v1.Session(graph=graph) as sess:
            v1.train.Saver().restore(sess, str(tmp_path / "again" / "model.ckpt"))
            for key, variable in made.items():
                np.testing.assert_array_equal(sess.run(variable), values[key])


def test_directory_of_several_checkpoints_says_so(goldens, tmp_path, ckpt):
    source = goldens["functional"].path
    for name in ("a", "b"):
        for f in source.parent.glob(source.name + ".*"):
            shutil.copy(f, tmp_path / f.name.replace(source.name, name))
    assert_one_line_error(ckpt("ls", tmp_path), "2 .index files", "name the checkpoint prefix")


def test_empty_directory_says_so(tmp_path, ckpt):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(ckpt("ls", tmp_path / "empty"), "no .index file")


def test_state_file_naming_a_missing_checkpoint_says_so(tmp_path, ckpt):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-7"\n')
    assert_one_line_error(ckpt("ls", tmp_path), "'ckpt-7', whose .index is missing")


def test_meta_file_points_at_the_weights(slash_prefix, goldens, ckpt):
    meta = Path(f"{goldens['tf1'].path}.meta")
    assert meta.is_file()
    assert_one_line_error(
        ckpt("ls", meta), "MetaGraph", ".index and .data files", str(goldens["tf1"].path)
    )


@pytest.mark.parametrize(
    "name", ["x.pt", "x.npz", "x.msgpack", "x.h5", "x.safetensors", "x.weights.h5", "x"]
)
def test_an_empty_file_is_said_to_be_empty(tmp_path, ckpt, name):
    (tmp_path / name).write_bytes(b"")
    assert_one_line_error(ckpt("ls", tmp_path / name), "is 0 bytes")


def test_onnx_is_named(tmp_path, ckpt):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    assert_one_line_error(ckpt("ls", tmp_path / "model.onnx"), "ONNX", "does not read")
