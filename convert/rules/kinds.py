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
plan reports its tensors as unused.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from ..errors import ConvertError, UnsupportedError
from ..graph import Graph, Node
from ..graph import Path as GraphPath
from ..tensor import Tensor
from .keras_config import flatten_facts, snake_case

FRAMEWORKS = ("keras", "torch", "flax")
# The format a graph was read from → the framework whose layer conventions it follows.
_FORMAT_FRAMEWORK = {"keras": "keras", "keras-h5": "keras", "tf": "keras", "torch": "torch",
                     "safetensors": "torch", "sharded": "torch", "flax": "flax"}
# Keras 2 (tf_keras) names a layer's sub-objects otherwise than Keras 3 does: an RNN's cell
# is `lstm_cell` in a .h5 and `cell` in a TF checkpoint; attention's projections are
# `query` or `_query_dense`.
_KERAS2_NAMES = [(re.compile(r"(lstm|gru|simple_rnn)_cell(_\d+)?"), "cell"),
                 (re.compile(r"_?(query|key|value)(_dense)?"), r"\1_dense"),
                 (re.compile(r"_?(attention_output|output_dense)"), "output_dense")]
_SKIP_ROOTS = {"optimizer", "optimizer_weights", "save_counter", "keras_api"}
FLAX_COLLECTIONS = ("params", "batch_stats")
_COUNTER = re.compile(r"(.+?)(?:_(\d+))?\Z")


@dataclass(frozen=True)
class Spec:
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


@dataclass
class Layer:
    """One layer of a graph: its path, its variables by name, and what it may be."""

    path: GraphPath
    kinds: frozenset[str]
    vars: dict[str, Tensor]
    order: tuple = ()  # its place among the file's layers (see `ordered`)
    cls: str | None = None  # the class the file records, if it does
    ordered: bool = True  # False: the file orders it only among layers of its class
    parent: GraphPath = ()
    facts: dict[str, list[int]] = field(default_factory=dict)  # e.g. {"flatten": [h, w, c]}

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


@cache
def specs() -> dict[str, dict[str, Spec]]:
    """framework → kind → Spec, from mappings/kinds.toml."""
    text = resources.files("convert.mappings").joinpath("kinds.toml").read_text("utf8")
    found: dict[str, dict[str, Spec]] = {f: {} for f in FRAMEWORKS}
    for kind, sides in tomllib.loads(text).items():
        for framework, table in sides.items():
            # "kernel|depthwise_kernel?": the name, the other names files use, optional.
            entries = [n.rstrip("?").split("|") for n in table["vars"]]
            found[framework][kind] = Spec(
                kind, framework, tuple(table.get("classes", ())),
                tuple(e[0] for e in entries),
                frozenset(n.rstrip("?").split("|")[0] for n in table["vars"]
                          if n.endswith("?")),
                dict(table.get("ranks", {})), table.get("gates"),
                {e[0]: tuple(e) for e in entries},
                tuple((p["name"], p["kind"], dict(p["vars"])) for p in table.get("parts", ())))
    return found


def _order_by_counters(layers: list[Layer]) -> None:
    """TF1 names come sorted (`dense_10` before `dense_2`): the order is only the one Keras'
    per-class counters give, and the alignment refuses where that is not enough."""
    for layer in layers:
        counter = _COUNTER.match(layer.path[-1]).group(2) if layer.path else None
        layer.order = (int(counter or 0),)
        layer.ordered = False
    layers.sort(key=lambda layer: (layer.cls or "", layer.parent, layer.order))


