"""The pickled states of a DeepSpeed ZeRO checkpoint, read without DeepSpeed or torch: what
each rank's `*_model_states.pt` and `*_optim_states.pt` say, checked field by field and
turned into the plain records below. The reader (deepspeed.py) rebuilds tensors from them.

The files are torch.save archives whose pickles name a few DeepSpeed classes beside
torch's: the loss scaler (`LossScaler`, `DynamicLossScaler`), a parameter's place in a
partition (`fragment_address`), both plain records made by NEWOBJ and BUILD, and the
ZeRO stage (`ZeroStageEnum(n)`, read as the number n). The table `ALLOWED` is torch's plus
exactly these; any other name is refused at its GLOBAL opcode, naming it, and nothing is
imported or run.

What the fields mean (DeepSpeed's `checkpoint/constants.py` names them; its
`zero_to_fp32.py` reads them the same way):
- model states (rank 0's for stages 1 and 2; each rank's for stage 3): `module` (the
  module's own state dict: its training dtype; under stage 3 its parameters are empty,
  partitioned), `buffer_names`, `param_shapes` (each optimizer group's trainable
  parameters in partition order, name -> shape), `frozen_param_shapes` and
  `frozen_param_fragments` (parameters without gradients: whole under stages 1 and 2,
  one rank's padded slice under stage 3), `shared_params` (a tied name -> the name it
  shares), and the run's counters;
- optimizer states (one per data-parallel rank): `zero_stage`, `partition_count`, and the
  fp32 master weights: `single_partition_of_fp32_groups` (stages 1 and 2: group g's flat
  vector of all its parameters, cut in equal partitions, this rank's) or
  `fp32_flat_groups` (stage 3: each parameter cut in equal padded slices, this rank's
  slices end to end), with `param_alignment_paddings` (elements between two parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from convert.core.errors import ConvertError, FormatError
from convert.formats.torch.allowlist import ALLOWED as TORCH_ALLOWED
from convert.formats.torch.records import Global, TensorRef, record_class, short
from convert.formats.torch.storage import TensorFactory
from convert.formats.torch.zipreader import read_zip_tree

RECORD_CLASSES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)
STAGES = (0, 1, 2, 3)  # ZeroStageEnum's values (0: disabled)


def _stage(args: tuple) -> int:
    if len(args) != 1 or args[0] not in STAGES or type(args[0]) is not int:
        raise FormatError(f"ZeroStageEnum of {short(args)}")
    return int(args[0])


def _allowed() -> dict[str, Any]:
    table = dict(TORCH_ALLOWED)
    for name in RECORD_CLASSES:
        table[name] = record_class(name.rsplit(".", 1)[1])
    table["deepspeed.runtime.zero.config.ZeroStageEnum"] = Global("ZeroStageEnum", _stage)
    return table


ALLOWED = _allowed()

Shapes = dict[str, tuple[int, ...]]
T = TypeVar("T")


def load(file: Path, parse: Callable[[Any], T]) -> tuple[T, TensorFactory]:
    """A states file read through the restricted unpickler with `ALLOWED`, then `parse`d;
    errors name the file."""
    if not file.is_file():
        raise FormatError("is missing", file)
    try:
        obj, make = read_zip_tree(file, ALLOWED)
        return parse(obj), make
    except ConvertError as exc:
        if exc.path is None:
            exc.path = str(file)
        raise


@dataclass
class ModelStates:
    """One rank's `*_model_states.pt`."""

    module: dict[str, TensorRef]
    buffer_names: list[str]
    groups: list[Shapes]  # trainable parameters, per optimizer group, in partition order
    frozen: Shapes
    frozen_fragments: dict[str, TensorRef] | None  # None: not saved (bf16 with ZeRO-1)
    shared: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)  # counters, config, version


@dataclass
class OptimStates:
    """One rank's `*_optim_states.pt`: its slice of each group's fp32 master weights, and
    of the optimizer's state of each group (`moments[g]`: `exp_avg` and the like, flat as
    the weights are; `step`, a scalar), with the groups' hyper-parameters."""

    stage: int
    world: int
    partitions: list[TensorRef]
    paddings: list[list[int]] | None
    moments: list[dict[str, TensorRef]] = field(default_factory=list)
    param_groups: list[dict[str, Any]] = field(default_factory=list)


VALUES = (
    "global_steps",
    "global_samples",
    "skipped_steps",
    "dp_world_size",
    "mp_world_size",
    "ds_version",
    "ds_config",
)


