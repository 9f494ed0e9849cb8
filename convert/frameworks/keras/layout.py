"""How one Keras model lays out its weights in Keras 2 and in Keras 3 files.

A legacy `.h5` lists each top-level layer's weights in order (`weight_names`:
trainable first, then non-trainable; a nested model lists all of its weights in one
group). A Keras 3 `.weights.h5` stores each object's own variables under its object
path (`layers/<snake_case class>[_N]/…/vars/<i>`). A model config (a full-model `.h5`'s
`model_config`, a `.keras` archive's `config.json`) tells both: the layer list gives the
order and the class names give the Keras 3 paths. Classes that keep their variables in
sub-objects (recurrent cells, attention projections, wrappers) are described here;
every other layer is assumed to own its variables, which Keras checks on loading (it
refuses a variable count that does not match).
"""

from __future__ import annotations

from dataclasses import dataclass

from convert.core.tensor import Tensor
from convert.frameworks.keras import config as keras_config
from convert.frameworks.keras.config import inner
from convert.frameworks.keras.names import numbered


class Unmappable(Exception):
    """The config does not say enough to move weights between the two layouts."""


# Names in the files themselves, which a format's reader and writer both use.
WEIGHTS_MEMBER = "model.weights.h5"  # a .keras archive's weights file
TOP_LEVEL = "top_level_model_weights"  # a Keras 2 .h5's group of a model's own weights

RNN_CELLS = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
MHA_PARTS = ("query_dense", "key_dense", "value_dense", "output_dense")
MODEL_CLASSES = ("Functional", "Sequential", "Model")

# Variable names by class, in creation order (what `layer.weights` calls them).
_KERNEL_BIAS = ["kernel", "bias"]
VAR_NAMES: dict[str, list[str]] = {
    "Dense": _KERNEL_BIAS,
    "EinsumDense": _KERNEL_BIAS,
    "Conv1D": _KERNEL_BIAS,
    "Conv2D": _KERNEL_BIAS,
    "Conv3D": _KERNEL_BIAS,
    "Conv1DTranspose": _KERNEL_BIAS,
    "Conv2DTranspose": _KERNEL_BIAS,
    "Conv3DTranspose": _KERNEL_BIAS,
    "DepthwiseConv1D": ["depthwise_kernel", "bias"],
    "DepthwiseConv2D": ["depthwise_kernel", "bias"],
    "SeparableConv1D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "Embedding": ["embeddings"],
    "LSTMCell": ["kernel", "recurrent_kernel", "bias"],
    "GRUCell": ["kernel", "recurrent_kernel", "bias"],
    "SimpleRNNCell": ["kernel", "recurrent_kernel", "bias"],
    "PReLU": ["alpha"],
}
# Layers whose variables are all trainable (when the layer is), for ordering nested models.
ALL_TRAINABLE = set(VAR_NAMES) | {
    "LayerNormalization",
    "GroupNormalization",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "MultiHeadAttention",
    "Bidirectional",
    "TimeDistributed",
}


def class_name(cfg: dict) -> str:
    name = keras_config.class_name(cfg)
    if name is None:
        raise Unmappable("a layer in the model config has no class_name")
    return name


def layer_name(cfg: dict) -> str:
    name = keras_config.layer_name(cfg)
    if name is None:
        raise Unmappable(f"a {class_name(cfg)} layer in the model config has no name")
    return name


def is_model(cfg: dict) -> bool:
    return class_name(cfg) in MODEL_CLASSES and isinstance(inner(cfg).get("layers"), list)


def trainable(cfg: dict) -> bool:
    return inner(cfg).get("trainable", True) is not False


@dataclass
class Child:
    name: str  # the layer's name (legacy group name)
    cfg: dict
    path: str  # its Keras 3 object path


def children(model_cfg: dict, prefix: str = "") -> list[Child]:
    """`model.layers` with their Keras 3 object paths (Sequential hides its InputLayer)."""
    layers = inner(model_cfg).get("layers")
    if not isinstance(layers, list):
        raise Unmappable("the model config has no layer list (a subclassed model?)")
    layers = [cfg for cfg in layers if isinstance(cfg, dict)]
    if class_name(model_cfg) == "Sequential" and layers and class_name(layers[0]) == "InputLayer":
        layers = layers[1:]
    names = numbered(class_name(cfg) for cfg in layers)
    return [
        Child(layer_name(cfg), cfg, f"{prefix}layers/{name}")
        for cfg, name in zip(layers, names, strict=True)
    ]


def subtree_names(cfg: dict) -> set[str]:
    names = {layer_name(cfg)}
    if is_model(cfg):
        for kid in children(cfg):
            names |= subtree_names(kid.cfg)
    return names


@dataclass
class Part:
    """A sub-object of a layer holding variables: path below the layer ('' = itself)."""

    sub: str
    cls: str
    cfg: dict
    count: int | None = None  # variables it holds, when the class fixes it


