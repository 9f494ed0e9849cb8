"""A tf_keras model inside a TensorFlow object graph, in the order a Keras 2 `.h5` needs.

A legacy `.h5` assigns weights by position: layers with weights in `model.layers` order,
each layer's weights in `layer.weights` order. A TF object checkpoint of a tf_keras
Sequential or functional model (`save_weights(prefix)`: the model is the root;
`tf.train.Checkpoint(model=m)`: under an edge; a SavedModel's variables) records both:
- the model object has edges `layer_with_weights-N` (the layers that have weights, in
  order) and `layer-N` (every layer, weightless ones too);
- a layer's own variables are its edges in creation order, checked against Keras'
  per-class order (`layout.order_by_names`); sub-objects (an RNN's `cell`, Bidirectional's
  `forward_layer`/`backward_layer`, MultiHeadAttention's `_query_dense`, …) follow in
  tracking order, as `layer.weights` gathers them;
- a SavedModel layer also lists `trainable_variables/N` and
  `keras_api/non_trainable_variables/N`, which together are `layer.weights` itself;
- each variable's TF `full_name` is its Keras name without `:0` (`lstm/lstm_cell/kernel`),
  whose first part is the layer's name.

A nested model's weights come in trainable-first order, which depends on flags the
checkpoint does not record: refused unless a SavedModel's lists give them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

from convert.core.errors import UnsupportedError
from convert.core.graph import Entry, Graph, GraphPath, Node
from convert.core.meta import TF_LAYOUT, VARIABLE_NAME
from convert.core.tensor import Tensor
from convert.frameworks.keras import layout

WITH_WEIGHTS = re.compile(r"layer_with_weights-(\d+)")
ANY_LAYER = re.compile(r"layer-(\d+)")
ATTRIBUTE = ".ATTRIBUTES/"
MIGRATE = "ckpt migrate --root PATH"


@dataclass
class KerasModel:
    """What a `.h5` needs: every layer name in order, and each weighted layer's weights."""

    path: GraphPath  # where the model object sits in the graph
    layer_names: list[str] = field(default_factory=list)
    layers: dict[str, list[tuple[str, Tensor]]] = field(default_factory=dict)

    def left_out(self, entries: list[Entry]) -> dict[str, int]:
        """How many of `entries` are not the layers' weights, by their first edge below
        the model (`optimizer`, `keras_api`) or, outside it, from the root."""
        written = {id(t) for weights in self.layers.values() for _, t in weights}
        left: dict[str, int] = {}
        depth = len(self.path)
        for entry in entries:
            if id(entry.tensor) not in written:
                path = entry.path
                if path[:depth] == self.path and len(path) > depth:
                    path = path[depth:]
                left[path[0]] = left.get(path[0], 0) + 1
        return left


def is_object_graph(graph: Graph) -> bool:
    return graph.format == "tf" and graph.root.meta.get(TF_LAYOUT) == "object"


def model_of(graph: Graph) -> KerasModel:
    """The one tf_keras model of a TF object graph, in Keras' order; UnsupportedError when
    there is none, several, or one whose order the checkpoint does not tell."""
    path, node = _the_model(graph)
    where = "/".join(path) or "the root"
    weighted = _numbered(node, WITH_WEIGHTS, where, graph.source)
    listed = _numbered(node, ANY_LAYER, where, graph.source) or weighted
    ids = [id(n) for n in weighted]
    has_weights = set(ids)
    if [id(n) for n in listed if id(n) in has_weights] != ids:
        raise UnsupportedError(
            f"the model at {where}: its layer-N and layer_with_weights-N "
            "edges disagree on the layer order",
            graph.source,
        )
    own = [
        e for e, t in node.edges.items() if isinstance(t, Tensor) and not e.startswith(ATTRIBUTE)
    ]
    if own:
        raise UnsupportedError(
            f"the model at {where} holds variables of its own ({own[0]}), "
            "whose place in a .h5 (top_level_model_weights) the checkpoint "
            "does not tell",
            graph.source,
        )
    model = KerasModel(path)
    names: dict[int, str] = {}
    by_edge: dict[str, list[tuple[GraphPath, Tensor]]] = {}
    for i, layer in enumerate(weighted):
        edge = f"layer_with_weights-{i}"
        weights = _layer_weights(layer, f"{where}/{edge}" if path else edge, graph.source)
        names[id(layer)] = _layer_name(weights, edge)
        by_edge[edge] = weights
    _unique(names, weighted)
    by_name = {names[id(n)]: by_edge[f"layer_with_weights-{i}"] for i, n in enumerate(weighted)}
    model.layer_names = [names.get(id(n), f"layer-{i}") for i, n in enumerate(listed)]
    if len(set(model.layer_names)) != len(model.layer_names):
        raise UnsupportedError(f"the model at {where} has two layers of one name", graph.source)
    for name, weights in by_name.items():
        model.layers[name] = _named(name, weights)
    return model


