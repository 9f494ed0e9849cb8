"""Reading torch.save files (zip and legacy) without torch, bit-exact against torch.load."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

import convert
from convert.core.errors import ChecksumError
from convert.core.graph import Node
from convert.core.tensor import Tensor
from convert.formats.torch import storage as storage_module

from .torch_golden import assert_same_object, assert_same_tensor, flatten

FILES = [
    "model",
    "model_legacy",
    "dtypes",
    "views",
    "views_legacy",
    "tied",
    "checkpoint",
    "checkpoint_legacy",
    "weird",
    "big",
    "big_legacy",
]


def keyed(graph: convert.Graph) -> dict[str, Tensor]:
    """Every path of every tensor, as a dotted key."""
    return {".".join(p): e.tensor for e in graph.entries() for p in e.paths}


@pytest.mark.parametrize("name", FILES)
def test_every_tensor_bit_exact_against_torch_load(golden, name):
    graph = convert.load(golden[name])
    assert graph.format == "torch"
    expected = flatten(torch.load(golden[name], weights_only=True))
    ours = keyed(graph)
    assert sorted(ours) == sorted(expected)
    for key, tensor in ours.items():
        assert_same_tensor(tensor.read(), expected[key], key)


@pytest.mark.parametrize("name", ["dtypes", "dtypes_legacy"])
def test_every_dtype_against_the_saved_tensors(golden, name):
    graph = convert.load(golden[name])
    saved = golden.objects[name]
    ours = keyed(graph)
    assert set(ours) == set(saved)
    for key, value in saved.items():
        assert_same_tensor(ours[key].read(), value, key)
        assert ours[key].meta["key"] == key


@pytest.mark.parametrize("name", ["views", "views_legacy"])
def test_views_keep_ties_and_storages(golden, name):
    graph = convert.load(golden[name])
    root = graph.root
    assert root["same"] is root["base"]  # one tensor object saved twice
    assert root["offset"] is not root["base"]  # another view of the same storage
    assert root["offset"].meta["torch.storage"] == root["base"].meta["torch.storage"]
    assert root["transposed"].shape == (6, 5)
    assert root["scalar"].shape == () and root["empty_inner"].shape == (2, 0)
    entry = next(e for e in graph.entries() if e.tensor is root["base"])
    assert entry.paths == [("base",), ("same",)]


def test_tied_state_dict_shares_storage(golden):
    graph = convert.load(golden["tied"])
    embed, head = graph.get(("embed", "weight")), graph.get(("lm_head", "weight"))
    assert embed is head  # identical views of one storage: one Tensor, two paths
    assert len(graph.entries()) == 3


def test_nested_checkpoint_becomes_nested_nodes(golden):
    graph = convert.load(golden["checkpoint"])
    saved = torch.load(golden["checkpoint"], weights_only=True)
    root = graph.root
    assert root.values == {
        "epoch": 3,
        "best_loss": 0.25,
        "name": "run-1",
        "history": [1.5, 0.5],
        "flags": {"amp": False, "tag": None},
    }
    model, optimizer = root["model"], root["optimizer"]
    assert isinstance(model, Node) and model.meta["torch.container"] == "OrderedDict"
    assert graph.get(("model", "conv", "weight")).meta["key"] == "model.conv.weight"
    assert graph.get(("model", "bn", "num_batches_tracked")).read() == 2
    state = optimizer["state"]
    assert state.meta["torch.keys"] == list(saved["optimizer"]["state"])  # int keys kept
    assert optimizer.values["param_groups"] == saved["optimizer"]["param_groups"]
    exp_avg = graph.get(("optimizer", "state", "0", "exp_avg"))
    assert_same_tensor(exp_avg.read(), saved["optimizer"]["state"][0]["exp_avg"])
    assert model.meta["torch.attributes"]["_metadata"] == saved["model"]._metadata


def test_weird_keys_survive_splitting(golden):
    graph = convert.load(golden["weird"])
    assert sorted(keyed(graph)) == sorted(golden.objects["weird"])
    assert graph.get(("a",)) is not None and graph.get(("a.b",)) is not None
    assert graph.get(("x", "", "y")).meta["key"] == "x..y"


def bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc")
@pytest.mark.parametrize("name", ["big", "big_legacy"])
def test_listing_reads_no_tensor_data(golden, name, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("tensor data read while listing")

    real = storage_module.Record.read
    monkeypatch.setattr(storage_module.Record, "read", no_data)
    convert.load(golden["model"])  # (formats registered, caches warm)
    before = bytes_read_by_this_process()
    graph = convert.load(golden[name])
    entries = graph.entries()
    read = bytes_read_by_this_process() - before
    assert [e.tensor.shape for e in entries] == [(1024, 1024), (3,)]
    assert read < 200_000 < 4 << 20  # headers and pickles, not the 4 MiB tensor
    monkeypatch.setattr(storage_module.Record, "read", real)
    assert entries[1].tensor.read().tolist() == [1.0, 1.0, 1.0]


def test_stored_record_crc_is_checked(golden, tmp_path):
    damaged = tmp_path / "damaged.pt"
    data = bytearray(golden["model"].read_bytes())
    with zipfile.ZipFile(golden["model"]) as zf:
        info = zf.getinfo("model/data/0")
    damaged.write_bytes(data)
    graph = convert.load(damaged)  # find the record's data, flip one byte in it
    tensor = graph.get(("conv", "weight"))
    offset = info.header_offset + 30 + len(info.filename)
    offset += int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[offset + 5] ^= 0x40
    damaged.write_bytes(data)
    with pytest.raises(ChecksumError, match="CRC"):
        convert.load(damaged).get(("conv", "weight")).read()
    assert tensor.shape == (4, 3, 3, 3)


def test_non_contiguous_views_are_copied_contiguous(golden):
    graph = convert.load(golden["views"])
    transposed = graph.get(("transposed",)).read()
    assert transposed.flags.c_contiguous
    np.testing.assert_array_equal(transposed, np.arange(30.0).reshape(5, 6).T)


def rezip(source, target, *, compression=zipfile.ZIP_STORED, big_endian=False):
    """Copy a torch zip, optionally deflated, or as a big-endian machine would write it."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", compression) as dst:
        pickled = src.read(next(n for n in src.namelist() if n.endswith("data.pkl")))
        dtypes = {}  # storage key -> numpy dtype, from our own reading of the pickle
        for entry in convert.load(source).entries():
            key = entry.tensor.meta["torch.storage"].rsplit("/", 1)[-1]
            dtypes[key] = entry.tensor.dtype
        for info in src.infolist():
            data = src.read(info)
            name = info.filename
            if big_endian and name.endswith("/byteorder"):
                data = b"big"
            elif big_endian and "/data/" in name:
                dtype = dtypes[name.rsplit("/", 1)[-1]]
                unit = dtype.itemsize // (2 if dtype.kind == "c" else 1)
                if unit > 1:
                    data = np.frombuffer(data, f"<u{unit}").byteswap().tobytes()
            dst.writestr(name, data)
        assert pickled


