#!/usr/bin/env python3
"""A sharded training checkpoint (DCP, as 2 ranks save it) into one safetensors file, side
by side with torch's own `dcp_to_torch_save` and with copying the same bytes.

Builds (once per size, in the work directory) a DCP directory of a BERT-large-shaped model
stack (`scripts/bench.py`'s BERT shapes, as many layers as the size asks) in float32: the
state dict saved by torch's `dcp.save`, then split into 2 files by `ckpt convert --to dcp
--shards 2` (the layout 2 FSDP ranks leave; torch's own `dcp.load` reads it, see
tests/dcp). Then, taking turns, times as fresh processes:
- the floor: copying the directory's files (and the same with an fsync of each, as the
  conversion syncs its output before it renames it into place);
- `ckpt convert DIR out.safetensors`;
- torch's `dcp_to_torch_save(DIR, out.pt)` (loads the whole state, then saves it).
Checks that both outputs hold the same tensors, bit for bit, and prints wall time, ratios
and peak RSS (with the bound the issue sets: three times the largest tensor + 150 MiB).

    scripts/bench_dcp.py [--work DIR] [--repeat N] [--gb 2]
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
import sys, numpy as np, torch, torch.distributed.checkpoint as dcp
sys.path.insert(0, sys.argv[3])
from bench import bert_shapes
rng = np.random.default_rng(0)
state = {name.replace("/", "."): torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
         for name, shape in bert_shapes(int(sys.argv[2])).items()}
dcp.save(state, checkpoint_id=sys.argv[1])
"""
COPY_DIR = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
COPY_SYNCED = """
import os, shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2])
for name in os.listdir(sys.argv[2]):
    with open(os.path.join(sys.argv[2], name), "rb") as f:
        os.fsync(f.fileno())
"""
DCP_TO_TORCH = """
import sys
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
dcp_to_torch_save(sys.argv[1], sys.argv[2])
"""
SAME = """
import sys, torch
from safetensors.torch import load_file
ours, theirs = load_file(sys.argv[1]), torch.load(sys.argv[2], weights_only=True)
assert sorted(ours) == sorted(theirs), sorted(set(ours) ^ set(theirs))[:5]
assert all(torch.equal(ours[k], v) for k, v in theirs.items())
"""


def build(folder: Path, layers: int) -> None:
    if (folder / ".metadata").is_file():
        return
    single = folder.with_name(folder.name + "-1")
    shutil.rmtree(single, ignore_errors=True)
    subprocess.run(python(BUILD, single, str(layers), ROOT / "scripts"), check=True)
    subprocess.run(ckpt("convert", single, folder, "--to", "dcp", "--shards", "2"), check=True)
    shutil.rmtree(single)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "dcp")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gb", type=float, default=2.0)
    args = parser.parse_args()
    layers = max(1, round(args.gb * 1e9 / LAYER_BYTES) - 3)  # (the embeddings: ~3 layers)
    folder = args.work / f"bert-{layers}-dcp"
    args.work.mkdir(parents=True, exist_ok=True)
    build(folder, layers)
    size = sum(p.stat().st_size for p in folder.iterdir())
    largest = max(int(np.prod(s)) for s in bert_shapes(layers).values()) * 4
    ours_out, theirs_out = args.work / "ckpt-out.safetensors", args.work / "torch-out.pt"
    floor, synced, ours, theirs = measure_side_by_side(
        [
            (python(COPY_DIR, folder, args.work / "copy"), args.work / "copy"),
            (python(COPY_SYNCED, folder, args.work / "copy"), args.work / "copy"),
            (ckpt("convert", folder, ours_out), ours_out),
            (python(DCP_TO_TORCH, folder, theirs_out), theirs_out),
        ],
        args.repeat,
    )
    subprocess.run([PY, "-c", SAME, str(ours_out), str(theirs_out)], check=True)
    bound = 3 * largest / 2**20 + 150
    print(
        f"DCP of {layers} BERT-large layers on 2 ranks, {size / 1e9:.2f} GB, best of {args.repeat}"
    )
    print(f"{'task':<40} {'wall s':>8} {'x floor':>8} {'peak MiB':>9}")
    rows: list[tuple[str, Run]] = [
        ("copy the directory (the floor)", floor),
        ("the same, then fsync (as ckpt commits)", synced),
        ("ckpt convert DIR out.safetensors", ours),
        ("torch dcp_to_torch_save", theirs),
    ]
    for name, run in rows:
        ratio = run.seconds / floor.seconds
        print(f"{name:<40} {run.seconds:>8.2f} {ratio:>8.2f} {run.peak_mib:>9.0f}")
    print(f"ckpt is {theirs.seconds / ours.seconds:.1f}x faster than dcp_to_torch_save")
    print(f"ckpt's peak RSS {ours.peak_mib:.0f} MiB; the bound (3x largest + 150) {bound:.0f} MiB")
    for out in (ours_out, theirs_out):
        out.unlink(missing_ok=True)
    shutil.rmtree(args.work / "copy", ignore_errors=True)


if __name__ == "__main__":
    main()
