"""Keras 2 legacy HDF5 weight files (`keras-h5`): `save_weights("x.h5")`, `save("x.h5")`.

Layout (tf.keras ≤ 2.15, `tf_keras`, Keras 2.0–2.x, and Keras 3's legacy writer): the root
(or, in full-model files, the `model_weights` group) has attributes `layer_names`,
`backend`, `keras_version`; each layer has a group whose `weight_names` attribute lists
its weights in order, each a dataset at `<layer group>/<weight name>`. Loading is by
position (layers with weights, then weights in `weight_names` order) or by layer name;
dataset names are incidental. Full-model files add `model_config` and `training_config`
(JSON) and an `optimizer_weights` group.

Graph: root edges are the layers in `layer_names` order (weightless layers as empty
Nodes), then `top_level_model_weights` and `optimizer` when present. Under a layer, a
weight's edges are its name without `:0`, split on `/`, from after the layer's own name
(`d1/kernel:0` in layer `d1` → `d1/kernel`; `dense/kernel:0` in nested model `inner` →
`inner/dense/kernel`). Each tensor keeps Keras' own identity in `meta`: `key` (dataset
path), `keras_layer`, `keras_layer_index` (among layers with weights),
`keras_weight_index`, `keras_weight_name`; with a model config also `keras3_key`, its
Keras 3 object path. Optimizer weights become Slots where the variable they belong to can
be told from the name, else tensors under the `optimizer` Node, all in their file order.

A shard of a Hugging Face sharded TF set (`tf_model-00001-of-00002.h5`, transformers 4.x)
is read here too: its root `layer_names` names datasets, not layer groups (no
`weight_names`), each a weight of the model stored at its name without the model's scope
(`bert/pooler/dense/bias:0` for `tf_bert_model/bert/pooler/dense/bias:0`; a name holding
`model.` or of one part is kept whole: `hf_shard_name`). Each goes where the model's
unsharded `tf_model.h5` puts it (`hf_shard_path`, through `weight_path`); the shard knows
neither Keras' order nor its layers, so its tensors carry only `key` and `tf_full_name`.

This module reads them; `legacy_writer.py` writes them. Apart because reading rebuilds
Keras' identities from a file that may be hostile, while writing must recover the order
those identities give from whatever source it is handed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py

from convert.core.errors import FormatError
from convert.core.graph import Graph, Node, Slot
from convert.core.meta import (
    BACKEND,
    KERAS3_KEY,
    KERAS3_UNMAPPED,
    KERAS_ALSO_IN,
    KERAS_H5_FULL_MODEL,
    KERAS_LAYER,
    KERAS_LAYER_INDEX,
    KERAS_LAYER_NAMES,
    KERAS_LAYER_POSITION,
    KERAS_OPTIMIZER,
    KERAS_VERSION,
    KERAS_WEIGHT_INDEX,
    KERAS_WEIGHT_NAME,
    MODEL_CONFIG,
    SOURCE_KEY,
    TRAINING_CONFIG,
    VARIABLE_NAME,
)
from convert.core.tensor import Tensor
from convert.formats.keras.hdf5_files import Source
from convert.formats.keras.hdf5_reader import child, dataset_tensor, has_attr, read_names, read_text
from convert.frameworks import transformers_tf
from convert.frameworks.keras import config as keras_config
from convert.frameworks.keras import layout
from convert.frameworks.keras.layout import TOP_LEVEL

OPTIMIZER = "optimizer"


def weights_group(f: h5py.File, where: Source) -> tuple[h5py.Group, bool]:
    """The group holding `layer_names` and whether the file is a full-model file."""
    if has_attr(f, "layer_names"):
        return f, False
    group = child(f, "model_weights", where)
    if isinstance(group, h5py.Group) and has_attr(group, "layer_names"):
        return group, True
    raise FormatError(
        "is an HDF5 file but not a Keras weight file: no `layer_names` attribute "
        "at the root or in a `model_weights` group, and no Keras 3 `vars` groups",
        where.label,
    )


def read(path: Path) -> Graph:
    where = Source(os.fspath(path))
    graph = Graph(format="keras-h5", source=os.fspath(path), files=[os.fspath(path)])
    with where.open() as f:
        group, full = weights_group(f, where)
        for name in (KERAS_VERSION, BACKEND):  # (values named as the file's attributes)
            value = read_text(group, name, where) or read_text(f, name, where)
            if value is not None:
                graph.values[name] = value
        if full:
            for name in (MODEL_CONFIG, TRAINING_CONFIG):
                value = read_text(f, name, where)
                if value is not None:
                    graph.values[name] = value
        if not full and _is_hf_shard(group, where):
            layers = []
            _read_hf_shard(graph, group, where)
        else:
            layers = _read_layers(graph, group, where)
        optimizer = child(f, "optimizer_weights", where) if full else None
        if isinstance(optimizer, h5py.Group):
            _read_optimizer(graph, optimizer, where, layers)
    graph.root.meta[KERAS_H5_FULL_MODEL] = full
    _annotate_keras3_keys(graph, layers)
    return graph


def weight_path(layer: str, weight_name: str) -> tuple[str, ...]:
    """Edges of a weight below its layer: the name after the layer's own scope, no `:0`.

    The scope is the name the layer had when its weights were made: Keras numbers a name
    taken in the session (`conv1_3/kernel:0` under layer `conv1`, from the fourth model
    built with a layer `conv1`), and loads by position, so that scope is the layer's own."""
    parts = layout.strip_suffix(weight_name).split("/")
    if layer in parts[:-1]:
        parts = parts[parts.index(layer) + 1 :]
    elif len(parts) > 1 and re.fullmatch(re.escape(layer) + r"_\d+", parts[0]):
        parts = parts[1:]
    return tuple(parts)