def _split_parts(layers: list[Layer], framework: str) -> list[Layer]:
    """A layer that is two layers elsewhere (Keras' SeparableConv2D: a depthwise and a 1x1
    convolution in torch and Flax) becomes its parts, each holding its own variables."""
    out: list[Layer] = []
    for layer in layers:
        (kind,) = layer.kinds if len(layer.kinds) == 1 else (None,)
        spec = specs()[framework].get(kind) if kind else None
        if spec is None or not spec.parts:
            out.append(layer)
            continue
        for i, (name, part_kind, names) in enumerate(spec.parts):
            held = {v: layer.vars[w] for v, w in names.items() if w in layer.vars}
            out.append(Layer((*layer.path, name), frozenset({part_kind}), held,
                             (*layer.order, i), layer.cls, layer.ordered, layer.parent,
                             dict(layer.facts)))
    return out


def framework_of(graph: Graph, path: object = None) -> str:
    framework = _FORMAT_FRAMEWORK.get(graph.format or "")
    if framework is None:
        raise UnsupportedError(
            f"layer rules read Keras 3, torch/safetensors and Flax files; a {graph.format} "
            "file does not say which layers it holds", path or graph.source)
    return framework


def view(graph: Graph, framework: str | None = None) -> View:
    """The layers of `graph` by the conventions of its framework."""
    framework = framework or framework_of(graph)
    if framework == "keras" and graph.format == "keras":
        found = _keras_view(graph)
    elif framework == "keras":
        found = _named_view(graph, "keras", _keras2_path)
        if graph.root.meta.get("tf_layout") == "names":
            _order_by_counters(found.layers)
    else:
        found = _named_view(graph, framework)
    found.layers = _split_parts(found.layers, framework)
    return found


def _keras2_path(path: GraphPath) -> GraphPath | None:
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

@cache
def _keras_groups() -> dict[str, tuple[str, str]]:
    """Keras 3 group base name → (class, kind)."""
    return {snake_case(cls): (cls, s.kind) for s in specs()["keras"].values()
            for cls in s.classes}


def keras_index(spec: Spec, var: str, present: set[str] | None = None) -> GraphPath:
    """Where variable `var` of a Keras 3 layer lies below the layer: `sub/vars/<i>`."""
    sub, _, _ = var.rpartition("/")
    names = [v for v in spec.vars if v.rpartition("/")[0] == sub
             and (present is None or v in present)]
    return (*(sub.split("/") if sub else ()), "vars", str(names.index(var)))


def _keras_view(graph: Graph) -> View:
    groups = _keras_groups()
    layers: list[Layer] = []
    claimed: set[int] = set()
    flattened = flatten_facts(graph.metadata.get("keras_config"))
    for path, node in graph.nodes():
        if not path or path[0] == "optimizer":
            continue
        base, counter = _COUNTER.match(path[-1]).groups()
        if base not in groups:
            continue
        cls, kind = groups[base]
        spec = specs()["keras"][kind]
        found = _keras_vars(node, spec, "/".join(path))
        if found is None:
            continue
        indices = [t.meta.get("keras_layer_index") for t in found.values()]
        ordered = all(isinstance(i, int) for i in indices)
        order = (min(indices),) if ordered and indices else (int(counter or 0),)
        facts = flattened.get(path, {})
        if facts:  # a Dense reading a flattened feature map (see keras_config)
            kind = "flatten_dense"
        layers.append(Layer(path, frozenset({kind}), found, order, cls, ordered, path[:-1],
                            dict(facts)))
        claimed.update(id(t) for t in found.values())
    layers.sort(key=lambda layer: (layer.cls, layer.parent, layer.order)
                if not layer.ordered else (layer.order,))
    if layers and all(layer.ordered for layer in layers):
        layers.sort(key=lambda layer: layer.order)
    leftover = [(e.path, e.tensor) for e in graph.entries()
                if id(e.tensor) not in claimed and e.slot is None
                and not e.tensor.meta.get("keras_optimizer")]
    return View("keras", layers, leftover)