def parts(cfg: dict) -> list[Part]:
    """The objects of a (non-model) layer that hold variables, in Keras 2 weight order."""
    cls = class_name(cfg)
    conf = inner(cfg)
    if cls in RNN_CELLS:
        return [Part("cell", RNN_CELLS[cls], {})]
    if cls == "MultiHeadAttention":
        n = 2 if conf.get("use_bias", True) else 1
        return [Part(p, "EinsumDense", {}, n) for p in MHA_PARTS]
    if cls == "Bidirectional":
        wrapped = conf.get("layer")
        if not isinstance(wrapped, dict) or class_name(wrapped) not in RNN_CELLS:
            raise Unmappable("Bidirectional layers are mapped only around LSTM, GRU, SimpleRNN")
        cell = RNN_CELLS[class_name(wrapped)]
        return [Part("forward_layer/cell", cell, {}), Part("backward_layer/cell", cell, {})]
    if cls == "TimeDistributed":
        wrapped = conf.get("layer")
        if not isinstance(wrapped, dict) or is_model(wrapped):
            raise Unmappable("TimeDistributed is mapped only around a plain layer")
        return [Part(f"layer/{p.sub}".rstrip("/"), p.cls, p.cfg, p.count) for p in parts(wrapped)]
    return [Part("", cls, cfg)]


STATISTICS = ["moving_mean", "moving_variance"]  # BatchNormalization's non-trainable ones


def class_var_names(cls: str, conf: dict | None = None) -> list[str]:
    """The variables a `cls` layer makes, in Keras' weight order ([] when not known)."""
    conf = conf or {}
    if cls in ("BatchNormalization", "LayerNormalization"):
        names = (["gamma"] if conf.get("scale", True) else []) + (
            ["beta"] if conf.get("center", True) else []
        )
        return names + STATISTICS if cls == "BatchNormalization" else names
    return list(VAR_NAMES.get(cls, []))


def var_names(part: Part, count: int) -> list[str]:
    """What Keras calls each variable of `part`; indices where the class is unknown."""
    names = class_var_names(part.cls, inner(part.cfg))
    if len(names) >= count and (count == len(names) or part.cls in VAR_NAMES):
        return names[:count]
    return [str(i) for i in range(count)]


def order_by_names(names: list[str]) -> list[str] | None:
    """Keras' order of one layer's own variables told by their names alone (a TF object
    checkpoint records names, not classes): the order of every class in the table that
    makes all of them, when those agree; None when no class does or they disagree."""
    if len(names) <= 1:
        return list(names)
    wanted = set(names)
    orders = set()
    for cls in [*VAR_NAMES, "BatchNormalization", "LayerNormalization"]:
        known = class_var_names(cls)
        if wanted <= set(known):
            orders.add(tuple(n for n in known if n in wanted))
    return list(orders.pop()) if len(orders) == 1 else None


def trainable_flags(part: Part, count: int, layer_is_trainable: bool) -> list[bool]:
    if not layer_is_trainable:
        return [False] * count
    if part.cls == "BatchNormalization":
        return [i < count - 2 for i in range(count)]
    if part.cls in ALL_TRAINABLE:
        return [True] * count
    raise Unmappable(
        f"cannot tell which variables of a {part.cls} layer are trainable, which "
        "fixes their order inside a nested model in Keras 2 files"
    )


# -- Keras 2 layers → Keras 3 paths --------------------------------------------------------


def strip_suffix(weight_name: str) -> str:
    """`dense/kernel:0` → `dense/kernel`."""
    head, sep, tail = weight_name.rpartition(":")
    return head if sep and tail.isdigit() else weight_name


def legacy_to_keras3(
    model_cfg: dict, layers: list[tuple[str, list[tuple[str, Tensor]]]]
) -> dict[int, str]:
    """Keras 3 key (`layers/dense/vars/0`) of each legacy weight, by `id(tensor)`.

    `layers`: each layer name with its (weight name, tensor) pairs in `weight_names` order."""
    kids = {kid.name: kid for kid in children(model_cfg)}
    keys: dict[int, str] = {}
    for name, weights in layers:
        if not weights:
            continue
        kid = kids.get(name)
        if kid is None:
            raise Unmappable(f"layer {name!r} of the weights is not in the model config")
        _assign(kid, weights, keys)
    return keys


