"""DeepSpeed ZeRO checkpoint folders (stages 1, 2 and 3, and the universal layout), read
without DeepSpeed or torch: what `engine.save_checkpoint(dir)` leaves (`dir/latest` naming
the tag folder, `dir/<tag>/*_model_states.pt` and one `*_optim_states.pt` per
data-parallel rank), and what DeepSpeed's `ds_to_universal` makes of it
(`<tag>_universal/zero/<parameter>/fp32.pt`, `exp_avg.pt`, ...).

The graph holds:
- `model`: the fp32 master weights, as DeepSpeed's own `zero_to_fp32.py` rebuilds them, in
  the module's key order: each trainable parameter from the ranks' flat partitions
  (deepspeed_layout.py) or its universal file (deepspeed_universal.py); a frozen parameter
  from its saved copy (stage 3: the ranks' slices joined); a buffer from the module,
  floating point ones as float32; a shared (tied) parameter as the parameter it shares;
  anything else of the module (a frozen parameter DeepSpeed did not save apart, as under
  ZeRO-1 with bfloat16, where `zero_to_fp32` leaves it out) as the module saved it, and
  the notes name it;
- `module` (stages 1 and 2): the module's own weights as the engine saved them, in its
  training dtype (bfloat16, float16);
- `optim/state/<parameter>/<state>`: the optimizer's state of each trainable parameter
  (`exp_avg`, `exp_avg_sq`, `step`), keyed as torch's `get_state_dict` keys it, and the
  groups' hyper-parameters as `optim`'s values.

A conversion keeps `model` unless told otherwise (`--pick module`, `--pick optim`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Protocol

from convert.core.errors import FormatError, UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import DEFAULT_PICK, SOURCE_KEY
from convert.core.notes import count, some
from convert.core.tensor import Tensor
from convert.formats.torch.deepspeed_layout import Partitioned, as_float32, joined, reshaped
from convert.formats.torch.deepspeed_states import ModelStates, load, model_states, optim_states
from convert.formats.torch.deepspeed_universal import UNIVERSAL, Universal
from convert.formats.torch.storage import TensorFactory
from convert.formats.torch.tree import is_plain

LATEST = "latest"
MODEL_STATES = "_model_states.pt"
OPTIM_STATES = "_optim_states.pt"
_RANKED = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)" + re.escape(OPTIM_STATES) + "$")
_MODEL_RANKED = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)" + re.escape(MODEL_STATES) + "$")


class Source(Protocol):
    """Where the trainable parameters and their optimizer state come from."""

    notes: list[str]

    def trainable(self) -> dict[str, Tensor]: ...
    def saved_apart(self) -> dict[str, Tensor]: ...  # (fp32 copies of other tensors)
    def moments(self) -> dict[str, Tensor]: ...
    def param_groups(self) -> list[dict]: ...


def tag_folder(path: Path) -> Path | None:
    """The folder of states that `path` names (itself, or the tag its `latest` file names),
    or None when it is not a DeepSpeed checkpoint."""
    latest = path / LATEST
    if latest.is_file() and latest.stat().st_size <= 4096:
        tag = latest.read_text(errors="replace").strip()
        if not tag or tag in (".", "..") or "/" in tag or "\\" in tag or "\0" in tag:
            raise FormatError(f"has a `{LATEST}` file naming {tag[:80]!r}, not a tag folder", path)
        if not (path / tag).is_dir():
            raise FormatError(f"{tag} (named by `{LATEST}`) is missing", path)
        path = path / tag
    return path if any(path.glob("*" + MODEL_STATES)) else None


def is_deepspeed(path: Path) -> bool:
    """A folder with a `latest` file (what it names is checked when read) or states."""
    return path.is_dir() and ((path / LATEST).is_file() or any(path.glob("*" + MODEL_STATES)))


def read(path: Path) -> Graph:
    folder = tag_folder(path)
    if folder is None:
        raise FormatError("holds no DeepSpeed *_model_states.pt", path)
    optim_files = _ranked(folder, _RANKED, OPTIM_STATES)
    source: Source
    if optim_files:
        optims = [load(f, optim_states) for f in optim_files]
        stage, world = optims[0][0].stage, optims[0][0].world
        if len(optims) != world or any(o.stage != stage or o.world != world for o, _ in optims):
            raise FormatError(
                f"{folder.name} holds {count(len(optims), 'optimizer state')} of ZeRO stages "
                f"{sorted({o.stage for o, _ in optims})} where the first says {world} ranks: "
                "a checkpoint overwritten or saved by some ranks only?",
                path,
            )
    elif (folder / UNIVERSAL).is_dir():
        stage, world = Universal.stage_and_world(folder)
    else:
        raise UnsupportedError(
            f"{folder.name} holds no ZeRO *{OPTIM_STATES}: only ZeRO checkpoints (stages 1-3) "
            "are read; without ZeRO, the model states file is a torch.save file itself",
            path,
        )
    if stage <= 2:
        model_files = [folder / f"mp_rank_00{MODEL_STATES}"]
    else:
        model_files = _ranked(folder, _MODEL_RANKED, MODEL_STATES)
    models = [load(f, model_states) for f in model_files]
    if stage == 3 and len(models) != world:
        raise FormatError(
            f"{folder.name} holds {count(len(models), 'model state')} for {world} ranks", path
        )
    first, make = models[0]
    if optim_files:
        source = Partitioned(stage, world, first.groups, optims, str(folder))
    else:
        source = Universal(folder, first.groups)
    graph = Graph(format="deepspeed", source=str(path))
    graph.files = [str(f) for f in (*model_files, *optim_files)]
    notes: list[str] = []
    frozen = {**_frozen(stage, world, models, str(folder)), **source.saved_apart()}
    _add(graph, "model", _model(first, make, source.trainable(), frozen, notes))
    if stage <= 2:
        _add(graph, "module", {k: make(v, k) for k, v in first.module.items()})
    _add(graph, "optim.state", source.moments())
    optim = graph.root.edges.setdefault("optim", Node())
    groups = source.param_groups()
    if groups and is_plain(groups) and isinstance(optim, Node):
        optim.values["param_groups"] = [
            {**group, "params": list(shapes)}
            for group, shapes in zip(groups, first.groups, strict=False)
        ]
    graph.root.values.update({k: v for k, v in first.values.items() if is_plain(v)})
    graph.root.values["zero_stage"] = stage
    graph.root.meta[DEFAULT_PICK] = "model"
    graph.notes += notes + source.notes
    return graph


def _ranked(folder: Path, pattern: re.Pattern, suffix: str) -> list[Path]:
    """The folder's `*zero_pp_rank_N_mp_rank_00<suffix>` files in rank order, checked to be
    ranks 0..N-1 of one model-parallel rank."""
    found: dict[int, Path] = {}
    for file in folder.glob("*" + suffix):
        match = pattern.search(file.name)
        if match is None:
            continue
        if match.group(2) != "00":
            raise UnsupportedError(
                f"{file.name} is of model-parallel rank {int(match.group(2))}: tensor- and "
                "pipeline-parallel checkpoints are not merged here",
                folder,
            )
        found[int(match.group(1))] = file
    if sorted(found) != list(range(len(found))):
        raise FormatError(f"holds ranks {sorted(found)} of *{suffix}: one is missing", folder)
    return [found[r] for r in range(len(found))]


def _model(
    first: ModelStates,
    make: TensorFactory,
    made: dict[str, Tensor],
    frozen: dict[str, Tensor],
    notes: list[str],
) -> dict[str, Tensor]:
    """The fp32 master weights, in the module's key order (see the module doc)."""
    made = {**made, **frozen}
    for name in first.buffer_names:
        if name in first.module and name not in made:
            made[name] = as_float32(make(first.module[name], name))
    for name, target in first.shared.items():
        if target in made:
            made[name] = made[target]  # (one tensor at both places, as torch ties)
    taken = []
    for name, ref in first.module.items():
        if name not in made and math.prod(ref.shape) > 0:
            made[name] = make(ref, name)
            taken.append(name)
    if taken:
        notes.append(
            f"model: {count(len(taken), 'tensor')} with no fp32 master copy (frozen), "
            f"taken from the module as saved: {some(taken)}"
        )
    missing = [n for n in first.module if n not in made]
    if missing:
        notes.append(f"model: left out {count(len(missing), 'tensor')}: {some(missing)}")
    order = [n for n in first.module if n in made]
    return {**{n: made[n] for n in order}, **made}


