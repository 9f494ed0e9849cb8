"""DeepSpeed's universal checkpoint layout (what `ds_to_universal` makes of a ZeRO
checkpoint, to resume on another number of ranks): each parameter's fp32 weights and
optimizer state in files of their own, `<tag>_universal/zero/<name>/fp32.pt`,
`exp_avg.pt`, `exp_avg_sq.pt`, `step.pt`, beside the model states and
`zero/optimizer_state.pt` (the ZeRO stage, the rank count, the groups' hyper-parameters).

A file holds a tensor, or a dict whose `param` is it (beside `cat_dim` and the like: how to
cut it again for another layout). A trainable parameter's may be flat (stage 3), and is
shaped by the model states' `param_shapes`. Other folders (a buffer, a frozen or tied
parameter, under stages 1 and 2) hold fp32 copies of those.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from convert.core.errors import FormatError
from convert.core.tensor import Tensor
from convert.formats.torch.deepspeed_layout import reshaped
from convert.formats.torch.deepspeed_states import STAGES, Shapes, load, plain_groups
from convert.formats.torch.records import TensorRef, short

UNIVERSAL = "zero"
OPTIMIZER = "optimizer_state.pt"
WEIGHTS = "fp32.pt"


def _optimizer_state(obj: Any) -> tuple[int, int, list[dict]]:
    if not isinstance(obj, dict) or "zero_stage" not in obj:
        raise FormatError("is not a universal checkpoint's optimizer state (no zero_stage)")
    stage, world = obj["zero_stage"], obj.get("partition_count")
    if isinstance(world, list) and world and all(type(n) is int for n in world):
        world = max(world)
    if type(stage) is not int or stage not in STAGES[1:] or type(world) is not int or world < 1:
        raise FormatError(f"has the ZeRO stage {short(stage)} over {short(world)} ranks")
    return stage, world, plain_groups(obj.get("param_groups"))


class Universal:
    """A universal checkpoint's trainable parameters and their optimizer state, one file
    each, as lazy tensors."""

    @staticmethod
    def stage_and_world(folder: Path) -> tuple[int, int]:
        (stage, world, _), _ = load(folder / UNIVERSAL / OPTIMIZER, _optimizer_state)
        return stage, world

    def __init__(self, folder: Path, groups: list[Shapes]):
        self.folder = folder / UNIVERSAL
        self.shapes = {name: shape for group in groups for name, shape in group.items()}
        (_, _, self.groups), _ = load(self.folder / OPTIMIZER, _optimizer_state)
        self.notes: list[str] = []

    def trainable(self) -> dict[str, Tensor]:
        made = {}
        for name, shape in self.shapes.items():
            file = self._folder(name) / WEIGHTS
            if not file.is_file():
                raise FormatError(f"has no {WEIGHTS} for the parameter {name!r}", self.folder)
            made[name] = self._tensor(file, name, shape)
        return made

    def saved_apart(self) -> dict[str, Tensor]:
        """The fp32 copies of what is not trainable (buffers, frozen and tied parameters)."""
        made = {}
        for entry in sorted(self.folder.iterdir()):
            if entry.name in self.shapes or not entry.is_dir():
                continue
            if entry.is_symlink():
                raise FormatError(f"{entry.name} is a link, not a folder of its own", self.folder)
            if (entry / WEIGHTS).is_file():
                made[entry.name] = self._tensor(entry / WEIGHTS, entry.name, None)
        return made

    def moments(self) -> dict[str, Tensor]:
        """Each trainable parameter's other files: its optimizer state, by file name."""
        made = {}
        for name, shape in self.shapes.items():
            for file in sorted(self._folder(name).glob("*.pt")):
                if file.name != WEIGHTS:
                    key = f"{name}.{file.stem}"
                    value = self._tensor(file, key, None)
                    made[key] = value if value.shape == () else self._shaped(value, shape, file)
        return made

    def param_groups(self) -> list[dict]:
        return self.groups

    def _folder(self, name: str) -> Path:
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            raise FormatError(f"names the parameter {name[:80]!r}, not a folder name", self.folder)
        return self.folder / name

    def _tensor(self, file: Path, name: str, shape: tuple[int, ...] | None) -> Tensor:
        ref, make = load(file, _parameter)
        tensor = make(ref, name)
        return tensor if shape is None else self._shaped(tensor, shape, file)

    def _shaped(self, tensor: Tensor, shape: tuple[int, ...], file: Path) -> Tensor:
        if tensor.size != math.prod(shape):
            raise FormatError(
                f"holds {list(tensor.shape)} where the parameter is {list(shape)}", file
            )
        return reshaped(tensor, shape)


def _parameter(obj: Any) -> Any:
    value = obj.get("param") if isinstance(obj, dict) else obj
    if type(value) is not TensorRef:
        raise FormatError(f"holds {short(value)}, not a tensor or a dict with `param`")
    return value
