"""Ops that change the list: join and split (concat, split, stack, unstack), fold (sum),
make (zeros, constant, tie) and take away (untie, drop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...dtypes import dtype_name, from_name
from .base import NeedShapes, Op, OpError, Spec, _check_axis


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
