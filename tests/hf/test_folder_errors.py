"""Hugging Face model folders that cannot be converted: one line on stderr, exit status 2,
nothing written (no output folder, no temporary folder beside it), the input untouched.
The files are laid out with h5py as transformers 4.57 wrote them (tf_files.py)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from tests.conftest import assert_one_line_error, listing
from tests.hf.tf_files import (
    bert_layers,
    flat,
    write_tf_h5,
    write_tf_safetensors,
    write_tf_sharded,
)

CONFIG = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}


def _folder(path: Path, sharded: bool = False, safetensors: bool = False) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps(CONFIG))
    if safetensors:
        write_tf_safetensors(path / "model.safetensors", flat(bert_layers()))
    elif sharded:
        write_tf_sharded(path, flat(bert_layers()), max_shard_size=2600)
    else:
        write_tf_h5(path / "tf_model.h5", bert_layers())
    return path


def _unchanged(ckpt, args, before: set[str], root: Path, *fragments: str) -> None:
    assert_one_line_error(ckpt(*args), *fragments)
    assert listing(root) == before


def test_a_folder_converts_and_its_other_files_come_along(ckpt, tmp_path):
    source = _folder(tmp_path / "tf")
    (source / "tokenizer.json").write_text("{}")
    result = ckpt("convert", source, tmp_path / "pt", "--rules", "hf-tf")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "pt").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert "copied from" in result.err and "tokenizer.json" in result.err
    keys = ckpt("ls", tmp_path / "pt" / "model.safetensors").out
    assert "bert.encoder.layer.1.attention.self.query.weight" in keys


def test_a_truncated_weights_file(ckpt, tmp_path):
    source = _folder(tmp_path / "tf")
    data = (source / "tf_model.h5").read_bytes()
    (source / "tf_model.h5").write_bytes(data[: len(data) // 2])
    before = listing(tmp_path)
    _unchanged(ckpt, ("convert", source, tmp_path / "pt", "--rules", "hf-tf"), before, tmp_path)


def test_an_index_naming_a_missing_shard(ckpt, tmp_path):
    source = _folder(tmp_path / "tf", sharded=True)
    next(source.glob("tf_model-00002-*.h5")).unlink()
    before = listing(tmp_path)
    args = ("convert", source, tmp_path / "pt", "--rules", "hf-tf")
    _unchanged(ckpt, args, before, tmp_path, "tf_model.h5.index.json", "missing")


def test_weight_names_that_disagree_with_the_datasets(ckpt, tmp_path):
    source = _folder(tmp_path / "tf")
    with h5py.File(source / "tf_model.h5", "r+") as f:
        names = [
            n if isinstance(n, bytes) else n.encode() for n in f["classifier"].attrs["weight_names"]
        ]
        f["classifier"].attrs["weight_names"] = [*names[:-1], b"x/classifier/nothing:0"]
    before = listing(tmp_path)
    args = ("convert", source, tmp_path / "pt", "--rules", "hf-tf")
    _unchanged(ckpt, args, before, tmp_path, "tf_model.h5", "x/classifier/nothing:0")


def test_writing_tf_names_needs_a_tf_file_of_the_model(ckpt, tmp_path):
    source = _folder(tmp_path / "tf")
    assert ckpt("convert", source, tmp_path / "pt", "--rules", "hf-tf").code == 0
    before = listing(tmp_path)
    args = ("convert", tmp_path / "pt", tmp_path / "back", "--rules", "hf-tf")
    _unchanged(ckpt, args, before, tmp_path, "--like", "tf_model.h5")


@pytest.mark.parametrize("where", ["inside", "existing"])
def test_an_output_folder_that_would_lose_files(ckpt, tmp_path, where):
    source = _folder(tmp_path / "tf")
    out = source / "pt" if where == "inside" else tmp_path / "pt"
    if where == "existing":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = listing(tmp_path)
    args = ("convert", source, out, "--rules", "hf-tf")
    _unchanged(ckpt, args, before, tmp_path, "inside" if where == "inside" else "--overwrite")


def test_without_rules_the_note_names_them(ckpt, tmp_path):
    source = _folder(tmp_path / "tf")
    result = ckpt("convert", source / "tf_model.h5", tmp_path / "out.safetensors")
    assert result.code == 0, result.err
    assert "--rules hf-tf" in result.err


def test_a_tf_safetensors_folder_converts_as_its_h5_does(ckpt, tmp_path):
    """transformers' TF classes also saved `model.safetensors` (`format: tf`, names without
    the model's scope): read as TF, it gives what the same weights in `tf_model.h5` give."""
    from_h5 = _folder(tmp_path / "h5")
    from_safetensors = _folder(tmp_path / "st", safetensors=True)
    listed = ckpt("ls", from_safetensors / "model.safetensors").out
    assert "bert/encoder/layer_._1/attention/self/query/kernel:0" in listed
    for source in (from_h5, from_safetensors):
        result = ckpt("convert", source, tmp_path / f"{source.name}-pt", "--rules", "hf-tf")
        assert result.code == 0, result.err
    same = ckpt(
        "diff", tmp_path / "h5-pt" / "model.safetensors", tmp_path / "st-pt" / "model.safetensors"
    )
    assert same.code == 0, same.out + same.err
    # Without rules the names stay TF's, written back as the file had them.
    plain = ckpt("convert", from_safetensors / "model.safetensors", tmp_path / "plain.safetensors")
    assert plain.code == 0 and "--rules hf-tf" in plain.err
    assert ckpt("ls", tmp_path / "plain.safetensors").out == listed


def test_tf_safetensors_names_that_collide(ckpt, tmp_path):
    source = _folder(tmp_path / "st", safetensors=True)
    data = (source / "model.safetensors").read_bytes()
    # `classifier/bias:0` renamed `classifier/kernel`: the kernel's name twice.
    (source / "model.safetensors").write_bytes(
        data.replace(b'"classifier/bias:0"', b'"classifier/kernel"')
    )
    before = listing(tmp_path)
    args = ("convert", source, tmp_path / "pt", "--rules", "hf-tf")
    _unchanged(ckpt, args, before, tmp_path, "model.safetensors", "classifier/kernel")
