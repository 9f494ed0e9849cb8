"""The Python face: load, save, convert."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry
from .errors import FileAccessError

if TYPE_CHECKING:  # (the graph imports numpy, which `ckpt --version` does not need)
    from .graph import Graph

Progress = Callable[[int], None]  # called with the bytes of each tensor written


@dataclass
class Report:
    """What a conversion or save did."""

    source: str | None
    destination: str
    source_format: str | None
    target_format: str
    tensors: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things a user should know (folded aliases…)
    rules: dict[str, Any] | None = None  # the rules report: consumed, unused, missing, plan
    migration: dict[str, Any] | None = None  # `migrate`: moved, kept, dropped, aliased, added
    written: bool = True  # False for a dry run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load(path: str | os.PathLike, format: str | None = None) -> Graph:
    """Read any supported checkpoint into a Graph (lazily: no tensor data is read)."""
    try:
        fmt = registry.get(format) if format else registry.detect(path)
        graph = fmt.read(Path(path))
    except OSError as exc:  # (a ConvertError, like every error a caller can cause)
        raise FileAccessError.from_os_error(exc) from None
    graph.format = graph.format or fmt.name
    graph.source = graph.source or os.fspath(path)
    return graph


def target_format(path: str | os.PathLike, format: str | None = None,
                  source_format: str | None = None) -> registry.Format:
    """The format asked for; else the one the name says; else a directory means a TF
    checkpoint directory; else, for a name without an extension, the source's own format
    (a rewrite). An extension no format owns is refused: it is a typo or a format this
    tool does not write, and a file of another format under that name would mislead."""
    if format:
        return registry.get(format)
    # (a TF step number is no extension: `model.ckpt-1000` is a `.ckpt` prefix)
    fmt = registry.by_extension(re.sub(r"-\d+$", "", os.fspath(path)))
    if fmt is not None:
        return fmt
    if Path(path).is_dir() or _names_directory(path):
        return registry.get("tf")
    known = ", ".join(sorted(registry.formats()))
    suffix = Path(path).suffix
    if suffix:
        raise registry.UnsupportedError(
            f"no format writes {suffix!r} files; pass {{to}} ({known}) to write one anyway",
            path, {"to": "format="})
    if source_format:
        return registry.get(source_format)
    raise registry.UnsupportedError(
        f"cannot tell the output format from the name; pass {{to}} ({known})", path,
        {"to": "format="})


def _names_directory(path: str | os.PathLike) -> bool:
    """A name ending in a separator (`out/newdir/`) means a directory, existing or not."""
    return os.fspath(path).endswith((os.sep, "/"))


def save(graph: Graph, path: str | os.PathLike, format: str | None = None, *,
         overwrite: bool = False, progress: Progress | None = None, **options: Any) -> Report:
    """Write `graph` to `path`; the format comes from `format` or the file name."""
    fmt = target_format(path, format, graph.format)
    if _names_directory(path):  # (a Path drops the trailing `/`: the writer is told)
        if fmt.name != "tf":
            raise registry.UnsupportedError(
                f"names a directory (it ends in {os.sep!r}), but {fmt.name} output is a file: "
                "name the file", path)
        options = {**options, "directory": True}
    _check_options(fmt, options, path)
    inputs = tuple(graph.files)
    report = Report(graph.source, os.fspath(path), graph.format, fmt.name,
                    notes=list(graph.notes))
    if fmt.name == "tf" and not options.get("name_based") and graph.format == "keras-h5":
        from . import keras_objects  # (imports numpy: only when it is needed)

        if keras_objects.is_keras_h5(graph):
            graph, notes = keras_objects.to_tf_layout(graph)  # tf_keras' own object layout
            report.notes += notes
    try:
        fmt.write(graph, Path(path), overwrite=overwrite, inputs=inputs,
                  progress=progress, report=report, **options)
    except OSError as exc:
        raise FileAccessError.from_os_error(exc) from None
    return report


def _check_options(fmt: registry.Format, options: dict[str, Any], path) -> None:
    """An option the writer does not take is the user's mistake, said as such."""
    for name in options:
        if name not in fmt.options:
            raise registry.UnsupportedError(
                f"{fmt.name} output does not take the option {{{name}}}", path, {name: name})


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, to: str | None = None,
            from_format: str | None = None, overwrite: bool = False,
            progress: Progress | None = None, rules: Any = None,
            like: str | os.PathLike | None = None, check: str | None = None,
            reverse: bool = False, emit_rules: str | os.PathLike | None = None,
            dry_run: bool = False, **options: Any) -> Report:
    """Read `src` and write it to `dst`, one tensor at a time.

    `rules` (a built-in rule set's name, a rule file, or a loaded RuleSet) maps the source's
    layers and tensors into another framework's; `like` is a target skeleton (any
    checkpoint this reads, or a `ckpt ls --json` listing) whose keys, shapes and dtypes the
    output takes; `check` is one of `consumed`, `existing`, `nontrivial`, `partial`."""
    graph = load(src, from_format)
    if rules is None and like is None:
        if dry_run or emit_rules or check or reverse:
            raise registry.UnsupportedError("dry_run, emit_rules, check and reverse go with "
                                            "rules or like")
        return save(graph, dst, to, overwrite=overwrite, progress=progress, **options)
    from . import mapping

    try:
        planned, fmt = mapping.plan(graph, dst, to=to, rules=rules, like=like, check=check,
                                    reverse=reverse)
    except mapping.AlignmentError as exc:
        if emit_rules is None or like is None:
            raise
        mapping.emit_template(exc, emit_rules, src, like)
        raise mapping.AlignmentError(
            f"{exc.reason} (--emit-rules wrote the layers aligned and a template for the rest "
            f"to {os.fspath(emit_rules)})", exc.alignment, exc.emitted, exc.rules,
            exc.sides) from None
    if emit_rules is not None:
        mapping.emit(planned, emit_rules, src, like)
    if dry_run:
        report = Report(graph.source, os.fspath(dst), graph.format, fmt, written=False)
    else:
        report = save(planned.graph, dst, fmt, overwrite=overwrite, progress=progress,
                      **options)
        report.source_format = graph.format
    mapping.add_notes(report, planned)
    return report


