"""Ops that act on each tensor of the list alone: layouts (transpose, reshape, merge,
gates, expand, squeeze, flip, channels_first) and casts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from convert.core.dtypes import dtype_name, from_name
from convert.io.permute import permuted
from convert.rules.ops.base import NeedShapes, Op, OpError, Spec, check_axis


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
        return permuted(array, self.axes)

    def inverse1(self, spec: Spec) -> Op:
        return Transpose(tuple(int(i) for i in np.argsort(self.axes)))

    def back1(self, spec: Spec) -> Spec:
        return self.inverse1(spec).spec(spec)


@dataclass(frozen=True)
class Reshape(Op):
    name: ClassVar[str] = "reshape"
    element: ClassVar[bool] = True
    shape: tuple[int, ...] = ()

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        size = math.prod(shape)
        known = math.prod(d for d in self.shape if d != -1)
        if self.shape.count(-1) > 1 or (
            known == 0 or size % known if -1 in self.shape else known != size
        ):
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
        first = check_axis(self.first, len(shape), self)
        last = check_axis(self.last, len(shape), self)
        if last < first:
            raise OpError(f"{self.describe()}: last axis before first")
        merged = math.prod(shape[first : last + 1])
        return dtype, shape[:first] + (merged,) + shape[last + 1 :]

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
        axis = check_axis(self.axis, len(shape), self)
        if sorted(self.order) != list(range(len(self.order))) or shape[axis] % len(self.order):
            raise OpError(f"{self.describe()} does not fit a tensor of shape {list(shape)}")
        return spec

    def apply1(self, array: np.ndarray) -> np.ndarray:
        self.spec((array.dtype, array.shape))
        blocks = np.split(array, len(self.order), axis=self.axis)
        return np.ascontiguousarray(np.concatenate([blocks[i] for i in self.order], axis=self.axis))

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
        axis = check_axis(self.axis, len(shape) + 1, self)
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
        axis = check_axis(self.axis, len(shape), self)
        if shape[axis] != 1:
            raise OpError(f"{self.describe()}: axis {axis} of {list(shape)} is not 1 long")
        return dtype, shape[:axis] + shape[axis + 1 :]

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
            check_axis(axis, len(spec[1]), self)
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
        axis = check_axis(self.axis, len(shape), self)
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


_WIDENING = {
    ("float16", "float32"),
    ("bfloat16", "float32"),
    ("float16", "float64"),
    ("bfloat16", "float64"),
    ("float32", "float64"),
    ("int32", "int64"),
    ("int16", "int32"),
    ("int16", "int64"),
    ("int8", "int16"),
    ("int8", "int32"),
    ("int8", "int64"),
    ("uint8", "int16"),
    ("uint8", "int32"),
    ("uint8", "int64"),
}


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
        return all(
            dtype_name(d) == self.dtype or (dtype_name(d), self.dtype) in _WIDENING
            for d, _ in specs
        )
