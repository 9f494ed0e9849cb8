"""Conversions through rules, for the API and the CLI: which rule set, which skeleton, which
output format; then the plan (`convert.rules`) and what the report says of it."""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path
from typing import Any

from convert import rules as rules_pkg
from convert.core import registry
from convert.core.dtypes import from_name
from convert.core.errors import ConvertError, FormatError
from convert.core.graph import Graph
from convert.core.meta import SOURCE_KEY
from convert.core.tensor import Tensor
from convert.loadsave import load, target_format

_MAX_LISTING = 64 << 20


def prepare(
    graph: Graph,
    dst: str | os.PathLike,
    *,
    to: str | None,
    rules: Any,
    like: str | os.PathLike | None,
    check: str | None,
    reverse: bool,
) -> tuple[rules_pkg.Planned, str]:
    """The planned graph for `graph` → `dst`, and the output format's name."""
    skeleton = None
    if like is not None:
        skeleton = (
            _listing(Path(like), dst, to) if os.fspath(like).endswith(".json") else load(like)
        )
    fmt = target_format(dst, to, skeleton.format if skeleton is not None else None).name
    if skeleton is not None and _framework(skeleton.format) != _framework(fmt):
        raise ConvertError(
            f"the skeleton is a {skeleton.format} file, and {fmt} output cannot take its layout",
            dst,
        )
    ruleset = (
        rules
        if isinstance(rules, rules_pkg.RuleSet)
        else rules_pkg.load(rules)
        if rules is not None
        else _pick(graph.format, fmt)
    )
    _check_whole_folder(graph, ruleset)
    planned = rules_pkg.plan(
        graph, ruleset, like=skeleton, target_format=fmt, check=check, reverse=reverse
    )
    _check_keras2_layout(planned.graph, skeleton, fmt, dst)
    return planned, fmt


def _check_whole_folder(graph: Graph, rules: rules_pkg.RuleSet) -> None:
    """Refuse one file of a folder format the rules read (a rank of Meta's folder, which
    is a torch file too): the rules would read it as another side, or as half a model."""
    source = Path(graph.source or "")
    if not source.is_file():
        return
    try:
        folder = registry.detect(source.parent).name
    except ConvertError:
        return
    side = rules.side_of(folder)
    # (a TF checkpoint directory also keeps unrelated files beside its own)
    if side is not None and folder not in (graph.format, "tf"):
        raise ConvertError(
            f"is one file of the {folder} folder {source.parent}, which rules {rules.name} "
            f"read as {side}: give the folder",
            source,
        )


# What tf_keras reads a file of each format by, and the skeleton that gives it.
_KERAS2 = {
    "tf": (
        "tf_keras cannot restore from a TF checkpoint: it restores by the target model's "
        "object graph (layer_with_weights-N/kernel)",
        "a TF checkpoint of the target model (tf_keras model.save_weights(prefix))",
    ),
    "keras-h5": (
        "a Keras 2 .h5 cannot hold: tf_keras loads one by the target model's layer "
        "order and weight names",
        "the target model's .h5 (tf_keras model.save_weights)",
    ),
}


def _check_keras2_layout(
    graph: Graph, skeleton: Graph | None, fmt: str, dst: str | os.PathLike
) -> None:
    """Refuse Keras 3 object paths (`layers/dense/vars/0`) bound for a tf_keras format.

    Layer rules place a Keras layer at its Keras 3 path, which says neither the model's
    kind (functional or subclassed) nor its layers' order, and tf_keras finds weights by
    these: a TF checkpoint by its object graph (`layer_with_weights-N/kernel`, numbered over
    the model's layers in order, or a subclassed model's attribute names), a `.h5` by layer
    order and weight names. Guessed from the rules' order, two Dense layers of one shape
    would restore swapped without an error; written under the Keras 3 names, a TF
    checkpoint restores into nothing while the conversion succeeds (Keras 3 reads no TF
    checkpoint at all). A TF skeleton gives its own object graph; a Keras 2 `.h5` one gets
    tf_keras' layout in `api.save`; a `.h5` output with a Keras 3 skeleton is the legacy
    writer's to judge (a `.keras` config gives the order); a rules graph without Keras 3
    paths (TF1 names from tensor rules) is the name-based checkpoint it means to be."""
    if fmt not in _KERAS2 or not (skeleton is None or (fmt == "tf" and skeleton.format == "keras")):
        return
    found = next((e.path for e in graph.entries() if _keras3_var(e.path)), None)
    if found is None:
        return
    why, skeleton_kind = _KERAS2[fmt]
    raise ConvertError(
        f"the weights would go to Keras 3 object paths ({'/'.join(found)}), which {why}, "
        f"which only a file of the model gives; pass {{like}} {skeleton_kind}, or write a "
        "Keras 3 .weights.h5",
        dst,
        {"like": "like="},
    )