def _the_model(graph: Graph) -> tuple[GraphPath, Node]:
    found: dict[int, tuple[GraphPath, Node]] = {}
    for path, node in graph.nodes():
        if id(node) not in found and any(WITH_WEIGHTS.fullmatch(e) for e in node.edges):
            found[id(node)] = (path, node)
    if not found:
        raise UnsupportedError(
            "the object graph holds no tf_keras Sequential or functional model (no object "
            "with layer_with_weights-N edges), so the layer order a Keras 2 .h5 needs is not "
            "known; convert the model's own save_weights checkpoint, a full-model .h5 or a "
            ".keras archive",
            graph.source,
        )
    inside = set()
    for key, (_, node) in found.items():
        inside |= _reachable(node) - {key}
    top = [found[k] for k in found if k not in inside] or list(found.values())
    if len(top) != 1:
        names = ", ".join("/".join(p) or "(root)" for p, _ in top)
        raise UnsupportedError(
            f"the checkpoint holds {len(top)} Keras models ({names}) and a "
            f".h5 holds one; pick it with `{MIGRATE}`",
            graph.source,
        )
    return top[0]


def _reachable(start: Node) -> set[int]:
    seen, stack = set(), [start]
    while stack:
        for item in stack.pop().edges.values():
            if type(item) is Node and id(item) not in seen:
                seen.add(id(item))
                stack.append(item)
    return seen


def _numbered(node: Node, pattern: re.Pattern, where: str, source) -> list[Node]:
    """The targets of `pattern` edges by their number, which must run 0, 1, … ."""
    numbered = {}
    for name, item in node.edges.items():
        match = pattern.fullmatch(name)
        if match and type(item) is Node:
            numbered[int(match.group(1))] = item
    if sorted(numbered) != list(range(len(numbered))):
        raise UnsupportedError(
            f"the model at {where}: its {pattern.pattern} edges are not "
            "numbered 0, 1, …; the layer order is not known",
            source,
        )
    return [numbered[i] for i in range(len(numbered))]


def _listed(node: Node, *path: str) -> list[Tensor] | None:
    """A SavedModel's list of variables at `path` below `node` (`variables/0`, …) in index
    order; [] when the list object is absent, None when it is not such a list."""
    item: Node | Tensor | None = node
    for name in path:
        item = item.edges.get(name) if type(item) is Node else None
    if item is None:
        return []
    if type(item) is not Node or not all(
        k.isdigit() and isinstance(t, Tensor) for k, t in item.edges.items()
    ):
        return None
    ordered = sorted(item.edges.items(), key=lambda kv: int(kv[0]))
    return cast("list[Tensor]", [t for _, t in ordered])  # (all Tensors: checked above)


def _saved_model_weights(layer: Node, where: str, source) -> list[tuple[GraphPath, Tensor]] | None:
    """`layer.weights` of a SavedModel layer: its `trainable_variables`, then
    `keras_api/non_trainable_variables` (Keras' `variables` list is in another order for
    a nested model); None when the layer is not a SavedModel's."""
    if type(layer.edges.get("keras_api")) is not Node or "variables" not in layer.edges:
        return None
    every = _listed(layer, "variables")
    trainable = _listed(layer, "trainable_variables")
    frozen = _listed(layer, "keras_api", "non_trainable_variables")
    if (
        every is None
        or trainable is None
        or frozen is None
        or sorted(map(id, every)) != sorted(map(id, trainable + frozen))
    ):
        raise UnsupportedError(f"{where}: its SavedModel variable lists disagree", source)
    weights: list[tuple[GraphPath, Tensor]] = [
        (("trainable_variables", str(i)), t) for i, t in enumerate(trainable)
    ]
    return weights + [(("non_trainable_variables", str(i)), t) for i, t in enumerate(frozen)]


