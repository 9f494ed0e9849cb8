"""Finding the layers of a file that records no classes by its variables' names and ranks:
torch state dicts, Flax trees (collections are part of a variable's name; `Class_N`
module names narrow the kinds), and Keras 2 files (legacy `.h5`, TF checkpoints, TF1
names), whose sub-objects are renamed to Keras 3's first. A module is a layer when some
kinds account for every tensor directly under it; shorter paths are tried first, so an
attention layer claims its own projections."""

from __future__ import annotations

import re
from collections.abc import Callable

from convert.core.graph import Graph, GraphPath
from convert.core.meta import KERAS_OPTIMIZER, KERAS_WEIGHT_NAME, VARIABLE_NAME
from convert.core.tensor import Tensor
from convert.frameworks.keras import config as keras_config
from convert.rules.kinds import (
    _KERAS2_NAMES,
    _SKIP_ROOTS,
    FLAX_COLLECTIONS,
    KindSpec,
    Layer,
    View,
    class_kinds,
    counted,
    keras_groups,
    specs,
)


def keras2_path(path: GraphPath) -> GraphPath | None:
    """A Keras 2 weight's path with Keras 3's sub-object names (None: not a layer's)."""
    if path[0] in _SKIP_ROOTS or path[0].startswith("(unowned)"):
        return None
    renamed = [path[0]]
    for name in path[1:]:
        for pattern, new in _KERAS2_NAMES:
            if pattern.fullmatch(name):
                name = pattern.sub(new, name)
                break
        renamed.append(name)
    return tuple(renamed)


def named_view(
    graph: Graph,
    framework: str,
    rename: Callable[[GraphPath], GraphPath | None] | None = None,
    config: keras_config.ModelConfig | None = None,
) -> View:
    entries = [
        e for e in graph.entries() if e.slot is None and not e.tensor.meta.get(KERAS_OPTIMIZER)
    ]
    collections = (
        framework == "flax"
        and bool(entries)
        and all(e.path[0] in FLAX_COLLECTIONS and len(e.path) >= 2 for e in entries)
    )
    found = _Found(framework, collections)
    if config is not None:
        found.classes = config.classes()
        found.reads = keras_config.flatten_reads(config)
    original: dict[GraphPath, GraphPath] = {}
    for e in entries:
        path = rename(e.path) if rename else e.path
        if path is None or path in found.tensors:
            continue
        original[path] = e.path
        found.add(path, e.tensor)
    layers: list[Layer] = []
    first_paths: dict[int, list[GraphPath]] = {}
    for module in sorted(found.modules, key=len):
        matched = _match(module, found)
        if matched is not None:
            layer, where = matched
            paths = list(where.values())
            layer.order = (min(found.position[p] for p in paths),)
            layers.append(layer)
            found.claimed.update(paths)
            first_paths[id(layer)] = paths
    layers.sort(key=lambda layer: layer.order)
    if rename:  # report layers at the file's own paths
        for layer in layers:
            first = min((original[p] for p in first_paths[id(layer)]), key=len)
            layer.path = first[: len(layer.path)]
    leftover = [(original.get(p, p), t) for p, t in found.tensors.items() if p not in found.claimed]
    return View(framework, layers, leftover, collections)


class _Found:
    """The tensors of a torch or Flax graph by the module they sit in."""

    def __init__(self, framework: str, collections: bool):
        self.framework = framework
        self.collections = collections
        self.tensors: dict[GraphPath, Tensor] = {}
        self.position: dict[GraphPath, int] = {}
        self.by_module: dict[GraphPath, list[GraphPath]] = {}
        self.modules: dict[GraphPath, None] = {}
        self.claimed: set[GraphPath] = set()
        self.classes: dict[str, str] = {}  # layer name → class, from a model config
        self.reads: dict[str, keras_config.FlattenRead] = {}  # Dense layers after a Flatten

    def add(self, path: GraphPath, tensor: Tensor) -> None:
        module, _ = _split(path, self.framework, self.collections)
        self.position[path] = len(self.tensors)
        self.tensors[path] = tensor
        self.by_module.setdefault(module, []).append(path)
        for depth in range(len(module) + 1):
            self.modules.setdefault(module[:depth])

    def locate(self, module: GraphPath, var: str) -> GraphPath:
        return _locate(module, var, self.framework, self.collections)

    def direct(self, module: GraphPath) -> set[GraphPath]:
        return {p for p in self.by_module.get(module, ()) if p not in self.claimed}


