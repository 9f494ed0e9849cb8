"""Fixtures of the DCP tests: checkpoints torch 2.13 writes at test time, under FSDP2 on 2
CPU ranks (gloo), as a sharded training run leaves them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("fsdp_job.py")
DTYPES = ("float32", "bfloat16")


@pytest.fixture(scope="session")
def fsdp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fsdp_job.py`'s output: `<dtype>/`, `<dtype>-safetensors/` (both serializations),
    `<dtype>.model.pt` (the full model) and `<dtype>.out.pt` (its output)."""
    out = tmp_path_factory.mktemp("fsdp")
    job = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*job, str(JOB), str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def flattened(state: dict, prefix: str = "") -> dict:
    """A nested state as DCP flattens it: `model.0.weight`, `optim.state.0.weight.step`."""
    flat: dict = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update(flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
