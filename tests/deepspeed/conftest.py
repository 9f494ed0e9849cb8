"""Fixtures of the DeepSpeed tests: ZeRO checkpoints DeepSpeed writes at test time, on 2 CPU
ranks (gloo), with DeepSpeed's own rebuild of each beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("ds_job.py")


@pytest.fixture(scope="session")
def zero(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ds_job.py`'s output: `<config>/` (the checkpoint folder) and `<config>.ref.pt`
    (`zero_to_fp32`'s rebuild, the module's state dict, the rebuilt model's output)."""
    out = tmp_path_factory.mktemp("zero")
    job = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(
        [*job, str(JOB), str(out)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


UNIVERSAL = ("zero1-bf16", "zero2", "zero3-bf16")


@pytest.fixture(scope="session")
def universal(zero: Path) -> Path:
    """DeepSpeed's own per-parameter rebuild of some of `zero`'s checkpoints
    (`ds_to_universal`): `<config>-universal/zero/<name>/fp32.pt`, `exp_avg.pt`, ..."""
    for config in UNIVERSAL:
        tag = (zero / config / "latest").read_text().strip()
        command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal"]
        command += ["--input_folder", str(zero / config / tag)]
        command += ["--output_folder", str(zero / f"{config}-universal")]
        command += ["--inject_missing_state", "--num_extract_workers", "1"]
        command += ["--num_merge_workers", "1"]
        env = {**os.environ, "DS_ACCELERATOR": "cpu"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return zero
