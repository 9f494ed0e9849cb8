"""What every op is: dtype and shape without data, apply, inverse, back inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from convert.core.errors import RuleError

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
    optional_facts: ClassVar[bool] = False  # runs without the model facts it names (expect)

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
            raise NeedShapes(
                f"{self.describe()} over tensors of different shapes has no single inverse"
            )
        return inverses.pop()

    def back(self, specs: list[Spec]) -> list[Spec]:
        return [self.back1(s) for s in specs]

    def count(self, n: int) -> int:
        return n

    def lossless(self, specs: list[Spec]) -> bool:
        """Whether the inverse gives these inputs back bit for bit."""
        return self.exact

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        """Which outputs may not come back bit for bit, from which inputs may not: an
        element op marks only the tensors it loses on; a list op, unless it says better,
        marks every output when it loses anything or any input was marked."""
        if self.element:
            return [t or not self.lossless([s]) for s, t in zip(specs, tainted, strict=True)]
        return [any(tainted) or not self.lossless(specs)] * len(self.specs(specs))

    def params(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def to_toml(self) -> dict[str, Any]:
        return {"op": self.name, **self.params()}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({args})"


def check_axis(axis: int, rank: int, op: Op) -> int:
    if not -rank <= axis < rank:
        raise OpError(f"{op.describe()}: axis {axis} is out of range for rank {rank}")
    return axis % rank
