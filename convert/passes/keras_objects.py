"""tf_keras' own object layout, built from a Keras 2 `.h5` graph: a graph → graph rewrite.

A tf_keras Sequential or functional model saves a TF object checkpoint
(`model.save_weights("prefix")`) as its layers under `layer_with_weights-N` (over the layers
that have weights) and `layer-N` (over all of `model.layers`, the same objects), each
weight under its attribute name (`layer_with_weights-0/kernel`), plus a `root` edge from the
model to itself; a nested model repeats this inside its layer. A `.h5` records the layers in
`model.layers` order (`layer_names`), each layer's weights in order, and each weight's own
name (`d1/kernel:0`), which is enough to rebuild that layout for plain layers. A nested
model's group lists all its weights at once: the full-model file's config says which of its
layers each belongs to; without the config (a weights-only `.h5`) the nesting cannot be
known, and neither can a subclassed model's attribute names: both are refused. Optimizer
weights are left out, with a note.

`to_tf_layout(graph)` is what `api.save` applies when a Keras `.h5` graph goes to a TF
object checkpoint (and what `ckpt migrate` will reuse); the writers never see `.h5` names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from convert.core.errors import UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import (
    KERAS_LAYER,
    KERAS_LAYER_NAMES,
    KERAS_OPTIMIZER,
    KERAS_WEIGHT_INDEX,
    KERAS_WEIGHT_NAME,
    MODEL_CONFIG,
    TF_LAYOUT,
)
from convert.core.tensor import Tensor

MODEL_CLASSES = ("Functional", "Sequential", "Model")
_TF_LAYER = re.compile(r"layer_with_weights-\d+")
HINT = "; load the .h5 into the model with tf_keras and call save_weights(prefix) there"


@dataclass
class _Layer:
    name: str
    weights: list[tuple[str, Tensor]] = field(default_factory=list)  # (weight name, tensor)


def is_keras_h5(graph: Graph) -> bool:
    return graph.format == "keras-h5" and KERAS_LAYER_NAMES in graph.root.meta


def to_tf_layout(graph: Graph) -> tuple[Graph, list[str]]:
    """The same weights in tf_keras' TF checkpoint layout, and notes on what was left out.
    UnsupportedError where the `.h5` does not say the layout."""
    if all(_TF_LAYER.fullmatch(n) for n in graph.root.meta[KERAS_LAYER_NAMES]):
        return graph, []  # a .h5 written from a tf_keras checkpoint: its paths are the layout
    layers = _layers(graph)
    config = _model_config(graph)
    out = Graph(format="tf", source=graph.source, files=list(graph.files), notes=list(graph.notes))
    out.root.meta[TF_LAYOUT] = "object"
    _fill(
        out.root,
        [_Layer(n) for n in graph.root.meta[KERAS_LAYER_NAMES]],
        layers,
        _children(config) if config else None,
        graph.source,
        top=True,
    )
    notes = [
        "written rooted at the model, as its save_weights(prefix) writes it: "
        "model.load_weights restores it (a .h5 records no edge such as "
        "tf.train.Checkpoint(model=...) puts a model under)"
    ]
    dropped = [
        e for e in graph.entries() if e.slot is not None or e.tensor.meta.get(KERAS_OPTIMIZER)
    ]
    if dropped:
        notes.append(
            f"{len(dropped)} optimizer weight(s) were not written: tf_keras' "
            "checkpoint layout for them is not known from a .h5"
        )
    return out, notes


def _layers(graph: Graph) -> dict[str, list[tuple[str, Tensor]]]:
    """Each layer's (weight name, tensor) in `weight_names` order."""
    found: dict[str, list[tuple[int, str, Tensor]]] = {}
    for entry in graph.entries():
        meta = entry.tensor.meta
        if entry.slot is not None or meta.get(KERAS_OPTIMIZER):
            continue
        layer = meta.get(KERAS_LAYER)
        if layer is None or KERAS_WEIGHT_NAME not in meta:
            raise UnsupportedError(
                f"{'/'.join(entry.path)} is not a weight of a Keras layer; "
                "the .h5 layout cannot be rebuilt" + HINT,
                graph.source,
            )
        if layer == "top_level_model_weights":
            raise UnsupportedError(
                "the model has weights of its own (a subclassed model): "
                "its TF checkpoint layout follows attribute names, which a "
                ".h5 does not record" + HINT,
                graph.source,
            )
        found.setdefault(layer, []).append(
            (meta.get(KERAS_WEIGHT_INDEX, 0), meta[KERAS_WEIGHT_NAME], entry.tensor)
        )
    return {
        name: [(w, t) for _, w, t in sorted(items, key=lambda i: i[0])]
        for name, items in found.items()
    }


