"""The layers keep to their rooms, read from the source's own import statements (ast, so
that imports inside functions and under TYPE_CHECKING count too):

- no format module (a reader or a writer) imports the rules: a plan reaches a writer as a
  graph whose leaves are lazy tensors, never as rules;
- the rules import no format module: they work on graphs, whatever file they came from
  (the registry's records say which framework a format follows and its key separator).
"""

from __future__ import annotations

import ast
from pathlib import Path

import convert

PACKAGE = Path(convert.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, as absolute dotted names (`from . import x` counts as
    both the package and `package.x`, since x may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules_under(*parts: str) -> list[Path]:
    found = sorted(PACKAGE.joinpath(*parts).rglob("*.py"))
    assert found, parts
    return found


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_scanner_sees_relative_and_nested_imports():
    """(Against the modules whose imports are known: else the tests below prove nothing.)"""
    assert "convert.rules" in imported(PACKAGE / "mapping.py")  # `from . import rules`
    registry = imported(PACKAGE / "registry.py")
    assert "convert.formats" in registry  # an import inside a function
    reader = imported(PACKAGE / "formats" / "torch" / "zipreader.py")
    assert "convert.graph.Graph" in reader and "convert.formats.torch.unpickler" in reader


def test_no_format_imports_the_rules():
    offenders = {module_name(path): sorted(n for n in imported(path)
                                           if inside(n, "convert.rules"))
                 for path in modules_under("formats")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_rules_import_no_format():
    """(The registry's records they may read: which framework a format's files follow and
    its key separator are facts of the format, owned there; reading them imports no
    format module.)"""
    offenders = {module_name(path): sorted(n for n in imported(path)
                                           if inside(n, "convert.formats"))
                 for path in modules_under("rules")}
    assert {k: v for k, v in offenders.items() if v} == {}
