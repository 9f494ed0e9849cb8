"""`ckpt ls` / `ckpt convert` on torch and safetensors files, good and damaged."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile

import pytest
import torch

from ..conftest import assert_one_line_error, listing
from .test_torch_malicious import Payload, torch_zip
from .torch_golden import assert_same_object, flatten


@pytest.mark.parametrize("name", ["model", "checkpoint_legacy", "tied", "dtypes"])
def test_ls_json_matches_torch_load(golden, ckpt, name):
    result = ckpt("ls", golden[name], "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    listed = {}
    for row in rows:
        for path in [row["path"], *row.get("aliases", [])]:
            listed[".".join(path)] = (row["dtype"], row["shape"])
        assert row["key"] == ".".join(row["path"])
    expected = flatten(torch.load(golden[name], weights_only=True))
    assert listed == {k: (str(v.dtype)[6:], list(v.shape)) for k, v in expected.items()}


def test_ls_imports_no_framework(golden):
    script = (
        "import sys; from convert.cli import main\n"
        "try:\n    main(['ls', sys.argv[1], '--json'])\nexcept SystemExit:\n    pass\n"
        "loaded = {'torch', 'tensorflow', 'jax', 'flax', 'keras', 'safetensors'}"
        " & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    for name in ("model", "model_legacy"):
        proc = subprocess.run(
            [sys.executable, "-c", script, str(golden[name])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert '"key": "conv.weight"' in proc.stdout


def test_pt_to_safetensors_to_pt_is_identical(golden, ckpt, tmp_path):
    st, back = tmp_path / "b.safetensors", tmp_path / "c.pt"
    assert ckpt("convert", golden["model"], st).code == 0
    result = ckpt("convert", st, back)
    assert result.code == 0, result.err
    assert_same_object(
        torch.load(back, weights_only=True), torch.load(golden["model"], weights_only=True) | {}
    )


def test_max_shard_size_option(golden, ckpt, tmp_path):
    result = ckpt(
        "convert",
        golden["model"],
        tmp_path / "model.safetensors",
        "--max-shard-size",
        "2KB",
        "--json",
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["target_format"] == "safetensors" and len(report["files"]) > 2
    assert (tmp_path / "model.safetensors.index.json").exists()
    bad = ckpt("convert", golden["model"], tmp_path / "x.pt", "--max-shard-size", "lots")
    assert bad.code == 2 and "'lots' is not a size like 2GB" in bad.err  # click usage error


# -- damaged and lying inputs: one line, exit 2, nothing left behind ------------------


def cut(data: bytes, at: float) -> bytes:
    return data[: int(len(data) * at)]


def lie_in_pickle(golden, tmp_path, old: bytes, new: bytes):
    """Rewrite model.pt's data.pkl with one field changed, keeping a valid zip."""
    path = tmp_path / "lie.pt"
    with zipfile.ZipFile(golden["model"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new, 1)
            dst.writestr(info.filename, data)
    return path.read_bytes()


def legacy_count_lie(golden) -> bytes:
    data = bytearray(golden["model_legacy"].read_bytes())
    first = 4 * 3 * 3 * 3  # conv.weight's element count, the first storage
    at = data.index(struct.pack("<q", first))
    data[at : at + 8] = struct.pack("<q", first + 1)
    return bytes(data)


def safetensors_bytes(header: dict, data: bytes, length: int | None = None) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", length or len(encoded)) + encoded + data


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
DAMAGED = {
    "truncated.pt": (lambda g, t: cut(g["model"].read_bytes(), 0.5), "zip"),
    "truncated_legacy.pt": (lambda g, t: cut(g["model_legacy"].read_bytes(), 0.7), "truncated"),
    "header_only.pt": (lambda g, t: cut(g["model_legacy"].read_bytes(), 0.05), "truncated"),
    "flipped.pt": (lambda g, t: flip_in_pickle(g), "CRC"),
    "storage_lie.pt": (
        lambda g, t: lie_in_pickle(
            g, t, b"X\x03\x00\x00\x00cpuq\x07K\x6c", b"X\x03\x00\x00\x00cpuq\x07K\x6d"
        ),
        "declares",
    ),
    "shape_lie.pt": (
        lambda g, t: lie_in_pickle(g, t, b"K\x04K\x03K\x03K\x03t", b"K\x04K\x03K\x09K\x03t"),
        "past the end",
    ),
    "count_lie_legacy.pt": (lambda g, t: legacy_count_lie(g), "elements"),
    "size_lie.safetensors": (
        lambda g, t: safetensors_bytes({"x": F32}, b"\0" * 8, 10**6),
        "truncated",
    ),
    "offset_lie.safetensors": (
        lambda g, t: safetensors_bytes({"x": dict(F32, data_offsets=[8, 16])}, b"\0" * 16),
        "tile",
    ),
    "shape_lie.safetensors": (
        lambda g, t: safetensors_bytes({"x": dict(F32, shape=[3])}, b"\0" * 8),
        "needs 12 bytes",
    ),
    "huge.safetensors": (lambda g, t: safetensors_bytes({"x": F32}, b"\0" * 8, 2**62), "100 MB"),
    "empty.pt": (lambda g, t: b"", "not a checkpoint"),
    "broken.index.json": (lambda g, t: b'{"weight_map": {"a": "x.safetensors"', "JSON"),
    "escape.index.json": (
        lambda g, t: b'{"weight_map": {"a": "../x.safetensors"}}',
        "not a file name",
    ),
}


def flip_in_pickle(golden) -> bytes:
    data = bytearray(golden["model"].read_bytes())
    at = data.index(b"_rebuild_tensor_v2")
    data[at + 3] ^= 0x20
    return bytes(data)


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_input_is_one_line_error_and_leaves_nothing(golden, ckpt, tmp_path, name):
    build, fragment = DAMAGED[name]
    bad = tmp_path / name
    bad.write_bytes(build(golden, tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    target = "out.safetensors" if name.endswith(".pt") else "out.pt"
    result = ckpt("convert", bad, out / target)
    assert_one_line_error(result, name, fragment)
    assert listing(out) == set()


def test_malicious_file_through_the_cli(ckpt, tmp_path):
    import os

    marker = tmp_path / "ran"
    import pickle

    bad = torch_zip(
        tmp_path / "evil.pt", pickle.dumps({"w": Payload(os.system, f"touch {marker}")}, protocol=2)
    )
    for args in (("ls", bad), ("convert", bad, tmp_path / "out" / "x.safetensors")):
        assert_one_line_error(ckpt(*args), "evil.pt", "posix.system", "nothing was run")
    assert not marker.exists() and not (tmp_path / "out").exists()