def _split(path: GraphPath, framework: str, collections: bool) -> tuple[GraphPath, str]:
    if framework == "flax":
        if collections:
            return path[1:-1], f"{path[0]}/{path[-1]}"
        return path[:-1], f"params/{path[-1]}"
    return path[:-1], path[-1]


def _locate(module: GraphPath, var: str, framework: str, collections: bool) -> GraphPath:
    """The graph path of variable `var` of the layer at `module`."""
    if framework == "flax":
        collection, _, rest = var.partition("/")
        inner = tuple(rest.split("/"))
        return (collection, *module, *inner) if collections else (*module, *inner)
    return (*module, *var.split("/"))


def _match(module: GraphPath, found: _Found) -> tuple[Layer, dict[str, GraphPath]] | None:
    """The layer at `module` if some kinds account for every tensor directly under it,
    with the path of each of its variables."""
    direct = found.direct(module)
    cls = (
        _flax_class(module)
        if found.framework == "flax"
        else (found.classes.get(module[-1]) if module else None)
        or _keras_class(module, [found.tensors[p] for p in direct])
        if found.framework == "keras"
        else None
    )
    allowed = class_kinds(found.framework, cls)
    kinds, held = set(), None
    for spec in specs()[found.framework].values():
        if allowed is not None and spec.kind not in allowed:
            continue
        if found.framework == "keras" and not spec.classes:
            continue  # a Keras kind no class is (a Dense after Flatten) comes from a config
        got = _fits(spec, module, found, direct)
        if got is not None and (held is None or got[0].keys() == held[0].keys()):
            kinds.add(spec.kind)
            held = got
    if not kinds:
        return None
    assert held is not None  # (set with the first kind that fits)
    facts, doubt = keras_config.dense_facts(
        found.reads.get(module[-1]) if module else None, held[0]
    )
    return Layer(
        module, frozenset(kinds), held[0], cls=cls, parent=module[:-1], facts=facts, doubt=doubt
    ), held[1]


def _fits(
    spec: KindSpec, module: GraphPath, found: _Found, direct: set[GraphPath]
) -> tuple[dict[str, Tensor], dict[str, GraphPath]] | None:
    held: dict[str, Tensor] = {}
    where: dict[str, GraphPath] = {}
    for var in spec.vars:
        path = next(
            (
                p
                for p in (found.locate(module, n) for n in spec.names.get(var, (var,)))
                if p in found.tensors and p not in found.claimed
            ),
            None,
        )
        tensor = found.tensors.get(path) if path is not None else None
        if path is None or tensor is None:
            if var in spec.optional:
                continue
            return None
        where[var] = path
        rank = spec.ranks.get(var)
        if rank is not None and len(tensor.shape) != rank:
            return None
        held[var] = tensor
    paths = set(where.values())
    if not direct <= paths:
        return None
    subs = {_split(p, found.framework, found.collections)[0] for p in paths} - {module}
    if any(not found.direct(sub) <= paths for sub in subs):
        return None  # a sub-object the kind names must be the kind's alone
    if spec.gates and not _gates_fit(spec, held):
        return None
    return held, where


def _gates_fit(spec: KindSpec, found: dict[str, Tensor]) -> bool:
    assert spec.gates is not None  # (asked only of a kind with gates)
    recurrent = found.get(spec.vars[1])
    return recurrent is not None and recurrent.shape[0] == spec.gates * recurrent.shape[1]


def _keras_class(module: GraphPath, tensors: list[Tensor]) -> str | None:
    """`conv2d_transpose_1` → `Conv2DTranspose`: the class a default Keras layer name says,
    from the layer's path or its variables' own names (a TF checkpoint's `full_name`, a
    .h5's weight name: `conv2d_transpose/kernel`). A hint only: a renamed layer's name says
    nothing, and then names and ranks decide."""
    names = [module[-1]] if module else []
    for tensor in tensors:
        own = tensor.meta.get(VARIABLE_NAME) or tensor.meta.get(KERAS_WEIGHT_NAME) or ""
        names += own.split("/")[:-1][-1:]
    for name in names:
        hit = keras_groups().get(counted(name)[0])
        if hit:
            return hit[0]
    return None


def _flax_class(module: GraphPath) -> str | None:
    """`Dense_0` → `Dense`: the class of an unnamed Flax module."""
    if not module:
        return None
    m = re.fullmatch(r"([A-Z][A-Za-z0-9]*)_\d+", module[-1])
    return m.group(1) if m else None