def _frozen(
    stage: int, world: int, models: list[tuple[ModelStates, TensorFactory]], where: str
) -> dict[str, Tensor]:
    """The frozen parameters' saved copies: whole (stages 1 and 2), or each rank's padded
    slice (stage 3), joined."""
    first, make = models[0]
    if first.frozen_fragments is None:
        return {}
    made = {}
    for name, shape in first.frozen.items():
        if stage <= 2:
            ref = first.frozen_fragments.get(name)
            if ref is None or math.prod(ref.shape) != math.prod(shape):
                raise FormatError(f"has no whole frozen parameter {name!r}", where)
            made[name] = reshaped(make(ref, name), shape)
            continue
        numel, sliced = math.prod(shape), math.ceil(math.prod(shape) / world)
        slices = []
        for rank, (model, made_by) in enumerate(models):
            ref = (model.frozen_fragments or {}).get(name)
            if ref is None or math.prod(ref.shape) != sliced:
                raise FormatError(f"rank {rank} has no slice of {name!r}", where)
            slices.append(made_by(ref, name))
        made[name] = joined(slices, shape, numel)
    return made


def _add(graph: Graph, under: str, tensors: dict[str, Tensor]) -> None:
    """`tensors` under `under`, keyed as listed by their first place (`model.embed.weight`):
    a buffer the module keeps as fp32 is one tensor in both parts."""
    known = {id(e.tensor) for e in graph.entries()}
    for key, tensor in tensors.items():
        if id(tensor) not in known:
            tensor.meta[SOURCE_KEY] = f"{under}.{key}"
            known.add(id(tensor))
        parts = (*under.split("."), *key.split("."))
        if not all(parts):
            raise FormatError(f"has the key {key!r}, with an empty part", graph.source)
        try:
            graph.add(parts, tensor)
        except ValueError as exc:
            raise FormatError(f"key {key!r}: {exc}", graph.source) from None
