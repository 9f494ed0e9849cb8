"""The layers keep to their rooms, read from the source's own import statements (ast, so
that imports inside functions and under TYPE_CHECKING count too).

The floors, from the bottom (docs/architecture.md draws them):
- `core` (graph, tensor, dtypes, errors, notes, meta keys, the format registry) and `io`
  (bytes in and out) import nothing above them;
- `frameworks` (the naming and layout conventions formats and rules share) imports only
  core and io;
- `formats` and `rules` stand on those three and never import each other: a plan reaches
  a writer as a graph whose leaves are lazy tensors, never as rules, and the rules read
  which framework a format follows from the registry's records, not from its module;
  `passes` (graph → graph rewrites) stand on the same three;
- no format imports another: what two formats share lives in a module under
  `convert/formats/` that the registry names as no format's (`sharding`);
- the jobs (`api`, `porting`, `folders`, `compare`, `batches`) and then `cli` sit on top;
- nothing imports in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import convert
from convert.core import registry

PACKAGE = Path(convert.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(path) for path in MODULES}


def imported(path: Path) -> set[str]:
    """Every module of this package that `path` imports, as absolute dotted names:
    `from x import y` counts as `x.y` where that is a module, else as `x`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in NAMES else module)
    return {n for n in found if n in NAMES}


IMPORTS = {module_name(path): imported(path) for path in MODULES}


def floor(name: str) -> str:
    """The floor a module stands on: the package right under `convert`, or the module."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


# Each floor and the floors it may import (its own included).
BELOW = {
    "core": {"core"},
    "io": {"core", "io"},
    "frameworks": {"core", "io", "frameworks"},
    "formats": {"core", "io", "frameworks", "formats"},
    "rules": {"core", "io", "frameworks", "rules"},
    "passes": {"core", "io", "frameworks", "passes"},
}


def test_the_scanner_sees_nested_and_typing_imports():
    """(Against the modules whose imports are known: else the tests below prove nothing.)"""
    assert "convert.rules" in IMPORTS["convert.porting"]
    assert "convert.rules.emit" in IMPORTS["convert.porting"]  # inside a function
    reader = IMPORTS["convert.formats.torch.zipreader"]
    assert "convert.core.graph" in reader and "convert.formats.torch.unpickler" in reader
    assert "convert.core.graph" in IMPORTS["convert.loadsave"]  # under TYPE_CHECKING


@pytest.mark.parametrize("room", sorted(BELOW))
def test_each_floor_imports_only_the_floors_below(room):
    offenders = {
        name: sorted(n for n in found if floor(n) not in BELOW[room])
        for name, found in IMPORTS.items()
        if floor(name) == room
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _format_of(name: str) -> str | None:
    """The registry's format module (or package) that `name` belongs to, or None for a
    module under convert/formats that serves several formats."""
    for fmt in registry.formats().values():
        if name == fmt.module or name.startswith(fmt.module + "."):
            return fmt.module
    return None


def test_no_format_imports_another_format():
    crossings = []
    for name, found in IMPORTS.items():
        if floor(name) != "formats" or name == "convert.formats":
            continue
        own = _format_of(name)
        for other in found:
            theirs = _format_of(other)
            if theirs is not None and theirs != own:
                crossings.append(f"{name} imports {other}")
            elif own is None and theirs is not None:
                crossings.append(f"{name} (shared by formats) imports {other}")
    assert crossings == []


def test_no_import_circles():
    """Tarjan's strongly connected components of the import graph (explicit imports
    only: a module's parent packages are imported before it by Python itself, which makes
    no circle of the code's own)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for other in sorted(IMPORTS[name] - {name}):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in on_stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == name:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for name in sorted(IMPORTS):
        if name not in index:
            visit(name)
    assert circles == []


def test_every_module_is_under_400_lines():
    long = {
        module_name(p): n
        for p in MODULES
        if (n := len(p.read_text(encoding="utf8").splitlines())) > 400
    }
    assert long == {}
