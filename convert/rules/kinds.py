"""Layer kinds, and finding the layers of a graph: what each file says of its layers.

The kinds are data (`mappings/kinds.toml`): per framework, the variables a layer of a kind
holds, their ranks, and the class names that are that kind. A *layer* is one object of a
graph with its variables by the framework's own names (`kernel`, `cell/bias`,
`params/scale`) and the kinds it may be:
- Keras 3 files name each object's group after its class (`dense_1`, `batch_normalization`)
  and number its variables in creation order (`vars/0`, ...): the class decides the kind
  and the kind names the variables;
- torch state dicts record no class: parameter names and ranks decide, and where they leave
  more than one kind (a 4-D `weight` and a `bias` are a Conv2d or a ConvTranspose2d) the
  layer keeps them all, for the alignment to settle against the other side;
- Flax trees name unnamed modules `Class_N`, which narrows the kinds; collections
  (`params`, `batch_stats`) are part of a variable's name.
Nothing is guessed from a shape alone: a layer no kind accounts for is left out, and the
plan reports its tensors as unused. `keras_layers.py` finds a Keras 3 file's layers,
`named_layers.py` those of the files that record no classes; `view` here picks one.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from convert.core import registry
from convert.core.graph import GraphPath
from convert.core.tensor import Tensor
from convert.frameworks.keras.names import snake_case

FRAMEWORKS = ("keras", "torch", "flax")
# Keras 2 (tf_keras) names a layer's sub-objects otherwise than Keras 3 does: an RNN's cell
# is `lstm_cell` in a .h5 and `cell` in a TF checkpoint; attention's projections are
# `query` or `_query_dense`.
_KERAS2_NAMES = [
    (re.compile(r"(lstm|gru|simple_rnn)_cell(_\d+)?"), "cell"),
    (re.compile(r"(forward|backward)_(lstm|gru|simple_rnn)(_\d+)?"), r"\1_layer"),
    (re.compile(r"_?(query|key|value)(_dense)?"), r"\1_dense"),
    (re.compile(r"_?(attention_output|output_dense)"), "output_dense"),
]
_SKIP_ROOTS = {"optimizer", "optimizer_weights", "save_counter", "keras_api"}
FLAX_COLLECTIONS = ("params", "batch_stats")
COUNTER = re.compile(r"(.+?)(?:_(\d+))?\Z")


def counted(name: str) -> tuple[str, str | None]:
    """A name's base and Keras counter: `dense_2` → ("dense", "2"), `dense` → ("dense", None)."""
    found = COUNTER.match(name)
    assert found is not None  # (COUNTER matches every name but "", which no layer has)
    return found.group(1), found.group(2)


@dataclass(frozen=True)
class KindSpec:
    """How one framework holds a layer of one kind."""

    kind: str
    framework: str
    classes: tuple[str, ...]
    vars: tuple[str, ...]  # in creation order, without the `?`
    optional: frozenset[str]
    ranks: dict[str, int]
    gates: int | None = None  # recurrent layers: rows of the recurrent weight per column
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # var → names in files
    parts: tuple[tuple[str, str, dict[str, str]], ...] = ()  # (name, kind, part var → var)

    def required(self) -> list[str]:
        return [v for v in self.vars if v not in self.optional]


@dataclass(eq=False)  # (a layer is itself: two with equal fields are two layers)
class Layer:
    """One layer of a graph: its path, its variables by name, and what it may be."""

    path: GraphPath
    kinds: frozenset[str]
    vars: dict[str, Tensor]
    order: tuple[int, ...] = ()  # its place among the file's layers (see `ordered`)
    cls: str | None = None  # the class the file records, if it does
    ordered: bool = True  # False: the file orders it only among layers of its class
    parent: GraphPath = ()
    facts: dict[str, list[int]] = field(default_factory=dict)  # e.g. {"flatten": [h, w, c]}
    doubt: str | None = None  # why the file leaves the layer's reading open (see plan.py)

    @property
    def name(self) -> str:
        return "/".join(self.path) or "(root)"


@dataclass
class View:
    """The layers of a graph, in file order, and the tensors no layer accounts for."""

    framework: str
    layers: list[Layer]
    leftover: list[tuple[GraphPath, Tensor]] = field(default_factory=list)
    collections: bool = True  # Flax: whether the tree is split into collections


def specs() -> dict[str, dict[str, KindSpec]]:
    """framework → kind → KindSpec: mappings/kinds.toml, and the `[[kind]]` tables of the rule
    file in use (`declared`)."""
    extra = _DECLARED.get()
    if not extra:
        return _builtin()
    return {f: {**_builtin()[f], **extra.get(f, {})} for f in FRAMEWORKS}


