"""Fixtures of the Orbax tests: checkpoints the real orbax-checkpoint writes at test time,
in a process of its own that sees 2 host CPU devices (`orbax_job.py`), with what Orbax
restores of each beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("orbax_job.py")


@pytest.fixture(scope="session")
def orbax_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("orbax")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, str(JOB), str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out
