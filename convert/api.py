"""The Python face: load, save, convert, migrate. (`load`, `save` and the `Report` are
`loadsave.py`'s; `convert` and `migrate` add porting through rules and graph rewrites.)"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from convert.core.errors import ConvertError, UnsupportedError
from convert.core.meta import DEFAULT_PICK, TF_LAYOUT
from convert.loadsave import Progress, Report, load, save, target_format

if TYPE_CHECKING:
    from convert.core.graph import Graph

__all__ = ["Progress", "Report", "convert", "load", "migrate", "save", "target_format"]


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to: str | None = None,
    from_format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    rules: Any = None,
    like: str | os.PathLike | None = None,
    check: str | None = None,
    reverse: bool = False,
    emit_rules: str | os.PathLike | None = None,
    dry_run: bool = False,
    pick: Sequence[str] = (),
    **options: Any,
) -> Report:
    """Read `src` and write it to `dst`, one tensor at a time.

    `pick` keeps only some sub-graphs of the source (`ckpt migrate`'s `PATH[=NEWPATH]`);
    one path alone becomes the root: `pick=["model"]` writes a training checkpoint's model
    state dict, its keys without `model.`.

    `rules` (a built-in rule set's name, a rule file, or a loaded RuleSet) maps the source's
    layers and tensors into another framework's; `like` is a target skeleton (any
    checkpoint this reads, or a `ckpt ls --json` listing) whose keys, shapes and dtypes the
    output takes; `check` is one of `consumed`, `existing`, `nontrivial`, `partial`.

    A Hugging Face model folder (`config.json` beside the weights) may stand for `src` or
    `like`: the rules' side decides which of its weights files is read. With a folder
    source and a `dst` that names no file format, `dst` becomes a model folder: the target
    side's weights and the source folder's other files (see `folders.py`)."""
    from convert import folders

    if folders.is_model_folder(src) or (like is not None and folders.is_model_folder(like)):
        return _with_folders(
            src,
            dst,
            to=to,
            from_format=from_format,
            overwrite=overwrite,
            progress=progress,
            rules=rules,
            like=like,
            check=check,
            reverse=reverse,
            emit_rules=emit_rules,
            dry_run=dry_run,
            pick=pick,
            **options,
        )
    graph, picked = load_part(src, dst, to, from_format, pick)
    if rules is None and like is None:
        if dry_run or emit_rules or check or reverse:
            raise UnsupportedError("dry_run, emit_rules, check and reverse go with rules or like")
        report = save(graph, dst, to, overwrite=overwrite, progress=progress, **options)
        note = folders.hint(src, graph, report.target_format)
        report.notes += [n for n in (picked, note) if n]
        return report
    from convert import porting

    try:
        planned, fmt = porting.prepare(
            graph, dst, to=to, rules=rules, like=like, check=check, reverse=reverse
        )
    except porting.AlignmentError as exc:
        if emit_rules is None or like is None:
            raise
        porting.emit_template(exc, emit_rules, src, like)
        raise porting.AlignmentError(
            f"{exc.reason} (--emit-rules wrote the layers aligned and a template for the rest "
            f"to {os.fspath(emit_rules)})",
            exc.alignment,
            exc.emitted,
            exc.rules,
            exc.sides,
        ) from None
    if emit_rules is not None:
        porting.emit(planned, emit_rules, src, like)
    if dry_run:
        report = Report(graph.source, os.fspath(dst), graph.format, fmt, written=False)
    else:
        report = save(planned.graph, dst, fmt, overwrite=overwrite, progress=progress, **options)
        report.source_format = graph.format
    report.notes += [picked] if picked else []
    porting.add_notes(report, planned)
    return report


def picked_part(
    graph: Graph, pick: Sequence[str], target: str | None = None
) -> tuple[Graph, str | None]:
    """`graph` with only the sub-graphs at `pick`, or (none given) the part the source says
    a conversion keeps (a DeepSpeed checkpoint's fp32 weights, the model a DCP checkpoint
    wraps), and a note of it. Written to its own format (`target`: a DCP checkpoint
    resharded) a source is kept whole."""
    if pick:
        return picking(graph, pick)
    default = graph.root.meta.get(DEFAULT_PICK)
    if not default or target == graph.format:
        return graph, None
    out, note = picking(graph, [default])
    return out, f"{note} (what this source converts to; --pick chooses another part)"


def load_part(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str | None,
    from_format: str | None,
    pick: Sequence[str] = (),
) -> tuple[Graph, str | None]:
    """`src` read, and the part of it (`picked_part`) a conversion to `dst` writes."""
    source = load(src, from_format)
    try:
        target: str | None = target_format(dst, to, source.format).name
    except ConvertError:  # (the name does not tell: `save` says so)
        target = None
    return picked_part(source, pick, target)


def picking(graph: Graph, paths: Sequence[str]) -> tuple[Graph, str]:
    """`graph` with only the sub-graphs at `paths` (`ckpt migrate --pick`; one path alone
    becomes the root), and a note of what was kept and left out."""
    from convert.core.notes import count, some
    from convert.passes import migrate as migrating

    if len(paths) == 1 and "=" not in paths[0]:
        try:
            out, done = migrating.migrate(graph, root=paths[0])
        except UnsupportedError as exc:  # (said of migrate's --root, which this one is)
            exc.reason = exc.reason.replace("--root ", "--pick ", 1)
            raise
    else:
        out, done = migrating.migrate(graph, pick=paths)
    out.format, out.source, out.files = graph.format, graph.source, list(graph.files)
    kept = len(out.entries())
    if not kept:
        raise UnsupportedError(f"--pick {' '.join(paths)} keeps no tensor", graph.source)
    left = [d["path"] for d in done.dropped]
    note = f"--pick {' '.join(paths)}: kept {count(kept, 'tensor')}"
    return out, note + (f", left out {count(len(left), 'tensor')}: {some(left)}" if left else "")


def _with_folders(src: str | os.PathLike, dst: str | os.PathLike, **kw: Any) -> Report:
    from convert import folders

    ruleset = kw["rules"]
    if ruleset is not None and not hasattr(ruleset, "sides"):
        from convert import rules as rules_pkg

        ruleset = rules_pkg.load(ruleset)
    done = folders.resolve(
        src,
        dst,
        rules=ruleset,
        like=kw["like"],
        reverse=kw["reverse"],
        to=kw["to"],
        overwrite=kw["overwrite"],
    )
    kw.update(rules=ruleset, like=done.like, reverse=done.reverse, to=done.to)
    if done.output is None:
        return convert(done.src, dst, **kw)
    try:
        report = convert(done.src, done.output.path, **kw)
        if not kw["dry_run"]:
            done.output.commit()
    finally:
        done.output.abandon()
    report.destination = os.fspath(dst)
    if done.output.copied:
        report.notes.append(
            f"copied from {os.fspath(done.output.source)} unchanged: "
            f"{', '.join(done.output.copied)}"
        )
    return report


def migrate(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    under: str | None = None,
    root: str | None = None,
    pick: list[str] | tuple[str, ...] = (),
    no_optimizer: bool = False,
    to: str | None = None,
    from_format: str | None = None,
    like: str | os.PathLike | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Report:
    """Read `src`, rewrite its object graph, write `dst` (a TF object checkpoint unless its
    name or `to` says otherwise). `root` makes the object at that path the root; `pick`
    (`PATH` or `PATH=NEWPATH`) keeps only those sub-graphs; `no_optimizer` drops optimizer
    state; `under` puts the result under a new root at that edge. A Keras `.h5` bound for a
    TF checkpoint first gets tf_keras' object layout; `like` aligns to a skeleton first (as
    `convert(like=)` does). `report.migration` says what was moved, kept, dropped, aliased
    and added."""
    from convert.passes import migrate as migration

    picks = [migration.parse_pick(p) for p in pick]  # (a bad request before any reading)
    graph = load(src, from_format)
    source_format = graph.format
    # A name without an extension is a TF checkpoint prefix, whatever the source was (as the
    # fallback `target_format` takes for such a name, in place of the source's format).
    fmt = target_format(dst, to, source_format="tf")
    objects = (
        fmt.name == "tf"
        and not options.get("name_based")
        and graph.root.meta.get(TF_LAYOUT) != "names"
    )  # (a name-based input stays so)
    notes: list[str] = []
    if like is not None:  # select, align to the skeleton, then place under the new root
        from convert import porting

        graph, done = migration.migrate(graph, root=root, pick=picks, no_optimizer=no_optimizer)
        planned, _ = porting.prepare(
            graph, dst, to=fmt.name, rules=None, like=like, check=None, reverse=False
        )
        out, placed = migration.migrate(
            planned.graph, under=under, checkpoint_root=objects, new_root=bool(picks)
        )
        done.aliased, done.added, done.notes = (
            placed.aliased,
            placed.added,
            done.notes + placed.notes,
        )
    else:
        if objects and graph.format == "keras-h5":
            from convert.passes import keras_objects

            if keras_objects.is_keras_h5(graph):
                graph, notes = keras_objects.to_tf_layout(graph)  # tf_keras' object layout
        out, done = migration.migrate(
            graph,
            under=under,
            root=root,
            pick=picks,
            no_optimizer=no_optimizer,
            checkpoint_root=objects,
        )
    if dry_run:
        report = Report(
            graph.source,
            os.fspath(dst),
            source_format,
            fmt.name,
            written=False,
            notes=list(out.notes),
        )
    else:
        report = save(out, dst, fmt.name, overwrite=overwrite, progress=progress, **options)
    report.source_format = source_format
    if like is not None:
        porting.add_notes(report, planned)
    report.notes += notes + done.notes
    report.migration = done.to_dict()
    report.migration["summary"] = done.summary()
    return report
