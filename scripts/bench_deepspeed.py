#!/usr/bin/env python3
"""A DeepSpeed ZeRO-2 checkpoint (2 ranks, bfloat16 training with fp32 master weights and
Adam's moments) into one safetensors file of the fp32 weights, side by side with
DeepSpeed's own `zero_to_fp32` and with copying the output's bytes.

Builds (once per size, in the work directory) a checkpoint of a BERT-large-shaped stack
(`scripts/bench.py`'s BERT shapes, as many layers as `--gb` of fp32 weights asks) laid out
as DeepSpeed 0.19 saves one (tests/deepspeed checks the reader against checkpoints
DeepSpeed itself wrote): `latest`, `global_step100/mp_rank_00_model_states.pt` (the
bfloat16 module, the parameters' shapes) and one `bf16_zero_pp_rank_N_mp_rank_00_optim_states.pt`
per rank (its half of the flat fp32 weights, `exp_avg`, `exp_avg_sq`). Then, taking
turns, times as fresh processes:
- the floor: copying a file of the output's size (and the same with an fsync, as the
  conversion syncs its output before it renames it into place);
- `ckpt convert DIR out.safetensors` (the fp32 weights: the part it converts by default);
- `zero_to_fp32`'s `convert_zero_checkpoint_to_fp32_state_dict(DIR, OUT,
  safe_serialization=True)`.
Checks that both outputs hold the same tensors, bit for bit, and prints wall time, ratios
and peak RSS (with the bound: three times the largest tensor + 150 MiB).

    scripts/bench_deepspeed.py [--work DIR] [--repeat N] [--gb 1]
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
WORLD = 2
BUILD = """
import math, sys
from collections import OrderedDict
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, sys.argv[3])
from bench import bert_shapes
folder, world, tag = Path(sys.argv[1]), int(sys.argv[4]), "global_step100"
shapes = OrderedDict((n.replace("/", "."), s) for n, s in bert_shapes(int(sys.argv[2])).items())
total = sum(math.prod(s) for s in shapes.values())
assert total % (2 * world) == 0  # (no tail padding: BERT's sizes are multiples of 4)
flat = torch.from_numpy(np.random.default_rng(0).standard_normal(total, dtype=np.float32))
(folder / tag).mkdir(parents=True)
module, at = OrderedDict(), 0
for name, shape in shapes.items():
    module[name] = flat[at : at + math.prod(shape)].view(shape).to(torch.bfloat16)
    at += math.prod(shape)
torch.save({
    "module": module, "buffer_names": [], "optimizer": None,
    "param_shapes": [OrderedDict((n, torch.Size(s)) for n, s in shapes.items())],
    "frozen_param_shapes": OrderedDict(), "shared_params": {},
    "frozen_param_fragments": OrderedDict(), "global_steps": 100, "dp_world_size": world,
    "mp_world_size": 1, "ds_version": "0.19.8",
}, folder / tag / "mp_rank_00_model_states.pt")
del module
size = total // world
for rank in range(world):
    part = flat[rank * size : (rank + 1) * size].clone()
    state = {"step": torch.tensor(100.0), "exp_avg": part * 1e-3, "exp_avg_sq": part.square()}
    adam = {"state": {0: state}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    name = f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
    torch.save({"optimizer_state_dict": {
        "zero_stage": 2, "partition_count": [world], "single_partition_of_fp32_groups": [part],
        "base_optimizer_state": adam, "param_alignment_paddings": [[0] * len(shapes)],
        "group_paddings": [0], "ds_version": "0.19.8",
    }, "ds_version": "0.19.8"}, folder / tag / name)
(folder / "latest").write_text(tag)
"""
COPY = "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])"
COPY_SYNCED = """
import os, shutil, sys
shutil.copyfile(sys.argv[1], sys.argv[2])
with open(sys.argv[2], "rb") as f:
    os.fsync(f.fileno())
"""
ZERO_TO_FP32 = """
import sys
from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict
convert_zero_checkpoint_to_fp32_state_dict(sys.argv[1], sys.argv[2], safe_serialization=True)
"""
SAME = """
import sys, torch
from safetensors.torch import load_file
ours, theirs = load_file(sys.argv[1]), load_file(sys.argv[2])
assert sorted(ours) == sorted(theirs), sorted(set(ours) ^ set(theirs))[:5]
assert all(ours[k].dtype == v.dtype and torch.equal(ours[k], v) for k, v in theirs.items())
"""


def build(folder: Path, layers: int) -> None:
    if (folder / "latest").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(python(BUILD, folder, str(layers), ROOT / "scripts", str(WORLD)), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "deepspeed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gb", type=float, default=1.0)
    args = parser.parse_args()
    layers = max(1, round(args.gb * 1e9 / LAYER_BYTES) - 3)  # (the embeddings: ~3 layers)
    folder = args.work / f"bert-{layers}-zero2"
    args.work.mkdir(parents=True, exist_ok=True)
    build(folder, layers)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    largest = max(int(np.prod(s)) for s in bert_shapes(layers).values()) * 4
    ours_out, theirs_dir = args.work / "ckpt-out.safetensors", args.work / "zero-to-fp32"
    floor_in = args.work / "floor-in.safetensors"
    subprocess.run(ckpt("convert", "-q", folder, floor_in, "--overwrite"), check=True)
    floor, synced, ours, theirs = measure_side_by_side(
        [
            (python(COPY, floor_in, args.work / "copy"), args.work / "copy"),
            (python(COPY_SYNCED, floor_in, args.work / "copy"), args.work / "copy"),
            (ckpt("convert", folder, ours_out), ours_out),
            (python(ZERO_TO_FP32, folder, theirs_dir), theirs_dir),
        ],
        args.repeat,
    )
    theirs_out = theirs_dir / "model.safetensors"
    subprocess.run([PY, "-c", SAME, str(ours_out), str(theirs_out)], check=True)
    bound = 3 * largest / 2**20 + 150
    print(
        f"ZeRO-2 checkpoint of {layers} BERT-large layers on {WORLD} ranks, {size / 1e9:.2f} GB "
        f"({floor_in.stat().st_size / 1e9:.2f} GB of fp32 weights), best of {args.repeat}"
    )
    print(f"{'task':<40} {'wall s':>8} {'x floor':>8} {'peak MiB':>9}")
    rows: list[tuple[str, Run]] = [
        ("copy the output's bytes (the floor)", floor),
        ("the same, then fsync (as ckpt commits)", synced),
        ("ckpt convert DIR out.safetensors", ours),
        ("DeepSpeed zero_to_fp32", theirs),
    ]
    for name, run in rows:
        ratio = run.seconds / floor.seconds
        print(f"{name:<40} {run.seconds:>8.2f} {ratio:>8.2f} {run.peak_mib:>9.0f}")
    print(f"ckpt is {theirs.seconds / ours.seconds:.1f}x faster than zero_to_fp32")
    print(f"ckpt's peak RSS {ours.peak_mib:.0f} MiB; the bound (3x largest + 150) {bound:.0f} MiB")
    for out in (ours_out, floor_in, args.work / "copy"):
        out.unlink(missing_ok=True)
    shutil.rmtree(theirs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
