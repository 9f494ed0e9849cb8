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

from tests.deepspeed.ds_job import CONFIGS, INPUT, Model

FROZEN_LEFT_OUT = {"zero1-bf16"}  # (zero_to_fp32 leaves the frozen layer out)


def reference(zero: Path, config: str) -> dict:
    return torch.load(zero / f"{config}.ref.pt", weights_only=True)


@pytest.mark.parametrize("config", CONFIGS)
def test_master_weights_equal_zero_to_fp32s(zero, tmp_path, ckpt, config) -> None:
    result = ckpt("convert", zero / config, tmp_path / "model.pt")
    assert result.code == 0, result.err
    assert "--pick model: kept 7 tensors" in result.err
    got = torch.load(tmp_path / "model.pt", weights_only=True)
    ref = reference(zero, config)
    want = {**ref["master"]}
    if config in FROZEN_LEFT_OUT:
        assert "frozen.weight" not in want
        assert "taken from the module as saved: frozen.weight, frozen.bias" in result.err
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
def test_safetensors_output_folds_the_tie_and_says_so(zero, tmp_path, ckpt, config) -> None:
    result = ckpt("convert", zero / config, tmp_path / "model.safetensors")
    assert result.code == 0, result.err
    assert "folded 1 alias: head.weight -> embed.weight" in result.err
    got = load_file(tmp_path / "model.safetensors")
    master = reference(zero, config)["master"]
    assert sorted(got) == sorted(k for k in master if k != "head.weight")
    for key, value in got.items():
        assert torch.equal(value, master[key]), key


@pytest.mark.parametrize("config", [c for c, (stage, _) in CONFIGS.items() if stage <= 2])
def test_pick_module_is_the_modules_own_state_dict(zero, tmp_path, ckpt, config) -> None:
    result = ckpt("convert", zero / config, tmp_path / "module.pt", "--pick", "module")
    assert result.code == 0, result.err
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
    assert "11 tensors, 1.3 KiB (deepspeed)" in whole.err