def _model_config(graph: Graph) -> dict | None:
    text = graph.values.get(MODEL_CONFIG)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _class(cfg: dict) -> str:
    name = str(cfg.get("class_name", "")).split(">")[-1]
    return "Functional" if name == "Model" else name


def _children(cfg: dict) -> list[dict] | None:
    """`model.layers` configs (a Sequential hides its InputLayer); None if not a model."""
    inner = cfg.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if _class(cfg) not in MODEL_CLASSES or not isinstance(layers, list):
        return None
    layers = [c for c in layers if isinstance(c, dict)]
    if _class(cfg) == "Sequential" and layers and _class(layers[0]) == "InputLayer":
        layers = layers[1:]
    return layers


def _name(cfg: dict) -> str:
    inner = cfg.get("config")
    return str(inner.get("name") if isinstance(inner, dict) else cfg.get("name"))


def _subtree(cfg: dict) -> set[str]:
    names = {_name(cfg)}
    for child in _children(cfg) or []:
        names |= _subtree(child)
    return names


def _fill(
    node: Node,
    order: list[_Layer],
    weights: dict[str, list[tuple[str, Tensor]]],
    configs: list[dict] | None,
    source,
    top: bool,
) -> None:
    """Put `order`'s layers under `node` as tf_keras does: `layer_with_weights-i` (then the
    `layer-j` alias) for a layer with weights, `layer-j` alone for one without."""
    by_name = {_name(c): c for c in configs or []}
    with_weights = 0
    for position, layer in enumerate(order):
        own = weights.get(layer.name, [])
        child = Node()
        if own:
            _fill_layer(child, layer.name, own, by_name.get(layer.name), source)
            node.edges[f"layer_with_weights-{with_weights}"] = child
            with_weights += 1
        if top or configs is not None:  # inside a nested model only the config tells
            node.edges[f"layer-{position}"] = child
    if top:
        node.edges["root"] = node  # tf_keras' model tracks itself as `root`


def _fill_layer(
    node: Node, layer: str, own: list[tuple[str, Tensor]], cfg: dict | None, source
) -> None:
    scopes = [w.rsplit(":", 1)[0].split("/") for w, _ in own]
    if all(len(s) == 2 and s[0] == layer for s in scopes):
        for (_, tensor), scope in zip(own, scopes, strict=True):
            node.edges[scope[1]] = tensor
        return
    if any(layer in s[:-1] for s in scopes):
        what = "/".join(next(s for s in scopes if s[0] != layer or len(s) != 2))
        raise UnsupportedError(
            f"layer {layer!r} keeps weight {what!r} in a sub-object or under a subclassed "
            "model's scope, whose attribute names a .h5 does not record" + HINT,
            source,
        )
    kids = _children(cfg) if cfg is not None else None
    if kids is None:
        raise UnsupportedError(
            f"layer {layer!r} is a nested model: a weights-only .h5 does not say the order "
            "of its layers; convert a full-model .h5 (model.save) instead",
            source,
        )
    inner: dict[str, list[tuple[str, Tensor]]] = {}
    for (weight, tensor), scope in zip(own, scopes, strict=True):
        hits = [_name(k) for k in kids if _subtree(k) & set(scope[:-1])]
        if len(hits) != 1:
            raise UnsupportedError(
                f"weight {weight!r} of nested model {layer!r} names "
                f"{'no' if not hits else 'several'} of its layers",
                source,
            )
        inner.setdefault(hits[0], []).append((weight, tensor))
    _fill(node, [_Layer(_name(k)) for k in kids], inner, kids, source, top=False)