def hf_shard_name(weight_name: str) -> str:
    """The dataset a shard of a Hugging Face sharded TF set keeps weight `weight_name` (as
    its index names it) at (frameworks/transformers_tf.py)."""
    return transformers_tf.in_file(weight_name)


def hf_shard_path(name: str) -> tuple[str, ...]:
    """The graph path of the weight a Hugging Face TF shard keeps at dataset `name`: where
    the model's unsharded `tf_model.h5` puts it, under its layer (the scope after the
    model's) by `weight_path`; a weight of fewer scopes at the top."""
    parts = name.split("/")
    if not transformers_tf.kept_whole(name):
        parts.insert(0, "")  # (the model's scope, not kept: weight_path needs the layer's)
    if len(parts) < 3:
        return (layout.strip_suffix(parts[-1]),)
    return (parts[1], *weight_path(parts[1], "/".join(parts)))


def _place(node: Node, edges: tuple[str, ...], fallback: str, tensor: Tensor) -> None:
    """Put `tensor` at `edges` below `node`; on a clash, under its full weight name."""
    here = node
    for i, name in enumerate(edges):
        last = i == len(edges) - 1
        nxt = here.edges.get(name)
        if last and nxt is None:
            here.edges[name] = tensor
            return
        if last or (nxt is not None and not isinstance(nxt, Node)):
            break
        if nxt is None:
            nxt = here.edges[name] = Node()
        here = nxt
    if fallback in node.edges:
        raise FormatError(f"weight {fallback!r} is listed twice")
    node.edges[fallback] = tensor


