"""DOT drawn to SVG or PNG by Graphviz's `dot` program (the Debian `graphviz` package, or
what the user has). A subprocess, not a binding: `dot` is what every Graphviz install
has, and the drawing is its whole job. The picture is written through an OutputSet, so a
failed drawing leaves nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from convert.core.errors import ConvertError, UnsupportedError
from convert.io.outputs import OutputSet

INSTALL = "install Graphviz (apt install graphviz, brew install graphviz)"


def render(dot_text: str, path: str | os.PathLike, kind: str, overwrite: bool = False) -> None:
    """`kind`: "svg" or "png"."""
    program = shutil.which("dot")
    if program is None:
        raise UnsupportedError(f"drawing needs Graphviz's dot: {INSTALL}; --dot prints it", path)
    with OutputSet(overwrite) as out:
        tmp = out.path(path)
        done = subprocess.run(
            [program, f"-T{kind}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=600
        )
        if done.returncode != 0 or not done.stdout:
            reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ConvertError(f"dot failed: {reason[0] if reason else done.returncode}", path)
        Path(tmp).write_bytes(done.stdout)


def draw(dot_text: str, svg: str | None, png: str | None, overwrite: bool) -> list[str]:
    """The picture into each file asked for (`--svg`, `--png`); the files drawn."""
    drawn = []
    for kind, target in (("svg", svg), ("png", png)):
        if target:
            render(dot_text, target, kind, overwrite)
            drawn.append(target)
    return drawn
