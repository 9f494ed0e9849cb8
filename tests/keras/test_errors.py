"""Damaged or foreign files: one line naming the file and what is wrong, exit 2, nothing
written."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from ..conftest import assert_one_line_error, listing


def assert_refused(ckpt, tmp_path, path, *fragments):
    assert_one_line_error(ckpt("ls", path), str(path), *fragments)
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(ckpt("convert", path, out / "x.safetensors"), str(path), *fragments)
    assert_one_line_error(ckpt("convert", path, out / "x.h5"), str(path), *fragments)
    assert listing(out) == set()


def test_weight_names_lists_a_missing_dataset(goldens, tmp_path, ckpt):
    bad = tmp_path / "missing.h5"
    shutil.copy(goldens["tk_seq"].files["h5"], bad)
    with h5py.File(bad, "a") as f:
        del f["first/first/kernel:0"]
    assert_refused(ckpt, tmp_path, bad, "weight_names", "first/kernel:0", "not a dataset")


def test_layer_names_lists_a_missing_group(goldens, tmp_path, ckpt):
    bad = tmp_path / "nogroup.h5"
    shutil.copy(goldens["tk_seq"].files["h5"], bad)
    with h5py.File(bad, "a") as f:
        del f["last"]
    assert_refused(ckpt, tmp_path, bad, "layer_names", "'last'")


@pytest.mark.parametrize("name,kind", [("tk_all", "h5"), ("k3_all", "weights")])
def test_truncated_hdf5(goldens, tmp_path, ckpt, name, kind):
    source = goldens[name].files[kind]
    bad = tmp_path / source.name
    bad.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
    assert_refused(ckpt, tmp_path, bad, "truncated")


def test_truncated_keras_archive(goldens, tmp_path, ckpt):
    source = goldens["k3_seq"].files["keras"]
    bad = tmp_path / "model.keras"
    bad.write_bytes(source.read_bytes()[:-200])
    assert_refused(ckpt, tmp_path, bad, ".keras archive")


def test_hdf5_that_is_not_a_keras_file(tmp_path, ckpt):
    bad = tmp_path / "data.h5"
    with h5py.File(bad, "w") as f:
        f["images"] = np.zeros((2, 3), "f4")
        f.attrs["author"] = "someone"
    assert_refused(ckpt, tmp_path, bad, "HDF5", "not a Keras weight file")


def test_string_dataset_is_not_a_weight(goldens, tmp_path, ckpt):
    bad = tmp_path / "strings.weights.h5"
    with h5py.File(bad, "w") as f:
        f.create_group("layers/dense/vars")["0"] = np.array([b"a", b"b"])
    assert_refused(ckpt, tmp_path, bad, "layers/dense/vars/0", "not numeric")


def test_links_are_refused(goldens, tmp_path, ckpt):
    bad = tmp_path / "linked.weights.h5"
    shutil.copy(goldens["k3_seq"].files["weights"], bad)
    with h5py.File(bad, "a") as f:
        f["layers/dense/vars/2"] = h5py.ExternalLink("/etc/passwd", "/x")
    assert_refused(ckpt, tmp_path, bad, "ExternalLink", "refused")


def test_sharded_index_problems(goldens, tmp_path, ckpt):
    source = goldens["k3_all"].files["sharded"]
    index = json.loads(source.read_text())
    missing = tmp_path / "missing.weights.json"
    missing.write_text(source.read_text())  # its shards are not beside it
    assert_refused(ckpt, tmp_path, missing, "shard", "does not exist")

    escape = tmp_path / "escape.weights.json"
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../../etc/x.weights.h5"
    escape.write_text(json.dumps(index))
    shutil.rmtree(tmp_path / "out")
    assert_refused(ckpt, tmp_path, escape, "plain .h5 file names")
