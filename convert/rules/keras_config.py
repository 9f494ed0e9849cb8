"""What a Keras model config (a `.keras` archive's `config.json`) tells the rules beyond
the weights: which Dense layers read a Flatten of a feature map, and that map's shape.

A Dense after `Flatten` of an (h, w, c) map reads its inputs in h, w, c order, where
torch's `flatten` of (c, h, w) reads c, h, w: its kernel's rows must be reordered, and only
the config says so. Layers are found at their Keras 3 object paths (`layers/dense_1`: the
class in snake case, numbered per class in config order).
"""

from __future__ import annotations

import json
from typing import Any

from ..keras_names import numbered

_PASS_THROUGH = {"Dropout", "Activation", "ActivityRegularization", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "SpatialDropout1D"}


def flatten_facts(text: Any) -> dict[tuple[str, ...], dict[str, list[int]]]:
    """Keras 3 path of each Dense that reads a flattened channels-last map → {"flatten":
    [h, w, c]} (the map's shape, batch axis left out)."""
    try:
        config = json.loads(text) if isinstance(text, str) else None
        layers = config["config"]["layers"]
    except (ValueError, KeyError, TypeError):
        return {}
    if not isinstance(layers, list):
        return {}
    layers = [cfg for cfg in layers if isinstance(cfg, dict)]
    names = [_name(cfg) for cfg in layers]
    paths = _paths(layers)
    sequential = config.get("class_name") == "Sequential"
    maps: dict[str, list[int]] = {}  # layer name → the flattened map it passes on
    found: dict[tuple[str, ...], dict[str, list[int]]] = {}
    for i, cfg in enumerate(layers):
        cls = cfg.get("class_name")
        inputs = [names[i - 1]] if sequential and i else _inbound(cfg)
        carried = maps.get(inputs[0]) if len(inputs) == 1 else None
        if cls == "Flatten" and _channels_last(cfg):
            shape = (cfg.get("build_config") or {}).get("input_shape")
            if isinstance(shape, list) and len(shape) >= 4 and all(
                    isinstance(d, int) for d in shape[1:]):
                maps[names[i]] = shape[1:]
        elif cls in _PASS_THROUGH and carried is not None:
            maps[names[i]] = carried
        elif cls == "Dense" and carried is not None:
            found[paths[i]] = {"flatten": carried}
    return found


def _name(cfg: dict) -> str:
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    return str(inner.get("name", cfg.get("name", "")))


def _channels_last(cfg: dict) -> bool:
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    return inner.get("data_format", "channels_last") != "channels_first"


def _paths(layers: list[dict]) -> list[tuple[str, ...]]:
    classes = (str(cfg.get("class_name", "")).split(">")[-1] for cfg in layers)
    return [("layers", name) for name in numbered(classes)]


def _inbound(cfg: dict) -> list[str]:
    """The names of the layers whose outputs `cfg` reads (functional configs)."""
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
            for item in value:
                walk(item)

    walk(cfg.get("inbound_nodes", []))
    return found
