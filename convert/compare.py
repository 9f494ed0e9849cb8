"""Comparing two checkpoints tensor by tensor, through the graph's paths (`ckpt diff`).

Tensors pair up by their path in the graph, not by a format's key, so a TF checkpoint
(`model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`) and its safetensors conversion
(`model.dense.kernel`) pair up. With rules, A is first mapped into B's layout (B is the
skeleton) and the planned tensors are compared. One pair of values is in memory at a time,
and the error arithmetic runs in bounded chunks.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convert.core.dtypes import STRING
from convert.core.errors import ConvertError
from convert.core.graph import Entry, Graph
from convert.core.meta import SOURCE_KEY
from convert.loadsave import load

STATUSES = ("same", "differs", "only_a", "only_b", "shape", "dtype")
_CHUNK = 1 << 20  # elements per step of the error arithmetic (8 MB of float64)


@dataclass
class DiffRow:
    """One tensor of either side: its key, what the comparison found, and the errors."""

    key: str
    status: str  # one of STATUSES
    max_abs: float | None = None
    max_rel: float | None = None
    mismatched: int = 0  # elements outside the tolerances (or whose bits differ)
    size: int = 0
    dtype_a: str | None = None
    dtype_b: str | None = None
    shape_a: list[int] | None = None
    shape_b: list[int] | None = None

    @property
    def identical(self) -> bool:
        return self.status == "same" and not self.max_abs and not self.mismatched

    def line(self) -> str:
        """The row as `ckpt diff` prints it."""
        if self.status in ("only_a", "only_b"):
            side = "A" if self.status == "only_a" else "B"
            return f"{self.key}  only in {side}"
        if self.status == "shape":
            return f"{self.key}  shape differs: {self.shape_a} vs {self.shape_b}"
        text = f"{self.key}  {self.status}"
        if self.status == "dtype":
            text += f": {self.dtype_a} vs {self.dtype_b}"
        if self.max_abs is not None:
            text += (
                f"  max abs {self.max_abs:.3g}  max rel {self.max_rel:.3g}"
                f"  {self.mismatched} of {self.size} elements"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite error is spelled as a string ("inf", "nan")."""
        row = asdict(self)
        for name in ("max_abs", "max_rel"):
            value = row[name]
            if value is not None and not math.isfinite(value):
                row[name] = str(value)
        return row


@dataclass
class DiffReport:
    a: str
    b: str
    format_a: str | None
    format_b: str | None
    atol: float
    rtol: float
    rows: list[DiffRow] = field(default_factory=list)  # every tensor, `same` ones too
    rules: str | None = None

    @property
    def equal(self) -> bool:
        return all(row.status == "same" for row in self.rows)

    @property
    def differences(self) -> list[DiffRow]:
        return [row for row in self.rows if row.status != "same"]

    def counts(self) -> dict[str, int]:
        return {s: n for s in STATUSES if (n := sum(r.status == s for r in self.rows))}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in self.counts().items())
        tolerance = (
            "bit for bit"
            if not (self.atol or self.rtol)
            else f"atol {self.atol:g}, rtol {self.rtol:g}"
        )
        verdict = "equal" if self.equal else "different"
        return f"{len(self.rows)} tensors ({counts or 'none'}): {verdict}, {tolerance}"


def diff(
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    rules: Any = None,
    reverse: bool = False,
    atol: float = 0.0,
    rtol: float = 0.0,
    on_row: Callable[[DiffRow], None] | None = None,
) -> DiffReport:
    """Compare checkpoint `a` with `b`, tensor by tensor. Equal means bit for bit unless
    `atol`/`rtol` are given: then |a - b| <= atol + rtol * max(|a|, |b|) for every element.
    `rules` maps `a` into `b`'s layout first (`b` is the skeleton). `on_row` sees each row
    as it is found. A checkpoint that says which part of it converts (a DeepSpeed run's
    fp32 weights) is compared by that part, as a conversion of it would be."""
    if not (atol >= 0 and rtol >= 0):  # (NaN is refused too)
        raise ConvertError("tolerances must be numbers >= 0")
    from convert.api import picked_part  # (a source's default part: DeepSpeed's fp32 weights)

    graph_a, _ = picked_part(load(a), ())
    graph_b, _ = picked_part(load(b), ())
    report = DiffReport(os.fspath(a), os.fspath(b), graph_a.format, graph_b.format, atol, rtol)
    unused: list[str] = []
    if rules is not None:
        graph_a, unused, report.rules = _mapped(graph_a, graph_b, rules, reverse)
    elif reverse:
        raise ConvertError("reverse goes with rules")
    for row in _rows(graph_a, graph_b, atol, rtol, unused):
        report.rows.append(row)
        if on_row is not None:
            on_row(row)
    return report


def _mapped(
    graph_a: Graph, graph_b: Graph, rules: Any, reverse: bool
) -> tuple[Graph, list[str], str]:
    """A mapped into B's layout: B's tree, each tensor the one the rules derive from A.
    Entries of B the rules do not fill are left out (they show as only in B), and A's
    tensors the rules do not use are returned by key (only in A)."""
    from convert import rules as rules_pkg

    ruleset = rules if isinstance(rules, rules_pkg.RuleSet) else rules_pkg.load(rules)
    planned = rules_pkg.plan(graph_a, ruleset, like=graph_b, check="partial", reverse=reverse)
    left_out = planned.report.unused + planned.report.skipped
    return planned.graph, left_out, ruleset.name


def _canonical(path: tuple[str, ...]) -> tuple[str, ...]:
    """A path with every step split on the separators formats join keys with, so that
    (`dense`, `kernel`) and (`dense.kernel`,) are one tensor."""
    return tuple(re.split(r"[./]", "/".join(path)))


