"""DCP directories written without torch: `dcp.load` reads them in one process, a 2-rank
FSDP2 job loads them into its shards, and back to safetensors they are what went in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file

from convert import api
from tests.dcp.conftest import DTYPES, JOB
from tests.dcp.fsdp_job import model


@pytest.fixture(scope="module")
def trained(fsdp: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each trained model's full state dict as a `model.safetensors`."""
    out = tmp_path_factory.mktemp("trained")
    files = {}
    for dtype in DTYPES:
        files[dtype] = out / f"{dtype}.safetensors"
        save_file(torch.load(fsdp / f"{dtype}.model.pt", weights_only=True), files[dtype])
    return files


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_dcp_load_reads_it_in_one_process(trained, tmp_path, shards) -> None:
    api.convert(trained["float32"], tmp_path / "ckpt", to="dcp", shards=shards)
    assert len(list((tmp_path / "ckpt").glob("*.distcp"))) == shards
    state = model(torch.float32).state_dict()
    dcp.load(state, checkpoint_id=tmp_path / "ckpt")
    want = load_file(trained["float32"])
    assert sorted(state) == sorted(want)
    for key, value in want.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("dtype", DTYPES)
def test_back_to_safetensors_bit_for_bit(trained, tmp_path, ckpt, dtype) -> None:
    out = ckpt("convert", trained[dtype], tmp_path / "ckpt", "--to", "dcp", "--shards", "2")
    assert out.code == 0, out.err
    assert ckpt("convert", tmp_path / "ckpt", tmp_path / "back.safetensors").code == 0
    same = ckpt("diff", trained[dtype], tmp_path / "back.safetensors")
    assert same.code == 0, same.out + same.err


def test_an_fsdp2_job_on_two_ranks_loads_it(trained, tmp_path) -> None:
    api.convert(trained["bfloat16"], tmp_path / "ckpt", to="dcp", shards=2)
    job = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args = ["load", str(tmp_path / "ckpt"), "bfloat16", str(tmp_path / "loaded.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*job, str(JOB), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = torch.load(tmp_path / "loaded.pt", weights_only=True)
    want = load_file(trained["bfloat16"])
    assert sorted(loaded) == sorted(want)
    for key, value in want.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key


def test_values_and_nested_state_go_through(fsdp, tmp_path) -> None:
    """A training checkpoint (model, optimizer state and hyper-parameters) to DCP and back."""
    api.convert(fsdp / "float32", tmp_path / "ckpt", to="dcp", shards=2)
    again = api.load(tmp_path / "ckpt")
    groups = again.get(("optim", "param_groups", "0"))
    assert groups.values["lr"] == 0.01 and groups.values["betas"] == (0.9, 0.999)
    first = {e.tensor.meta["key"]: e.tensor.read() for e in api.load(fsdp / "float32").entries()}
    for entry in again.entries():
        assert (entry.tensor.read() == first[entry.tensor.meta["key"]]).all()
    assert len(again.entries()) == len(first)
