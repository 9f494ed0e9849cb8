"""Training steps under DeepSpeed ZeRO on CPU ranks (gloo), saved with
`engine.save_checkpoint`: what a DeepSpeed run leaves on disk. Run by torchrun:

    torchrun --nproc-per-node 2 ds_job.py OUT

writes `OUT/<name>/` for each configuration in `CONFIGS` (ZeRO stages 1, 2 and 3, float32
and bfloat16). The model has what makes the rebuild hard: a tied embedding and output
layer (DeepSpeed saves the second as a shared parameter), a frozen layer, a buffer, two
parameter groups, and sizes the ranks do not divide evenly. Rank 0 then
saves `OUT/<name>.ref.pt`: DeepSpeed's own rebuild (`zero_to_fp32`) of the fp32 master
weights, the module's own state dict as `torch.load` reads it, and the output the
unsharded model computes with the rebuilt weights on a fixed input (with the module's
own weights where `zero_to_fp32` leaves a frozen parameter out, as it does for ZeRO-1 with
bfloat16)."""

from __future__ import annotations

import sys
from pathlib import Path

import deepspeed
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

CONFIGS = {
    "zero1-bf16": (1, "bf16"),
    "zero2": (2, "fp32"),
    "zero2-bf16": (2, "bf16"),
    "zero3": (3, "fp32"),
    "zero3-bf16": (3, "bf16"),
}
INPUT = torch.tensor([[1, 2, 3], [4, 5, 10]])


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(11, 6)
        self.hidden = torch.nn.Linear(6, 7)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 7))
        self.frozen = torch.nn.Linear(7, 5)
        self.frozen.requires_grad_(False)
        self.up = torch.nn.Linear(5, 6, bias=False)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight  # (tied)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.hidden(self.embed(ids))) * self.scale.to(ids.device, torch.float32)
        return self.head(self.up(torch.tanh(self.frozen(x.to(self.frozen.weight.dtype)))))


def groups(model: Model) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]


def train_and_save(out: str, name: str, stage: int, dtype: str) -> None:
    model = Model()
    config: dict = {
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }
    if dtype == "bf16":
        config["bf16"] = {"enabled": True}
    optimizer = torch.optim.AdamW(groups(model), lr=0.05)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    for _ in range(3):
        engine.backward(engine(INPUT).float().square().mean())
        engine.step()
    engine.save_checkpoint(f"{out}/{name}")
    torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        master = get_fp32_state_dict_from_zero_checkpoint(f"{out}/{name}")
        master = {k: v.contiguous().clone() for k, v in master.items()}
        tag = Path(f"{out}/{name}/latest").read_text().strip()
        files = sorted(Path(f"{out}/{name}/{tag}").glob("*model_states.pt"))
        module = torch.load(files[0], weights_only=False)["module"]
        # (a frozen parameter that zero_to_fp32 leaves out comes from the module)
        check = Model()
        check.load_state_dict({**module, **master}, strict=True)
        check.eval()
        with torch.no_grad():
            output = check(INPUT)
        torch.save({"master": master, "module": module, "output": output}, f"{out}/{name}.ref.pt")
    torch.distributed.barrier()


def main() -> None:
    out = sys.argv[1]
    names = sys.argv[2:] or list(CONFIGS)
    for name in names:
        train_and_save(out, name, *CONFIGS[name])


if __name__ == "__main__":
    main()
