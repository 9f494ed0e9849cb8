"""Damaged and hostile DCP directories: one line on stderr, exit status 2, nothing written.
Each starts from a checkpoint FSDP2 wrote (two chunks per sharded tensor) whose `.metadata`
is rewritten here, with torch, as DCP itself pickles it."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

from tests.conftest import assert_one_line_error, listing

KEY = "model.0.weight"  # [7, 6]: rows 0..3 on rank 0, 4..6 on rank 1


def _copy(fsdp: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(fsdp / "float32", folder)
    metadata = FileSystemReader(folder).read_metadata()
    change(metadata)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    return folder


def _chunks(metadata):
    return metadata.state_dict_metadata[KEY].chunks


def _overlap(metadata) -> None:
    _chunks(metadata)[1] = ChunkStorageMetadata(offsets=(3, 0), sizes=(3, 6))


def _hole(metadata) -> None:
    _chunks(metadata)[1] = ChunkStorageMetadata(offsets=(4, 0), sizes=(2, 6))


def _outside(metadata) -> None:
    _chunks(metadata)[1] = ChunkStorageMetadata(offsets=(4, 0), sizes=(4, 6))


def _storage(metadata, **change) -> None:
    index = next(i for i in metadata.storage_data if i.fqn == KEY)
    info = metadata.storage_data[index]
    for name, value in change.items():
        setattr(info, name, value)


CASES = {
    "overlapping chunks": (_overlap, "overlapping chunks"),
    "a hole": (_hole, "a hole"),
    "a chunk outside the tensor": (_outside, "outside it"),
    "bytes past the file's end": (lambda m: _storage(m, length=1 << 30), "past its end"),
    "a file outside the directory": (
        lambda m: _storage(m, relative_path="../__0_0.distcp"),
        "not one of its own",
    ),
    "a missing file": (lambda m: _storage(m, relative_path="__9_0.distcp"), "is missing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_metadata(fsdp, tmp_path, ckpt, case) -> None:
    change, says = CASES[case]
    folder = _copy(fsdp, tmp_path, change)
    before = listing(tmp_path)
    assert_one_line_error(ckpt("convert", folder, tmp_path / "out.safetensors"), says)
    assert listing(tmp_path) == before


def test_a_global_outside_the_allowlist_is_refused_unrun(fsdp, tmp_path, ckpt) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(fsdp / "float32", folder)
    # (a pickle that calls os.system: refused at its GLOBAL, before anything is built)
    (folder / ".metadata").write_bytes(
        pickle.dumps(_Call(os.system, ("touch " + str(tmp_path / "ran"),)))
    )
    before = listing(tmp_path)
    assert_one_line_error(ckpt("ls", folder), "system")
    assert listing(tmp_path) == before


def test_a_truncated_chunk_file(fsdp, tmp_path, ckpt) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(fsdp / "float32", folder)
    data = (folder / "__1_0.distcp").read_bytes()
    (folder / "__1_0.distcp").write_bytes(data[: len(data) // 2])
    before = listing(tmp_path)
    assert_one_line_error(ckpt("convert", folder, tmp_path / "out.safetensors"), "__1_0.distcp")
    assert listing(tmp_path) == before


class _Call:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args
