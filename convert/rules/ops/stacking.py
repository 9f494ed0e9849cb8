"""Stacking a list of tensors on a new axis and unstacking it again: a mixture's experts,
one tensor per expert on one side and one stacked tensor on the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from convert.rules.ops.base import NeedShapes, Op, OpError, Spec, check_axis


@dataclass(frozen=True)
class Stack(Op):
    """The list stacked on a new axis; with `groups`, cut first into that many equal runs,
    each stacked (a mixture's gate and up experts, two stacks from one list)."""

    name: ClassVar[str] = "stack"
    axis: int = 0
    groups: int = 1

    def _runs(self, n: int) -> int:
        if self.groups < 1 or n == 0 or n % self.groups:
            raise OpError(f"{self.describe()} cannot cut {n} tensors into {self.groups} runs")
        return n // self.groups

    def specs(self, specs: list[Spec]) -> list[Spec]:
        size = self._runs(len(specs))
        if len(set(specs)) != 1:
            raise OpError(f"{self.describe()} needs tensors of one dtype and shape")
        dtype, shape = specs[0]
        axis = self.axis % (len(shape) + 1)
        return [(dtype, shape[:axis] + (size,) + shape[axis:])] * self.groups

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        size = self._runs(len(arrays))
        return [np.stack(arrays[k : k + size], axis=self.axis) for k in range(0, len(arrays), size)]

    def inverse(self, specs: list[Spec]) -> Op:
        return Unstack(self.axis)

    def back(self, specs: list[Spec]) -> list[Spec]:
        raise NeedShapes(f"the reverse of {self.describe()} needs the count it stacked")

    def count(self, n: int) -> int:
        return self.groups


@dataclass(frozen=True)
class Unstack(Op):
    name: ClassVar[str] = "unstack"
    axis: int = 0

    def specs(self, specs: list[Spec]) -> list[Spec]:
        if not specs or len(set(specs)) != 1:
            raise OpError(f"{self.describe()} unstacks tensors of one dtype and shape")
        dtype, shape = specs[0]
        axis = check_axis(self.axis, len(shape), self)
        return [(dtype, shape[:axis] + shape[axis + 1 :])] * (shape[axis] * len(specs))

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Each tensor into its slices, one tensor's after another's."""
        return [
            np.ascontiguousarray(a) for array in arrays for a in np.moveaxis(array, self.axis, 0)
        ]

    def inverse(self, specs: list[Spec]) -> Op:
        return Stack(self.axis, len(specs))

    def back(self, specs: list[Spec]) -> list[Spec]:
        return Stack(self.axis).specs(specs)

    def count(self, n: int) -> int:
        raise NeedShapes(f"{self.describe()} gives as many tensors as its axis is long")