def _read_layers(
    graph: Graph, group: h5py.Group, where: Source
) -> list[tuple[str, list[tuple[str, Tensor]]]]:
    prefix = group.name.strip("/")
    layer_names = read_names(group, "layer_names", where)
    graph.root.meta[KERAS_LAYER_NAMES] = list(layer_names)
    layers: list[tuple[str, list[tuple[str, Tensor]]]] = []
    # A variable two layers use is saved under each (transformers' masked-LM head keeps
    # the word embeddings it decodes with): one tensor, at both places.
    variables: dict[str, Tensor] = {}
    index = 0
    names = list(layer_names)
    if isinstance(child(group, TOP_LEVEL, where), h5py.Group):
        names.append(TOP_LEVEL)
    for position, name in enumerate(names):
        layer_group = child(group, name, where)
        if not isinstance(layer_group, h5py.Group):
            raise FormatError(
                f"`layer_names` lists layer {name!r} but there is no group "
                f"{prefix + '/' if prefix else ''}{name}",
                where.label,
            )
        if name in graph.root.edges:
            raise FormatError(f"`layer_names` lists layer {name!r} twice", where.label)
        weight_names = read_names(layer_group, "weight_names", where)
        top = name == TOP_LEVEL
        layer_index = None if top or not weight_names else index
        node = Node(
            {
                KERAS_LAYER: name,
                KERAS_LAYER_INDEX: layer_index,
                KERAS_LAYER_POSITION: None if top else position,
            }
        )
        if top and not weight_names:
            continue
        graph.root.edges[name] = node
        weights = []
        known: dict[str, object] = {}
        for j, weight_name in enumerate(weight_names):
            ds = child(layer_group, weight_name, where, known)
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(
                    f"layer {name!r}: `weight_names` lists {weight_name!r} but "
                    f"{layer_group.name.lstrip('/')}/{weight_name} is not a "
                    "dataset",
                    where.label,
                )
            meta = {
                SOURCE_KEY: ds.name.lstrip("/"),
                KERAS_LAYER: name,
                KERAS_LAYER_INDEX: layer_index,
                KERAS_WEIGHT_INDEX: j,
                KERAS_WEIGHT_NAME: weight_name,
                VARIABLE_NAME: layout.strip_suffix(weight_name),
            }
            tensor = dataset_tensor(ds, where, meta)
            shared = variables.setdefault(weight_name, tensor)
            if shared is not tensor and (shared.dtype, shared.shape) == (
                tensor.dtype,
                tensor.shape,
            ):
                shared.meta.setdefault(KERAS_ALSO_IN, []).append([name, j])
                tensor = shared
            _place(node, weight_path(name, weight_name), weight_name, tensor)
            weights.append((weight_name, tensor))
        if len(weights) == 1 and not top and weight_path(name, weights[0][0]) == (name,):
            # (a layer `x` whose one weight is `x:0`: how a tensor at the top of a graph is
            # written, such as TF1's `beta1_power`; read back as that tensor, not `x/x`)
            graph.root.edges[name] = weights[0][1]
        if weight_names and not top:
            index += 1
        if not top and [layout.strip_suffix(w) for w, _ in weights] == [name]:
            graph.root.edges[name] = weights[0][1]  # a lone tensor written as its own layer
        layers.append((name, weights))
    return layers


def _is_hf_shard(group: h5py.Group, where: Source) -> bool:
    names = read_names(group, "layer_names", where)
    return bool(names) and isinstance(child(group, names[0], where), h5py.Dataset)


def _read_hf_shard(graph: Graph, group: h5py.Group, where: Source) -> None:
    """A Hugging Face TF shard's datasets, in `layer_names` order, at `hf_shard_path`."""
    seen: set[str] = set()
    for name in read_names(group, "layer_names", where):
        ds = child(group, name, where)
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(
                f"`layer_names` of a Hugging Face TF shard lists {name!r} but there is no "
                f"dataset {name}",
                where.label,
            )
        if name in seen:
            raise FormatError(f"`layer_names` lists {name!r} twice", where.label)
        seen.add(name)
        meta = {SOURCE_KEY: name, VARIABLE_NAME: layout.strip_suffix(name)}
        _place(graph.root, hf_shard_path(name), name, dataset_tensor(ds, where, meta))


