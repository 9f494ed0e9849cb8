"""Training steps under FSDP2 (`fully_shard`) on CPU ranks with gloo, saved with DCP:
what a sharded training run leaves on disk. Run by torchrun:

    torchrun --nproc-per-node 2 fsdp_job.py OUT

writes, for a float32 and a bfloat16 model, `OUT/<dtype>/` (model and Adam state, DCP's
default serialization) and `OUT/<dtype>-safetensors/` (its safetensors serialization).
The model has a dimension the ranks do not divide evenly (7 rows over 2 ranks), so its
shards differ in size. Rank 0 also saves the full model as one process sees it
(`OUT/<dtype>.model.pt`, gathered with `get_model_state_dict(full_state_dict=True)`) and
that model's output on a fixed input (`OUT/<dtype>.out.pt`).

    torchrun --nproc-per-node 2 fsdp_job.py load DIR DTYPE OUT

loads the DCP checkpoint DIR into the same model sharded on the ranks (`dcp.load` into its
sharded state dict), and rank 0 saves the full model it then holds to OUT."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import FileSystemWriter, SerializationFormat
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
)
from torch.distributed.fsdp import fully_shard


def model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 7), torch.nn.ReLU(), torch.nn.Linear(7, 4), torch.nn.LayerNorm(4)
    ).to(dtype)


def main() -> None:
    dist.init_process_group("gloo")
    if sys.argv[1] == "load":
        load(sys.argv[2], getattr(torch, sys.argv[3]), sys.argv[4])
    else:
        for dtype in (torch.float32, torch.bfloat16):
            train_and_save(f"{sys.argv[1]}/{str(dtype).split('.')[1]}", dtype)
    dist.destroy_process_group()


def sharded(dtype: torch.dtype) -> torch.nn.Module:
    net = model(dtype)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)
    return net


def load(checkpoint: str, dtype: torch.dtype, out: str) -> None:
    net = sharded(dtype)
    state = get_model_state_dict(net)
    dcp.load(state, checkpoint_id=checkpoint)
    set_model_state_dict(net, state)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(net, options=options)
    if dist.get_rank() == 0:
        torch.save(full, out)
    dist.barrier()


def train_and_save(out: str, dtype: torch.dtype) -> None:
    net = sharded(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    torch.manual_seed(1 + dist.get_rank())
    for _ in range(2):
        net(torch.randn(3, 6, dtype=dtype)).sum().backward()
        opt.step()
        opt.zero_grad()
    model_state, optim_state = get_state_dict(net, opt)
    state = {"model": model_state, "optim": optim_state}
    dcp.save(state, checkpoint_id=out)
    safetensors = FileSystemWriter(
        f"{out}-safetensors", serialization_format=SerializationFormat.SAFETENSORS
    )
    dcp.save(state, storage_writer=safetensors)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(net, options=options)
    if dist.get_rank() == 0:
        torch.save(full, f"{out}.model.pt")
        plain = model(dtype)
        plain.load_state_dict(full, strict=True)
        torch.manual_seed(9)
        with torch.no_grad():
            torch.save(plain(torch.randn(5, 6, dtype=dtype)), f"{out}.out.pt")
    dist.barrier()


if __name__ == "__main__":
    main()
