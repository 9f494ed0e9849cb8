"""The Python face: load, save, convert."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load(path: str | os.PathLike, format: str | None = None) -> Graph:
    """Read any supported checkpoint into a Graph (lazily: no tensor data is read)."""
    fmt = registry.get(format) if format else registry.detect(path)
    graph = fmt.read(Path(path))
    graph.format = graph.format or fmt.name
    graph.source = graph.source or os.fspath(path)
    return graph


def target_format(path: str | os.PathLike, format: str | None = None,
                  source_format: str | None = None) -> registry.Format:
    """The format asked for; else the one the name says; else a directory means a TF
    checkpoint directory; else the source's own format (a rewrite)."""
    if format:
        return registry.get(format)
    fmt = registry.by_extension(path)
    if fmt is not None:
        return fmt
    if Path(path).is_dir() or os.fspath(path).endswith(os.sep):
        return registry.get("tf")
    if source_format:
        return registry.get(source_format)
    raise registry.UnsupportedError(
        "cannot tell the output format from the name; pass --to FORMAT "
        f"({', '.join(sorted(registry.formats()))})", path)


def save(graph: Graph, path: str | os.PathLike, format: str | None = None, *,
         overwrite: bool = False, progress: Progress | None = None, **options: Any) -> Report:
    """Write `graph` to `path`; the format comes from `format` or the file name."""
    fmt = target_format(path, format, graph.format)
    _check_options(fmt, options, path)
    inputs = tuple(graph.files)
    report = Report(graph.source, os.fspath(path), graph.format, fmt.name,
                    notes=list(graph.notes))
    fmt.write(graph, Path(path), overwrite=overwrite, inputs=inputs,
              progress=progress, report=report, **options)
    return report


def _check_options(fmt: registry.Format, options: dict[str, Any], path) -> None:
    """An option the writer does not take is the user's mistake, said as such."""
    for name in options:
        if name not in fmt.options:
            raise registry.UnsupportedError(
                f"{fmt.name} output does not take the option {name.replace('_', '-')!r}", path)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, to: str | None = None,
            from_format: str | None = None, overwrite: bool = False,
            progress: Progress | None = None, **options: Any) -> Report:
    """Read `src` and write it to `dst`, one tensor at a time."""
    graph = load(src, from_format)
    return save(graph, dst, to, overwrite=overwrite, progress=progress, **options)
