"""safetensors read and written natively, checked against the safetensors package."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import safe_open

import convert
from convert.core.errors import FormatError, UnsupportedError

from .torch_golden import Net, assert_same_object, assert_same_tensor, inputs


@pytest.fixture(scope="module")
def package_files(golden, tmp_path_factory):
    """Files written by the safetensors package itself."""
    d = tmp_path_factory.mktemp("st")
    dtypes = {k: v for k, v in golden.objects["dtypes"].items() if k != "complex128"}
    safetensors.torch.save_file(dtypes, d / "dtypes.safetensors", metadata={"source": "t"})
    arrays = {
        "a.b": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a.c": np.array([1, 2], dtype=np.int64),
        "z": np.zeros((0, 4), np.float16),
        "s": np.array(2.5, dtype=np.float64),
    }
    safetensors.numpy.save_file(arrays, d / "numpy.safetensors")
    return d, dtypes, arrays


def test_reads_package_files_bit_exact(package_files):
    d, dtypes, arrays = package_files
    graph = convert.load(d / "dtypes.safetensors")
    assert graph.format == "safetensors" and graph.values == {"source": "t"}
    ours = {e.tensor.meta["key"]: e.tensor for e in graph.entries()}
    assert set(ours) == set(dtypes)
    for key, value in dtypes.items():
        assert_same_tensor(ours[key].read(), value, key)
    graph = convert.load(d / "numpy.safetensors")
    assert graph.get(("a", "b")).meta["key"] == "a.b"
    for key, value in arrays.items():
        np.testing.assert_array_equal(graph.get(tuple(key.split("."))).read(), value)


@pytest.mark.parametrize("name", ["model", "views", "weird", "checkpoint"])
def test_written_files_load_in_the_package(golden, name, tmp_path):
    out = tmp_path / f"{name}.safetensors"
    report = convert.convert(golden[name], out)
    expected = convert.load(golden[name])
    theirs = safetensors.torch.load_file(out)
    with safe_open(out, "pt") as f:
        assert f.metadata() == {"format": "pt"}
    keys = [".".join(e.path) for e in expected.entries()]
    assert set(theirs) == set(keys)
    for entry in expected.entries():
        assert_same_tensor(entry.tensor.read(), theirs[".".join(entry.path)])
    if name != "views":  # (numpy has no bfloat16 for the package's numpy loader)
        as_numpy = safetensors.numpy.load_file(out)
        for entry in expected.entries():
            np.testing.assert_array_equal(as_numpy[".".join(entry.path)], entry.tensor.read())
    if name == "views":  # "same" is the same tensor as "base": written once, and said so
        assert "same" not in theirs and any("same -> base" in n for n in report.notes)
    if name == "checkpoint":
        assert any("epoch" in n for n in report.notes)


def test_model_loads_strict_from_written_safetensors(golden, tmp_path):
    out = tmp_path / "model.safetensors"
    convert.convert(golden["model"], out)
    net = Net().eval()
    net.load_state_dict(safetensors.torch.load_file(out), strict=True)
    with torch.no_grad():
        for ours, theirs in zip(net(*inputs()), golden.objects["net"](*inputs()), strict=True):
            assert torch.equal(ours, theirs)


def test_torch_safetensors_torch_keeps_keys_order_and_bits(golden, tmp_path):
    st, back = tmp_path / "w.safetensors", tmp_path / "w.pt"
    convert.convert(golden["weird"], st)
    convert.convert(st, back)
    loaded = torch.load(back, weights_only=True)
    assert list(loaded) == list(golden.objects["weird"])  # header order is kept
    assert_same_object(dict(loaded), dict(golden.objects["weird"]))


def test_metadata_round_trips_and_complex128_is_refused(package_files, golden, tmp_path):
    d, _, _ = package_files
    out = tmp_path / "again.safetensors"
    convert.convert(d / "dtypes.safetensors", out)
    with safe_open(out, "np") as f:
        assert f.metadata() == {"source": "t", "format": "pt"}
    with pytest.raises(UnsupportedError, match="complex128"):
        convert.convert(golden["dtypes"], tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


def write_raw(path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD_HEADERS = {
    "huge length": ({"x": ENTRY}, 8, 200_000_000, "more than 100 MB"),
    "length past end": ({"x": ENTRY}, 8, 4000, "truncated"),
    "not json": (b"{not json}", 8, None, "not valid JSON"),
    "duplicate": (
        b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        8,
        None,
        "twice",
    ),
    "unknown dtype": ({"x": dict(ENTRY, dtype="F13")}, 8, None, "unknown dtype"),
    "size lie": ({"x": dict(ENTRY, shape=[3])}, 8, None, "needs 12 bytes"),
    "gap": ({"x": dict(ENTRY, data_offsets=[4, 12])}, 12, None, "tile"),
    "overlap": ({"x": ENTRY, "y": ENTRY}, 8, None, "tile"),
    "short data": ({"x": ENTRY}, 4, None, "cover"),
    "extra data": ({"x": ENTRY}, 16, None, "cover"),
    "negative dim": ({"x": dict(ENTRY, shape=[-2])}, 8, None, "bad shape"),
    "bad offsets": ({"x": dict(ENTRY, data_offsets=[8, 0])}, 8, None, "bad data_offsets"),
    "extra field": ({"x": dict(ENTRY, junk=1)}, 8, None, "exactly"),
    "bad metadata": ({"__metadata__": {"a": 1}, "x": ENTRY}, 8, None, "strings"),
    "array header": (b"[1, 2]", 0, None, "not a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_lying_headers_are_refused(tmp_path, case):
    header, data_size, length, fragment = BAD_HEADERS[case]
    path = write_raw(tmp_path / "bad.safetensors", header, b"\0" * data_size, length)
    with pytest.raises(FormatError, match=fragment):
        convert.load(path, "safetensors")
