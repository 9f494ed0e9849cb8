"""DeepSpeed ZeRO checkpoints (stages 1, 2 and 3; float32 and bfloat16) that DeepSpeed wrote
on 2 ranks, read without DeepSpeed: the fp32 master weights equal, bit for bit and dtype,
DeepSpeed's own `zero_to_fp32` rebuild, and the unsharded model loads them strictly and
computes what it computes with that rebuild; `--pick module` is the module's own state
dict as `torch.load` reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import convert
from convert import api
from tests.deepspeed.conftest import UNIVERSAL
from tests.deepspeed.ds_job import CONFIGS, INPUT, Model

FROZEN_LEFT_OUT = {"zero1-bf16"}  # (zero_to_fp32 leaves the frozen layer out)


def reference(zero: Path, config: str) -> dict:
    return torch.load(zero / f"{config}.ref.pt", weights_only=True)


@pytest.mark.parametrize("config", CONFIGS)
def test_master_weights_equal_zero_to_fp32s(zero, tmp_path, config) -> None:
    notes = " ".join(api.convert(zero / config, tmp_path / "model.pt").notes)
    assert "--pick model: kept 7 tensors" in notes
    got = torch.load(tmp_path / "model.pt", weights_only=True)
    ref = reference(zero, config)
    want = {**ref["master"]}
    if config in FROZEN_LEFT_OUT:
        assert "frozen.weight" not in want
        assert "taken from the module as saved: frozen.weight, frozen.bias" in notes
        want.update({k: ref["module"][k] for k in ("frozen.weight", "frozen.bias")})
    tied = "head.weight"  # (written beside the tensor it shares)
    assert [k for k in got if k != tied] == [k for k in ref["module"] if k != tied]
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    assert got["head.weight"].data_ptr() == got["embed.weight"].data_ptr()  # (still tied)
    net = Model()
    net.load_state_dict(got, strict=True)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(INPUT), ref["output"])


@pytest.mark.parametrize("config", ["zero2", "zero3-bf16"])
def test_safetensors_output_folds_the_tie_and_says_so(zero, tmp_path, config) -> None:
    notes = " ".join(api.convert(zero / config, tmp_path / "model.safetensors").notes)
    assert "folded 1 alias: head.weight -> embed.weight" in notes
    assert convert.diff(zero / config, tmp_path / "model.safetensors").equal  # (its fp32 part)
    got = load_file(tmp_path / "model.safetensors")
    master = reference(zero, config)["master"]
    assert sorted(got) == sorted(k for k in master if k != "head.weight")
    for key, value in got.items():
        assert torch.equal(value, master[key]), key


@pytest.mark.parametrize("config", [c for c, (stage, _) in CONFIGS.items() if stage <= 2])
def test_pick_module_is_the_modules_own_state_dict(zero, tmp_path, config) -> None:
    api.convert(zero / config, tmp_path / "module.pt", pick=["module"])
    got = torch.load(tmp_path / "module.pt", weights_only=True)
    module = reference(zero, config)["module"]
    assert sorted(got) == sorted(module)
    for key, value in module.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_the_tag_folder_reads_as_its_checkpoint_and_ls_shows_both_parts(zero, ckpt) -> None:
    tag = (zero / "zero2" / "latest").read_text().strip()
    whole = ckpt("ls", zero / "zero2")
    assert whole.code == 0, whole.err
    assert ckpt("ls", zero / "zero2" / tag).out == whole.out
    names = [line.split()[0] for line in whole.out.splitlines()]
    assert names[:2] == ["model.scale", "model.embed.weight"]
    assert "module.embed.weight" in names
    assert "23 tensors, 2.5 KiB (deepspeed)" in whole.err  # (with the optimizer's state)


def per_parameter_files(folder: Path, skip: str) -> dict[str, torch.Tensor]:
    """A universal folder's per-parameter files but `skip`, keyed `<name>.<file stem>`."""
    found = {}
    for file in sorted((folder / "zero").glob("*/*.pt")):
        if file.name != skip:
            value = torch.load(file, weights_only=True)
            found[f"{file.parent.name}.{file.stem}"] = (
                value["param"] if isinstance(value, dict) else value
            )
    return found


@pytest.mark.parametrize("config", UNIVERSAL)
def test_optimizer_state_equals_deepspeeds_per_parameter_rebuild(
    universal, tmp_path, config
) -> None:
    api.convert(universal / config, tmp_path / "optim.pt", pick=["optim"])
    got = torch.load(tmp_path / "optim.pt", weights_only=True)
    theirs = per_parameter_files(universal / f"{config}-universal", skip="fp32.pt")
    assert theirs and set(got) >= {f"state.{k}" for k in theirs}
    # (under stage 3 ds_to_universal keeps no step count; torch keeps one per parameter)
    assert all(k.endswith(".step") for k in set(got) - {f"state.{k}" for k in theirs})
    for key, value in theirs.items():
        mine = got[f"state.{key}"]
        assert mine.dtype == value.dtype and torch.equal(mine.reshape(-1), value.reshape(-1)), key
        assert mine.dim() == 0 or mine.shape == reference_shape(universal, config, key)


def reference_shape(zero: Path, config: str, key: str) -> torch.Size:
    name = key.rsplit(".", 1)[0]
    return reference(zero, config)["master"][name].shape


@pytest.mark.parametrize("config", UNIVERSAL)
def test_a_universal_folder_converts_as_its_checkpoint(universal, tmp_path, config) -> None:
    for part in ("model", "optim"):
        for source in (universal / config, universal / f"{config}-universal"):
            api.convert(source, tmp_path / f"{part}-{source.name}.pt", pick=[part])
        ours = torch.load(tmp_path / f"{part}-{config}.pt", weights_only=True)
        theirs = torch.load(tmp_path / f"{part}-{config}-universal.pt", weights_only=True)
        # (the step counts: ds_to_universal keeps them per parameter under stages 1 and 2)
        assert sorted(theirs) == sorted(k for k in ours if k in theirs)
        for key, value in theirs.items():
            mine = ours[key]
            if config in FROZEN_LEFT_OUT and key.startswith("frozen."):
                mine = mine.float()  # (the module's bfloat16 copy; ds_to_universal casts it)
            assert mine.dtype == value.dtype and torch.equal(mine, value), key


def test_a_deepspeed_run_becomes_a_dcp_start(zero, tmp_path) -> None:
    """DeepSpeed to FSDP: the fp32 weights as a DCP directory torch's own tools read."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    api.convert(zero / "zero3-bf16", tmp_path / "start", to="dcp", shards=2)
    dcp_to_torch_save(tmp_path / "start", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    master = reference(zero, "zero3-bf16")["master"]
    assert sorted(back) == sorted(master)
    for key, value in master.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