def _assign(kid: Child, weights: list[tuple[str, Tensor]], keys: dict[int, str]) -> None:
    if is_model(kid.cfg):
        _assign_nested(kid, weights, keys)
        return
    layer_parts = parts(kid.cfg)
    counts = [p.count for p in layer_parts]
    free = [i for i, c in enumerate(counts) if c is None]
    rest = len(weights) - sum(c for c in counts if c is not None)
    if free:
        if rest < 0 or rest % len(free):
            raise Unmappable(
                f"layer {kid.name!r} ({class_name(kid.cfg)}) has {len(weights)} "
                "weights, which do not fit its Keras 3 structure"
            )
        for i in free:
            counts[i] = rest // len(free)
    if sum(counts) != len(weights):  # type: ignore[arg-type]
        raise Unmappable(
            f"layer {kid.name!r} ({class_name(kid.cfg)}) has {len(weights)} "
            f"weights; its Keras 3 structure holds {sum(counts)}"  # type: ignore[arg-type]
        )
    position = 0
    for part, count in zip(layer_parts, counts, strict=True):
        base = f"{kid.path}/{part.sub}" if part.sub else kid.path
        for i in range(count or 0):
            keys[id(weights[position][1])] = f"{base}/vars/{i}"
            position += 1


def _assign_nested(kid: Child, weights: list[tuple[str, Tensor]], keys: dict[int, str]) -> None:
    """A nested model's group lists all its weights; each weight name names its layer."""
    grandkids = children(kid.cfg, kid.path + "/")
    names = [subtree_names(g.cfg) for g in grandkids]
    buckets: list[list[tuple[str, Tensor]]] = [[] for _ in grandkids]
    for weight_name, tensor in weights:
        scopes = set(strip_suffix(weight_name).split("/")[:-1])
        hits = [i for i, n in enumerate(names) if n & scopes]
        if len(hits) != 1:
            raise Unmappable(
                f"weight {weight_name!r} of nested model {kid.name!r} names "
                f"{'no' if not hits else 'more than one'} layer of it"
            )
        buckets[hits[0]].append((weight_name, tensor))
    for grandkid, bucket in zip(grandkids, buckets, strict=True):
        if bucket:
            _assign(grandkid, bucket, keys)


# -- Keras 3 objects → Keras 2 layers ------------------------------------------------------


@dataclass
class LegacyWeight:
    layer: str  # top-level layer name (the legacy group)
    name: str  # Keras weight name, e.g. `multi_head_attention/query/kernel`
    tensor: Tensor
    trainable: bool = True


def keras3_to_legacy(
    model_cfg: dict, objects: dict[str, list[Tensor]], object_names: dict[str, str]
) -> tuple[list[str], list[list[LegacyWeight]]]:
    """Every top-level layer name (legacy `layer_names`) and each layer's weights in order.

    `objects`: Keras 3 object path → its variables in index order; `object_names`: object
    path → the `name` its `vars` group records."""
    used: set[str] = set()
    names, layers = [], []
    for kid in children(model_cfg):
        weights = _legacy_weights(kid, kid.name, objects, object_names, used)
        names.append(kid.name)
        layers.append(weights)
    left = sorted(p for p, v in objects.items() if v and p not in used and p.startswith("layers/"))
    if left:
        raise Unmappable(f"the config does not account for the variables of {left[0]!r}")
    return names, layers


def _legacy_weights(
    kid: Child,
    prefix: str,
    objects: dict[str, list[Tensor]],
    object_names: dict[str, str],
    used: set[str],
) -> list[LegacyWeight]:
    if is_model(kid.cfg):
        if not trainable(kid.cfg):
            raise Unmappable(
                f"nested model {kid.name!r} is frozen; Keras 2 and Keras 3 order "
                "its weights differently"
            )
        gathered: list[LegacyWeight] = []
        for grandkid in children(kid.cfg, kid.path + "/"):
            gathered += _legacy_weights(
                grandkid, f"{prefix}/{grandkid.name}", objects, object_names, used
            )
        return [w for w in gathered if w.trainable] + [w for w in gathered if not w.trainable]
    layer_parts = parts(kid.cfg)
    own = {f"{kid.path}/{p.sub}" if p.sub else kid.path for p in layer_parts}
    stray = [p for p, v in objects.items() if v and p.startswith(kid.path + "/") and p not in own]
    if stray:
        raise Unmappable(
            f"layer {kid.name!r} ({class_name(kid.cfg)}) keeps variables in "
            f"{stray[0]!r}, whose place among its Keras 2 weights is not known"
        )
    weights: list[LegacyWeight] = []
    for part in layer_parts:
        path = f"{kid.path}/{part.sub}" if part.sub else kid.path
        tensors = objects.get(path, [])
        used.add(path)
        scope = [prefix]
        steps = part.sub.split("/") if part.sub else []
        for depth in range(len(steps)):
            sub_path = f"{kid.path}/{'/'.join(steps[: depth + 1])}"
            scope.append(object_names.get(sub_path) or steps[depth])
        names = var_names(part, len(tensors))
        flags = (
            [True] * len(tensors)
            if not prefix.count("/")
            else trainable_flags(part, len(tensors), trainable(kid.cfg))
        )
        for tensor, var, flag in zip(tensors, names, flags, strict=True):
            weights.append(
                LegacyWeight(prefix.split("/")[0], "/".join(scope + [var]), tensor, flag)
            )
    return weights
