"""DeepSpeed ZeRO checkpoint folders (stages 1, 2 and 3), read without DeepSpeed or torch:
what `engine.save_checkpoint(dir)` leaves (`dir/latest` naming the tag folder,
`dir/<tag>/*_model_states.pt` and one `*_optim_states.pt` per data-parallel rank).

The graph holds, under `model`, the fp32 master weights rebuilt from the ranks' flat
partitions as DeepSpeed's own `zero_to_fp32.py` rebuilds them (what the states mean:
deepspeed_states.py), and under `module` (stages 1 and 2) the module's own weights as the
engine saved them, in its training dtype (bfloat16, float16). A conversion keeps `model`
unless told otherwise (`--pick module`).

The rebuild, for `model`, in the module's key order:
- a trainable parameter: stages 1 and 2 concatenate the ranks' partitions of its group
  (one flat vector) and take its elements from its offset there; stage 3 takes its padded
  slice from each rank (the slices sit at the same offset on every rank) and drops the
  padding. Each is read with positioned reads of just those bytes of the partitions
  (each partition's CRC-32 verified once, in chunks), so a conversion holds one tensor at
  a time, where `zero_to_fp32` holds every partition;
- a frozen parameter: its saved copy (stage 3: the ranks' slices joined);
- a buffer: the module's, floating point ones as float32 (as `zero_to_fp32` gives them);
- a shared (tied) parameter: the parameter it shares;
- anything else of the module (a frozen parameter DeepSpeed did not save apart, as under
  ZeRO-1 with bfloat16, where `zero_to_fp32` leaves it out): the module's own copy, and
  the notes name it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from convert.core.errors import ChecksumError, ConvertError, FormatError, UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import DEFAULT_PICK, SOURCE_KEY
from convert.core.notes import count, some
from convert.core.tensor import Tensor, array_from_bytes
from convert.formats.torch.deepspeed_states import (
    ALLOWED,
    ModelStates,
    OptimStates,
    model_states,
    optim_states,
)
from convert.formats.torch.storage import TensorFactory
from convert.formats.torch.tree import is_plain
from convert.formats.torch.zipreader import read_zip_tree
from convert.io.checksums import verify_stored

LATEST = "latest"
MODEL_STATES = "_model_states.pt"
OPTIM_STATES = "_optim_states.pt"
_RANKED = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)" + re.escape(OPTIM_STATES) + "$")
_MODEL_RANKED = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)" + re.escape(MODEL_STATES) + "$")


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
    if not optim_files:
        raise UnsupportedError(
            f"{folder.name} holds no ZeRO *{OPTIM_STATES}: only ZeRO checkpoints (stages 1-3) "
            "are read; without ZeRO, the model states file is a torch.save file itself",
            path,
        )
    optims = [_load(f, optim_states) for f in optim_files]
    stage, world = optims[0][0].stage, optims[0][0].world
    if len(optims) != world or any(o.stage != stage or o.world != world for o, _ in optims):
        raise FormatError(
            f"{folder.name} holds {count(len(optims), 'optimizer state')} of ZeRO stages "
            f"{sorted({o.stage for o, _ in optims})} where the first says {world} ranks: a "
            "checkpoint overwritten or saved by some ranks only?",
            path,
        )
    if stage <= 2:
        model_files = [folder / f"mp_rank_00{MODEL_STATES}"]
    else:
        model_files = _ranked(folder, _MODEL_RANKED, MODEL_STATES)
    models = [_load(f, model_states) for f in model_files]
    if stage == 3 and len(models) != world:
        raise FormatError(
            f"{folder.name} holds {count(len(models), 'model state')} for {world} ranks", path
        )
    graph = Graph(format="deepspeed", source=str(path))
    graph.files = [str(f) for f in (*model_files, *optim_files)]
    first, make = models[0]
    rebuild = _Rebuild(stage, world, models, optims, str(folder))
    _add(graph, "model", rebuild.master(first, make))
    if stage <= 2:
        _add(graph, "module", {k: make(v, k) for k, v in first.module.items()})
    graph.root.values.update({k: v for k, v in first.values.items() if is_plain(v)})
    graph.root.values["zero_stage"] = stage
    graph.root.meta[DEFAULT_PICK] = "model"
    graph.notes += rebuild.notes
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


T = TypeVar("T")


def _load(file: Path, parse: Callable[[object], T]) -> tuple[T, TensorFactory]:
    if not file.is_file():
        raise FormatError("is missing", file)
    try:
        obj, make = read_zip_tree(file, ALLOWED)
        return parse(obj), make
    except ConvertError as exc:
        if exc.path is None:
            exc.path = str(file)
        raise


def _add(graph: Graph, under: str, tensors: dict[str, Tensor]) -> None:
    """`tensors` under `under`, keyed as listed by their first place (`model.embed.weight`):
    a buffer the module keeps as fp32 is one tensor in both parts."""
    known = {id(e.tensor) for e in graph.entries()}
    for key, tensor in tensors.items():
        if id(tensor) not in known:
            tensor.meta[SOURCE_KEY] = f"{under}.{key}"
            known.add(id(tensor))
        parts = (under, *key.split("."))
        if not all(parts):
            raise FormatError(f"has the key {key!r}, with an empty part", graph.source)
        try:
            graph.add(parts, tensor)
        except ValueError as exc:
            raise FormatError(f"key {key!r}: {exc}", graph.source) from None


class _Rebuild:
    """The fp32 master weights of a ZeRO checkpoint, as lazy tensors (see the module doc)."""

    def __init__(
        self,
        stage: int,
        world: int,
        models: list[tuple[ModelStates, TensorFactory]],
        optims: list[tuple[OptimStates, TensorFactory]],
        where: str,
    ):
        self.stage, self.world, self.models, self.where = stage, world, models, where
        self.groups = models[0][0].groups
        groups = len(optims[0][0].partitions)
        if any(len(o.partitions) != groups for o, _ in optims) or len(self.groups) != groups:
            raise FormatError(
                f"has {len(self.groups)} parameter groups but optimizer states of "
                f"{sorted({len(o.partitions) for o, _ in optims})}",
                where,
            )
        # each group's partitions, rank by rank
        self.partitions = [
            [make(o.partitions[g], f"rank {r} group {g}") for r, (o, make) in enumerate(optims)]
            for g in range(groups)
        ]
        self.paddings = optims[0][0].paddings
        self.notes: list[str] = []
        self.verified: set[tuple[str, int]] = set()

    def master(self, first: ModelStates, make: TensorFactory) -> dict[str, Tensor]:
        made = self._trainable() if self.stage <= 2 else self._trainable_sliced()
        made.update(self._frozen(first, make))
        for name in first.buffer_names:
            if name in first.module:
                made[name] = _as_float32(make(first.module[name], name))
        for name, target in first.shared.items():
            if target in made:
                made[name] = made[target]  # (one tensor at both places, as torch ties)
        taken = []
        for name, ref in first.module.items():
            if name not in made and math.prod(ref.shape) > 0:
                made[name] = make(ref, name)
                taken.append(name)
        if taken:
            self.notes.append(
                f"model: {count(len(taken), 'tensor')} with no fp32 master copy (frozen), "
                f"taken from the module as saved: {some(taken)}"
            )
        missing = [n for n in first.module if n not in made]
        if missing:
            self.notes.append(f"model: left out {count(len(missing), 'tensor')}: {some(missing)}")
        order = [n for n in first.module if n in made]
        return {**{n: made[n] for n in order}, **made}

    def _trainable(self) -> dict[str, Tensor]:
        """Stages 1 and 2: each group one flat vector, its ranks' partitions end to end (the
        last may be shorter: the group's padding is not saved)."""
        made: dict[str, Tensor] = {}
        for g, shapes in enumerate(self.groups):
            parts = self.partitions[g]
            pads = self.paddings[g] if self.paddings else [0] * len(shapes)
            if len(pads) != len(shapes):
                raise FormatError(
                    f"group {g} has {len(pads)} paddings for {len(shapes)}", self.where
                )
            offset, total = 0, sum(p.shape[0] for p in parts)
            for (name, shape), pad in zip(shapes.items(), pads, strict=True):
                numel = math.prod(shape)
                if offset + numel > total:
                    raise FormatError(
                        f"{name!r} {list(shape)} lies past the end of group {g}'s {total} elements",
                        self.where,
                    )
                pieces = self._spans(g, offset, offset + numel)
                made[name] = self._tensor(name, shape, [pieces], numel)
                offset += numel + pad
            align = 2 * self.world  # (partitions are padded to a multiple of it)
            if math.ceil(offset / align) != math.ceil(total / align):
                raise FormatError(
                    f"group {g}'s parameters take {offset} of its {total} elements",
                    self.where,
                )
        return made

    def _trainable_sliced(self) -> dict[str, Tensor]:
        """Stage 3: each parameter cut in `world` padded slices, at one offset on every rank
        in the ranks' groups laid end to end."""
        sizes = [parts[0].shape[0] for parts in self.partitions]
        if any(p.shape[0] != parts[0].shape[0] for parts in self.partitions for p in parts):
            raise FormatError("the ranks' flat groups differ in size", self.where)
        made: dict[str, Tensor] = {}
        offset = 0
        for name, shape in (i for group in self.groups for i in group.items()):
            numel = math.prod(shape)
            sliced = math.ceil(numel / self.world)
            if offset + sliced > sum(sizes):
                raise FormatError(f"{name!r} lies past the end of the flat groups", self.where)
            ranks = [self._spans_of_rank(r, offset, offset + sliced) for r in range(self.world)]
            made[name] = self._tensor(name, shape, ranks, numel)
            offset += sliced
        if offset != sum(sizes):
            raise FormatError(
                f"the parameters take {offset} of the {sum(sizes)} elements of each rank",
                self.where,
            )
        return made

    def _spans(self, g: int, lo: int, hi: int) -> list[tuple[Tensor, int, int]]:
        """Elements lo..hi of group g's flat vector (its ranks' partitions end to end)."""
        return _spans(self.partitions[g], lo, hi)

    def _spans_of_rank(self, r: int, lo: int, hi: int) -> list[tuple[Tensor, int, int]]:
        """Elements lo..hi of rank r's groups laid end to end."""
        return _spans([parts[r] for parts in self.partitions], lo, hi)

    def _tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        ranks: Sequence[list[tuple[Tensor, int, int]]],
        numel: int,
    ) -> Tensor:
        dtype = self.partitions[0][0].dtype

        def load() -> np.ndarray:
            flat = np.empty(sum(b - a for spans in ranks for _, a, b in spans), dtype)
            at = 0
            for spans in ranks:
                for part, a, b in spans:
                    flat[at : at + b - a] = self._read(part, a, b)
                    at += b - a
            return flat[:numel].reshape(shape)

        return Tensor(dtype, shape, load, {SOURCE_KEY: name})

    def _read(self, part: Tensor, a: int, b: int) -> np.ndarray:
        """Elements a..b of a partition: just their bytes when the file holds them as they
        are (the partition's checksum verified the first time), else the partition read."""
        stored = part.stored()
        if stored is None:
            return part.read()[a:b]
        key = (str(stored.source.path), stored.offset)
        if key not in self.verified:
            try:
                verify_stored(stored)
            except ChecksumError as exc:
                raise ChecksumError(f"{self.where}: {exc.reason}", exc.path) from None
            self.verified.add(key)
        size = stored.dtype.itemsize
        data = stored.source.read(stored.offset + a * size, (b - a) * size)
        return array_from_bytes(data, stored.dtype, (b - a,))

    def _frozen(self, first: ModelStates, make: TensorFactory) -> dict[str, Tensor]:
        fragments = first.frozen_fragments
        if fragments is None:
            return {}
        made = {}
        for name, shape in first.frozen.items():
            if self.stage <= 2:
                ref = fragments.get(name)
                if ref is None or math.prod(ref.shape) != math.prod(shape):
                    raise FormatError(f"has no whole frozen parameter {name!r}", self.where)
                made[name] = _reshaped(make(ref, name), shape)
                continue
            numel, sliced = math.prod(shape), math.ceil(math.prod(shape) / self.world)
            slices = []
            for rank, (model, made_by) in enumerate(self.models):
                ref = (model.frozen_fragments or {}).get(name)
                if ref is None or math.prod(ref.shape) != sliced:
                    raise FormatError(f"rank {rank} has no slice of {name!r}", self.where)
                slices.append(made_by(ref, name))
            made[name] = _joined(slices, shape, numel)
        return made


def _spans(flat: list[Tensor], lo: int, hi: int) -> list[tuple[Tensor, int, int]]:
    """Elements lo..hi of the 1-D tensors `flat` laid end to end: (tensor, start, end)."""
    out, start = [], 0
    for part in flat:
        size = part.shape[0]
        a, b = max(lo, start), min(hi, start + size)
        if a < b:
            out.append((part, a - start, b - start))
        start += size
    return out


def _as_float32(tensor: Tensor) -> Tensor:
    if tensor.dtype.kind != "f" or tensor.dtype == np.float32:
        return tensor
    return Tensor(np.dtype(np.float32), tensor.shape, lambda: tensor.read().astype(np.float32))


def _reshaped(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    if tensor.shape == shape:
        return tensor
    return Tensor(tensor.dtype, shape, lambda: tensor.read().reshape(shape))


def _joined(slices: list[Tensor], shape: tuple[int, ...], numel: int) -> Tensor:
    def load() -> np.ndarray:
        return np.concatenate([s.read().reshape(-1) for s in slices])[:numel].reshape(shape)

    return Tensor(slices[0].dtype, shape, load)