@cache
def _builtin() -> dict[str, dict[str, KindSpec]]:
    found: dict[str, dict[str, KindSpec]] = {f: {} for f in FRAMEWORKS}
    for kind, sides in _kinds_table().items():
        for framework, table in sides.items():
            if isinstance(table, dict):
                found[framework][kind] = spec_of(kind, framework, table)
    return found


def spec_of(kind: str, framework: str, table: dict[str, Any]) -> KindSpec:
    """A KindSpec from its TOML table (kinds.toml, or a rule file's `[[kind]]`)."""
    # "kernel|depthwise_kernel?": the name, the other names files use, optional.
    entries = [n.rstrip("?").split("|") for n in table["vars"]]
    return KindSpec(
        kind,
        framework,
        tuple(table.get("classes", ())),
        tuple(e[0] for e in entries),
        frozenset(n.rstrip("?").split("|")[0] for n in table["vars"] if n.endswith("?")),
        dict(table.get("ranks", {})),
        table.get("gates"),
        {e[0]: tuple(e) for e in entries},
        tuple((p["name"], p["kind"], dict(p["vars"])) for p in table.get("parts", ())),
    )


_DECLARED: ContextVar[dict[str, dict[str, KindSpec]] | None] = ContextVar("declared", default=None)


@contextmanager
def declared(kinds: dict[str, dict[str, KindSpec]]) -> Iterator[None]:
    """The kinds a rule file declares, beside the built-in ones, while a plan is made."""
    token = _DECLARED.set(kinds or None)
    try:
        yield
    finally:
        _DECLARED.reset(token)


def mappings() -> Traversable:
    """The built-in rule files: the package data `convert.mappings` once installed, else
    (run from a source checkout, where `mappings/` sits beside `convert/`) that folder."""
    try:
        return resources.files("convert.mappings")
    except ModuleNotFoundError:
        return resources.files("convert").joinpath("..", "mappings")


@cache
def _kinds_table() -> dict[str, Any]:
    text = mappings().joinpath("kinds.toml").read_text("utf8")
    return tomllib.loads(text)


@cache
def variants() -> dict[str, frozenset[str]]:
    """kind → the kinds a layer of that kind may also be (`variant_of` in kinds.toml),
    both ways: a dense layer may read a flattened map, and such a layer is a dense one."""
    found: dict[str, set[str]] = {}
    for kind, table in _kinds_table().items():
        base = table.get("variant_of")
        if isinstance(base, str):
            found.setdefault(base, set()).add(kind)
            found.setdefault(kind, set()).add(base)
    return {k: frozenset(v) for k, v in found.items()}


def with_variants(kinds: frozenset[str]) -> frozenset[str]:
    return kinds.union(*(variants().get(k, ()) for k in kinds))


def framework_of_format(fmt: str | None) -> str | None:
    """The framework whose layer conventions files of format `fmt` follow (None: none);
    the format's record in the registry says."""
    return registry.framework_of(fmt)


def class_kinds(framework: str, cls: str | None) -> frozenset[str] | None:
    """The kinds a class is, or None when the class names no kind."""
    if cls is None:
        return None
    found = frozenset(s.kind for s in specs()[framework].values() if cls in s.classes)
    if not found:
        return None
    # Kinds no class declares (a Dense that reads a flattened map) stay possible.
    return found | {s.kind for s in specs()[framework].values() if not s.classes}


# -- Keras 3: classes from group names, variables by index --------------------------------


def keras_groups() -> dict[str, tuple[str, str]]:
    """Keras 3 group base name → (class, kind) (asked per module: the built-in table is
    made once, a rule file's kinds added on top)."""
    extra = (_DECLARED.get() or {}).get("keras")
    if not extra:
        return _builtin_groups()
    return {**_builtin_groups(), **_groups_of(extra.values())}


@cache
def _builtin_groups() -> dict[str, tuple[str, str]]:
    return _groups_of(_builtin()["keras"].values())


def _groups_of(found: Iterable[KindSpec]) -> dict[str, tuple[str, str]]:
    return {snake_case(cls): (cls, s.kind) for s in found for cls in s.classes}


def keras_group(name: str) -> tuple[str, str] | None:
    """(class, kind) of a Keras 3 group name (`separable_conv2d_1`), if it names one."""
    return keras_groups().get(counted(name)[0])


def keras_index(spec: KindSpec, var: str, present: set[str] | None = None) -> GraphPath:
    """Where variable `var` of a Keras 3 layer lies below the layer: `sub/vars/<i>`."""
    sub, _, _ = var.rpartition("/")
    names = [
        v for v in spec.vars if v.rpartition("/")[0] == sub and (present is None or v in present)
    ]
    return (*(sub.split("/") if sub else ()), "vars", str(names.index(var)))
