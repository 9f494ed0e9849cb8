"""What a Keras model config (a `.keras` archive's `config.json`, a full-model `.h5`'s
`model_config`) tells the rules beyond the weights: each layer's class, and how each Dense
after a Flatten reads its inputs.

A Dense after `Flatten` of an (h, w, c) map reads its inputs in h, w, c order, where
torch's `flatten` of (c, h, w) reads c, h, w: its kernel's rows must be reordered, and only
the config says so. The reorder is right only when the Flatten reads the map a
convolution or a pooling made (through layers that keep the map's layout: activations,
dropout, normalisation, element-wise merges). A layer between them that moves axes
(Permute, Reshape, a custom layer) leaves the order open: the port of such a model may
flatten either way, so the Dense is marked *in doubt* with the layer that hides the order,
and the plan refuses to guess (`plan.py`).

Layers are found by name (a `.h5` groups weights by layer name) and at their Keras 3
object paths (`layers/dense_1`: the class in snake case, numbered per class in config
order). Both Keras 3 and tf_keras configs are read (tf_keras lists a layer's inputs as
`[name, node, tensor, kwargs]` lists, Keras 3 as `keras_history`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from convert.frameworks.keras.names import numbered

# Layers that make a feature map whose channels torch keeps first (c, h, w).
_MAP_MAKERS = ("Conv", "Pooling", "ZeroPadding", "Cropping", "UpSampling")
# Layers that keep a map's layout (element-wise, or per channel along the last axis).
_KEEP_LAYOUT = {
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "ThresholdedReLU",
    "Softmax",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "Identity",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
}
# Of those, the ones without weights of their own (between a Flatten and its Dense).
_NO_WEIGHTS = {
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "ThresholdedReLU",
    "Softmax",
    "Identity",
}


@dataclass(frozen=True)
class FlattenRead:
    """How a Dense reads the Flatten before it."""

    shape: tuple[int, ...] | None  # the map flattened (h, w, c; no batch axis), if known
    doubt: str | None = None  # why the row order cannot be told (the layer in between)
    channels_last: bool = True  # False: the map is channels-first already, as torch's
    channels: int | None = None  # the map's channels (a tf_keras config has no shapes)

    def facts(self, rows: int) -> tuple[dict[str, list[int]], str | None]:
        """The layer facts of a Dense whose kernel has `rows` rows, and its doubt. Only the
        channel count and the rest matter to the reorder: (h * w, c) orders rows as
        (h, w, c) does."""
        if not self.channels_last:
            return {}, None
        if self.doubt is not None:
            shape = f"; it flattens a map of shape {list(self.shape)}" if self.shape else ""
            return {}, self.doubt + shape
        if self.shape is not None:
            return {"flatten": list(self.shape)}, None
        if self.channels and rows % self.channels == 0:
            return {"flatten": [rows // self.channels, self.channels]}, None
        return {}, "the config records neither the Flatten's input shape nor its channels"


def dense_facts(
    read: FlattenRead | None, variables: dict
) -> tuple[dict[str, list[int]], str | None]:
    """A layer's facts and doubt from how it reads a Flatten (none: no Flatten before it)."""
    if read is None or "kernel" not in variables:
        return {}, None
    return read.facts(variables["kernel"].shape[0])


@dataclass
class LayerConfig:
    name: str
    cls: str
    path: tuple[str, ...]  # its Keras 3 object path
    inputs: list[str]
    cfg: dict

    def absent(self) -> frozenset[str]:
        """The optional variables this layer was built without (a normalisation with
        `scale=False` holds no gamma, `center=False` no beta): a Keras 3 file numbers the
        ones it has, and only the config tells which those are."""
        conf = inner(self.cfg)
        if not self.cls.endswith("Normalization"):
            return frozenset()
        return frozenset({"gamma"} if conf.get("scale", True) is False else set()) | frozenset(
            {"beta"} if conf.get("center", True) is False else set()
        )


@dataclass
class ModelConfig:
    layers: list[LayerConfig]
    sequential: bool

    def classes(self) -> dict[str, str]:
        return {layer.name: layer.cls for layer in self.layers}


def parse(text: Any) -> ModelConfig | None:
    """The top-level layers of a model config (None: no config, or not one of a model with
    a layer list)."""
    config = decode(text)
    layers = inner(config).get("layers") if config is not None else None
    if config is None or not isinstance(layers, list):
        return None
    cfgs = [cfg for cfg in layers if isinstance(cfg, dict)]
    sequential = config.get("class_name") == "Sequential"
    classes = [class_name(cfg) or "" for cfg in cfgs]
    paths = [("layers", name) for name in numbered(classes)]
    found = []
    names = [layer_name(cfg) or "" for cfg in cfgs]
    for i, cfg in enumerate(cfgs):
        inputs = ([names[i - 1]] if i else []) if sequential else _inbound(cfg)
        found.append(LayerConfig(names[i], classes[i], paths[i], inputs, cfg))
    return ModelConfig(found, sequential)


