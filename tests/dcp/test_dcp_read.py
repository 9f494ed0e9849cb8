"""DCP directories that FSDP2 wrote on 2 ranks, read without torch: every tensor equal, bit
for bit and dtype, to what torch's own `dcp_to_torch_save` gathers; `--pick model` a state
dict the unsharded model loads strictly and computes with as the trained one did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from convert import api
from tests.dcp.conftest import DTYPES, flattened
from tests.dcp.fsdp_job import model

CASES = [f"{d}{s}" for d in DTYPES for s in ("", "-safetensors")]


@pytest.fixture(scope="module")
def gathered(fsdp: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """torch's own conversion of each default-serialization checkpoint, flattened."""
    out = tmp_path_factory.mktemp("gathered")
    found = {}
    for dtype in DTYPES:
        dcp_to_torch_save(fsdp / dtype, out / f"{dtype}.pt")
        found[dtype] = flattened(torch.load(out / f"{dtype}.pt", weights_only=True))
    return found


@pytest.mark.parametrize("case", CASES)
def test_every_tensor_equals_torchs_own_conversion(fsdp, gathered, tmp_path, case) -> None:
    report = api.convert(fsdp / case, tmp_path / "all.safetensors")
    got = load_file(tmp_path / "all.safetensors")
    want = {k: v for k, v in gathered[case.split("-")[0]].items() if torch.is_tensor(v)}
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    # (the optimizer's hyper-parameters are values, which safetensors does not hold)
    assert any("optim.param_groups.0.lr" in note for note in report.notes), report.notes


@pytest.mark.parametrize("dtype", DTYPES)
def test_pick_model_loads_strictly_and_computes_the_same(fsdp, tmp_path, ckpt, dtype) -> None:
    result = ckpt("convert", fsdp / dtype, tmp_path / "model.safetensors", "--pick", "model")
    assert result.code == 0, result.err
    assert "--pick model: kept 6 tensors, left out 18 tensors" in result.err
    state = load_file(tmp_path / "model.safetensors")
    full = torch.load(fsdp / f"{dtype}.model.pt", weights_only=True)
    assert sorted(state) == sorted(full)
    for key, value in full.items():
        assert torch.equal(state[key], value), key
    net = model(getattr(torch, dtype))
    net.load_state_dict(state, strict=True)
    torch.manual_seed(9)
    with torch.no_grad():
        out = net(torch.randn(5, 6, dtype=getattr(torch, dtype)))
    assert torch.equal(out, torch.load(fsdp / f"{dtype}.out.pt", weights_only=True))


@pytest.mark.parametrize("target", ["model.pt", "model.npz"])
def test_other_targets(fsdp, gathered, tmp_path, target) -> None:
    api.convert(fsdp / "float32", tmp_path / target, pick=["model"])
    want = {k[len("model.") :]: v for k, v in gathered["float32"].items() if k.startswith("model.")}
    if target.endswith(".pt"):
        got = torch.load(tmp_path / target, weights_only=True)
        assert all(torch.equal(got[k], v) for k, v in want.items()) and len(got) == len(want)
    else:
        with np.load(tmp_path / target) as got:
            assert sorted(got.files) == sorted(k.replace(".", "/") for k in want)
            for key, value in want.items():
                assert np.array_equal(got[key.replace(".", "/")], value.numpy()), key


def test_the_graph_holds_the_nested_state_and_its_values(fsdp, ckpt) -> None:
    graph = api.load(fsdp / "float32")
    assert graph.format == "dcp"
    groups = graph.get(("optim", "param_groups", "0"))
    assert groups.values["lr"] == 0.01 and groups.values["betas"] == (0.9, 0.999)
    tree = ckpt("ls", "--tree", fsdp / "float32")
    assert tree.code == 0, tree.err
    assert "model/" in tree.out and "exp_avg_sq: float32[7, 6]" in tree.out


def test_an_accelerate_model_folder_converts_to_its_state_dict(fsdp, tmp_path, ckpt) -> None:
    """accelerate's `SHARDED_STATE_DICT` saves `{"model": state_dict}` with DCP into
    `pytorch_model_fsdp_0/`; its merge-weights writes the state dict inside, and so does a
    plain conversion. Resharded to DCP, the folder stays whole, for accelerate to load."""
    full = torch.load(fsdp / "float32.model.pt", weights_only=True)
    folder = tmp_path / "checkpoint-2" / "pytorch_model_fsdp_0"
    dcp.save({"model": full}, checkpoint_id=folder)
    dcp_to_torch_save(folder, tmp_path / "merged.pt")
    (merged,) = torch.load(tmp_path / "merged.pt", weights_only=True).values()

    result = ckpt("convert", folder, tmp_path / "model.safetensors")
    assert result.code == 0, result.err
    assert "--pick model: kept 6 tensors" in result.err
    state = load_file(tmp_path / "model.safetensors")
    assert sorted(state) == sorted(merged)
    for key, value in merged.items():
        assert torch.equal(state[key], value), key
    model(torch.float32).load_state_dict(state, strict=True)

    resharded = ckpt("convert", folder, tmp_path / "resharded", "--to", "dcp", "--shards", "2")
    assert resharded.code == 0, resharded.err
    again = {"model": model(torch.float32).state_dict()}
    dcp.load(again, checkpoint_id=tmp_path / "resharded")
    for key, value in full.items():
        assert torch.equal(again["model"][key], value), key
