"""The format registry: each format module registers a name, its extensions and
`sniff` / `read` / `write`. Content sniffing wins over the file name."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConvertError, UnsupportedError
from .graph import Graph


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    extensions: tuple[str, ...]  # e.g. (".safetensors",); matched on the end of the name
    sniff: Callable[[Path], bool]  # cheap look at the path / first bytes; never raises
    read: Callable[[Path], Graph] | None = None
    write: Callable[..., Any] | None = None  # write(graph, path, *, overwrite, inputs, **opts)


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> dict[str, Format]:
    _load_builtin()
    return dict(_FORMATS)


def get(name: str) -> Format:
    _load_builtin()
    try:
        return _FORMATS[name]
    except KeyError:
        raise UnsupportedError(
            f"unknown format {name!r}; known: {', '.join(sorted(_FORMATS))}") from None


def by_extension(path: str | os.PathLike) -> Format | None:
    """The format whose longest registered extension ends the name."""
    _load_builtin()
    name = os.fspath(path).lower()
    best: tuple[int, Format] | None = None
    for fmt in _FORMATS.values():
        for ext in fmt.extensions:
            if name.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), fmt)
    return best[1] if best else None


def detect(path: str | os.PathLike) -> Format:
    """The format of an existing input, by content first, then by name."""
    _load_builtin()
    path = Path(path)
    for fmt in _FORMATS.values():
        if fmt.read is not None and fmt.sniff(path):
            return fmt
    if not path.exists() and not _has_siblings(path):
        raise ConvertError("no such file or directory", path)
    raise ConvertError(
        "is not a checkpoint this tool reads (expected a TensorFlow checkpoint prefix, "
        ".index or .data file or directory, or a file of: "
        + ", ".join(sorted({e for f in _FORMATS.values() for e in f.extensions})) + ")",
        path)


def _has_siblings(path: Path) -> bool:
    """A TF prefix names no file itself; its `.index` is what exists."""
    return path.parent.is_dir() and any(path.parent.glob(path.name + ".*"))


def _load_builtin() -> None:
    from . import formats  # noqa: F401  (registers the built-in formats on import)