def _read_optimizer(
    graph: Graph,
    group: h5py.Group,
    where: Source,
    layers: list[tuple[str, list[tuple[str, Tensor]]]],
) -> None:
    weight_names = read_names(group, "weight_names", where)
    if not weight_names:
        return
    edge = OPTIMIZER if OPTIMIZER not in graph.root.edges else "optimizer_weights"
    node = graph.root.edges[edge] = Node({KERAS_OPTIMIZER: True})
    variables = _variables_by_name(layers)
    for j, weight_name in enumerate(weight_names):
        ds = child(group, weight_name, where)
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(
                f"optimizer: `weight_names` lists {weight_name!r} but "
                f"optimizer_weights/{weight_name} is not a dataset",
                where.label,
            )
        meta = {
            SOURCE_KEY: ds.name.lstrip("/"),
            KERAS_OPTIMIZER: True,
            KERAS_WEIGHT_INDEX: j,
            KERAS_WEIGHT_NAME: weight_name,
            VARIABLE_NAME: layout.strip_suffix(weight_name),
        }
        tensor = dataset_tensor(ds, where, meta)
        slot = _slot_of(weight_name, variables)
        if slot is not None and slot[0].shape == tensor.shape:
            graph.slots.append(Slot(slot[0], node, slot[1], tensor))
        else:
            _place(node, tuple(layout.strip_suffix(weight_name).split("/")), weight_name, tensor)


def _variables_by_name(layers: list[tuple[str, list[tuple[str, Tensor]]]]) -> dict[str, Tensor]:
    """Model weights by name without `:0` (names given twice are left out: ambiguous)."""
    found: dict[str, Tensor] = {}
    twice: set[str] = set()
    for _, weights in layers:
        for weight_name, tensor in weights:
            name = layout.strip_suffix(weight_name)
            if name in found:
                twice.add(name)
            found[name] = tensor
    return {k: v for k, v in found.items() if k not in twice}


def _slot_of(weight_name: str, variables: dict[str, Tensor]) -> tuple[Tensor, str] | None:
    """The variable and slot an optimizer weight name stands for, if it tells.

    tf_keras optimizers: `Adam/m/dense/kernel:0`; TF legacy optimizers:
    `Adam/dense/kernel/m:0`; Keras 3: `adam/dense_kernel_momentum`."""
    parts = layout.strip_suffix(weight_name).split("/")
    if len(parts) >= 3:
        if "/".join(parts[2:]) in variables:
            return variables["/".join(parts[2:])], parts[1]
        if "/".join(parts[1:-1]) in variables:
            return variables["/".join(parts[1:-1])], parts[-1]
    if len(parts) == 2:
        best = None
        for name, tensor in variables.items():
            flat = name.replace("/", "_") + "_"
            if (
                parts[1].startswith(flat)
                and len(parts[1]) > len(flat)
                and (best is None or len(flat) > len(best[0]))
            ):
                best = (flat, tensor)
        if best is not None:
            return best[1], parts[1][len(best[0]) :]
    return None


def _annotate_keras3_keys(graph: Graph, layers: list[tuple[str, list[tuple[str, Tensor]]]]) -> None:
    config = keras_config.decode(graph.values.get(MODEL_CONFIG))
    if config is None:
        graph.root.meta[KERAS3_UNMAPPED] = (
            "the file holds no model config (weights-only .h5: layer order, no Keras 3 paths)"
        )
        return
    try:
        keys = layout.legacy_to_keras3(config, [(n, w) for n, w in layers if n != TOP_LEVEL])
    except layout.Unmappable as exc:
        graph.root.meta[KERAS3_UNMAPPED] = str(exc)
        return
    if any(n == TOP_LEVEL and w for n, w in layers):
        graph.root.meta[KERAS3_UNMAPPED] = "the model has top-level weights of its own"
        return
    for _, weights in layers:
        for _, tensor in weights:
            tensor.meta[KERAS3_KEY] = keys[id(tensor)]
