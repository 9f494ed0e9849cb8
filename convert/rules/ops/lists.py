"""Ops that change the list: join and split (concat, split; stack and unstack are in
stacking.py), reorder, fold (sum), make (zeros, constant, tie) and take away (untie,
drop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from convert.core.dtypes import dtype_name, from_name
from convert.rules.ops.base import NeedShapes, Op, OpError, Spec, check_axis


@dataclass(frozen=True)
class Concat(Op):
    name: ClassVar[str] = "concat"
    axis: int = 0

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs:
            raise OpError(f"{self.describe()} has nothing to join")
        dtype, shape = specs[0]
        axis = check_axis(self.axis, len(shape), self)
        for d, s in specs[1:]:
            if (
                d != dtype
                or len(s) != len(shape)
                or s[:axis] + s[axis + 1 :] != shape[:axis] + shape[axis + 1 :]
            ):
                raise OpError(
                    f"{self.describe()}: cannot join "
                    + " and ".join(f"{dtype_name(x)}{list(y)}" for x, y in specs)
                )
        return [(dtype, shape[:axis] + (sum(s[axis] for _, s in specs),) + shape[axis + 1 :])]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [np.concatenate(arrays, axis=self.axis)]

    def inverse(self, specs: list[Spec]) -> Op:
        axis = self.axis % len(specs[0][1])
        return Split(self.axis, tuple(s[axis] for _, s in specs))

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes(
            f"the reverse of {self.describe()} needs the target's shapes "
            "(how the joined tensor splits)"
        )

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
            raise OpError(
                f"{self.describe()}: {length} does not split into {self.parts} equal parts"
            )
        return (length // self.parts,) * self.parts

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if len(specs) != 1:
            raise OpError(f"{self.describe()} splits one tensor, not {len(specs)}")
        dtype, shape = specs[0]
        axis = check_axis(self.axis, len(shape), self)
        return [(dtype, shape[:axis] + (n,) + shape[axis + 1 :]) for n in self._sizes(shape[axis])]

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
class Reorder(Op):
    """The list in another order: output i is input `order[i]` (Flax's GRU biases, and the
    zeros made for torch's recurrent r and z gates, into torch's r, z, n of each bias)."""

    name: ClassVar[str] = "reorder"
    order: tuple[int, ...] = ()

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if sorted(self.order) != list(range(len(specs))):
            raise OpError(f"{self.describe()} does not reorder {len(specs)} tensors")
        return [specs[i] for i in self.order]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [arrays[i] for i in self.order]

    def inverse(self, specs: list[Spec]) -> Op:
        return Reorder(tuple(int(i) for i in np.argsort(self.order)))

    def back(self, specs: list[Spec]) -> list[Spec]:
        return self.inverse(specs).specs(specs)

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        return [tainted[i] for i in self.order]


@dataclass(frozen=True)
class Sum(Op):
    """Tensors of one shape added into one (torch's two LSTM biases into Keras' one); or,
    with `into`, the last `len(into)` tensors each added into the one `into` names among
    the others (torch's recurrent GRU biases for r and z into Flax's input ones), which
    pass through as they are. The parts cannot be told apart again."""

    name: ClassVar[str] = "sum"
    exact: ClassVar[bool] = False
    into: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        return {"into": list(self.into)} if self.into else {}

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not self.into:
            if not specs or len(set(specs)) != 1:
                raise OpError(f"{self.describe()} needs tensors of one dtype and shape")
            return [specs[0]]
        kept, added = specs[: len(specs) - len(self.into)], specs[len(specs) - len(self.into) :]
        if not kept or any(
            not 0 <= j < len(kept) or kept[j] != s for j, s in zip(self.into, added, strict=True)
        ):
            raise OpError(
                f"{self.describe()} cannot add the last of "
                + ", ".join(f"{dtype_name(d)}{list(s)}" for d, s in specs)
                + " into the others"
            )
        return kept

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if not self.into:
            total = arrays[0].copy()
            for a in arrays[1:]:
                total += a
            return [total]
        out = list(arrays[: len(arrays) - len(self.into)])
        for j, a in zip(self.into, arrays[len(out) :], strict=True):
            out[j] = out[j] + a  # a new array: the sources stay as they were read
        return out

    def inverse(self, specs: list[Spec]) -> Op:
        return Zeros(like=self.into) if self.into else Zeros(len(specs) - 1)

    def back(self, specs: list[Spec]) -> list[Spec]:
        if not self.into:
            raise NeedShapes(f"the reverse of {self.describe()} needs the count it added")
        return [*specs, *(specs[j] for j in self.into)]

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        if not self.into:
            return [True]
        kept = len(specs) - len(self.into)
        out = list(tainted[:kept])
        for j in self.into:
            out[j] = True
        return out

    def count(self, n: int) -> int:
        return n - len(self.into) if self.into else 1


@dataclass(frozen=True)
class Zeros(Op):
    """The tensor, then `count` zero tensors of its dtype and shape (Keras' one LSTM bias as
    torch's `bias_ih` and a zero `bias_hh`, as Keras' own torch backend has it); or, with
    `like`, the list, then a zero tensor like each tensor `like` names (a GRU's recurrent
    biases Flax does not have). Its inverse adds them back in (`sum`)."""

    name: ClassVar[str] = "zeros"
    count_: int = 1
    like: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        return {"like": list(self.like)} if self.like else {"count": self.count_}

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if self.like:
            if any(not 0 <= j < len(specs) for j in self.like):
                raise OpError(f"{self.describe()}: no such tensor among {len(specs)}")
            return [*specs, *(specs[j] for j in self.like)]
        if len(specs) != 1:
            raise OpError(f"{self.describe()} follows one tensor, not {len(specs)}")
        return specs * (1 + self.count_)

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.like:
            return [*arrays, *(np.zeros(arrays[j].shape, arrays[j].dtype) for j in self.like)]
        (array,) = arrays
        return [array] + [np.zeros_like(array) for _ in range(self.count_)]

    def inverse(self, specs: list[Spec]) -> Op:
        return Sum(self.like)

    def back(self, specs: list[Spec]) -> list[Spec]:
        return specs[: len(specs) - len(self.like)] if self.like else specs[:1]

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        made = len(self.like) or self.count_
        return [*tainted, *[False] * made] if self.like else [tainted[0], *[False] * made]

    def count(self, n: int) -> int:
        return n + (len(self.like) or self.count_)


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
    """Tied places back to one tensor: the first. Inexact: the places may not have held one
    value (a model trained untied, TF ALBERT's two output biases), and the others' are lost."""

    name: ClassVar[str] = "untie"
    exact: ClassVar[bool] = False
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

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        return [*tainted, True]  # the value is the rule's; the others pass as they are

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

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        return tainted[:-1]  # the others pass as they are (the dropped one is reported)

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes("the reverse of drop needs the dropped tensor's shape")

    def count(self, n: int) -> int:
        return n - 1