@pytest.mark.parametrize("variant", ["deflated", "big_endian"])
def test_deflated_and_big_endian_archives(golden, tmp_path, variant):
    target = tmp_path / "dtypes.pt"
    if variant == "deflated":
        rezip(golden["dtypes"], target, compression=zipfile.ZIP_DEFLATED)
    else:
        rezip(golden["dtypes"], target, big_endian=True)
    theirs = torch.load(target, weights_only=True)  # torch reads both, swapping bytes...
    graph = convert.load(target)
    for entry in graph.entries():
        key = entry.tensor.meta["key"]
        assert_same_tensor(entry.tensor.read(), golden.objects["dtypes"][key], key)
        if variant == "deflated" or not key.startswith("uint") or key == "uint8":
            # ...except UntypedStorage tensors (uint16/32/64), which torch 2.13 leaves unswapped
            assert_same_tensor(entry.tensor.read(), theirs[key], key)


def test_other_pickle_protocols_and_roots(tmp_path):
    state = {"p": torch.nn.Parameter(torch.arange(3.0)), "x": torch.ones(2, 2).t()}
    torch.save(state, tmp_path / "p4.pt", pickle_protocol=4)
    torch.save(torch.arange(5), tmp_path / "bare.pt")
    torch.save([torch.zeros(2), {"a": torch.ones(1)}, 7], tmp_path / "list.pt")
    p4 = convert.load(tmp_path / "p4.pt")
    assert p4.get(("p",)).meta["torch.parameter"] is True
    assert_same_tensor(p4.get(("x",)).read(), state["x"])
    bare = convert.load(tmp_path / "bare.pt")
    assert_same_tensor(bare.get(("value",)).read(), torch.arange(5))
    listed = convert.load(tmp_path / "list.pt")
    assert listed.root.meta["torch.container"] == "list" and listed.root.values == {"2": 7}
    assert_same_tensor(listed.get(("1", "a")).read(), torch.ones(1))
    for name in ("p4", "bare", "list"):  # and each is written back as what it was
        convert.convert(tmp_path / f"{name}.pt", tmp_path / f"{name}_again.pt")
        # (torch's weights_only reader cannot read its own protocol-4 FRAME opcode)
        original = torch.load(tmp_path / f"{name}.pt", weights_only=name != "p4")
        assert_same_object(torch.load(tmp_path / f"{name}_again.pt", weights_only=True), original)