def migrate(src: str | os.PathLike, dst: str | os.PathLike, *, under: str | None = None,
            root: str | None = None, pick: list[str] | tuple[str, ...] = (),
            no_optimizer: bool = False, to: str | None = None, from_format: str | None = None,
            like: str | os.PathLike | None = None, overwrite: bool = False,
            dry_run: bool = False, progress: Progress | None = None,
            **options: Any) -> Report:
    """Read `src`, rewrite its object graph, write `dst` (a TF object checkpoint unless its
    name or `to` says otherwise). `root` makes the object at that path the root; `pick`
    (`PATH` or `PATH=NEWPATH`) keeps only those sub-graphs; `no_optimizer` drops optimizer
    state; `under` puts the result under a new root at that edge. A Keras `.h5` bound for a
    TF checkpoint first gets tf_keras' object layout; `like` aligns to a skeleton first (as
    `convert(like=)` does). `report.migration` says what was moved, kept, dropped, aliased
    and added."""
    from . import migration

    picks = [migration.parse_pick(p) for p in pick]  # (a bad request before any reading)
    graph = load(src, from_format)
    source_format = graph.format
    fmt = target_format(dst, to, graph.format)
    objects = fmt.name == "tf" and not options.get("name_based") \
        and graph.root.meta.get("tf_layout") != "names"  # (a name-based input stays so)
    notes: list[str] = []
    if like is not None:  # select, align to the skeleton, then place under the new root
        from . import mapping

        graph, done = migration.migrate(graph, root=root, pick=picks,
                                        no_optimizer=no_optimizer)
        planned, _ = mapping.plan(graph, dst, to=fmt.name, rules=None, like=like, check=None,
                                  reverse=False)
        out, placed = migration.migrate(planned.graph, under=under, checkpoint_root=objects,
                                        new_root=bool(picks))
        done.aliased, done.added, done.notes = placed.aliased, placed.added, \
            done.notes + placed.notes
    else:
        if objects and graph.format == "keras-h5":
            from . import keras_objects

            if keras_objects.is_keras_h5(graph):
                graph, notes = keras_objects.to_tf_layout(graph)  # tf_keras' object layout
        out, done = migration.migrate(graph, under=under, root=root, pick=picks,
                                      no_optimizer=no_optimizer, checkpoint_root=objects)
    if dry_run:
        report = Report(graph.source, os.fspath(dst), source_format, fmt.name, written=False,
                        notes=list(out.notes))
    else:
        report = save(out, dst, fmt.name, overwrite=overwrite, progress=progress, **options)
    report.source_format = source_format
    if like is not None:
        mapping.add_notes(report, planned)
    report.notes += notes + done.notes
    report.migration = done.to_dict()
    report.migration["summary"] = done.summary()
    return report
