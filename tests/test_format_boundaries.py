"""Each format is a module (or package) of its own under convert/formats: what two formats
share (flat keys, raw tensor bytes, sharding) lives in the core, and a format reaches
another only through the registry. Checked on the source, every import statement,
including those inside functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import convert

FORMATS = Path(convert.__file__).parent / "formats"


def _format_of(module: str) -> str | None:
    """`convert.formats.torch.writer` -> `torch`; None outside convert.formats.<name>."""
    parts = module.split(".")
    if parts[:2] != ["convert", "formats"] or len(parts) < 3:
        return None
    return parts[2]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at `path`."""
    relative = path.relative_to(FORMATS.parent.parent).with_suffix("")
    package = list(relative.parts[:-1])  # (of a package's __init__ too: the package)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from . import objects` names modules too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_no_format_imports_another_format():
    modules = sorted(FORMATS.rglob("*.py"))
    assert len(modules) > 10  # (the walk found the formats)
    crossings = []
    for path in modules:
        if path.parent == FORMATS and path.name == "__init__.py":
            continue  # (the declarations: names and module paths, as strings)
        own = _format_of(".".join(("convert", "formats",
                                   *path.relative_to(FORMATS).with_suffix("").parts)))
        for line, module in _imports(path):
            other = _format_of(module)
            if other is not None and other != own:
                crossings.append(f"{path.relative_to(FORMATS)}:{line} imports {module}")
    assert crossings == []


def test_the_check_sees_a_crossing(tmp_path, monkeypatch):
    """The test above would see a relative import of another format (`from .torch...`)."""
    fake = tmp_path / "convert" / "formats"
    fake.mkdir(parents=True)
    (fake / "safetensors.py").write_text("def f():\n    from .torch.keys import join_path\n")
    monkeypatch.setattr(sys.modules[__name__], "FORMATS", fake)
    assert _imports(fake / "safetensors.py")[0] == (2, "convert.formats.torch.keys")
