"""Tensor ops of the rule language: each knows its output dtypes and shapes without data,
applies itself to arrays, and declares its inverse.

An op chain works on a list of tensors: a rule's sources, in order, go in; its targets, in
order, come out. Element ops (transpose, reshape, merge, gates, cast) act on each tensor
of the list; list ops (concat, split, stack, unstack, sum, zeros, constant, drop) change
the list. `inverse(specs)` is told the specs the op was given going forward (so a split
knows the sizes a concat joined) and returns the op that undoes it; `back(specs)` says what
went in from what came out where the op alone can tell (else the reverse direction needs
the target's shapes, from `--like`). An op whose inverse cannot give the same bits back
(`exact = False`: sum, drop, a narrowing cast) is named in every report of a tensor that
went through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from ..dtypes import dtype_name, from_name
from ..errors import RuleError

Spec = tuple[np.dtype, tuple[int, ...]]


class OpError(RuleError):
    """An op that cannot apply to the tensors it is given, or is malformed."""


class NeedShapes(OpError):
    """The reverse of an op needs shapes that only the target (`--like`) can give."""


@dataclass(frozen=True)
class Op:
    name: ClassVar[str] = ""
    exact: ClassVar[bool] = True
    element: ClassVar[bool] = False  # acts on each tensor of the list alone

    # -- one tensor at a time (element ops) -----------------------------------------------
    def spec(self, spec: Spec) -> Spec:
        raise NotImplementedError

    def apply1(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse1(self, spec: Spec) -> Op:
        raise NotImplementedError

    def back1(self, spec: Spec) -> Spec:
        raise NeedShapes(f"the reverse of {self.describe()} needs the target's shapes")

    # -- the list (list ops override these) --------------------------------------------------
    def specs(self, specs: list[Spec]) -> list[Spec]:
        return [self.spec(s) for s in specs]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [self.apply1(a) for a in arrays]

    def inverse(self, specs: list[Spec]) -> Op:
        inverses = {self.inverse1(s) for s in specs}
        if len(inverses) != 1:
            raise NeedShapes(f"{self.describe()} over tensors of different shapes has no "
                             "single inverse")
        return inverses.pop()

    def back(self, specs: list[Spec]) -> list[Spec]:
        return [self.back1(s) for s in specs]

    def count(self, n: int) -> int:
        return n

    def lossless(self, specs: list[Spec]) -> bool:
        """Whether the inverse gives these inputs back bit for bit."""
        return self.exact

    def params(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def to_toml(self) -> dict[str, Any]:
        return {"op": self.name, **self.params()}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({args})"


def _check_axis(axis: int, rank: int, op: Op) -> int:
    if not -rank <= axis < rank:
        raise OpError(f"{op.describe()}: axis {axis} is out of range for rank {rank}")
    return axis % rank


@dataclass(frozen=True)
class Transpose(Op):
    name: ClassVar[str] = "transpose"
    element: ClassVar[bool] = True
    axes: tuple[int, ...] = (1, 0)

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        if sorted(self.axes) != list(range(len(shape))):
            raise OpError(f"{self.describe()} does not fit a tensor of shape {list(shape)}")
        return dtype, tuple(shape[a] for a in self.axes)

    def apply1(self, array: np.ndarray) -> np.ndarray:
        if array.ndim == 2 and self.axes == (1, 0) and array.nbytes >= _BLOCKED_BYTES \
                and min(array.shape) >= 4 * _BLOCK:
            return _blocked_transpose(array)
        return np.ascontiguousarray(np.transpose(array, self.axes))

    def inverse1(self, spec: Spec) -> Op:
        return Transpose(tuple(int(i) for i in np.argsort(self.axes)))

    def back1(self, spec: Spec) -> Spec:
        return self.inverse1(spec).spec(spec)


_BLOCKED_BYTES = 1 << 20
_BLOCK = 64


def _blocked_transpose(array: np.ndarray) -> np.ndarray:
    """A large matrix transposed tile by tile: each tile's rows and columns stay in the
    cache, where one strided copy of the whole matrix misses it on every element (2.5x
    slower at 4096 x 4096 float32 here)."""
    rows, cols = array.shape
    out = np.empty((cols, rows), array.dtype)
    for i in range(0, rows, _BLOCK):
        block = array[i:i + _BLOCK]
        for j in range(0, cols, _BLOCK):
            out[j:j + _BLOCK, i:i + _BLOCK] = block[:, j:j + _BLOCK].T
    return out


@dataclass(frozen=True)
class Reshape(Op):
    name: ClassVar[str] = "reshape"
    element: ClassVar[bool] = True
    shape: tuple[int, ...] = ()

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        size = math.prod(shape)
        known = math.prod(d for d in self.shape if d != -1)
        if self.shape.count(-1) > 1 or (known == 0 or size % known if -1 in self.shape
                                        else known != size):
            raise OpError(f"{self.describe()} does not fit a tensor of shape {list(shape)}")
        return dtype, tuple(size // known if d == -1 else d for d in self.shape)

    def apply1(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array).reshape(self.spec((array.dtype, array.shape))[1])

    def inverse1(self, spec: Spec) -> Op:
        return Reshape(spec[1])

    def back1(self, spec: Spec) -> Spec:
        if -1 in self.shape:
            raise NeedShapes(f"the reverse of {self.describe()} needs the target's shapes")
        return super().back1(spec)


@dataclass(frozen=True)
class Merge(Op):
    """Axes `first..last` (consecutive) become one: (d, heads, head_dim) → (d, heads·head_dim)."""

    name: ClassVar[str] = "merge"
    element: ClassVar[bool] = True
    first: int = 1
    last: int = 2

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        first = _check_axis(self.first, len(shape), self)
        last = _check_axis(self.last, len(shape), self)
        if last < first:
            raise OpError(f"{self.describe()}: last axis before first")
        merged = math.prod(shape[first:last + 1])
        return dtype, shape[:first] + (merged,) + shape[last + 1:]

    def apply1(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array).reshape(self.spec((array.dtype, array.shape))[1])

    def inverse1(self, spec: Spec) -> Op:
        return Reshape(spec[1])


@dataclass(frozen=True)
class Gates(Op):
    """Axis `axis` holds `len(order)` equal blocks (recurrent gates); output block i is input
    block `order[i]` (Keras GRU z, r, h → torch r, z, n is order [1, 0, 2])."""

    name: ClassVar[str] = "gates"
    element: ClassVar[bool] = True
    order: tuple[int, ...] = ()
    axis: int = 0

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        axis = _check_axis(self.axis, len(shape), self)
        if sorted(self.order) != list(range(len(self.order))) or \
                shape[axis] % len(self.order):
            raise OpError(f"{self.describe()} does not fit a tensor of shape {list(shape)}")
        return spec

    def apply1(self, array: np.ndarray) -> np.ndarray:
        self.spec((array.dtype, array.shape))
        blocks = np.split(array, len(self.order), axis=self.axis)
        return np.ascontiguousarray(np.concatenate([blocks[i] for i in self.order],
                                                   axis=self.axis))

    def inverse1(self, spec: Spec) -> Op:
        return Gates(tuple(int(i) for i in np.argsort(self.order)), self.axis)

    def back1(self, spec: Spec) -> Spec:
        return self.spec(spec)


@dataclass(frozen=True)
class Expand(Op):
    """A new axis of length 1 at `axis` (torch's depthwise `weight` has one)."""

    name: ClassVar[str] = "expand"
    element: ClassVar[bool] = True
    axis: int = 0

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        axis = _check_axis(self.axis, len(shape) + 1, self)
        return dtype, shape[:axis] + (1,) + shape[axis:]

    def apply1(self, array: np.ndarray) -> np.ndarray:
        return np.expand_dims(array, self.axis)

    def inverse1(self, spec: Spec) -> Op:
        return Squeeze(self.axis)

    def back1(self, spec: Spec) -> Spec:
        return Squeeze(self.axis).spec(spec)


@dataclass(frozen=True)
class Squeeze(Op):
    """Axis `axis`, of length 1, taken away."""

    name: ClassVar[str] = "squeeze"
    element: ClassVar[bool] = True
    axis: int = 0

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        axis = _check_axis(self.axis, len(shape), self)
        if shape[axis] != 1:
            raise OpError(f"{self.describe()}: axis {axis} of {list(shape)} is not 1 long")
        return dtype, shape[:axis] + shape[axis + 1:]

    def apply1(self, array: np.ndarray) -> np.ndarray:
        return np.squeeze(array, self.axis)

    def inverse1(self, spec: Spec) -> Op:
        return Expand(self.axis)

    def back1(self, spec: Spec) -> Spec:
        return Expand(self.axis).spec(spec)


@dataclass(frozen=True)
class Flip(Op):
    """The order of `axes` reversed (a transposed convolution's spatial kernel)."""

    name: ClassVar[str] = "flip"
    element: ClassVar[bool] = True
    axes: tuple[int, ...] = (0,)

    def spec(self, spec: Spec) -> Spec:
        for axis in self.axes:
            _check_axis(axis, len(spec[1]), self)
        return spec

    def apply1(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.flip(array, self.axes))

    def inverse1(self, spec: Spec) -> Op:
        return self

    def back1(self, spec: Spec) -> Spec:
        return spec


@dataclass(frozen=True)
class ChannelsFirst(Op):
    """Axis `axis` holds a flattened channels-last map of `shape` (h, w, c): reorder it to
    the flattening of (c, h, w), as a torch Linear after `flatten` reads it (`last`: the
    other way). `shape` may name a layer fact, `"@flatten"`, that a Keras config gives."""

    name: ClassVar[str] = "channels_first"
    element: ClassVar[bool] = True
    axis: int = 0
    shape: tuple[int, ...] | str = ()
    last: bool = False

    def _map(self) -> tuple[int, ...]:
        if isinstance(self.shape, str):
            raise OpError(f"{self.describe()}: the layer fact {self.shape[1:]!r} is not known")
        return self.shape

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        axis = _check_axis(self.axis, len(shape), self)
        if len(self._map()) < 2 or shape[axis] != math.prod(self._map()):
            raise OpError(f"{self.describe()} does not fit a tensor of shape {list(shape)}")
        return spec

    def apply1(self, array: np.ndarray) -> np.ndarray:
        self.spec((array.dtype, array.shape))
        dims = self._map()
        rank = len(dims)
        moved = np.moveaxis(array, self.axis, 0)
        rest = moved.shape[1:]
        if self.last:  # stored (c, h, w): back to (h, w, c)
            order = (*range(1, rank), 0)
            moved = moved.reshape((dims[-1], *dims[:-1], *rest))
        else:
            order = (rank - 1, *range(rank - 1))
            moved = moved.reshape((*dims, *rest))
        moved = moved.transpose((*order, *range(rank, rank + len(rest))))
        return np.ascontiguousarray(np.moveaxis(moved.reshape((-1, *rest)), 0, self.axis))

    def inverse1(self, spec: Spec) -> Op:
        return ChannelsFirst(self.axis, self.shape, not self.last)

    def back1(self, spec: Spec) -> Spec:
        return self.spec(spec)


_WIDENING = {("float16", "float32"), ("bfloat16", "float32"), ("float16", "float64"),
             ("bfloat16", "float64"), ("float32", "float64"), ("int32", "int64"),
             ("int16", "int32"), ("int16", "int64"), ("int8", "int16"), ("int8", "int32"),
             ("int8", "int64"), ("uint8", "int16"), ("uint8", "int32"), ("uint8", "int64")}


@dataclass(frozen=True)
class Cast(Op):
    name: ClassVar[str] = "cast"
    element: ClassVar[bool] = True
    dtype: str = "float32"

    def spec(self, spec: Spec) -> Spec:
        return from_name(self.dtype), spec[1]

    def apply1(self, array: np.ndarray) -> np.ndarray:
        return array.astype(from_name(self.dtype))

    def inverse1(self, spec: Spec) -> Op:
        return Cast(dtype_name(spec[0]))

    def lossless(self, specs: list[Spec]) -> bool:
        """A widening cast (float16 → float32) gives its input back; a narrowing one may not."""
        return all(dtype_name(d) == self.dtype or (dtype_name(d), self.dtype) in _WIDENING
                   for d, _ in specs)


@dataclass(frozen=True)
class Concat(Op):
    name: ClassVar[str] = "concat"
    axis: int = 0

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs:
            raise OpError(f"{self.describe()} has nothing to join")
        dtype, shape = specs[0]
        axis = _check_axis(self.axis, len(shape), self)
        for d, s in specs[1:]:
            if d != dtype or len(s) != len(shape) or s[:axis] + s[axis + 1:] != \
                    shape[:axis] + shape[axis + 1:]:
                raise OpError(f"{self.describe()}: cannot join "
                              + " and ".join(f"{dtype_name(x)}{list(y)}" for x, y in specs))
        return [(dtype, shape[:axis] + (sum(s[axis] for _, s in specs),) + shape[axis + 1:])]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [np.concatenate(arrays, axis=self.axis)]

    def inverse(self, specs: list[Spec]) -> Op:
        axis = self.axis % len(specs[0][1])
        return Split(self.axis, tuple(s[axis] for _, s in specs))

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes(f"the reverse of {self.describe()} needs the target's shapes "
                         "(how the joined tensor splits)")

    def count(self, n: int) -> int:
        return 1


@dataclass(frozen=True)
class Split(Op):
    """One tensor into pieces along `axis`: of `sizes`, or `parts` equal ones."""

    name: ClassVar[str] = "split"
    axis: int = 0
    sizes: tuple[int, ...] = ()
    parts: int = 0

    def _sizes(self, length: int) -> tuple[int, ...]:
        if self.sizes:
            if sum(self.sizes) != length:
                raise OpError(f"{self.describe()}: sizes do not add up to {length}")
            return self.sizes
        if self.parts <= 0 or length % self.parts:
            raise OpError(f"{self.describe()}: {length} does not split into {self.parts} "
                          "equal parts")
        return (length // self.parts,) * self.parts

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if len(specs) != 1:
            raise OpError(f"{self.describe()} splits one tensor, not {len(specs)}")
        dtype, shape = specs[0]
        axis = _check_axis(self.axis, len(shape), self)
        return [(dtype, shape[:axis] + (n,) + shape[axis + 1:])
                for n in self._sizes(shape[axis])]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        (array,) = arrays
        cuts = np.cumsum(self._sizes(array.shape[self.axis]))[:-1]
        return [np.ascontiguousarray(p) for p in np.split(array, cuts, axis=self.axis)]

    def inverse(self, specs: list[Spec]) -> Op:
        return Concat(self.axis)

    def back(self, specs: list[Spec]) -> list[Spec]:
        return Concat(self.axis).specs(specs)

    def count(self, n: int) -> int:
        return len(self.sizes) or self.parts


@dataclass(frozen=True)
class Stack(Op):
    name: ClassVar[str] = "stack"
    axis: int = 0

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs or len(set(specs)) != 1:
            raise OpError(f"{self.describe()} needs tensors of one dtype and shape")
        dtype, shape = specs[0]
        axis = self.axis % (len(shape) + 1)
        return [(dtype, shape[:axis] + (len(specs),) + shape[axis:])]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [np.stack(arrays, axis=self.axis)]

    def inverse(self, specs: list[Spec]) -> Op:
        return Unstack(self.axis)

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes(f"the reverse of {self.describe()} needs the count it stacked")

    def count(self, n: int) -> int:
        return 1


@dataclass(frozen=True)
class Unstack(Op):
    name: ClassVar[str] = "unstack"
    axis: int = 0

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if len(specs) != 1:
            raise OpError(f"{self.describe()} unstacks one tensor, not {len(specs)}")
        dtype, shape = specs[0]
        axis = _check_axis(self.axis, len(shape), self)
        return [(dtype, shape[:axis] + shape[axis + 1:])] * shape[axis]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        (array,) = arrays
        return [np.ascontiguousarray(a) for a in np.moveaxis(array, self.axis, 0)]

    def inverse(self, specs: list[Spec]) -> Op:
        return Stack(self.axis)

    def back(self, specs: list[Spec]) -> list[Spec]:
        return Stack(self.axis).specs(specs)

    def count(self, n: int) -> int:
        raise NeedShapes(f"{self.describe()} gives as many tensors as its axis is long")


@dataclass(frozen=True)
class Sum(Op):
    """Tensors of one shape added into one (torch's two LSTM biases into Keras' one): the
    parts cannot be told apart again."""

    name: ClassVar[str] = "sum"
    exact: ClassVar[bool] = False

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs or len(set(specs)) != 1:
            raise OpError(f"{self.describe()} needs tensors of one dtype and shape")
        return [specs[0]]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        total = arrays[0].copy()
        for a in arrays[1:]:
            total += a
        return [total]

    def inverse(self, specs: list[Spec]) -> Op:
        return Zeros(len(specs) - 1)

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes(f"the reverse of {self.describe()} needs the count it added")

    def count(self, n: int) -> int:
        return 1


@dataclass(frozen=True)
class Zeros(Op):
    """The tensor, then `count` zero tensors of its dtype and shape (Keras' one LSTM bias as
    torch's `bias_ih` and a zero `bias_hh`, as Keras' own torch backend has it)."""

    name: ClassVar[str] = "zeros"
    count_: int = 1

    def params(self) -> dict[str, Any]:
        return {"count": self.count_}

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if len(specs) != 1:
            raise OpError(f"{self.describe()} follows one tensor, not {len(specs)}")
        return specs * (1 + self.count_)

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        (array,) = arrays
        return [array] + [np.zeros_like(array) for _ in range(self.count_)]

    def inverse(self, specs: list[Spec]) -> Op:
        return Sum()

    def back(self, specs: list[Spec]) -> list[Spec]:
        return specs[:1]

    def count(self, n: int) -> int:
        return n + self.count_


@dataclass(frozen=True)
class Tie(Op):
    """One tensor at `count` places (tied weights: BERT's decoder is its word embeddings):
    the same tensor, so formats that keep ties write it once for all of them."""

    name: ClassVar[str] = "tie"
    count_: int = 2

    def params(self) -> dict[str, Any]:
        return {"count": self.count_}

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if len(specs) != 1:
            raise OpError(f"{self.describe()} ties one tensor, not {len(specs)}")
        return specs * self.count_

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return arrays * self.count_

    def inverse(self, specs: list[Spec]) -> Op:
        return Untie(self.count_)

    def back(self, specs: list[Spec]) -> list[Spec]:
        return specs[:1]

    def count(self, n: int) -> int:
        return self.count_


@dataclass(frozen=True)
class Untie(Op):
    """Tied places back to one tensor: the first (they hold one value)."""

    name: ClassVar[str] = "untie"
    count_: int = 2

    def params(self) -> dict[str, Any]:
        return {"count": self.count_}

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if len(specs) != self.count_ or len(set(specs)) != 1:
            raise OpError(f"{self.describe()} needs {self.count_} tensors of one dtype and shape")
        return specs[:1]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return arrays[:1]

    def inverse(self, specs: list[Spec]) -> Op:
        return Tie(self.count_)

    def back(self, specs: list[Spec]) -> list[Spec]:
        return specs * self.count_

    def count(self, n: int) -> int:
        return 1


@dataclass(frozen=True)
class Constant(Op):
    """A tensor made from nothing, appended to the list (torch's `num_batches_tracked`)."""

    name: ClassVar[str] = "constant"
    exact: ClassVar[bool] = False  # its value comes from the rule, not from the source
    value: float = 0
    dtype: str = "int64"
    shape: tuple[int, ...] = ()

    def specs(self, specs: list[Spec]) -> list[Spec]:
        return [*specs, (from_name(self.dtype), self.shape)]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [*arrays, np.full(self.shape, self.value, dtype=from_name(self.dtype))]

    def inverse(self, specs: list[Spec]) -> Op:
        return Drop()

    def back(self, specs: list[Spec]) -> list[Spec]:
        return specs[:-1]

    def count(self, n: int) -> int:
        return n + 1


@dataclass(frozen=True)
class Drop(Op):
    """The last tensor of the list is left out (its value is lost)."""

    name: ClassVar[str] = "drop"
    exact: ClassVar[bool] = False

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs:
            raise OpError("drop has nothing to drop")
        return specs[:-1]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return arrays[:-1]

    def inverse(self, specs: list[Spec]) -> Op:
        dtype, shape = specs[-1]
        return Constant(0, dtype_name(dtype), shape)

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes("the reverse of drop needs the dropped tensor's shape")

    def count(self, n: int) -> int:
        return n - 1


OPS: dict[str, type[Op]] = {cls.name: cls for cls in (
    Transpose, Reshape, Merge, Gates, Expand, Squeeze, Flip, ChannelsFirst, Cast, Concat, Split,
    Stack,
    Unstack, Sum, Zeros, Tie, Untie, Constant, Drop)}
_TUPLES = {"axes", "shape", "order", "sizes"}


def parse(table: Any, where: str) -> Op:
    """An op from its rule-file table, e.g. `{op = "transpose", axes = [1, 0]}`."""
    if isinstance(table, str):
        table = {"op": table}
    if not isinstance(table, dict) or not isinstance(table.get("op"), str):
        raise OpError(f"{where}: an op is a table with an `op` name, not {table!r}")
    cls = OPS.get(table["op"])
    if cls is None:
        raise OpError(f"{where}: unknown op {table['op']!r}; known: {', '.join(sorted(OPS))}")
    kwargs = {}
    for key, value in table.items():
        if key == "op":
            continue
        if key == "count" and cls in (Zeros, Tie, Untie):
            key = "count_"
        if key in _TUPLES and isinstance(value, str) and value.startswith("@"):
            pass  # a layer fact, given when the rule meets a layer (Chain.bind)
        elif key in _TUPLES:
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise OpError(f"{where}: {table['op']} `{key}` is a list of integers")
            value = tuple(value)
        kwargs[key] = value
    try:
        op = cls(**kwargs)
    except TypeError:
        raise OpError(f"{where}: {table['op']} takes "
                      f"{', '.join(f.name.rstrip('_') for f in fields(cls)) or 'no options'}, "
                      f"not {', '.join(k for k in table if k != 'op')}") from None
    if isinstance(op, Cast):
        from_name(op.dtype)  # an unknown dtype name is the rule file's error, said now
    return op


class Chain:
    """Ops applied in order to a list of tensors."""

    def __init__(self, ops: list[Op]):
        self.ops = ops

    @property
    def exact(self) -> bool:
        return all(op.exact for op in self.ops)

    def lossless(self, specs: list[Spec]) -> bool:
        """Whether the inverse gives inputs of `specs` back bit for bit."""
        for op in self.ops:
            if not op.lossless(specs):
                return False
            specs = op.specs(specs)
        return True

    @property
    def needs(self) -> set[str]:
        """The layer facts the ops name (`"@flatten"`)."""
        return {v[1:] for op in self.ops for v in op.__dict__.values()
                if isinstance(v, str) and v.startswith("@")}

    def bind(self, facts: dict[str, Any]) -> Chain:
        """The chain with each named fact put in (unknown ones stay, and fail when used)."""
        if not self.needs:
            return self
        ops = []
        for op in self.ops:
            changes = {k: tuple(facts[v[1:]]) for k, v in op.__dict__.items()
                       if isinstance(v, str) and v.startswith("@") and v[1:] in facts}
            ops.append(replace(op, **changes) if changes else op)
        return Chain(ops)

    def specs(self, specs: list[Spec]) -> list[Spec]:
        for op in self.ops:
            specs = op.specs(specs)
        return specs

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for op in self.ops:
            arrays = op.apply(arrays)
        return arrays

    def inverse(self, specs: list[Spec]) -> Chain:
        """The chain that undoes this one, for inputs of `specs`."""
        inverses = []
        for op in self.ops:
            inverses.append(op.inverse(specs))
            specs = op.specs(specs)
        return Chain(inverses[::-1])

    def back(self, specs: list[Spec]) -> list[Spec]:
        """The inputs' specs from the outputs' (NeedShapes where an op cannot tell)."""
        for op in reversed(self.ops):
            specs = op.back(specs)
        return specs

    def describe(self) -> str:
        return " → ".join(op.describe() for op in self.ops) or "copy"
