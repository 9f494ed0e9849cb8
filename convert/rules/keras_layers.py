"""Finding the layers of a Keras 3 file: each object's group is named after its class
(`dense_1`, `batch_normalization`), which decides the kind; the kind names the variables,
which the file numbers in creation order (`vars/0`, ...).

A subclassed model's layers are its attributes (`conv1/vars/0`, `head/vars/1`): their
group names say no class, so the variables' count and ranks decide the kinds, as a torch
module's names and ranks do, and their order is unknown. A nested `Sequential` keeps its
layers under `layers/` numbered by class, which orders each class within it."""

from __future__ import annotations

from convert.core.errors import ConvertError
from convert.core.graph import Graph, Node
from convert.core.meta import KERAS_CONFIG, KERAS_LAYER_INDEX, KERAS_OPTIMIZER, KERAS_WEIGHT_INDEX
from convert.core.tensor import Tensor
from convert.frameworks.keras import config as keras_config
from convert.rules.kinds import KindSpec, Layer, View, counted, keras_groups, specs


def keras_view(graph: Graph) -> View:
    groups = keras_groups()
    layers: list[Layer] = []
    claimed: set[int] = set()
    config = keras_config.parse(graph.values.get(KERAS_CONFIG))
    reads = keras_config.flatten_reads(config)
    flattened = (
        {layer.path: reads[layer.name] for layer in config.layers if layer.name in reads}
        if config is not None
        else {}
    )
    absent = {layer.path: layer.absent() for layer in config.layers} if config else {}
    for path, node in graph.nodes():
        if not path or path[0] == "optimizer":
            continue
        base, counter = counted(path[-1])
        if base not in groups:
            continue
        cls, kind = groups[base]
        spec = specs()["keras"][kind]
        found = _keras_vars(node, spec, "/".join(path), absent.get(path, frozenset()))
        if found is None:
            continue
        indices = [t.meta.get(KERAS_LAYER_INDEX) for t in found.values()]
        ordered = all(isinstance(i, int) for i in indices)
        # (a nested model is one legacy layer: its weights' own order tells its layers')
        within = min((t.meta.get(KERAS_WEIGHT_INDEX) or 0 for t in found.values()), default=0)
        order = (
            (min(i for i in indices if isinstance(i, int)), within)
            if ordered and indices
            else (int(counter or 0),)
        )
        facts, doubt = keras_config.dense_facts(flattened.get(path), found)
        layers.append(
            Layer(path, frozenset({kind}), found, order, cls, ordered, path[:-1], facts, doubt)
        )
        claimed.update(id(t) for t in found.values())
    layers += _attribute_layers(graph, claimed)
    layers.sort(
        key=lambda layer: (
            (layer.cls or "", layer.parent, layer.order) if not layer.ordered else (layer.order,)
        )
    )
    if layers and all(layer.ordered for layer in layers):
        layers.sort(key=lambda layer: layer.order)
    leftover = [
        (e.path, e.tensor)
        for e in graph.entries()
        if id(e.tensor) not in claimed and e.slot is None and not e.tensor.meta.get(KERAS_OPTIMIZER)
    ]
    return View("keras", layers, leftover)


def _attribute_layers(graph: Graph, claimed: set[int]) -> list[Layer]:
    """Layers whose group names no class: kinds from the variables' count and ranks."""
    found: list[Layer] = []
    for path, node in graph.nodes():
        if not path or path[0] == "optimizer" or path[-1] in ("vars", "layers"):
            continue
        if len(path) > 1 and path[-2] == "layers":
            continue  # a model's list names its layers by class: one no kind describes
        own = node.edges.get("vars")
        if not isinstance(own, Node) or any(id(t) in claimed for t in own.edges.values()):
            continue
        kinds: set[str] = set()
        held: dict[str, Tensor] | None = None
        for spec in specs()["keras"].values():
            if not spec.classes:
                continue
            try:
                got = _keras_vars(node, spec, "/".join(path))
            except ConvertError:
                continue
            if got is None or any(
                len(t.shape) != spec.ranks.get(v, len(t.shape)) for v, t in got.items()
            ):
                continue
            if _covers(node, got) and (held is None or got.keys() == held.keys()):
                kinds.add(spec.kind)
                held = got
        if held is None:
            continue
        found.append(Layer(path, frozenset(kinds), held, (0,), None, False, path[:-1]))
        claimed.update(id(t) for t in held.values())
    return found


def _covers(node: Node, held: dict[str, Tensor]) -> bool:
    """Whether `held` is every variable in the object's own `vars` (a kind that accounts
    for a part of them is not this object's)."""
    own = node.edges.get("vars")
    tensors = (
        {id(t) for t in own.edges.values() if isinstance(t, Tensor)}
        if isinstance(own, Node)
        else set()
    )
    return tensors <= {id(t) for t in held.values()}


def _keras_vars(
    node: Node, spec: KindSpec, where: str, absent: frozenset[str] = frozenset()
) -> dict[str, Tensor] | None:
    """The layer's variables by name, from `vars/<i>` of it and its sub-objects (`absent`:
    the optional ones its config says it was built without)."""
    found: dict[str, Tensor] = {}
    subs: dict[str, list[str]] = {}
    for var in spec.vars:
        subs.setdefault(var.rpartition("/")[0], []).append(var)
    for sub, names in subs.items():
        here: Node | Tensor | None = node
        for step in ([*sub.split("/")] if sub else []) + ["vars"]:
            here = here.edges.get(step) if isinstance(here, Node) else None
        tensors = (
            [t for k, t in here.edges.items() if k.isdigit() and isinstance(t, Tensor)]
            if isinstance(here, Node)
            else []
        )
        present = _present([n for n in names if n not in absent], spec, len(tensors), where)
        found.update(zip(present, tensors, strict=True))
    return found or None


def _present(names: list[str], spec: KindSpec, count: int, where: str) -> list[str]:
    """Which of `names` a sub-object holding `count` variables has."""
    required = [n for n in names if n not in spec.optional]
    if count == len(names):
        return names
    if count == len(required):
        return required
    raise ConvertError(
        f"layer {where} ({spec.kind}) holds {count} variables where "
        f"{len(required)} or {len(names)} are expected; which ones it holds "
        "is not recorded (a .keras archive's config says)"
    )


# -- torch and Flax: kinds from variable names and ranks ----------------------------------
