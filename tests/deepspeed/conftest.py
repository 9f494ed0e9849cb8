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
