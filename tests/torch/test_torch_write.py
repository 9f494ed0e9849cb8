"""Files written here load in torch (weights_only and mmap) and in models, unchanged."""

from __future__ import annotations

import zipfile
from collections import OrderedDict

import ml_dtypes
import numpy as np
import pytest
import torch

import convert
from convert.core.errors import OutputExistsError, UnsupportedError
from convert.core.graph import Graph
from convert.core.tensor import Tensor

from .torch_golden import Net, TiedNet, assert_same_object, inputs

ROUND_TRIP = [
    "model",
    "model_legacy",
    "dtypes",
    "views",
    "tied",
    "checkpoint",
    "checkpoint_legacy",
    "weird",
    "dtypes_legacy",
]


def load_both(path):
    return (torch.load(path, weights_only=True), torch.load(path, weights_only=True, mmap=True))


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_loads_equal_in_torch(golden, name, tmp_path):
    out = tmp_path / f"{name}.pt"
    report = convert.convert(golden[name], out)
    # torch cannot load its own legacy float8/uint16 file: compare with what was saved
    expected = (
        golden.objects[name]
        if name == "dtypes_legacy"
        else torch.load(golden[name], weights_only=True)
    )
    for loaded in load_both(out):
        assert_same_object(loaded, expected)
    assert report.files == [str(out)] and report.notes == []


def test_records_are_stored_and_aligned_like_torch(golden, tmp_path):
    out = tmp_path / "model.pt"
    convert.convert(golden["model"], out)
    with zipfile.ZipFile(out) as ours, zipfile.ZipFile(golden["model"]) as theirs:
        assert [i.filename for i in ours.infolist()] == [i.filename for i in theirs.infolist()]
        data = out.read_bytes()
        for info in ours.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            start = info.header_offset + 30 + len(info.filename)
            start += int.from_bytes(
                data[info.header_offset + 28 : info.header_offset + 30], "little"
            )
            assert start % 64 == 0, info.filename
            for record in ("byteorder", "version", ".format_version", ".storage_alignment"):
                name = f"model/{record}"
                assert ours.read(name) == theirs.read(name)


def test_torch_computed_offsets_match(golden, tmp_path, monkeypatch):
    """torch can compute storage offsets itself assuming miniz's layout; ours matches it."""
    from torch.utils.serialization import config

    out = tmp_path / "model.pt"
    convert.convert(golden["checkpoint"], out)
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")  # torch asserts each offset
    config.load.calculate_storage_offsets = True  # (a config module: not monkeypatchable)
    try:
        loaded = torch.load(out, weights_only=True, mmap=True)
    finally:
        config.load.calculate_storage_offsets = False
    assert_same_object(loaded, golden.objects["checkpoint"])


def test_load_state_dict_strict_gives_same_outputs(golden, tmp_path):
    out = tmp_path / "net.pt"
    convert.convert(golden["model_legacy"], out)
    net = Net().eval()
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    with torch.no_grad():
        for ours, theirs in zip(net(*inputs()), golden.objects["net"](*inputs()), strict=True):
            assert torch.equal(ours, theirs)


def test_tied_weights_share_one_storage(golden, tmp_path):
    out = tmp_path / "tied.pt"
    convert.convert(golden["tied"], out)
    loaded = torch.load(out, weights_only=True)
    assert (
        loaded["embed.weight"].untyped_storage().data_ptr()
        == loaded["lm_head.weight"].untyped_storage().data_ptr()
    )
    with zipfile.ZipFile(out) as zf:
        assert sum(n.startswith("tied/data/") for n in zf.namelist()) == 3
    net = TiedNet()
    net.load_state_dict(loaded, strict=True)
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(net(tokens), golden.objects["tied_net"](tokens))


def test_nested_checkpoint_keeps_metadata_and_optimizer(golden, tmp_path):
    out = tmp_path / "ckpt.pt"
    convert.convert(golden["checkpoint"], out)
    loaded = torch.load(out, weights_only=True)
    assert loaded["epoch"] == 3 and loaded["flags"] == {"amp": False, "tag": None}
    assert list(loaded["optimizer"]["state"]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt.load_state_dict(loaded["optimizer"])  # torch accepts it back
    net.load_state_dict(loaded["model"], strict=True)


def test_graph_from_numpy_is_a_flat_state_dict(tmp_path):
    arrays = {
        ("encoder", "layer", "0", "weight"): np.arange(6, dtype=np.float32).reshape(2, 3),
        ("encoder", "bf16"): np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
        ("f8",): np.array([0.5, 1.0], dtype=ml_dtypes.float8_e5m2),
        ("big_endian",): np.array([1.0, 2.0], dtype=">f8"),
        ("u32",): np.array([1, 2**31], dtype=np.uint32),
        ("scalar",): np.array(3, dtype=np.int16),
    }
    graph = Graph.from_flat({k: Tensor.from_array(v) for k, v in arrays.items()})
    graph.root.values["note"] = "dropped"
    out = tmp_path / "flat.pt"
    report = convert.save(graph, out)
    assert any("dropped 1 non-tensor" in n for n in report.notes)
    for loaded in load_both(out):
        assert list(loaded) == [".".join(k) for k in arrays]
        for key, value in arrays.items():
            ours = loaded[".".join(key)]
            if value.dtype.name in ("bfloat16", "float8_e5m2"):
                np.testing.assert_array_equal(ours.float().numpy(), value.astype(np.float32))
            else:
                np.testing.assert_array_equal(ours.numpy(), value)


def test_unwritable_dtype_leaves_nothing(tmp_path):
    graph = Graph.from_flat(
        {
            ("x",): Tensor.from_array(np.array([1, 2], dtype=ml_dtypes.int4)),
            ("y",): Tensor.from_array(np.ones(2, np.float32)),
        }
    )
    with pytest.raises(UnsupportedError, match="'x'.*int4"):
        convert.save(graph, tmp_path / "out.pt")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_and_inputs_are_protected(golden, tmp_path):
    out = tmp_path / "model.pt"
    convert.convert(golden["model"], out)
    with pytest.raises(OutputExistsError):
        convert.convert(golden["model"], out)
    convert.convert(golden["tied"], out, overwrite=True)
    assert set(torch.load(out, weights_only=True)) == set(golden.objects["tied"])
    with pytest.raises(OutputExistsError):
        convert.convert(out, out, overwrite=True)


def test_container_kinds_and_key_types_round_trip(tmp_path):
    saved = {
        "m": OrderedDict([(1.5, torch.ones(2)), ((1, 2), "t"), (None, 3), ("x", torch.zeros(1))]),
        2: [torch.ones(1), (torch.arange(2), "pair")],
        "blob": b"\x00\xff",
        "dtype": torch.bfloat16,
        "c": 1 + 2j,
        "s": {1, 2},
        "ba": bytearray(b"ab"),
    }
    torch.save(saved, tmp_path / "odd.pt")
    convert.convert(tmp_path / "odd.pt", tmp_path / "again.pt")
    for loaded in load_both(tmp_path / "again.pt"):
        assert_same_object(loaded, saved)
