"""Tensor ops of the rule language: each knows its output dtypes and shapes without data,
applies itself to arrays, and declares its inverse.

An op chain works on a list of tensors: a rule's sources, in order, go in; its targets, in
order, come out. Element ops (transpose, reshape, merge, gates, regroup, expect, cast)
act on each tensor of the list; list ops (concat, split, stack, unstack, reorder, sum, zeros,
same, constant, drop) change the list. `inverse(specs)` is told the specs the op was
given going forward (so a split knows the sizes a concat joined) and returns the op that
undoes it; `back(specs)` says what went in from what came out where the op alone can
tell (else the reverse direction needs the target's shapes, from `--like`). An op whose
inverse cannot give the same bits back (`exact = False`: sum, drop, a narrowing cast) is
named in every report of a tensor that went through it (`inexact` follows each tensor of
the list, so a tensor that only passed beside a sum is not named).

`base.py` holds what every op is, `element.py` the ops on each tensor, `lists.py` the ops
on the list (`stacking.py` stack and unstack, `within.py` regroup, same and expect); here
are the registry, the parser and the chain.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np

from convert.core.dtypes import from_name
from convert.rules.ops.base import NeedShapes, Op, OpError, Spec
from convert.rules.ops.element import (
    Cast,
    ChannelsFirst,
    Expand,
    Flip,
    Gates,
    Merge,
    Reshape,
    Squeeze,
    Transpose,
)
from convert.rules.ops.lists import (
    Concat,
    Constant,
    Drop,
    Reorder,
    Split,
    Sum,
    Tie,
    Untie,
    Zeros,
)
from convert.rules.ops.stacking import Stack, Unstack
from convert.rules.ops.within import Expect, Regroup, Same

__all__ = [
    "OPS",
    "Cast",
    "Chain",
    "ChannelsFirst",
    "Concat",
    "Constant",
    "Drop",
    "Expand",
    "Expect",
    "Flip",
    "Gates",
    "Merge",
    "NeedShapes",
    "Op",
    "OpError",
    "Regroup",
    "Reorder",
    "Reshape",
    "Same",
    "Spec",
    "Split",
    "Squeeze",
    "Stack",
    "Sum",
    "Tie",
    "Transpose",
    "Untie",
    "Unstack",
    "Zeros",
    "parse",
]

OPS: dict[str, type[Op]] = {
    cls.name: cls
    for cls in (
        Transpose,
        Reshape,
        Merge,
        Gates,
        Expand,
        Squeeze,
        Flip,
        ChannelsFirst,
        Regroup,
        Expect,
        Cast,
        Concat,
        Split,
        Stack,
        Unstack,
        Reorder,
        Sum,
        Zeros,
        Tie,
        Untie,
        Same,
        Constant,
        Drop,
    )
}
_TUPLES = {"axes", "shape", "order", "sizes", "like", "into"}


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
        if key in _TUPLES and _fact(value):
            pass  # a layer fact, given when the rule meets a layer (Chain.bind)
        elif key in _TUPLES:
            # (a size may name a model fact, "@heads": Chain.bind puts its number in)
            if not isinstance(value, list) or not all(
                isinstance(v, int) or (key == "shape" and _fact(v)) for v in value
            ):
                raise OpError(f"{where}: {table['op']} `{key}` is a list of integers")
            value = tuple(value)
        kwargs[key] = value
    try:
        op = cls(**kwargs)
    except TypeError:
        raise OpError(
            f"{where}: {table['op']} takes "
            f"{', '.join(f.name.rstrip('_') for f in fields(cls)) or 'no options'}, "
            f"not {', '.join(k for k in table if k != 'op')}"
        ) from None
    if isinstance(op, Cast):
        from_name(op.dtype)  # an unknown dtype name is the rule file's error, said now
    return op


def _fact(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("@") and len(value) > 1


class Chain:
    """Ops applied in order to a list of tensors."""

    def __init__(self, ops: list[Op]):
        self.ops = ops

    @property
    def exact(self) -> bool:
        return all(op.exact for op in self.ops)

    def inexact(self, specs: list[Spec], tainted: list[bool]) -> list[bool]:
        """Per output, whether it went through an op without an exact inverse (or came
        from an input that did, as `tainted` says of each input)."""
        for op in self.ops:
            tainted = op.inexact(specs, tainted)
            specs = op.specs(specs)
        return tainted

    @property
    def needs(self) -> set[str]:
        """The layer facts the ops name (`"@flatten"`), and the model facts their sizes
        name (`shape = ["@heads", -1, 2]`)."""
        return {
            v[1:]
            for op in self.ops
            if not op.optional_facts
            for value in op.__dict__.values()
            for v in (value if isinstance(value, tuple) else (value,))
            if _fact(v)
        }

    @property
    def named(self) -> bool:
        """Whether any op names a fact, `expect`'s optional ones too."""
        return any(
            _fact(v)
            for op in self.ops
            for value in op.__dict__.values()
            for v in (value if isinstance(value, tuple) else (value,))
        )

    def bind(self, facts: dict[str, Any]) -> Chain:
        """The chain with each named fact put in: a layer fact for a whole option, a
        model fact's number for a size (unknown ones stay, and fail when used)."""
        if not facts or not self.named:  # (most chains: every layer's variables pass here)
            return self
        ops = []
        for op in self.ops:
            changes: dict[str, Any] = {}
            for k, v in op.__dict__.items():
                if _fact(v) and v[1:] in facts:
                    fact = facts[v[1:]]
                    changes[k] = tuple(fact) if isinstance(fact, list | tuple) else fact
                elif isinstance(v, tuple) and any(_fact(d) and d[1:] in facts for d in v):
                    changes[k] = tuple(facts.get(d[1:], d) if _fact(d) else d for d in v)
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
