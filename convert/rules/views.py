"""The layers of a graph, found by the conventions of the framework its format follows:
a Keras 3 file by its groups' class names (`keras_layers.py`), a file that records no
classes by its variables' names and ranks (`named_layers.py`), a full-model `.h5` by its
config's class names; then layers that hold parts (a separable convolution's depthwise
and pointwise kernels) split into one layer per part."""

from __future__ import annotations

from convert.core import registry
from convert.core.errors import UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import MODEL_CONFIG, TF_LAYOUT
from convert.frameworks.keras import config as keras_config
from convert.rules.keras_layers import keras_view
from convert.rules.kinds import Layer, View, counted, specs
from convert.rules.named_layers import keras2_path, named_view


def framework_of(graph: Graph, path: str | None = None) -> str:
    framework = registry.framework_of(graph.format)
    if framework is None:
        raise UnsupportedError(
            f"layer rules read Keras 3, torch/safetensors and Flax files; a {graph.format} "
            "file does not say which layers it holds",
            path or graph.source,
        )
    return framework


def view(graph: Graph, framework: str | None = None) -> View:
    """The layers of `graph` by the conventions of its framework."""
    framework = framework or framework_of(graph)
    if framework == "keras" and graph.format == "keras":
        found = keras_view(graph)
    elif framework == "keras":  # (a full-model .h5's config names each layer's class)
        config = keras_config.parse(graph.values.get(MODEL_CONFIG))
        found = named_view(graph, "keras", keras2_path, config)
        if graph.root.meta.get(TF_LAYOUT) == "names":
            _order_by_counters(found.layers)
    elif framework == "flax" and _nnx_state(graph):
        found = named_view(graph, framework, _without_value)
    else:
        found = named_view(graph, framework)
    found.layers = _split_parts(found.layers, framework)
    return found


def _nnx_state(graph: Graph) -> bool:
    """A Flax NNX `State` saved as it is (Orbax's own way): each variable a node whose
    one leaf is `value` (`conv/kernel/value`); its pure dict has `conv/kernel`."""
    entries = [e for e in graph.entries() if e.slot is None]
    return bool(entries) and all(len(e.path) > 1 and e.path[-1] == "value" for e in entries)


def _without_value(path: tuple[str, ...]) -> tuple[str, ...]:
    return path[:-1]


def _order_by_counters(layers: list[Layer]) -> None:
    """TF1 names come sorted (`dense_10` before `dense_2`): the order is only the one Keras'
    per-class counters give, and the alignment refuses where that is not enough."""
    for layer in layers:
        counter = counted(layer.path[-1])[1] if layer.path else None
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
            out.append(
                Layer(
                    (*layer.path, name),
                    frozenset({part_kind}),
                    held,
                    (*layer.order, i),
                    layer.cls,
                    layer.ordered,
                    layer.parent,
                    dict(layer.facts),
                )
            )
    return out