def _index(entries: list[Entry], canonical: bool) -> dict[tuple[str, ...], Entry]:
    index: dict[tuple[str, ...], Entry] = {}
    for entry in entries:  # (the primary path first, so it wins over an alias)
        for path in entry.paths:
            index.setdefault(_canonical(path) if canonical else path, entry)
    return index


def _pairs(graph_a: Graph, graph_b: Graph) -> Iterator[tuple[str, Entry | None, Entry | None]]:
    """(key, entry of A, entry of B) for every tensor of either side, A's order first."""
    entries_a, entries_b = graph_a.entries(), graph_b.entries()
    # (two paths of one side that differ only by separators: then paths match exactly)
    canonical = all(
        len({_canonical(e.path) for e in side}) == len(side) for side in (entries_a, entries_b)
    )
    index_b = _index(entries_b, canonical)
    matched: set[int] = set()
    for entry in entries_a:
        found = next(
            (
                index_b[k]
                for k in (_canonical(p) if canonical else p for p in entry.paths)
                if k in index_b
            ),
            None,
        )
        if found is not None and id(found) in matched:
            found = None  # (B has one tensor where A has two: the second is only in A)
        if found is not None:
            matched.add(id(found))
        yield _key(entry), entry, found
    for entry in entries_b:
        if id(entry) not in matched:
            yield _key(entry), None, entry


def _key(entry: Entry) -> str:
    """The file's own key where the reader kept it (as `ckpt ls` shows it)."""
    return str(entry.tensor.meta.get(SOURCE_KEY) or "/".join(entry.path))


def _rows(
    graph_a: Graph, graph_b: Graph, atol: float, rtol: float, unused: list[str]
) -> Iterator[DiffRow]:
    """Each pair's row; values are read one pair at a time (B's in a thread while A's
    is read: reads release the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diff-read") as pool:
        for key, entry_a, entry_b in _pairs(graph_a, graph_b):
            if entry_a is None or entry_b is None:
                yield _one_sided(key, entry_a, entry_b)
                continue
            ta, tb = entry_a.tensor, entry_b.tensor
            row = DiffRow(
                key,
                "same",
                size=ta.size,
                dtype_a=ta.dtype_name,
                dtype_b=tb.dtype_name,
                shape_a=list(ta.shape),
                shape_b=list(tb.shape),
            )
            if ta.shape != tb.shape:
                row.status = "shape"
                yield row
                continue
            pending = pool.submit(tb.read)
            value_a = ta.read()
            value_b = pending.result()
            _compare(row, value_a, value_b, atol, rtol)
            if ta.dtype != tb.dtype:
                row.status = "dtype"
            del value_a, value_b
            yield row
    for key in unused:
        yield DiffRow(key, "only_a")


def _one_sided(key: str, entry_a: Entry | None, entry_b: Entry | None) -> DiffRow:
    entry = entry_a or entry_b
    assert entry is not None  # (a key is on one side at least)
    tensor = entry.tensor
    row = DiffRow(key, "only_a" if entry_a is not None else "only_b", size=tensor.size)
    if entry_a is not None:
        row.dtype_a, row.shape_a = tensor.dtype_name, list(tensor.shape)
    else:
        row.dtype_b, row.shape_b = tensor.dtype_name, list(tensor.shape)
    return row


def _compare(row: DiffRow, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> None:
    """Fill `row` with the errors of `a` against `b` (same shape)."""
    if a.dtype == STRING or b.dtype == STRING or a.dtype.kind == "O" or b.dtype.kind == "O":
        row.mismatched = int(sum(x != y for x, y in zip(a.ravel(), b.ravel(), strict=True)))
        row.status = "differs" if row.mismatched else "same"
        return
    flat_a, flat_b = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    if a.dtype == b.dtype and np.array_equal(flat_a.view(np.uint8), flat_b.view(np.uint8)):
        row.max_abs = row.max_rel = 0.0
        return
    bitwise = not (atol or rtol) and a.dtype == b.dtype
    max_abs = max_rel = 0.0
    mismatched = 0
    for start in range(0, flat_a.size, _CHUNK):
        part_a, part_b = flat_a[start : start + _CHUNK], flat_b[start : start + _CHUNK]
        x, y = _as_float(part_a), _as_float(part_b)
        error = _abs_error(x, y)
        scale = np.maximum(np.abs(x), np.abs(y))
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = np.where(error == 0, 0.0, np.where(np.isinf(error), np.inf, error / scale))
        max_abs = max(max_abs, float(np.max(error)))
        max_rel = max(max_rel, float(np.max(relative)))
        if bitwise and (bits := _bits(part_a)) is not None:
            mismatched += int(np.count_nonzero(bits != _bits(part_b)))
        else:
            mismatched += int(np.count_nonzero(~(error <= atol + rtol * scale)))
    row.max_abs, row.max_rel, row.mismatched = max_abs, max_rel, mismatched
    row.status = "differs" if mismatched else "same"


def _bits(x: np.ndarray) -> np.ndarray | None:
    """The elements as unsigned integers of their width (bit-exact comparison), where
    there is one; else None."""
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(x.dtype.itemsize)
    return x.view(unsigned) if unsigned is not None else None


def _as_float(x: np.ndarray) -> np.ndarray:
    # (ml_dtypes' bfloat16 and float8 cast to float64 exactly, as do bools and ints
    # up to 2**53)
    return x.astype(np.complex128 if x.dtype.kind == "c" else np.float64)


def _abs_error(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x - y|, with equal values (infinities too) and NaN against NaN as 0, and NaN
    against a number as infinite."""
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(x - y)
    error = np.real(error).astype(np.float64, copy=False)
    error[x == y] = 0.0
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    error[nan_x & nan_y] = 0.0
    error[nan_x ^ nan_y] = np.inf
    return error
