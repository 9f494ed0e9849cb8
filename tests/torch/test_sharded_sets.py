"""Hugging Face sharded sets (`*.index.json` + shards), read as one checkpoint and written."""

from __future__ import annotations

import json
import re

import pytest
import safetensors.torch
import torch

import convert
from convert.core.errors import FormatError
from convert.formats.sharded import parse_size

from .torch_golden import Net, TiedNet, assert_same_tensor, inputs


def write_set(directory, state: dict, fmt: str, parts: int = 3):
    """A sharded set as transformers writes it: shards + index with weight_map."""
    directory.mkdir()
    keys = list(state)
    size = -(-len(keys) // parts)
    ext, index_name = (
        (".safetensors", "model.safetensors.index.json")
        if fmt == "st"
        else (".bin", "pytorch_model.bin.index.json")
    )
    stem = "model" if fmt == "st" else "pytorch_model"
    weight_map = {}
    for i in range(parts):
        name = f"{stem}-{i + 1:05d}-of-{parts:05d}{ext}"
        part = {k: state[k].contiguous() for k in keys[i * size : (i + 1) * size]}
        if fmt == "st":
            safetensors.torch.save_file(part, directory / name, metadata={"format": "pt"})
        else:
            torch.save(part, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / index_name).write_text(json.dumps(index, indent=2))
    return directory / index_name


@pytest.mark.parametrize("fmt", ["st", "bin"])
def test_reads_a_sharded_set_as_one_checkpoint(golden, tmp_path, fmt):
    state = golden.objects["model"]
    index = write_set(tmp_path / "set", state, fmt)
    graph = convert.load(index)
    assert graph.format == ("safetensors" if fmt == "st" else "torch")
    ours = {".".join(e.path): e.tensor for e in graph.entries()}
    assert set(ours) == set(state)
    for key, value in state.items():
        assert_same_tensor(ours[key].read(), value, key)
    assert len(graph.files) == 4
    out = tmp_path / "whole.pt"
    convert.convert(index, out)
    net = Net().eval()
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    with torch.no_grad():
        ours, theirs = net(*inputs()), golden.objects["net"](*inputs())
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_writes_safetensors_shards_and_index(golden, tmp_path):
    out = tmp_path / "out" / "model.safetensors"
    report = convert.convert(golden["model"], out, max_shard_size=2000)
    files = sorted(p.name for p in out.parent.iterdir())
    shards = [f for f in files if f.endswith(".safetensors")]
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert (
        all(re.fullmatch(rf"model-0000\d-of-0000{len(shards)}\.safetensors", s) for s in shards)
        and len(shards) > 2
    )
    index = json.loads((out.parent / "model.safetensors.index.json").read_text())
    state = golden.objects["model"]
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in state.values()
    )
    for shard in shards:
        loaded = safetensors.torch.load_file(out.parent / shard)
        assert {k for k, v in index["weight_map"].items() if v == shard} == set(loaded)
        big = max(t.numel() * t.element_size() for t in loaded.values())
        assert sum(t.numel() * t.element_size() for t in loaded.values()) <= max(2000, big)
        for key, value in loaded.items():
            assert torch.equal(value, state[key])
    assert sorted(report.files) == sorted(str(out.parent / f) for f in files)
    back = convert.load(out.parent / "model.safetensors.index.json")
    assert {".".join(e.path) for e in back.entries()} == set(state)
    for entry in back.entries():
        assert_same_tensor(entry.tensor.read(), state[".".join(entry.path)])


def test_tied_tensors_land_in_one_torch_shard(golden, tmp_path):
    out = tmp_path / "pytorch_model.bin"
    convert.convert(golden["tied"], out, max_shard_size=100)
    index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())
    weight_map = index["weight_map"]
    assert weight_map["embed.weight"] == weight_map["lm_head.weight"]
    shard = torch.load(tmp_path / weight_map["embed.weight"], weights_only=True, mmap=True)
    assert (
        shard["embed.weight"].untyped_storage().data_ptr()
        == shard["lm_head.weight"].untyped_storage().data_ptr()
    )
    merged = {}
    for name in set(weight_map.values()):
        merged.update(torch.load(tmp_path / name, weights_only=True))
    net = TiedNet()
    net.load_state_dict(merged, strict=True)
    assert torch.equal(net.lm_head.weight, golden.objects["tied"]["embed.weight"])


def test_index_name_forces_a_set_even_for_one_shard(golden, tmp_path):
    out = tmp_path / "model.safetensors.index.json"
    convert.convert(golden["tied"], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
    ]
    loaded = safetensors.torch.load_file(tmp_path / "model-00001-of-00001.safetensors")
    assert set(loaded) == {"embed.weight", "proj.weight", "proj.bias"}  # alias folded


@pytest.mark.parametrize(
    "weight_map, fragment",
    [
        ({"x": "../outside.safetensors"}, "not a file name"),
        ({"x": "/etc/passwd"}, "not a file name"),
        ({"x": "missing.safetensors"}, "missing"),
        ({"not.there": "model-00001-of-00003.safetensors"}, "does not hold it"),
        ([1, 2], "no weight_map"),
    ],
)
def test_lying_indexes_are_refused(golden, tmp_path, weight_map, fragment):
    index = write_set(tmp_path / "set", golden.objects["model"], "st")
    data = json.loads(index.read_text())
    if isinstance(weight_map, dict):
        data["weight_map"].update(weight_map)
    else:
        data["weight_map"] = weight_map
    index.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=fragment):
        convert.load(index)


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("500mb") == 5 * 10**8 and parse_size("1234") == 1234
    for bad in ("", "GB", "2 parsecs", "-1MB", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)
