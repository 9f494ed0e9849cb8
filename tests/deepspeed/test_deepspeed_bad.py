"""Damaged and hostile DeepSpeed checkpoints: one line naming the file and what is wrong,
exit status 2, nothing written, nothing run."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def copy(zero: Path, config: str, tmp_path: Path) -> tuple[Path, Path]:
    folder = shutil.copytree(zero / config, tmp_path / config)
    return folder, folder / (folder / "latest").read_text().strip()


def refused(ckpt, folder: Path, tmp_path: Path, *expected: str) -> None:
    result = ckpt("convert", folder, tmp_path / "out.safetensors")
    assert result.code == 2, result.err
    line = result.err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for part in expected:
        assert part in line, line
    assert not (tmp_path / "out.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def edit_states(file: Path, change) -> None:
    """Rewrite a states file with torch (DeepSpeed's classes are importable here)."""
    state = torch.load(file, weights_only=False)
    change(state)
    torch.save(state, file)


def test_a_missing_rank(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero2", tmp_path)
    (tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    refused(ckpt, folder, tmp_path, "1 optimizer state", "2 ranks")


def test_a_missing_rank_of_stage_3_model_states(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero3", tmp_path)
    (tag / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    refused(ckpt, folder, tmp_path, "1 model state for 2 ranks")


def test_latest_naming_a_missing_tag(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero2", tmp_path)
    (folder / "latest").write_text("global_step99")
    refused(ckpt, folder, tmp_path, "global_step99 (named by `latest`) is missing")
    (folder / "latest").write_text("../elsewhere")
    refused(ckpt, folder, tmp_path, "not a tag folder")


def test_a_damaged_partition_fails_its_checksum(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero3-bf16", tmp_path)
    file = tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = bytearray(file.read_bytes())
    flat = torch.load(file, weights_only=False)["optimizer_state_dict"]["fp32_flat_groups"][0]
    at = bytes(data).find(flat.detach().numpy().tobytes()[:32])  # (the partition's record)
    assert at > 0
    data[at + 8] ^= 0x40
    file.write_bytes(bytes(data))
    refused(ckpt, folder, tmp_path, "CRC-32")


class Evil:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_global_outside_the_allowlist_is_refused_by_name(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero2", tmp_path)
    edit_states(
        tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        lambda s: s["optimizer_state_dict"].update(loss_scaler=Evil()),
    )
    refused(ckpt, folder, tmp_path, "refuses global builtins.print", "nothing was run")


def test_shapes_past_the_partitions(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero2", tmp_path)
    edit_states(
        tag / "mp_rank_00_model_states.pt",
        lambda s: s["param_shapes"][0].update({"up.weight": torch.Size([60, 5])}),
    )
    refused(ckpt, folder, tmp_path, "'up.weight' [60, 5] lies past the end of group 0")


def test_a_tensor_parallel_checkpoint_is_refused(zero, tmp_path, ckpt) -> None:
    folder, tag = copy(zero, "zero2", tmp_path)
    shutil.copy(
        tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        tag / "zero_pp_rank_0_mp_rank_01_optim_states.pt",
    )
    refused(ckpt, folder, tmp_path, "model-parallel rank 1")


def test_writing_deepspeed_is_refused(zero, tmp_path, ckpt) -> None:
    result = ckpt("convert", zero / "zero2", tmp_path / "out", "--to", "deepspeed")
    assert result.code == 2 and "read, not written" in result.err, result.err
    assert not (tmp_path / "out").exists()
