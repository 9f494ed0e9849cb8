#!/usr/bin/env python3
"""An Orbax checkpoint (OCDBT, zarr, as `StandardCheckpointer` saves it) into one
safetensors file, side by side with Orbax's own restore + `safetensors.numpy.save_file`
and with copying the same bytes.

Builds (once per size, in the work directory) an Orbax folder of a BERT-large-shaped model
stack (`scripts/bench.py`'s BERT shapes, as many layers as the size asks) in float32, saved
by the suite's orbax-checkpoint with its defaults (OCDBT, zstd-compressed zarr chunks).
Then, taking turns, times as fresh processes:
- the floor: copying the folder (and the same with an fsync of each file, as the
  conversion syncs its output before it renames it into place);
- `ckpt convert DIR out.safetensors` (through TensorStore, no JAX);
- Orbax's `StandardCheckpointer().restore(DIR)` then `safetensors.numpy.save_file`.
Checks that both outputs hold the same tensors, bit for bit, and prints wall time, ratios
and peak RSS (with the bound the issue sets: three times the largest tensor + 150 MiB).

    scripts/bench_orbax.py [--work DIR] [--repeat N] [--gb 1.3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench import PY, Run, bert_shapes, ckpt, measure_side_by_side, python  # noqa: E402

LAYER_BYTES = 12 * 1024 * 1024 * 4  # one BERT-large layer's weights, float32
BUILD = """
import sys, numpy as np, orbax.checkpoint as ocp
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from bench import bert_shapes
rng = np.random.default_rng(0)
tree = {}
for name, shape in bert_shapes(int(sys.argv[2])).items():
    node = tree
    *parents, leaf = name.split("/")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = rng.standard_normal(shape, dtype=np.float32)
checkpointer = ocp.StandardCheckpointer()
checkpointer.save(Path(sys.argv[1]).absolute(), tree)
checkpointer.wait_until_finished()
"""
COPY_DIR = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
COPY_SYNCED = """
import os, shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2])
for folder, _, names in os.walk(sys.argv[2]):
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            os.fsync(f.fileno())
"""
ORBAX_THEN_SAVE = """
import sys, numpy as np, orbax.checkpoint as ocp
from safetensors.numpy import save_file
restored = ocp.StandardCheckpointer().restore(sys.argv[1])
flat = {}
def walk(node, where):
    for key, value in node.items():
        path = f"{where}.{key}" if where else key
        if isinstance(value, dict):
            walk(value, path)
        else:
            flat[path] = np.asarray(value)
walk(restored, "")
save_file(flat, sys.argv[2])
"""
SAME = """
import sys
from safetensors.numpy import load_file
ours, theirs = load_file(sys.argv[1]), load_file(sys.argv[2])
assert sorted(ours) == sorted(theirs), sorted(set(ours) ^ set(theirs))[:5]
assert all(ours[k].tobytes() == v.tobytes() and ours[k].shape == v.shape for k, v in theirs.items())
"""


def build(folder: Path, layers: int) -> None:
    if (folder / "_METADATA").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(python(BUILD, folder, str(layers), ROOT / "scripts"), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "orbax")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gb", type=float, default=1.3)
    args = parser.parse_args()
    layers = max(1, round(args.gb * 1e9 / LAYER_BYTES) - 3)  # (the embeddings: ~3 layers)
    folder = args.work / f"bert-{layers}-orbax"
    args.work.mkdir(parents=True, exist_ok=True)
    build(folder, layers)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    largest = max(int(np.prod(s)) for s in bert_shapes(layers).values()) * 4
    ours_out, theirs_out = args.work / "ckpt-out.safetensors", args.work / "orbax-out.safetensors"
    floor, synced, ours, theirs = measure_side_by_side(
        [
            (python(COPY_DIR, folder, args.work / "copy"), args.work / "copy"),
            (python(COPY_SYNCED, folder, args.work / "copy"), args.work / "copy"),
            (ckpt("convert", folder, ours_out), ours_out),
            (python(ORBAX_THEN_SAVE, folder, theirs_out), theirs_out),
        ],
        args.repeat,
    )
    subprocess.run([PY, "-c", SAME, str(ours_out), str(theirs_out)], check=True)
    bound = 3 * largest / 2**20 + 150
    print(f"Orbax (OCDBT, zstd zarr) of {layers} BERT-large layers, {size / 1e9:.2f} GB on disk,")
    print(f"best of {args.repeat}")
    print(f"{'task':<44} {'wall s':>8} {'x floor':>8} {'peak MiB':>9}")
    rows: list[tuple[str, Run]] = [
        ("copy the folder (the floor)", floor),
        ("the same, then fsync (as ckpt commits)", synced),
        ("ckpt convert DIR out.safetensors", ours),
        ("orbax restore + safetensors save_file", theirs),
    ]
    for name, run in rows:
        ratio = run.seconds / floor.seconds
        print(f"{name:<44} {run.seconds:>8.2f} {ratio:>8.2f} {run.peak_mib:>9.0f}")
    print(f"ckpt is {theirs.seconds / ours.seconds:.1f}x faster than Orbax's restore + save")
    print(f"ckpt's peak RSS {ours.peak_mib:.0f} MiB; the bound (3x largest + 150) {bound:.0f} MiB")
    for out in (ours_out, theirs_out):
        out.unlink(missing_ok=True)
    shutil.rmtree(args.work / "copy", ignore_errors=True)


if __name__ == "__main__":
    main()
