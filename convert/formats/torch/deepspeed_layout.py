"""Where each trainable parameter of a DeepSpeed ZeRO checkpoint lies in the ranks' flat
vectors, and lazy tensors read from there.

ZeRO keeps, per optimizer group, flat vectors cut among the data-parallel ranks: the fp32
master weights and, laid out the same way, each of the optimizer's per-element states
(Adam's `exp_avg`, `exp_avg_sq`). So one layout, computed from the shapes and the fp32
vectors' sizes, places a parameter in all of them:
- stages 1 and 2: a group's parameters one after another (with `param_alignment_paddings`
  between them) in one vector, the ranks' partitions of it end to end (the last may be
  shorter: the group's tail padding is not saved);
- stage 3: each parameter cut in `world` equal slices, padded, at the same offset in every
  rank's groups laid end to end; its value is the ranks' slices joined, padding dropped.

A parameter's pieces are copied file to file, one after another (`Stored.parts`), or,
where its value is needed (a rule changes it), read with positioned reads of just those
bytes; each vector's CRC-32 is verified once, in chunks, before its bytes are used. So at
most one tensor is in memory, never a partition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from convert.core.errors import ChecksumError, FormatError
from convert.core.meta import SOURCE_KEY
from convert.core.tensor import Stored, Tensor, array_from_bytes, stored_in_parts
from convert.formats.torch.deepspeed_states import OptimStates, Shapes
from convert.formats.torch.records import TensorRef
from convert.formats.torch.storage import TensorFactory
from convert.io.checksums import verify_stored

# (group, rank, first element, end): one piece of a parameter in one rank's vector
Span = tuple[int, int, int, int]


class Place:
    """A parameter's shape and pieces; its value is the pieces joined, cut to `numel`."""

    __slots__ = ("shape", "numel", "spans")

    def __init__(self, shape: tuple[int, ...], spans: list[Span]):
        self.shape, self.numel, self.spans = shape, math.prod(shape), spans


def layout(
    stage: int,
    world: int,
    groups: list[Shapes],
    sizes: list[list[int]],
    paddings: list[list[int]] | None,
    where: str,
) -> dict[str, Place]:
    """Each trainable parameter's place; `sizes[g][r]` is rank r's vector of group g."""
    if stage <= 2:
        return _in_partitions(world, groups, sizes, paddings, where)
    return _in_slices(world, groups, sizes, where)


def _in_partitions(
    world: int,
    groups: list[Shapes],
    sizes: list[list[int]],
    paddings: list[list[int]] | None,
    where: str,
) -> dict[str, Place]:
    places: dict[str, Place] = {}
    for g, shapes in enumerate(groups):
        pads = paddings[g] if paddings else [0] * len(shapes)
        if len(pads) != len(shapes):
            raise FormatError(f"group {g} has {len(pads)} paddings for {len(shapes)}", where)
        offset, total = 0, sum(sizes[g])
        for (name, shape), pad in zip(shapes.items(), pads, strict=True):
            numel = math.prod(shape)
            if offset + numel > total:
                raise FormatError(
                    f"{name!r} {list(shape)} lies past the end of group {g}'s {total} elements",
                    where,
                )
            spans = [(g, r, a, b) for r, a, b in _pieces(sizes[g], offset, offset + numel)]
            places[name] = Place(shape, spans)
            offset += numel + pad
        align = 2 * world  # (partitions are padded to a multiple of it)
        if math.ceil(offset / align) != math.ceil(total / align):
            raise FormatError(f"group {g}'s parameters take {offset} of its {total}", where)
    return places


