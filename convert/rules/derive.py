"""Derived tensors: the leaves of a planned graph. Each knows its dtype and shape from the
ops, and computes its value from its source tensors only when a writer reads it.

One computation may give several tensors (a fused `in_proj_weight` split into q, k and v):
its outputs are kept until each has been read once, so the sources are read once for all
of them, and the memory held is one computation's outputs at most. Writers read large
tensors in a background thread and small ones in their own (stream.py): a computation with
outputs of both sizes is computed under a lock, once.
"""

from __future__ import annotations

import threading

import numpy as np

from convert.core.meta import RULE_EXACT, RULE_KEY, RULE_OPS, RULE_SOURCES, SOURCE_KEY, VIEW_OF
from convert.core.tensor import Tensor
from convert.rules.ops import Chain, Spec, Transpose


class Computation:
    """Source tensors through an op chain."""

    __slots__ = ("inputs", "chain", "specs", "_ready", "_left", "_lock")

    def __init__(self, inputs: list[Tensor], chain: Chain, specs: list[Spec]):
        self.inputs = inputs
        self.chain = chain
        self.specs = specs
        self._ready: list[np.ndarray] | None = None
        self._left: set[int] = set()
        self._lock = threading.Lock()

    def output(self, index: int) -> np.ndarray:
        with self._lock:
            if self._ready is None or index not in self._left:
                self._ready = self.chain.apply([t.read() for t in self.inputs])
                self._left = set(range(len(self._ready)))
            value = self._ready[index]
            self._left.discard(index)
            if not self._left:
                self._ready = None
            return value


class _Output:
    """The loader of one output of a Computation (an object, not a closure: cheap)."""

    __slots__ = ("computation", "index")

    def __init__(self, computation: Computation, index: int):
        self.computation = computation
        self.index = index

    def __call__(self) -> np.ndarray:
        return self.computation.output(self.index)


def derive(inputs: list[Tensor], chain: Chain) -> list[Tensor]:
    """The tensors `chain` makes of `inputs`, lazily, each with its provenance in `meta`:
    `RULE_SOURCES` (source keys), `RULE_OPS` (what was done), `RULE_EXACT`.

    A permutation of one tensor also gets `meta[VIEW_OF] = (source, axes)`: it is `source`
    with its axes permuted, the value `np.transpose(source.read(), axes)`. A writer that can
    store a strided view (torch's `--strided`) writes the source's bytes as they are
    instead of computing the value."""
    specs = chain.specs([(t.dtype, t.shape) for t in inputs])
    if not chain.ops and len(inputs) == len(specs):
        return list(inputs)  # a plain rename: the source tensor itself
    if [op.name for op in chain.ops] == ["tie"]:
        return list(inputs) * len(specs)  # one tensor at several places: aliases
    if [op.name for op in chain.ops] == ["untie"]:
        return list(inputs[:1])
    computation = Computation(inputs, chain, specs)
    sources = [key for t in inputs for key in sources_of(t)]
    done = list(dict.fromkeys(t.meta[RULE_OPS] for t in inputs if t.meta.get(RULE_OPS)))
    ops = "; ".join([*done, chain.describe()])
    inexact = chain.inexact(
        [(t.dtype, t.shape) for t in inputs], [not t.meta.get(RULE_EXACT, True) for t in inputs]
    )
    made = [
        Tensor(
            dtype,
            shape,
            _Output(computation, i),
            {RULE_SOURCES: sources, RULE_OPS: ops, RULE_EXACT: not inexact[i]},
        )
        for i, (dtype, shape) in enumerate(specs)
    ]
    axes = _permutation(chain)
    if axes is not None and len(inputs) == 1 and len(made) == 1:
        source = inputs[0]
        if VIEW_OF in source.meta:  # a permutation of a permutation: of the first source
            source, first = source.meta[VIEW_OF]
            axes = tuple(first[a] for a in axes)
        made[0].meta[VIEW_OF] = (source, axes)
    return made


def _permutation(chain: Chain) -> tuple[int, ...] | None:
    """The axes of the one permutation that `chain` is, if it is nothing else."""
    axes: tuple[int, ...] | None = None
    for op in chain.ops:
        if not isinstance(op, Transpose):  # (the one op named "transpose")
            return None
        step = tuple(op.axes)
        axes = step if axes is None else tuple(axes[a] for a in step)
    return axes


def sources_of(tensor: Tensor) -> list[str]:
    """The source keys a tensor comes from (itself, if it was read from a file)."""
    found = tensor.meta.get(RULE_SOURCES)
    if found is not None:
        return list(found)
    return [str(tensor.meta.get(SOURCE_KEY) or tensor.meta.get(RULE_KEY) or "?")]
