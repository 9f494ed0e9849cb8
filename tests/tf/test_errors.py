"""Damaged or wrong inputs: one line naming the file and the problem, exit 2, no
traceback, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, listing


@pytest.fixture
def copy(goldens, tmp_path) -> Path:
    """A private copy of a one-shard golden checkpoint: (prefix in tmp_path/in)."""
    source = goldens["functional"].path
    target = tmp_path / "in"
    target.mkdir()
    for f in source.parent.glob(source.name + ".*"):
        shutil.copy(f, target / f.name)
    return target / source.name


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def convert_fails(ckpt, src, tmp_path, *fragments):
    before = listing(tmp_path)
    result = ckpt("convert", src, tmp_path / "out" / "result", "--to", "tf")
    assert_one_line_error(result, *fragments)
    assert listing(tmp_path) == before
    return result


def test_flipped_byte_in_data_shard(copy, tmp_path, ckpt):
    from convert.formats.tf.bundle import BundleReader

    data = Path(f"{copy}.data-00000-of-00001")
    kernel = b"model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    entry = BundleReader(copy).entry(kernel)
    flip(data, entry.offset + entry.size // 2)
    assert ckpt("ls", copy).code == 0  # listing reads no data, so it cannot notice
    convert_fails(ckpt, copy, tmp_path, "checksum does not match", data.name)


def test_flipped_byte_in_index(copy, tmp_path, ckpt):
    flip(Path(f"{copy}.index"), 12)
    assert_one_line_error(ckpt("ls", copy), "checksum mismatch", ".index")
    convert_fails(ckpt, copy, tmp_path, "checksum mismatch", ".index")


@pytest.mark.parametrize("keep", [0.5, 0.98, 10])
def test_truncated_index(copy, tmp_path, ckpt, keep):
    index = Path(f"{copy}.index")
    data = index.read_bytes()
    index.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    convert_fails(ckpt, copy, tmp_path, str(index), "not a valid checkpoint index")


def test_truncated_data_shard(copy, tmp_path, ckpt):
    data = Path(f"{copy}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-20])
    convert_fails(ckpt, copy, tmp_path, "past the end of the file", data.name)


def test_missing_shard(copy, tmp_path, ckpt):
    Path(f"{copy}.data-00000-of-00001").unlink()
    assert_one_line_error(ckpt("ls", copy), "data shard", "is missing")
    convert_fails(ckpt, copy, tmp_path, "is missing")


@pytest.mark.parametrize("what", ["text file", "empty directory", "nothing"])
def test_not_a_checkpoint(tmp_path, ckpt, what):
    path = tmp_path / "thing"
    if what == "text file":
        path.write_text("hello\n")
    elif what == "empty directory":
        path.mkdir()
    result = ckpt("ls", path)
    assert_one_line_error(result, str(path))
    convert_fails(ckpt, path, tmp_path, str(path))


def test_never_writes_over_its_input(copy, ckpt):
    before = Path(f"{copy}.index").read_bytes()
    result = ckpt("convert", copy, copy, "--to", "tf", "--overwrite")
    assert_one_line_error(result, "input")
    assert Path(f"{copy}.index").read_bytes() == before


@pytest.mark.parametrize("golden", ["functional", "tf1", "sharded"])
def test_truncated_data_shard_fails_at_ls(goldens, golden, tmp_path, ckpt):
    """Listing reads no data, but checks each shard's size against its entries."""
    source = goldens[golden].path
    for f in source.parent.glob(source.name + ".*"):
        shutil.copy(f, tmp_path / f.name)
    shards = sorted(tmp_path.glob("*.data-*"))
    last = max(shards, key=lambda p: p.stat().st_size)
    last.write_bytes(last.read_bytes()[:-1])
    assert_one_line_error(ckpt("ls", tmp_path / source.name), last.name, "truncated")
