"""One file ↔ one graph: `load` reads any checkpoint lazily, `save` writes a graph in the
format asked for or named, and the `Report` says what was written. The plain conversion
the rest builds on (porting through rules, migration, batches), without any rules."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.core import registry
from convert.core.errors import FileAccessError, UnsupportedError
from convert.core.report import Report

if TYPE_CHECKING:  # (the graph imports numpy, which `ckpt --version` does not need)
    from convert.core.graph import Graph

Progress = Callable[[int], None]  # called with the bytes of each tensor written


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


def target_format(
    path: str | os.PathLike, format: str | None = None, source_format: str | None = None
) -> registry.Format:
    """The format asked for; else the one the name says; else a number inside an Orbax
    manager's folder is its next step, and a directory means a TF checkpoint directory;
    else, for a name without an extension, the source's own format (a rewrite). An
    extension no format owns is refused: it is a typo or a format this tool does not
    write, and a file of another format under that name would mislead."""
    if format:
        return _writable(registry.get(format), path)
    # (a TF step number is no extension: `model.ckpt-1000` is a `.ckpt` prefix)
    fmt = registry.by_extension(re.sub(r"-\d+$", "", os.fspath(path)))
    if fmt is not None:
        return fmt
    if _orbax_step(Path(path)):
        return registry.get("orbax")
    if Path(path).is_dir() or _names_directory(path):
        return registry.get("tf")
    known = ", ".join(sorted(registry.output_formats()))
    suffix = Path(path).suffix
    if suffix:
        raise UnsupportedError(
            f"no format writes {suffix!r} files; pass {{to}} ({known}) to write one anyway",
            path,
            {"to": "format="},
        )
    if source_format:
        return _writable(registry.get(source_format), path)
    raise UnsupportedError(
        f"cannot tell the output format from the name; pass {{to}} ({known})",
        path,
        {"to": "format="},
    )


def _orbax_step(path: Path) -> bool:
    """A number inside an Orbax `CheckpointManager` folder (one with steps) is a new step."""
    orbax = registry.get("orbax")
    return path.name.isdigit() and path.parent.is_dir() and orbax.sniff(path.parent)


def _writable(fmt: registry.Format, path: str | os.PathLike) -> registry.Format:
    if not fmt.writes:
        known = ", ".join(registry.output_formats())
        raise UnsupportedError(
            f"{fmt.name} is read, not written: pass {{to}} ({known})", path, {"to": "format="}
        )
    return fmt


def _names_directory(path: str | os.PathLike) -> bool:
    """A name ending in a separator (`out/newdir/`) means a directory, existing or not."""
    return os.fspath(path).endswith((os.sep, "/"))


def save(
    graph: Graph,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Report:
    """Write `graph` to `path`; the format comes from `format` or the file name."""
    fmt = target_format(path, format, graph.format)
    if _names_directory(path):  # (a Path drops the trailing `/`: the writer is told)
        if "directory" not in fmt.options:
            raise UnsupportedError(
                f"names a directory (it ends in {os.sep!r}), but {fmt.name} output is a file: "
                "name the file",
                path,
            )
        options = {**options, "directory": True}
    _check_options(fmt, options, path)
    inputs = tuple(graph.files)
    report = Report(graph.source, os.fspath(path), graph.format, fmt.name, notes=list(graph.notes))
    if fmt.name == "tf" and not options.get("name_based") and graph.format == "keras-h5":
        from convert.passes import keras_objects  # (imports numpy: only when it is needed)

        if keras_objects.is_keras_h5(graph):
            graph, notes = keras_objects.to_tf_layout(graph)  # tf_keras' own object layout
            report.notes += notes
    try:
        fmt.write(
            graph,
            Path(path),
            overwrite=overwrite,
            inputs=inputs,
            progress=progress,
            report=report,
            **options,
        )
    except OSError as exc:
        raise FileAccessError.from_os_error(exc) from None
    return report


def _check_options(fmt: registry.Format, options: dict[str, Any], path) -> None:
    """An option the writer does not take is the user's mistake, said as such."""
    for name in options:
        if name not in fmt.options:
            raise UnsupportedError(
                f"{fmt.name} output does not take the option {{{name}}}", path, {name: name}
            )
