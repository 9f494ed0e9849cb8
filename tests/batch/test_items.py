"""Naming outputs from sources, and manifests' defaults (no conversion runs here)."""

from __future__ import annotations

import pytest

from convert.batches.items import BatchError, items_for, output_name, read_manifest


@pytest.mark.parametrize(
    ("src", "fmt", "name"),
    [
        ("runs/a/ckpt-3", "safetensors", "ckpt-3.safetensors"),
        ("runs/a/ckpt-3.index", "torch", "ckpt-3.pt"),
        ("runs/a/ckpt-3.data-00000-of-00001", "npz", "ckpt-3.npz"),
        ("m/model.weights.h5", "safetensors", "model.safetensors"),
        ("m/model.safetensors.index.json", "torch", "model.pt"),
        ("m/model.pt", "sharded", "model.safetensors.index.json"),
        ("m/params.msgpack", "tf", "params"),
        ("runs/a/", "flax", "a.msgpack"),
        ("m/model.ckpt", "keras", "model.weights.h5"),
    ],
)
def test_output_names(src, fmt, name):
    assert output_name(src, fmt) == name


def test_items_default_to_safetensors(tmp_path):
    (item,) = items_for(["runs/a/ckpt-3"], tmp_path, compress=None)
    assert item.dst == str(tmp_path / "ckpt-3.safetensors")
    assert item.options["to"] == "safetensors"


def test_manifest_defaults_and_out_dir(tmp_path):
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        'to = "npz"\ncompress = true\nout_dir = "o"\n'
        '[[convert]]\nsrc = "a/x.pt"\n'
        '[[convert]]\nsrc = "b.pt"\ndst = "c.pt"\nto = "torch"\n'
        'max-shard-size = "1MB"\ncompress = false\n'
    )
    first, second = read_manifest(manifest, {"check": "partial"})
    assert first.src == str(tmp_path / "a/x.pt") and first.dst == str(tmp_path / "o/x.npz")
    assert first.options == {"check": "partial", "to": "npz", "compress": True}
    assert second.dst == str(tmp_path / "c.pt")
    assert second.options == {
        "check": "partial",
        "to": "torch",
        "compress": False,
        "max_shard_size": 10**6,
    }
    manifest.write_text('[[convert]]\nsrc = "a.pt"\n')
    with pytest.raises(BatchError, match="needs src and dst"):
        read_manifest(manifest)