def _keras3_var(path: tuple[str, ...]) -> bool:
    return any(a == "vars" and b.isdigit() for a, b in pairwise(path))


def _framework(fmt: str | None) -> str | None:
    from convert.rules.kinds import framework_of_format

    return framework_of_format(fmt) or fmt


def _pick(source_format: str | None, target: str) -> rules_pkg.RuleSet:
    """The built-in rule set between the two frameworks, when only --like is given."""
    pair = {_framework(source_format), _framework(target)}
    if len(pair) == 1:
        from convert.rules.language import identity

        framework = pair.pop()
        assert framework is not None  # (the target's: `_framework` of a str is never None)
        return identity(framework)
    for name in rules_pkg.builtin_names():
        ruleset = rules_pkg.load(name)
        if set(ruleset.sides) == pair:
            return ruleset
    raise ConvertError(
        f"no built-in rules map {' to '.join(sorted(map(str, pair)))}; "
        "give --rules NAME|FILE (`ckpt rules` lists them)"
    )


def _listing(path: Path, dst: str | os.PathLike, to: str | None) -> Graph:
    """A skeleton from `ckpt ls --json`: paths, dtypes and shapes, no data."""
    try:
        if path.stat().st_size > _MAX_LISTING:
            raise FormatError("is too large for a listing", path)
        rows = json.loads(path.read_text("utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"is not a `ckpt ls --json` listing ({exc})", path) from None
    if not isinstance(rows, list):
        raise FormatError("is not a `ckpt ls --json` listing: not a JSON array", path)
    fmt = (
        next((r.get("format") for r in rows if isinstance(r, dict) and r.get("format")), None)
        or target_format(dst, to).name
    )
    graph = Graph(format=fmt, source=os.fspath(path), files=[os.fspath(path)])
    for i, row in enumerate(rows):
        try:
            steps = (
                tuple(row["path"])
                if "path" in row
                else tuple(row["key"].split(registry.separator(fmt)))
            )
            tensor = Tensor(
                from_name(row["dtype"]), tuple(row["shape"]), _no_data, {SOURCE_KEY: row["key"]}
            )
        except (KeyError, TypeError, ValueError, ConvertError):
            raise FormatError(
                f"row {i + 1} is not a tensor listing (key, dtype, shape)", path
            ) from None
        if row.get("slot"):
            continue
        graph.add(steps, tensor)
        for alias in row.get("aliases") or ():  # (tied: one tensor at each place)
            try:
                graph.add(tuple(str(part) for part in alias), tensor)
            except (TypeError, ValueError):
                raise FormatError(f"row {i + 1} has an alias that is not a path", path) from None
    return graph


def _no_data():
    raise ConvertError("a skeleton listing holds no tensor data")


def emit(planned: rules_pkg.Planned, path: str | os.PathLike, src: Any, like: Any) -> None:
    from convert.rules import emit as emit_module

    if not planned.emitted:
        raise ConvertError(
            "no layers were aligned, so there is no alignment to write "
            "(--emit-rules needs --like and layer rules)",
            path,
        )
    text = emit_module.rule_file(planned.ruleset, planned.emitted, os.fspath(src), os.fspath(like))
    emit_module.write(path, text)


AlignmentError = rules_pkg.AlignmentError


def emit_template(error: AlignmentError, path: str | os.PathLike, src: Any, like: Any) -> None:
    from convert.rules import emit as emit_module

    emit_module.write(path, emit_module.template(error, os.fspath(src), os.fspath(like)))


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
        report.notes.append(
            _some(
                rules.dropped,
                "source tensor(s) were dropped by the rules (the target keeps no such value)",
            )
        )
    if rules.made:
        report.notes.append(
            _some(
                rules.made,
                "tensor(s) were made by the rules, from no "
                "source (e.g. torch's num_batches_tracked = 0)",
            )
        )
    if rules.unexpected:
        report.notes.append(
            _some(
                rules.unexpected, "mapped tensor(s) have no place in the target and were left out"
            )
        )
    if rules.missing:
        report.notes.append(_some(rules.missing, "target entries were not filled"))
    if rules.tied:
        report.notes.append(
            _some(rules.tied, "tied tensor(s): one value at several places, written once, shared")
        )
    if rules.inexact:
        report.notes.append(
            _some(
                [i["key"] for i in rules.inexact],
                "tensor(s) went through ops without an exact inverse "
                "(a reverse conversion will not give the same bits)",
            )
        )


def _some(keys: list[str], what: str) -> str:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{len(keys)} {what}: {shown}"