def _keras_vars(node: Node, spec: Spec, where: str) -> dict[str, Tensor] | None:
    """The layer's variables by name, from `vars/<i>` of it and its sub-objects."""
    found: dict[str, Tensor] = {}
    subs: dict[str, list[str]] = {}
    for var in spec.vars:
        subs.setdefault(var.rpartition("/")[0], []).append(var)
    for sub, names in subs.items():
        here: Node | Tensor | None = node
        for step in ([*sub.split("/")] if sub else []) + ["vars"]:
            here = here.edges.get(step) if isinstance(here, Node) else None
        tensors = [t for k, t in here.edges.items() if k.isdigit() and isinstance(t, Tensor)] \
            if isinstance(here, Node) else []
        present = _present(names, spec, len(tensors), where)
        found.update(zip(present, tensors, strict=True))
    return found or None


def _present(names: list[str], spec: Spec, count: int, where: str) -> list[str]:
    """Which of `names` a sub-object holding `count` variables has."""
    required = [n for n in names if n not in spec.optional]
    if count == len(names):
        return names
    if count == len(required):
        return required
    raise ConvertError(f"layer {where} ({spec.kind}) holds {count} variables where "
                       f"{len(required)} or {len(names)} are expected; which ones it holds "
                       "is not recorded (a .keras archive's config says)")


# -- torch and Flax: kinds from variable names and ranks ----------------------------------

def _named_view(graph: Graph, framework: str, rename=None) -> View:
    entries = [e for e in graph.entries() if e.slot is None
               and not e.tensor.meta.get("keras_optimizer")]
    collections = framework == "flax" and bool(entries) and all(
        e.path[0] in FLAX_COLLECTIONS and len(e.path) > 2 for e in entries)
    found = _Found(framework, collections)
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
            layer.path = first[:len(layer.path)]
    leftover = [(original.get(p, p), t) for p, t in found.tensors.items()
                if p not in found.claimed]
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


def _match(module: GraphPath, found: _Found
           ) -> tuple[Layer, dict[str, GraphPath]] | None:
    """The layer at `module` if some kinds account for every tensor directly under it,
    with the path of each of its variables."""
    direct = found.direct(module)
    cls = _flax_class(module) if found.framework == "flax" else \
        _keras_class(module, [found.tensors[p] for p in direct]) \
        if found.framework == "keras" else None
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
    return Layer(module, frozenset(kinds), held[0], cls=cls, parent=module[:-1]), held[1]


def _fits(spec: Spec, module: GraphPath, found: _Found, direct: set[GraphPath]
          ) -> tuple[dict[str, Tensor], dict[str, GraphPath]] | None:
    held: dict[str, Tensor] = {}
    where: dict[str, GraphPath] = {}
    for var in spec.vars:
        path = next((p for p in (found.locate(module, n) for n in spec.names.get(var, (var,)))
                     if p in found.tensors and p not in found.claimed), None)
        tensor = found.tensors.get(path) if path is not None else None
        if tensor is None:
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


def _gates_fit(spec: Spec, found: dict[str, Tensor]) -> bool:
    recurrent = found.get(spec.vars[1])
    return recurrent is not None and recurrent.shape[0] == spec.gates * recurrent.shape[1]


def _keras_class(module: GraphPath, tensors: list[Tensor]) -> str | None:
    """`conv2d_transpose_1` → `Conv2DTranspose`: the class a default Keras layer name says,
    from the layer's path or its variables' own names (a TF checkpoint's `full_name`, a
    .h5's weight name: `conv2d_transpose/kernel`). A hint only: a renamed layer's name says
    nothing, and then names and ranks decide."""
    names = [module[-1]] if module else []
    for tensor in tensors:
        own = tensor.meta.get("tf_full_name") or tensor.meta.get("keras_weight_name") or ""
        names += own.split("/")[:-1][-1:]
    for name in names:
        hit = _keras_groups().get(_COUNTER.match(name).group(1))
        if hit:
            return hit[0]
    return None


def _flax_class(module: GraphPath) -> str | None:
    """`Dense_0` → `Dense`: the class of an unnamed Flax module."""
    if not module:
        return None
    m = re.fullmatch(r"([A-Z][A-Za-z0-9]*)_\d+", module[-1])
    return m.group(1) if m else None
