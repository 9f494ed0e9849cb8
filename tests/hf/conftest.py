"""The reference models of the Hugging Face TF/Flax tests: transformers 4.57 (in
`.venv-hf4`, which scripts/test makes) saves every model of `models.MODELS` once per
session. That takes minutes, so it starts in the background as soon as pytest has
collected a test of this folder, and runs beside the rest of the suite. To work on these
tests, `CKPT_HF_ORACLE=DIR` keeps the models in DIR and makes them only if DIR has none."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.hf.models import MODELS

ROOT = Path(__file__).resolve().parents[2]
HF4_PYTHON = ROOT / ".venv-hf4" / "bin" / "python"
ORACLE = Path(__file__).with_name("oracle.py")
_run: dict[str, object] = {}


def hf4(*args: str | Path, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    """Run the oracle in `.venv-hf4`; its output on failure."""
    if not HF4_PYTHON.exists():
        pytest.fail(
            f"{HF4_PYTHON} is missing: scripts/test makes it (tests/hf/hf4-requirements.txt)"
        )
    proc = subprocess.run(
        [str(HF4_PYTHON), str(ORACLE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def start(out: Path) -> subprocess.Popen[str] | None:
    if not HF4_PYTHON.exists():
        return None
    log = (out / "oracle.log").open("w")
    return subprocess.Popen(
        [str(HF4_PYTHON), str(ORACLE), "make", str(out), *MODELS],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    here = Path(__file__).with_name("test_hf_folders.py")
    if any(Path(item.fspath) == here for item in session.items):
        kept = os.environ.get("CKPT_HF_ORACLE")
        if kept and all((Path(kept) / name / "done").is_file() for name in MODELS):
            _run.update(out=Path(kept), proc=None, kept=True)
            return
        out = Path(kept) if kept else Path(tempfile.mkdtemp(prefix="hf-oracle-"))
        out.mkdir(parents=True, exist_ok=True)
        _run.update(out=out, proc=start(out), kept=bool(kept))


def pytest_sessionfinish(session: pytest.Session) -> None:
    proc = _run.get("proc")
    if isinstance(proc, subprocess.Popen) and proc.poll() is None:
        proc.kill()
    if isinstance(_run.get("out"), Path) and not _run.get("kept"):
        shutil.rmtree(_run["out"], ignore_errors=True)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def oracle() -> Path:
    """The folder of reference models (waits for the background run)."""
    out, proc = _run.get("out"), _run.get("proc")
    if not isinstance(out, Path):
        pytest.fail(f"{HF4_PYTHON} is missing: scripts/test makes it")
    if isinstance(proc, subprocess.Popen):
        assert proc.wait(timeout=1800) == 0, (out / "oracle.log").read_text()[-4000:]
    elif not _run.get("kept"):
        pytest.fail(f"{HF4_PYTHON} is missing: scripts/test makes it")
    return out
