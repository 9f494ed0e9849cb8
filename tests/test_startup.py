"""Start-up cost: ml_dtypes (up to 0.6 s to import) is imported only when a bfloat16,
float8 or int4 tensor is met, on every path: sniffing, listing, reading, writing. Each
check runs in a fresh process, as the pytest process has long imported ml_dtypes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# (destination, format): every writer and reader, on float32 tensors.
TARGETS = [
    ("t/ckpt", "tf"),
    ("t.safetensors", None),
    ("t.pt", None),
    ("t.npz", None),
    ("t.msgpack", None),
    ("t.h5", None),
]

FLOAT32_EVERYWHERE = """
import sys
from pathlib import Path
import numpy as np
import convert.cli
from convert import Graph, Tensor, api
from convert.core import registry
work = Path(sys.argv[1])
def keras(i, name):  # Keras' own record of a weight: a legacy .h5 is written by position
    return {{"keras_layer": "dense", "keras_layer_index": 0, "keras_weight_index": i,
            "keras_weight_name": f"dense/{{name}}:0"}}
for dst, fmt in {targets!r}:
    graph = Graph.from_flat({{
        ("dense", "kernel"): Tensor.from_array(np.ones((2, 3), "f4"), keras(0, "kernel")),
        ("dense", "bias"): Tensor.from_array(np.zeros(3, "f4"), keras(1, "bias"))}})
    api.save(graph, work / dst, fmt)
    for entry in api.load(work / dst).entries():
        assert entry.tensor.dtype_name == "float32"
        entry.tensor.read()
(work / "other.bin").write_bytes(b"not a checkpoint at all" * 10)
try:  # every format's sniff runs
    registry.detect(work / "other.bin")
except Exception:
    pass
sys.argv = ["ckpt", "ls", str(work / "t" / "ckpt"), "--tree"]
try:
    convert.cli.main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("ml_dtypes" in sys.modules, file=sys.stderr)
"""


def _python(script: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_float32_checkpoints_never_import_ml_dtypes(tmp_path):
    result = _python(FLOAT32_EVERYWHERE.format(targets=TARGETS), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "False", result.stderr


def test_import_cli_alone_imports_neither_ml_dtypes_nor_numpy():
    result = _python(
        "import sys, convert.cli; print(sorted({'ml_dtypes', 'numpy'} & set(sys.modules)))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


BLAS_THREADS = """
import os, sys
import convert.cli
import numpy as np
print(os.environ["OPENBLAS_NUM_THREADS"], len(os.listdir("/proc/self/task")))  # (threads)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
@pytest.mark.parametrize("setting, expected", [(None, "1 1"), ("2", "2 2")])
def test_the_cli_starts_numpy_with_one_blas_thread_unless_told(setting, expected):
    """numpy's BLAS threads spin for a while after numpy is imported, taking the core a
    checksum pass runs on: the CLI asks for one, unless the user has set a number."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    result = subprocess.run(
        [sys.executable, "-c", BLAS_THREADS], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


READ_BFLOAT16 = """
import sys
import convert
entries = convert.load(sys.argv[1]).entries()
print(sorted({e.tensor.dtype_name for e in entries}), "ml_dtypes" in sys.modules)
print([e.tensor.read().astype("float32").ravel().tolist() for e in entries])
"""


@pytest.mark.parametrize("target", ["b/ckpt", "b.safetensors", "b.pt", "b.npz", "b.msgpack"])
def test_a_bfloat16_tensor_is_read_in_a_fresh_process(tmp_path, target):
    """Once a file holds bfloat16, the reader imports ml_dtypes itself (nothing else has)."""
    import ml_dtypes

    import convert
    from convert import Graph, Tensor

    value = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    graph = Graph.from_flat({("w",): Tensor.from_array(value)})
    convert.save(graph, tmp_path / target, "tf" if target.endswith("ckpt") else None)
    result = _python(READ_BFLOAT16, tmp_path / target)
    assert result.returncode == 0, result.stderr
    kinds, values = result.stdout.splitlines()
    assert kinds == "['bfloat16'] True"
    assert values == "[[1.5, -2.0, 3.25]]"