def _layer_weights(layer: Node, where: str, source) -> list[tuple[GraphPath, Tensor]]:
    listed = _saved_model_weights(layer, where, source)
    if listed:
        return listed
    if any(WITH_WEIGHTS.fullmatch(e) for e in layer.edges):
        raise UnsupportedError(
            f"{where} is a nested model: a .h5 lists its weights trainable ones first, which "
            "depends on flags a checkpoint does not record; convert a full-model .h5 or a "
            ".keras archive, or the model's SavedModel",
            source,
        )
    owners: list[tuple[GraphPath, list[tuple[str, Tensor]]]] = []
    _gather(layer, (), owners, set())
    weights = []
    for sub, own in owners:
        names = [n for n, _ in own]
        expected = layout.order_by_names(names)
        if expected != names:
            what = "/".join((where, *sub))
            raise UnsupportedError(
                f"{what} holds variables {', '.join(names)}, "
                + (
                    "whose order in Keras no known layer kind tells"
                    if expected is None
                    else f"which Keras orders {', '.join(expected)}"
                )
                + "; convert a full-model .h5 or a .keras archive",
                source,
            )
        weights += [(sub + (n,), t) for n, t in own]
    stats = [p for p, _ in weights if p[-1] in layout.STATISTICS]
    if stats and len(owners) > 1:
        raise UnsupportedError(
            f"{where} keeps non-trainable statistics ({'/'.join(stats[0])}) among several "
            "sub-objects; their place in a .h5 depends on trainable flags a checkpoint does "
            "not record",
            source,
        )
    if not weights:
        raise UnsupportedError(
            f"{where} is numbered as a layer with weights but holds no variables", source
        )
    return weights


def _gather(node: Node, sub: GraphPath, owners: list, seen: set[int]) -> None:
    """Each object below a layer that holds variables: its own first, then its children's,
    in edge (tracking) order, as tf_keras' `layer.weights` gathers them."""
    own = [
        (name, item)
        for name, item in node.edges.items()
        if isinstance(item, Tensor) and not name.startswith(ATTRIBUTE) and id(item) not in seen
    ]
    seen.update(id(t) for _, t in own)
    if own:
        owners.append((sub, own))
    for name, item in node.edges.items():
        if type(item) is Node and id(item) not in seen:
            seen.add(id(item))
            _gather(item, sub + (name,), owners, seen)


def _layer_name(weights: list[tuple[GraphPath, Tensor]], edge: str) -> str:
    """The first part of the variables' TF names (`lstm` of `lstm/lstm_cell/kernel`) when
    they all have one and agree, as Keras names variables in its layer's scope."""
    heads = set()
    for _, tensor in weights:
        full = tensor.meta.get(VARIABLE_NAME)
        if not isinstance(full, str) or "/" not in full:
            return edge
        heads.add(full.split("/", 1)[0])
    return heads.pop() if len(heads) == 1 and heads != {""} else edge


def _unique(names: dict[int, str], weighted: list[Node]) -> None:
    """Two layers that would share a name keep their edge names instead."""
    taken: dict[str, int] = {}
    for node in weighted:
        taken[names[id(node)]] = taken.get(names[id(node)], 0) + 1
    for i, node in enumerate(weighted):
        if taken[names[id(node)]] > 1:
            names[id(node)] = f"layer_with_weights-{i}"


def _named(layer: str, weights: list[tuple[GraphPath, Tensor]]) -> list[tuple[str, Tensor]]:
    """Keras weight names: each variable's TF name plus `:0`, as tf_keras writes them;
    where one is missing or two clash, the layer's name and the path below it."""
    full = [t.meta.get(VARIABLE_NAME) for _, t in weights]
    if all(isinstance(f, str) and f for f in full) and len(set(full)) == len(full):
        return [(f"{f}:0", t) for f, (_, t) in zip(full, weights, strict=True)]
    return [("/".join((layer, *p)) + ":0", t) for p, t in weights]
