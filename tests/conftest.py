"""Shared test helpers. Each format's golden files are made by the real framework in
session-scoped fixtures of that format's own test folder."""

from __future__ import annotations

import ast
import functools
import inspect
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str | os.PathLike) -> CliResult:
    """Run `ckpt` in a fresh process, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "convert", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def ckpt():
    return run_cli


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A user error: exit 2, one line on stderr, no traceback, naming what is wrong."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def listing(directory: Path) -> set[str]:
    """Every file name under `directory` (to prove nothing was left behind)."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# -- the fast tier ------------------------------------------------------------------------
# `scripts/test --fast` (pytest --fast): only the tests that need no framework, as the core
# install has it. A test needs a framework when its module, a test helper module it
# imports, or the module of a fixture it uses imports one (anywhere, inside functions too)
# or asks pytest.importorskip for one, or it is marked `frameworks` (a framework run in a
# subprocess of another environment); a folder whose conftest.py imports one when it loads
# is left out whole.

FRAMEWORKS = frozenset(
    {
        "tensorflow",
        "tf_keras",
        "keras",
        "keras_hub",
        "torch",
        "jax",
        "flax",
        "transformers",
        "safetensors",
        "timm",
        "distributed",
        "dask",
        "hypothesis",
        "psutil",
        "deepspeed",
    }
)
TESTS = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="Run only the tests that need no framework (the core install).",
    )


def _imports(path: Path, top_level_only: bool = False) -> tuple[set[str], set[Path]]:
    """The top-level module names `path` imports (or asks importorskip for), and the test
    helper modules it imports."""
    tree = ast.parse(path.read_text(encoding="utf8"), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    helpers: set[Path] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                targets = [node.module] if node.module else [a.name for a in node.names]
                for target in targets:
                    helper = base.joinpath(*target.split(".")).with_suffix(".py")
                    if helper.exists():
                        helpers.add(helper)
            elif node.module and node.module.split(".")[0] == "tests":
                helper = TESTS.parent.joinpath(*node.module.split(".")).with_suffix(".py")
                if helper.exists():
                    helpers.add(helper)
            else:
                names.add((node.module or "").split(".")[0])
        if top_level_only and isinstance(node, ast.Assign):
            node = node.value
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value).split(".")[0])
    return names, helpers


@functools.cache
def needs_frameworks(path: Path, when_loaded: bool = False) -> bool:
    """Whether the module at `path`, or a test helper module it imports, imports a
    framework (`when_loaded`: as it loads, not inside its functions)."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        here = todo.pop()
        if here in seen:
            continue
        seen.add(here)
        names, helpers = _imports(here, top_level_only=when_loaded)
        if names & FRAMEWORKS:
            return True
        todo.extend(helpers)
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not config.getoption("--fast"):
        return None
    if collection_path.is_dir():
        conftest = collection_path / "conftest.py"
        if conftest.exists() and needs_frameworks(conftest, when_loaded=True):
            return True
        return None
    if (
        collection_path.suffix == ".py"
        and collection_path.name != "conftest.py"
        and needs_frameworks(collection_path)
    ):
        return True
    return None


# Run in parallel (scripts/test: pytest-xdist, `--dist loadgroup`), a folder's tests stay
# on one worker, so that its session fixtures (models the frameworks train and save, a
# torchrun job) are built once; the folders in SPLIT_BY_FILE have no costly shared fixture
# and many tests, and go file by file.
SPLIT_BY_FILE = frozenset({"rules"})


def _group(item: pytest.Item) -> str:
    parts = Path(str(item.path)).relative_to(TESTS).parts
    if len(parts) == 1 or parts[0] in SPLIT_BY_FILE:
        return "/".join(parts)
    return parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            item.add_marker(pytest.mark.xdist_group(_group(item)))
    if not config.getoption("--fast"):
        return
    kept, left = [], []
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        modules = {
            inspect.getsourcefile(d.func)
            for name in getattr(item, "fixturenames", ())
            for d in (defs.name2fixturedefs.get(name, ()) if defs else ())
        }
        if item.get_closest_marker("frameworks") is not None or any(
            m and needs_frameworks(Path(m)) for m in modules
        ):
            left.append(item)
        else:
            kept.append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept
