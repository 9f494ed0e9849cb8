"""Stored npz members are written in zipfile's own layout (formats/npz/storedzip.py), so
that a tensor's bytes can be copied file to file: the file is byte for byte what
`zipfile` writes for the same members (the writer's way before), np.load reads every value,
and zip64 fields appear exactly where zipfile puts them."""

from __future__ import annotations

import zipfile

import ml_dtypes
import numpy as np
import pytest

import convert
from convert import Graph, Tensor
from convert.formats.npz import writer
from convert.io import rawcopy


def _values() -> dict[tuple[str, ...], np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        ("params", "dense", "kernel"): rng.standard_normal((300, 1000), np.float32),
        ("params", "dense", "bias"): rng.standard_normal(7, np.float32),
        ("params", "größe"): np.arange(5, dtype=np.int16),  # a name zipfile flags UTF-8
        ("scalar",): np.array(2.5, np.float64),
        ("empty",): np.zeros((0, 3), np.float32),
        ("half",): np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16),
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A safetensors file of the values: every tensor's bytes lie unchanged in it."""
    import safetensors.numpy

    path = tmp_path_factory.mktemp("src") / "model.safetensors"
    arrays = {".".join(k): v for k, v in _values().items() if v.dtype != ml_dtypes.bfloat16}
    safetensors.numpy.save_file(arrays, path)
    return path


def _write(graph_or_path, out, monkeypatch, through_zipfile: bool):
    with monkeypatch.context() as m:
        if through_zipfile:  # (the writer's way before: zipfile, from the arrays)
            m.setattr(writer, "crc32_joins", lambda: False)
        m.setattr(rawcopy, "KERNEL_FROM", 0)  # (every stored tensor copied in the kernel)
        convert.convert(graph_or_path, out) if not isinstance(
            graph_or_path, Graph
        ) else convert.save(graph_or_path, out)
    return out.read_bytes()


@pytest.mark.parametrize("limits", [None, (1000, 3)])
def test_stored_members_are_what_zipfile_writes(source, tmp_path, monkeypatch, limits):
    """Also with zipfile's zip64 limits lowered (offsets, sizes and the member count
    past them), which puts zip64 fields in the central directory and the end records."""
    if limits is not None:
        monkeypatch.setattr(zipfile, "ZIP64_LIMIT", limits[0])
        monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", limits[1])
    copies = []
    real = rawcopy.Output.copy
    monkeypatch.setattr(
        rawcopy.Output, "copy", lambda self, *a, **k: copies.append(1) or real(self, *a, **k)
    )
    ours = _write(source, tmp_path / "ours.npz", monkeypatch, through_zipfile=False)
    assert len(copies) == 5  # (every tensor copied from the source's bytes)
    theirs = _write(source, tmp_path / "theirs.npz", monkeypatch, through_zipfile=True)
    assert ours == theirs
    assert (b"PK\x06\x06" in ours) == (limits is not None)  # (zip64 end records)
    monkeypatch.undo()
    with np.load(tmp_path / "ours.npz") as npz:
        loaded = {tuple(k.split("/")): npz[k] for k in npz.files}
    expected = {k: v for k, v in _values().items() if v.dtype != ml_dtypes.bfloat16}
    assert loaded.keys() == expected.keys()  # (safetensors' dotted keys read as paths)
    for key, value in expected.items():
        got = loaded[key]
        assert got.dtype == value.dtype and got.shape == value.shape
        assert got.tobytes() == value.tobytes()


def test_values_from_arrays_and_bfloat16_are_what_zipfile_writes(tmp_path, monkeypatch):
    graph = Graph.from_flat({k: Tensor.from_array(v) for k, v in _values().items()})
    ours = _write(graph, tmp_path / "ours.npz", monkeypatch, through_zipfile=False)
    theirs = _write(graph, tmp_path / "theirs.npz", monkeypatch, through_zipfile=True)
    assert ours == theirs
    with np.load(tmp_path / "ours.npz") as npz:
        assert npz["half"].dtype == ml_dtypes.bfloat16
        assert npz["params/größe"].tolist() == [0, 1, 2, 3, 4]
        assert (
            npz["params/dense/kernel"].tobytes()
            == _values()[("params", "dense", "kernel")].tobytes()
        )
