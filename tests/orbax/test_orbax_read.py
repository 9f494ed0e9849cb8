"""Orbax checkpoints read without JAX or Orbax (TensorStore only): every layout the suite's
orbax-checkpoint writes, listed as Orbax restores them and converted bit for bit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

import convert  # noqa: E402
from tests.conftest import assert_one_line_error  # noqa: E402

LAYOUTS = ["standard", "ocdbt-zarr2", "ocdbt-zarr3", "plain-zarr2", "plain-zarr3", "sharded"]


def _reference(orbax_dir: Path, name: str) -> tuple[dict, dict, dict]:
    listing = json.loads((orbax_dir / f"{name}.ref.json").read_text())
    with np.load(orbax_dir / f"{name}.ref.npz") as raw:
        data = {k: raw[k].tobytes() for k in raw.files}
    return listing["arrays"], data, listing["values"]


def _listed(ckpt, path: Path) -> dict:
    result = ckpt("ls", path, "--json")
    assert result.code == 0, result.err
    return {"/".join(t["path"]): [t["dtype"], t["shape"]] for t in json.loads(result.out)}


def _converted(ckpt, path: Path, out: Path) -> dict:
    """The safetensors file ckpt writes, as safetensors' torch loader reads it: key →
    (dtype name, shape, bytes)."""
    result = ckpt("convert", path, out)
    assert result.code == 0, result.err
    return {k.replace(".", "/"): _described(v) for k, v in load_file(out).items()}


def _described(t) -> tuple[str, list[int], bytes]:
    raw = t.contiguous().view(torch.uint8).numpy().tobytes()
    return str(t.dtype).removeprefix("torch."), list(t.shape), raw


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_layout_lists_and_converts_as_orbax_restores_it(orbax_dir, tmp_path, ckpt, name):
    arrays, data, values = _reference(orbax_dir, name)
    assert _listed(ckpt, orbax_dir / name) == arrays
    converted = _converted(ckpt, orbax_dir / name, tmp_path / "out.safetensors")
    assert set(converted) == set(arrays)
    for path, (dtype, shape, raw) in converted.items():
        assert [dtype, shape] == arrays[path] and raw == data[path], path
    graph = convert.load(orbax_dir / name)
    read_values = {
        "/".join((*where, key)): v
        for where, node in _nodes(graph.root, ())
        for key, v in node.values.items()
    }
    assert read_values == values


def _nodes(node, where):
    yield where, node
    for key, child in node.edges.items():
        if hasattr(child, "edges"):
            yield from _nodes(child, (*where, key))


def test_a_manager_reads_its_newest_step_or_the_step_named(orbax_dir, tmp_path, ckpt):
    manager = orbax_dir / "manager"
    for step, path in [(2, manager), (0, manager / "0"), (1, manager / "1" / "default")]:
        arrays, data, _ = _reference(orbax_dir, f"manager-{step}")
        out = tmp_path / f"step{step}.safetensors"
        converted = _converted(ckpt, path, out)
        assert {k: raw for k, (_, _, raw) in converted.items()} == data
    listed = ckpt("ls", manager)
    assert "step 2, the newest (also there: 0, 1)" in listed.err


def test_an_nnx_state_ports_to_torch_as_its_msgpack_does(orbax_dir, tmp_path, ckpt):
    """`nnx.split(model)[1]` saved by Orbax (each variable a `value` leaf) reads as the
    state Orbax restores, and ports through the flax-torch rules as the pure dict's
    msgpack does."""
    arrays, data, _ = _reference(orbax_dir, "nnx")
    listed = _listed(ckpt, orbax_dir / "nnx")
    assert {k.removesuffix("/value"): v for k, v in listed.items()} == arrays
    skeleton = tmp_path / "fresh.pt"
    torch.save(TorchTwin().state_dict(), skeleton)
    outs = []
    for source in (orbax_dir / "nnx", orbax_dir / "nnx.msgpack"):
        outs.append(tmp_path / f"{source.name}.pt")
        result = ckpt("convert", source, outs[-1], "--rules", "flax-torch", "--like", skeleton)
        assert result.code == 0, result.err
    mine, theirs = (torch.load(out, weights_only=True) for out in outs)
    assert list(mine) == list(theirs) and len(mine) == len(TorchTwin().state_dict())
    for key in theirs:
        assert torch.equal(mine[key], theirs[key]), key


class TorchTwin(torch.nn.Module):
    """orbax_job.Net's layers in torch."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)])


def _copy(orbax_dir: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(orbax_dir / name, tmp_path / name))


def test_hostile_metadata_is_one_line(orbax_dir, tmp_path, ckpt):
    item = _copy(orbax_dir, "plain-zarr2", tmp_path)
    meta = json.loads((item / "_METADATA").read_text())
    first = next(iter(meta["tree_metadata"].values()))
    first["key_metadata"][0]["key"] = "../../etc"
    (item / "_METADATA").write_text(json.dumps(meta))
    assert_one_line_error(ckpt("ls", item), "_METADATA", "has the key '../../etc'")
    (item / "_METADATA").write_text("{")
    assert_one_line_error(ckpt("ls", item), "_METADATA", "is not valid JSON")


def test_an_array_whose_metadata_lies_or_whose_chunk_is_cut_is_one_line(orbax_dir, tmp_path, ckpt):
    item = _copy(orbax_dir, "plain-zarr2", tmp_path)
    zarray = item / "params.wide" / ".zarray"
    meta = json.loads(zarray.read_text())
    meta["shape"] = [640, 33]  # (the chunks hold 64 rows)
    zarray.write_text(json.dumps(meta))
    before = {p.name for p in tmp_path.iterdir()}
    result = ckpt("convert", item, tmp_path / "out.safetensors")
    assert_one_line_error(result, "params.wide")
    item = _copy(orbax_dir, "plain-zarr3", tmp_path / "b")
    chunk = next(
        p for p in (item / "params.wide").rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    result = ckpt("convert", item, tmp_path / "out.safetensors")
    assert_one_line_error(result, "params.wide")
    item = _copy(orbax_dir, "ocdbt-zarr3", tmp_path / "c")
    manifest = item / "manifest.ocdbt"
    manifest.write_bytes(manifest.read_bytes()[:20])
    assert_one_line_error(ckpt("ls", item), "array ")
    assert {p.name for p in tmp_path.iterdir()} == before | {"b", "c"}


def test_without_tensorstore_the_error_names_the_extra(orbax_dir):
    code = (
        "import sys; sys.modules['tensorstore'] = None\n"
        "from convert.cli import main\n"
        f"main(['ls', {str(orbax_dir / 'standard')!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "pip install 'ckpt-convert[orbax]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
