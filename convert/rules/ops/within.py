"""Ops for layouts inside one axis, for copies across a list, and for checking a shape:

- `regroup`: an axis that holds a flattened array, its sub-axes put in another order
  (Meta's rotary layout: each head's rows hold (pairs, 2), Hugging Face's (2, pairs));
- `same`: a list of copies of one tensor (a norm every model-parallel rank keeps), once;
- `expect`: the tensor unchanged, its shape checked against the model's facts.

All are exact: `regroup` moves elements and its inverse moves them back; `same` checks,
when it runs, that the copies are equal, so nothing is lost by keeping one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from convert.rules.ops.base import NeedShapes, Op, OpError, Spec, check_axis
from convert.rules.ops.lists import Tie


@dataclass(frozen=True)
class Regroup(Op):
    """Axis `axis` holds a flattened array of `shape` (one size may be -1, and a size may
    name a model fact, `"@heads"`): its axes are put in the order `axes` and flattened
    again. The tensor keeps its shape. `shape = ["@heads", -1, 2], axes = [0, 2, 1]` turns
    each head's interleaved rotary pairs into two halves."""

    name: ClassVar[str] = "regroup"
    element: ClassVar[bool] = True
    axis: int = 0
    shape: tuple[int | str, ...] = ()
    axes: tuple[int, ...] = ()

    def _dims(self, length: int) -> tuple[int, ...]:
        unknown = [d for d in self.shape if isinstance(d, str)]
        if unknown:
            raise OpError(f"{self.describe()}: the fact {unknown[0][1:]!r} is not known")
        dims = tuple(int(d) for d in self.shape)
        known = math.prod(d for d in dims if d != -1)
        if (
            sorted(self.axes) != list(range(len(dims)))
            or dims.count(-1) > 1
            or known <= 0
            or (length % known if -1 in dims else known != length)
        ):
            raise OpError(f"{self.describe()} does not fit an axis of {length}")
        return tuple(length // known if d == -1 else d for d in dims)

    def spec(self, spec: Spec) -> Spec:
        dtype, shape = spec
        axis = check_axis(self.axis, len(shape), self)
        self._dims(shape[axis])
        return spec

    def apply1(self, array: np.ndarray) -> np.ndarray:
        axis = check_axis(self.axis, array.ndim, self)
        dims = self._dims(array.shape[axis])
        moved = np.moveaxis(array, axis, 0)
        rest = moved.shape[1:]
        order = (*self.axes, *range(len(dims), len(dims) + len(rest)))
        regrouped = moved.reshape((*dims, *rest)).transpose(order).reshape(moved.shape)
        return np.ascontiguousarray(np.moveaxis(regrouped, 0, axis))

    def inverse1(self, spec: Spec) -> Op:
        dims = self._dims(spec[1][check_axis(self.axis, len(spec[1]), self)])
        back = tuple(int(i) for i in np.argsort(self.axes))
        return Regroup(self.axis, tuple(dims[a] for a in self.axes), back)

    def back1(self, spec: Spec) -> Spec:
        return self.spec(spec)


@dataclass(frozen=True)
class Same(Op):
    """The list holds copies of one tensor (what each model-parallel rank keeps of a
    norm): that tensor, once. Exact: when it runs, copies that differ are an error."""

    name: ClassVar[str] = "same"

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs or len(set(specs)) != 1:
            raise OpError(f"{self.describe()} needs copies of one dtype and shape")
        return specs[:1]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        first = np.ascontiguousarray(arrays[0]).view(np.uint8)
        for k, other in enumerate(arrays[1:], 1):  # (bits: NaNs and -0.0 compared as stored)
            if not np.array_equal(first, np.ascontiguousarray(other).view(np.uint8)):
                raise OpError(f"{self.describe()}: copy {k} differs from copy 0")
        return arrays[:1]

    def inverse(self, specs: list[Spec]) -> Op:
        return Tie(len(specs))

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes(f"the reverse of {self.describe()} needs to know how many copies")

    def count(self, n: int) -> int:
        return 1


@dataclass(frozen=True)
class Expect(Op):
    """The tensor unchanged, its shape checked: `shape` lists sizes, -1 for any, or a
    model fact (`[-1, "@heads", -1]`). Where a reshape takes its sizes from a `--like`
    file, a file of another configuration (other head counts, the same total) would
    otherwise be filled by reinterpreting the numbers. A fact no file tells is not
    checked (`optional_facts`): the op only adds a check where the files allow one."""

    name: ClassVar[str] = "expect"
    element: ClassVar[bool] = True
    optional_facts: ClassVar[bool] = True
    shape: tuple[int | str, ...] = ()

    def spec(self, spec: Spec) -> Spec:
        shape = spec[1]
        if len(shape) != len(self.shape) or any(
            isinstance(want, int) and want not in (-1, size)
            for want, size in zip(self.shape, shape, strict=False)
        ):
            wanted = [w if isinstance(w, int) else "?" for w in self.shape]
            raise OpError(
                f"a tensor of shape {list(shape)} where the model's settings make "
                f"{wanted} (-1: any): a file of another configuration?"
            )
        return spec

    def apply1(self, array: np.ndarray) -> np.ndarray:
        self.spec((array.dtype, array.shape))
        return array

    def inverse1(self, spec: Spec) -> Op:
        self.spec(spec)
        return self

    def back1(self, spec: Spec) -> Spec:
        return self.spec(spec)