def model_states(obj: Any) -> ModelStates:
    if not isinstance(obj, dict) or "buffer_names" not in obj or "module" not in obj:
        raise FormatError("is not a DeepSpeed model state (no module and buffer_names)")
    module = obj["module"]
    if not isinstance(module, dict) or not all(
        isinstance(k, str) and type(v) is TensorRef for k, v in module.items()
    ):
        raise FormatError("has a module that is not a state dict of tensors")
    names = obj["buffer_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FormatError(f"has buffer_names {short(names)}")
    groups = obj.get("param_shapes")
    if isinstance(groups, dict):  # (older files: one group)
        groups = [groups]
    if not isinstance(groups, list):
        raise FormatError(f"has param_shapes {short(groups)}")
    fragments = obj.get("frozen_param_fragments")
    if fragments is not None and not (
        isinstance(fragments, dict) and all(type(v) is TensorRef for v in fragments.values())
    ):
        raise FormatError("has frozen_param_fragments that are not tensors")
    shared = obj.get("shared_params") or {}
    if not isinstance(shared, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in shared.items()
    ):
        raise FormatError(f"has shared_params {short(shared)}")
    return ModelStates(
        module,
        names,
        [_shapes(g, "param_shapes") for g in groups],
        _shapes(obj.get("frozen_param_shapes") or {}, "frozen_param_shapes"),
        fragments,
        shared,
        {k: obj[k] for k in VALUES if k in obj},
    )


def _shapes(value: Any, what: str) -> Shapes:
    if not isinstance(value, dict):
        raise FormatError(f"has {what} {short(value)}")
    out: Shapes = {}
    for name, shape in value.items():
        if not isinstance(name, str) or not isinstance(shape, (tuple, list)):
            raise FormatError(f"has {what} naming {short(name)} with the shape {short(shape)}")
        if not all(type(n) is int and n >= 0 for n in shape):
            raise FormatError(f"has {what}: {name!r} of shape {short(shape)}")
        out[name] = tuple(shape)
    return out


def optim_states(obj: Any) -> OptimStates:
    state = obj.get("optimizer_state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or "zero_stage" not in state:
        raise FormatError("is not a DeepSpeed ZeRO optimizer state (no zero_stage)")
    stage, world = state["zero_stage"], state.get("partition_count")
    if type(stage) is not int or stage not in STAGES[1:]:
        raise FormatError(f"has the ZeRO stage {short(stage)}")
    if isinstance(world, list) and world and all(type(n) is int for n in world):
        world = max(world)  # (expert groups may have fewer ranks: the largest is the world)
    if type(world) is not int or world < 1:
        raise FormatError(f"has the partition count {short(world)}")
    key = "single_partition_of_fp32_groups" if stage <= 2 else "fp32_flat_groups"
    partitions = state.get(key)
    if not isinstance(partitions, list) or not all(
        type(p) is TensorRef and len(p.shape) == 1 for p in partitions
    ):
        raise FormatError(f"has no {key} list of flat tensors")
    paddings = state.get("param_alignment_paddings")
    if paddings is not None and not (
        isinstance(paddings, list)
        and all(isinstance(g, list) and all(type(n) is int and n >= 0 for n in g) for g in paddings)
    ):
        raise FormatError(f"has param_alignment_paddings {short(paddings)}")
    inner = state.get("base_optimizer_state" if stage <= 2 else "optimizer_state_dict")
    moments, groups = _optimizer(inner, len(partitions))
    return OptimStates(stage, world, partitions, paddings, moments, groups)


def _optimizer(inner: Any, groups: int) -> tuple[list[dict[str, TensorRef]], list[dict]]:
    """The wrapped torch optimizer's state dict: its state per group (the group's one flat
    parameter is its index) and its groups' hyper-parameters; empty when there is none."""
    if not isinstance(inner, dict):
        return [], []
    state, param_groups = inner.get("state"), inner.get("param_groups")
    moments: list[dict[str, TensorRef]] = []
    for g in range(groups):
        found = state.get(g) if isinstance(state, dict) else None
        if not isinstance(found, dict):
            return [], []
        moments.append(
            {k: v for k, v in found.items() if isinstance(k, str) and type(v) is TensorRef}
        )
    return moments, plain_groups(param_groups)


def plain_groups(groups: Any) -> list[dict[str, Any]]:
    """An optimizer's `param_groups` without their `params` (indices into its own flat
    parameters, which mean nothing outside it)."""
    return [
        {k: v for k, v in group.items() if k != "params"}
        for group in (groups if isinstance(groups, list) else [])
        if isinstance(group, dict)
    ]