def _in_slices(
    world: int, groups: list[Shapes], sizes: list[list[int]], where: str
) -> dict[str, Place]:
    if any(len(set(group)) != 1 for group in sizes):
        raise FormatError("the ranks' flat groups differ in size", where)
    firsts = [group[0] for group in sizes]
    places: dict[str, Place] = {}
    offset = 0
    for name, shape in (item for group in groups for item in group.items()):
        sliced = math.ceil(math.prod(shape) / world)
        if offset + sliced > sum(firsts):
            raise FormatError(f"{name!r} lies past the end of the flat groups", where)
        spans = [
            (g, r, a, b)
            for r in range(world)
            for g, a, b in _pieces(firsts, offset, offset + sliced)
        ]
        places[name] = Place(shape, spans)
        offset += sliced
    if offset != sum(firsts):
        raise FormatError(
            f"the parameters take {offset} of the {sum(firsts)} elements of each rank", where
        )
    return places


def _pieces(sizes: Sequence[int], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Elements lo..hi of vectors of `sizes` laid end to end: (which, start, end)."""
    out, start = [], 0
    for i, size in enumerate(sizes):
        a, b = max(lo, start), min(hi, start + size)
        if a < b:
            out.append((i, a - start, b - start))
        start += size
    return out


class Vectors:
    """One kind of flat vector (`vectors[g][r]`: group g, rank r) and how to read part of
    one; `verified` is shared by every kind of a checkpoint."""

    def __init__(self, vectors: list[list[Tensor]], verified: set, where: str):
        self.vectors, self.verified, self.where = vectors, verified, where
        self.dtype = vectors[0][0].dtype

    def tensor(self, name: str, place: Place) -> Tensor:
        return Tensor(self.dtype, place.shape, _Gathered(self, place), {SOURCE_KEY: name})

    def read(self, vector: Tensor, a: int, b: int) -> np.ndarray:
        """Elements a..b of a vector: just their bytes when the file holds them as they
        are (the vector's checksum verified the first time), else the vector read."""
        stored = self.verified_place(vector)
        if stored is None:
            return vector.read()[a:b]
        size = stored.dtype.itemsize
        data = stored.source.read(stored.offset + a * size, (b - a) * size)
        return array_from_bytes(data, stored.dtype, (b - a,))

    def verified_place(self, vector: Tensor) -> Stored | None:
        """Where a vector's bytes lie as they are, its checksum verified (once), if they do."""
        stored = vector.stored()
        if stored is None:
            return None
        key = (str(stored.source.path), stored.offset)
        if key not in self.verified:
            try:
                verify_stored(stored)
            except ChecksumError as exc:
                raise ChecksumError(f"{self.where}: {exc.reason}", exc.path) from None
            self.verified.add(key)
        return stored


class _Gathered:
    """A parameter's value from its pieces: read into one array, or (`where_stored`) the
    pieces' bytes copied file to file one after another."""

    __slots__ = ("vectors", "place")

    def __init__(self, vectors: Vectors, place: Place):
        self.vectors, self.place = vectors, place

    def __call__(self) -> np.ndarray:
        place, vectors = self.place, self.vectors.vectors
        flat = np.empty(sum(b - a for *_, a, b in place.spans), self.vectors.dtype)
        at = 0
        for g, r, a, b in place.spans:
            flat[at : at + b - a] = self.vectors.read(vectors[g][r], a, b)
            at += b - a
        return flat[: place.numel].reshape(place.shape)

    def where_stored(self) -> Stored | None:
        parts, left = [], self.place.numel
        for g, r, a, b in self.place.spans:
            stored = self.vectors.verified_place(self.vectors.vectors[g][r])
            if stored is None:
                return None
            b = min(b, a + left)  # (stage 3: the last slice's padding left out)
            if b > a:
                size = stored.dtype.itemsize
                at, nbytes = stored.offset + a * size, (b - a) * size
                parts.append(Stored(stored.source, at, nbytes, stored.dtype, (b - a,)))
                left -= b - a
        if not parts:
            return None
        return stored_in_parts(parts, self.vectors.dtype, self.place.shape)


class Partitioned:
    """A ZeRO checkpoint's trainable parameters and their optimizer state, from the ranks'
    flat vectors (`*_optim_states.pt`), as lazy tensors."""

    def __init__(
        self,
        stage: int,
        world: int,
        groups: list[Shapes],
        optims: list[tuple[OptimStates, TensorFactory]],
        where: str,
    ):
        self.optims, self.where = optims, where
        found = {len(o.partitions) for o, _ in optims}
        if found != {len(groups)}:
            raise FormatError(
                f"has {len(groups)} parameter groups but optimizer states of {sorted(found)}",
                where,
            )
        self.verified: set = set()
        self.weights = self._vectors(_weights, "fp32")
        sizes = [[v.shape[0] for v in group] for group in self.weights.vectors]
        self.places = layout(stage, world, groups, sizes, optims[0][0].paddings, where)
        self.notes: list[str] = []

    def _vectors(self, pick: Callable[[OptimStates, int], TensorRef], kind: str) -> Vectors:
        groups = range(len(self.optims[0][0].partitions))
        return Vectors(
            [
                [
                    make(pick(o, g), f"{kind} {g}, rank {r}")
                    for r, (o, make) in enumerate(self.optims)
                ]
                for g in groups
            ],
            self.verified,
            self.where,
        )

    def trainable(self) -> dict[str, Tensor]:
        return {name: self.weights.tensor(name, place) for name, place in self.places.items()}

    def saved_apart(self) -> dict[str, Tensor]:
        return {}

    def param_groups(self) -> list[dict]:
        return self.optims[0][0].param_groups

    def moments(self) -> dict[str, Tensor]:
        """The optimizer's state of each trainable parameter, keyed `<name>.<state>`: the
        flat states (`exp_avg`) placed as the weights are, a group's scalars (`step`)
        given to each of its parameters, as torch's optimizers keep them."""
        states = [o.moments for o, _ in self.optims]
        if not all(states):
            return {}
        kinds = set.intersection(*(set(group) for state in states for group in state))
        made: dict[str, Tensor] = {}
        for kind in sorted(kinds):
            refs = [[state[g][kind] for state in states] for g in range(len(states[0]))]
            if all(len(ref.shape) == 0 for group in refs for ref in group):
                make = self.optims[0][1]
                for name, place in self.places.items():
                    scalar = make(refs[place.spans[0][0]][0], kind)
                    made[f"{name}.{kind}"] = Tensor(scalar.dtype, (), scalar.read)
                continue
            if not self._laid_out_as_weights(refs):
                self.notes.append(f"optim: left out {kind}: not laid out as the weights are")
                continue
            vectors = self._vectors(partial(_moment, kind=kind), kind)
            for name, place in self.places.items():
                made[f"{name}.{kind}"] = vectors.tensor(f"{name}.{kind}", place)
        return made

    def _laid_out_as_weights(self, refs: list[list[TensorRef]]) -> bool:
        """Whether state vectors have the weights' sizes (a last rank's may keep the tail
        padding that its weights' partition drops)."""
        for group, weights in zip(refs, self.weights.vectors, strict=True):
            for rank, (ref, weight) in enumerate(zip(group, weights, strict=True)):
                last = rank == len(group) - 1
                if len(ref.shape) != 1 or not (
                    ref.shape[0] == weight.shape[0] or (last and ref.shape[0] > weight.shape[0])
                ):
                    return False
        return True


def _weights(states: OptimStates, group: int) -> TensorRef:
    return states.partitions[group]


def _moment(states: OptimStates, group: int, kind: str) -> TensorRef:
    return states.moments[group][kind]


def as_float32(tensor: Tensor) -> Tensor:
    if tensor.dtype.kind != "f" or tensor.dtype == np.float32:
        return tensor
    return Tensor(np.dtype(np.float32), tensor.shape, lambda: tensor.read().astype(np.float32))


def reshaped(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    if tensor.shape == shape:
        return tensor
    return Tensor(tensor.dtype, shape, lambda: tensor.read().reshape(shape))


def joined(slices: list[Tensor], shape: tuple[int, ...], numel: int) -> Tensor:
    """The padded slices end to end, cut to `numel` and shaped."""

    def load() -> np.ndarray:
        return np.concatenate([s.read().reshape(-1) for s in slices])[:numel].reshape(shape)

    return Tensor(slices[0].dtype, shape, load)
