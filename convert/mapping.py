"""Conversions through rules, for the API and the CLI: which rule set, which skeleton, which
output format; then the plan (`convert.rules`) and what the report says of it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import rules as rules_pkg
from .dtypes import from_name
from .errors import ConvertError, FormatError
from .graph import Graph
from .tensor import Tensor

_MAX_LISTING = 64 << 20


def plan(graph: Graph, dst: str | os.PathLike, *, to: str | None, rules: Any,
         like: str | os.PathLike | None, check: str | None,
         reverse: bool) -> tuple[rules_pkg.Planned, str]:
    """The planned graph for `graph` → `dst`, and the output format's name."""
    from .api import load, target_format

    skeleton = None
    if like is not None:
        skeleton = _listing(Path(like), dst, to) if os.fspath(like).endswith(".json") \
            else load(like)
    fmt = target_format(dst, to, skeleton.format if skeleton is not None else None).name
    if skeleton is not None and _framework(skeleton.format) != _framework(fmt):
        raise ConvertError(f"the skeleton is a {skeleton.format} file, and {fmt} output cannot "
                           "take its layout", dst)
    ruleset = rules if isinstance(rules, rules_pkg.RuleSet) else \
        rules_pkg.load(rules) if rules is not None else _pick(graph.format, fmt)
    planned = rules_pkg.plan(graph, ruleset, like=skeleton, target_format=fmt, check=check,
                             reverse=reverse)
    return planned, fmt


def _framework(fmt: str | None) -> str | None:
    from .rules.kinds import framework_of_format

    return framework_of_format(fmt) or fmt


def _pick(source_format: str | None, target: str) -> rules_pkg.RuleSet:
    """The built-in rule set between the two frameworks, when only --like is given."""
    pair = {_framework(source_format), _framework(target)}
    if len(pair) == 1:
        from .rules.language import identity

        return identity(pair.pop())
    for name in rules_pkg.builtin_names():
        ruleset = rules_pkg.load(name)
        if set(ruleset.sides) == pair:
            return ruleset
    raise ConvertError(f"no built-in rules map {' to '.join(sorted(map(str, pair)))}; "
                       "give --rules NAME|FILE (`ckpt rules` lists them)")


def _listing(path: Path, dst: str | os.PathLike, to: str | None) -> Graph:
    """A skeleton from `ckpt ls --json`: paths, dtypes and shapes, no data."""
    from .api import target_format

    try:
        if path.stat().st_size > _MAX_LISTING:
            raise FormatError("is too large for a listing", path)
        rows = json.loads(path.read_text("utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"is not a `ckpt ls --json` listing ({exc})", path) from None
    if not isinstance(rows, list):
        raise FormatError("is not a `ckpt ls --json` listing: not a JSON array", path)
    fmt = next((r.get("format") for r in rows if isinstance(r, dict) and r.get("format")),
               None) or target_format(dst, to).name
    graph = Graph(format=fmt, source=os.fspath(path), files=[os.fspath(path)])
    for i, row in enumerate(rows):
        try:
            steps = tuple(row["path"]) if "path" in row else tuple(row["key"].split(
                "." if fmt in ("torch", "safetensors", "sharded") else "/"))
            tensor = Tensor(from_name(row["dtype"]), tuple(row["shape"]), _no_data,
                            {"key": row["key"]})
        except (KeyError, TypeError, ValueError, ConvertError):
            raise FormatError(f"row {i + 1} is not a tensor listing (key, dtype, shape)",
                              path) from None
        if row.get("slot"):
            continue
        graph.add(steps, tensor)
    return graph


def _no_data():
    raise ConvertError("a skeleton listing holds no tensor data")


def emit(planned: rules_pkg.Planned, path: str | os.PathLike, src: Any, like: Any) -> None:
    from .rules import emit as emit_module

    if not planned.emitted:
        raise ConvertError("no layers were aligned, so there is no alignment to write "
                           "(--emit-rules needs --like and layer rules)", path)
    text = emit_module.rule_file(planned.ruleset, planned.emitted, os.fspath(src), os.fspath(like))
    emit_module.write(path, text)


def add_notes(report: Any, planned: rules_pkg.Planned) -> None:
    """The rules report on the conversion's report, and its warnings among the notes."""
    rules = planned.report
    report.rules = {**vars(rules), "summary": rules.summary()}
    report.notes.extend(rules.warnings)
    if rules.unused:
        report.notes.append(_some(rules.unused, "source tensor(s) were not used"))
    if rules.skipped:
        report.notes.append(_some(rules.skipped, "source tensor(s) were left out by the rules"))
    if rules.dropped:
        report.notes.append(_some(rules.dropped, "source tensor(s) were dropped by the rules "
                                  "(the target keeps no such value)"))
    if rules.made:
        report.notes.append(_some(rules.made, "tensor(s) were made by the rules, from no "
                                  "source (e.g. torch's num_batches_tracked = 0)"))
    if rules.unexpected:
        report.notes.append(_some(rules.unexpected, "mapped tensor(s) have no place in the "
                                  "target and were left out"))
    if rules.missing:
        report.notes.append(_some(rules.missing, "target entries were not filled"))
    if rules.inexact:
        report.notes.append(_some([i["key"] for i in rules.inexact],
                                  "tensor(s) went through ops without an exact inverse "
                                  "(a reverse conversion will not give the same bits)"))


def _some(keys: list[str], what: str) -> str:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{len(keys)} {what}: {shown}"

