"""A Flax checkpoint checked against a target's tree: the differences
`flax.serialization.from_bytes` would let through silently.

Apart from the reader and writer because it reads two Graphs (of any format) and writes
nothing.
"""

from __future__ import annotations

from convert.core.dtypes import dtype_name
from convert.core.graph import Graph, GraphPath
from convert.core.tensor import Tensor


def compare_to_target(graph: Graph, target: Graph) -> list[str]:
    """One line per difference that `flax.serialization.from_bytes` would not report:
    shape or dtype mismatches (it checks neither), tensors the target lacks (it ignores
    them) and, for completeness, tensors the checkpoint lacks (from_bytes fails on those)."""
    have: dict[GraphPath, Tensor] = {}
    for entry in graph.entries():
        for path in entry.paths:
            have[path] = entry.tensor
    wanted: dict[GraphPath, Tensor] = {}
    for entry in target.entries():
        for path in entry.paths:
            wanted[path] = entry.tensor
    problems = []
    for path, want in wanted.items():
        key = "/".join(path)
        got = have.get(path)
        if got is None:
            problems.append(f"{key}: missing from the checkpoint (target: {_describe(want)})")
            continue
        if got.shape != want.shape:
            problems.append(
                f"{key}: shape {list(got.shape)} in the checkpoint, "
                f"{list(want.shape)} in the target"
            )
        if got.dtype != want.dtype:
            problems.append(
                f"{key}: dtype {dtype_name(got.dtype)} in the checkpoint, "
                f"{dtype_name(want.dtype)} in the target"
            )
    for path, got in have.items():
        if path not in wanted:
            problems.append(
                f"{'/'.join(path)}: not in the target ({_describe(got)}; "
                "from_bytes would ignore it)"
            )
    return problems


def _describe(tensor: Tensor) -> str:
    return f"{tensor.dtype_name}{list(tensor.shape)}"