def flatten_reads(config: ModelConfig | None) -> dict[str, FlattenRead]:
    """Layer name of each Dense that reads a Flatten of a map → how it reads it."""
    if config is None:
        return {}
    by_name = {layer.name: layer for layer in config.layers}
    found: dict[str, FlattenRead] = {}
    for layer in config.layers:
        if layer.cls != "Dense" or len(layer.inputs) != 1:
            continue
        flatten = by_name.get(layer.inputs[0])
        while flatten is not None and flatten.cls in _NO_WEIGHTS and len(flatten.inputs) == 1:
            flatten = by_name.get(flatten.inputs[0])  # (Flatten → Dropout → Dense)
        if flatten is None or flatten.cls != "Flatten":
            continue
        read = _read(flatten, by_name)
        if read is not None:
            found[layer.name] = read
    return found


def _read(flatten: LayerConfig, by_name: dict[str, LayerConfig]) -> FlattenRead | None:
    shape = _input_shape(flatten.cfg)
    if shape is not None and len(shape) < 2:
        return None  # a vector: nothing to reorder
    if shape is not None and shape[-1] == 1:
        return None  # one channel: both flattenings read the same order
    if not _channels_last(flatten.cfg):
        return FlattenRead(shape, f"{flatten.name} (Flatten) has data_format channels_first")
    source = _map_source(flatten, by_name)
    if isinstance(source, str):
        return FlattenRead(shape, source)
    if not source:
        return FlattenRead(shape, None, channels_last=False)
    return FlattenRead(shape, channels=_channels(flatten, by_name))


def _map_source(flatten: LayerConfig, by_name: dict[str, LayerConfig]) -> bool | str:
    """True: the Flatten reads a channels-last map a convolution or pooling made; False: a
    channels-first one; else the reason the order is open (the layer in between)."""
    seen: set[str] = set()
    frontier = list(flatten.inputs)
    formats: set[bool] = set()
    if not frontier:
        return "the Flatten's input is not recorded"
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        layer = by_name.get(name)
        if layer is None:
            return f"the Flatten reads {name}, which the config does not list"
        if any(m in layer.cls for m in _MAP_MAKERS) and not layer.cls.startswith("Global"):
            formats.add(_channels_last(layer.cfg))
            continue
        if layer.cls in _KEEP_LAYOUT and layer.inputs:
            frontier += layer.inputs
            continue
        what = "the model's input" if layer.cls == "InputLayer" else f"{name} ({layer.cls})"
        return f"the Flatten reads {what}, not a convolution's or pooling's map"
    return formats.pop() if len(formats) == 1 else "its maps differ in data_format"


def _channels(layer: LayerConfig, by_name: dict[str, LayerConfig]) -> int | None:
    """The channels of the map a layer reads: the `filters` of the convolution before it,
    through layers that keep the channels (one input each)."""
    seen = set()
    while len(layer.inputs) == 1 and layer.name not in seen:
        seen.add(layer.name)
        found = by_name.get(layer.inputs[0])
        if found is None:
            return None
        filters = inner(found.cfg).get("filters")
        if isinstance(filters, int) and "Conv" in found.cls:
            return filters
        if found.cls not in _KEEP_LAYOUT and not any(m in found.cls for m in _MAP_MAKERS):
            return None
        layer = found
    return None


def decode(text: Any) -> dict | None:
    """A config as a dict: JSON text decoded, a dict kept; None for anything else, and for
    JSON nested deeper than Python's recursion limit (no real config is)."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def inner(cfg: dict) -> dict:
    """A layer config's own table (`{"class_name": ..., "config": {...}}`)."""
    conf = cfg.get("config")
    return conf if isinstance(conf, dict) else {}


def class_name(cfg: dict) -> str | None:
    """A layer's class, without a registered package (`package>Class`); a Keras 3 `Model`
    is a `Functional`. None when the config names no class."""
    name = cfg.get("class_name")
    if not isinstance(name, str):
        return None
    name = name.split(">")[-1]
    return "Functional" if name == "Model" else name


def layer_name(cfg: dict) -> str | None:
    name = inner(cfg).get("name", cfg.get("name"))
    return name if isinstance(name, str) else None


def _input_shape(cfg: dict) -> tuple[int, ...] | None:
    shape = (cfg.get("build_config") or {}).get("input_shape")
    if isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) for d in shape[1:]):
        return tuple(shape[1:])
    return None


def _channels_last(cfg: dict) -> bool:
    return inner(cfg).get("data_format", "channels_last") != "channels_first"


def _inbound(cfg: dict) -> list[str]:
    """The names of the layers whose outputs `cfg` reads (functional configs): Keras 3's
    `keras_history`, tf_keras' `[name, node_index, tensor_index, kwargs]` lists."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            history = value.get("keras_history")
            if isinstance(history, list) and history and isinstance(history[0], str):
                found.append(history[0])
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
                found.append(value[0])
                return
            for item in value:
                walk(item)

    try:
        walk(cfg.get("inbound_nodes", []))
    except RecursionError:  # (nested deeper than any real config: its inputs are unknown)
        return []
    return list(dict.fromkeys(found))
