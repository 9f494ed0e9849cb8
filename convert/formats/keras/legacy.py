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

Writing: the order is the file's meaning, so it comes from the source or the conversion
is refused (`plan`): the Keras identities above, or a tf_keras model found in a TF object
graph (`tfgraph`); never path or sorted order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from ...dtypes import is_bfloat16
from ...errors import FormatError, UnsupportedError
from ...fileio import OutputSet
from ...graph import VARIABLE_NAME, Graph, Node, Slot
from ...notes import dropped_values, non_tensor_values
from ...tensor import Tensor
from . import layout, tfgraph
from .hdf5 import (
    Source,
    check_component,
    check_writable,
    child,
    create,
    dataset_tensor,
    has_attr,
    read_names,
    read_text,
    write_dataset,
    write_names,
)

TOP_LEVEL = "top_level_model_weights"
OPTIMIZER = "optimizer"
DEFAULT_KERAS_VERSION = "2.15.0"  # any version but "1": without one Keras assumes Keras 1


def weights_group(f: h5py.File, where: Source) -> tuple[h5py.Group, bool]:
    """The group holding `layer_names` and whether the file is a full-model file."""
    if has_attr(f, "layer_names"):
        return f, False
    group = child(f, "model_weights", where)
    if isinstance(group, h5py.Group) and has_attr(group, "layer_names"):
        return group, True
    raise FormatError("is an HDF5 file but not a Keras weight file: no `layer_names` attribute "
                      "at the root or in a `model_weights` group, and no Keras 3 `vars` groups",
                      where.label)


def read(path: Path) -> Graph:
    where = Source(os.fspath(path))
    graph = Graph(format="keras-h5", source=os.fspath(path), files=[os.fspath(path)])
    with where.open() as f:
        group, full = weights_group(f, where)
        for name in ("keras_version", "backend"):
            value = read_text(group, name, where) or read_text(f, name, where)
            if value is not None:
                graph.metadata[name] = value
        if full:
            for name in ("model_config", "training_config"):
                value = read_text(f, name, where)
                if value is not None:
                    graph.metadata[name] = value
        layers = _read_layers(graph, group, where)
        optimizer = child(f, "optimizer_weights", where) if full else None
        if isinstance(optimizer, h5py.Group):
            _read_optimizer(graph, optimizer, where, layers)
    graph.root.meta["keras_h5_full_model"] = full
    _annotate_keras3_keys(graph, layers)
    return graph


def weight_path(layer: str, weight_name: str) -> tuple[str, ...]:
    """Edges of a weight below its layer: the name after the layer's own scope, no `:0`."""
    parts = layout.strip_suffix(weight_name).split("/")
    if layer in parts[:-1]:
        parts = parts[parts.index(layer) + 1:]
    return tuple(parts)


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


def _read_layers(graph: Graph, group: h5py.Group,
                 where: Source) -> list[tuple[str, list[tuple[str, Tensor]]]]:
    prefix = group.name.strip("/")
    layer_names = read_names(group, "layer_names", where)
    graph.root.meta["keras_layer_names"] = list(layer_names)
    layers: list[tuple[str, list[tuple[str, Tensor]]]] = []
    index = 0
    names = list(layer_names)
    if isinstance(child(group, TOP_LEVEL, where), h5py.Group):
        names.append(TOP_LEVEL)
    for position, name in enumerate(names):
        layer_group = child(group, name, where)
        if not isinstance(layer_group, h5py.Group):
            raise FormatError(f"`layer_names` lists layer {name!r} but there is no group "
                              f"{prefix + '/' if prefix else ''}{name}", where.label)
        if name in graph.root.edges:
            raise FormatError(f"`layer_names` lists layer {name!r} twice", where.label)
        weight_names = read_names(layer_group, "weight_names", where)
        top = name == TOP_LEVEL
        layer_index = None if top or not weight_names else index
        node = Node({"keras_layer": name, "keras_layer_index": layer_index,
                     "keras_layer_position": None if top else position})
        if top and not weight_names:
            continue
        graph.root.edges[name] = node
        weights = []
        for j, weight_name in enumerate(weight_names):
            ds = child(layer_group, weight_name, where)
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(f"layer {name!r}: `weight_names` lists {weight_name!r} but "
                                  f"{layer_group.name.lstrip('/')}/{weight_name} is not a "
                                  "dataset", where.label)
            meta = {"key": ds.name.lstrip("/"), "keras_layer": name,
                    "keras_layer_index": layer_index, "keras_weight_index": j,
                    "keras_weight_name": weight_name,
                    VARIABLE_NAME: layout.strip_suffix(weight_name)}
            tensor = dataset_tensor(ds, where, meta)
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


def _read_optimizer(graph: Graph, group: h5py.Group, where: Source,
                    layers: list[tuple[str, list[tuple[str, Tensor]]]]) -> None:
    weight_names = read_names(group, "weight_names", where)
    if not weight_names:
        return
    edge = OPTIMIZER if OPTIMIZER not in graph.root.edges else "optimizer_weights"
    node = graph.root.edges[edge] = Node({"keras_optimizer": True})
    variables = _variables_by_name(layers)
    for j, weight_name in enumerate(weight_names):
        ds = child(group, weight_name, where)
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(f"optimizer: `weight_names` lists {weight_name!r} but "
                              f"optimizer_weights/{weight_name} is not a dataset", where.label)
        meta = {"key": ds.name.lstrip("/"), "keras_optimizer": True, "keras_weight_index": j,
                "keras_weight_name": weight_name, VARIABLE_NAME: layout.strip_suffix(weight_name)}
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
            if (parts[1].startswith(flat) and len(parts[1]) > len(flat)
                    and (best is None or len(flat) > len(best[0]))):
                best = (flat, tensor)
        if best is not None:
            return best[1], parts[1][len(best[0]):]
    return None


def _annotate_keras3_keys(graph: Graph, layers: list[tuple[str, list[tuple[str, Tensor]]]]) -> None:
    config = layout.parse_config(graph.metadata.get("model_config"))
    if config is None:
        graph.root.meta["keras3_unmapped"] = (
            "the file holds no model config (weights-only .h5: layer order, no Keras 3 paths)")
        return
    try:
        keys = layout.legacy_to_keras3(config, [(n, w) for n, w in layers if n != TOP_LEVEL])
    except layout.Unmappable as exc:
        graph.root.meta["keras3_unmapped"] = str(exc)
        return
    if any(n == TOP_LEVEL and w for n, w in layers):
        graph.root.meta["keras3_unmapped"] = "the model has top-level weights of its own"
        return
    for _, weights in layers:
        for _, tensor in weights:
            tensor.meta["keras3_key"] = keys[id(tensor)]


# -- writing ---------------------------------------------------------------------------------

class _Plan:
    def __init__(self) -> None:
        self.layer_names: list[str] = []
        self.layers: dict[str, list[tuple[str, Tensor]]] = {}
        self.top: list[tuple[str, Tensor]] = []
        self.optimizer: list[tuple[str, Tensor]] = []
        self.notes: list[str] = []


def plan(graph: Graph) -> _Plan:
    """Which layer group and weight name each tensor of `graph` goes to, in order.

    The order is the file's meaning (Keras loads by position), so it comes from the
    source or the conversion is refused: Keras' own identities of each weight (a Keras
    file read here), or a tf_keras model's TF object checkpoint (`tfgraph`)."""
    result = _Plan()
    entries = graph.entries()
    optimizer = [e for e in entries if e.tensor.meta.get("keras_optimizer")]
    model = [e for e in entries if not e.tensor.meta.get("keras_optimizer") and e.slot is None]
    if model and all("keras_layer" in e.tensor.meta and "keras_weight_name" in e.tensor.meta
                     for e in model):
        _plan_from_meta(graph, model, result)
    elif tfgraph.is_object_graph(graph):
        _plan_from_objects(graph, entries, result)
        return result
    else:
        raise UnsupportedError(_order_unknown(graph, model), graph.source)
    slots = [e for e in entries if e.slot is not None and not e.tensor.meta.get("keras_optimizer")]
    if slots:
        result.notes.append(f"{len(slots)} optimizer slot(s) from another format were not "
                            "written: Keras 2 files keep only a Keras optimizer's own weights")
    full = isinstance(graph.metadata.get("model_config"), str)
    if optimizer and full and _is_legacy_optimizer(optimizer):
        optimizer.sort(key=lambda e: e.tensor.meta.get("keras_weight_index", 1 << 62))
        result.optimizer = [(e.tensor.meta["keras_weight_name"], e.tensor) for e in optimizer]
    elif optimizer:
        result.notes.append(f"{len(optimizer)} optimizer weight(s) were not written: only a "
                            "full-model .h5 read from a Keras 2 file carries them over")
    return result


def _order_unknown(graph: Graph, model: list) -> str:
    """Why the source cannot give a .h5's order, and what would."""
    give = ("; convert from what records it: a full-model .h5, a .keras archive, or the "
            "tf_keras model's own TF checkpoint (save_weights, tf.train.Checkpoint); or give "
            "the model's own .h5 as --like SKELETON.h5 to map layers into it")
    if model and all(_keras3_shaped(e.path) for e in model):
        reason = graph.root.meta.get("keras_legacy_unmapped")
        return ("these are Keras 3 weights (object paths like layers/dense/vars/0) without the "
                "model's layer order and weight lists that a Keras 2 .h5 needs"
                + (f" ({reason})" if reason else "") + "; convert from a .keras archive")
    if graph.format == "tf":
        what = "a name-based TensorFlow checkpoint (TF1 variable names)"
    else:
        what = f"a {graph.format} file" if graph.format else "this graph"
    return (f"a Keras 2 .h5 is loaded by position (layer order, then each layer's weight "
            f"order), and {what} does not record that order" + give)


def _plan_from_objects(graph: Graph, entries: list, result: _Plan) -> None:
    """A tf_keras model's TF object checkpoint: its layers in Keras' order; everything
    else (optimizer, metrics, save counter) is left out and said."""
    found = tfgraph.model_of(graph)
    result.layer_names, result.layers = found.layer_names, found.layers
    left = found.left_out(entries)
    if left:
        where = ", ".join(f"{name}: {count}" for name, count in left.items())
        result.notes.append(
            f"{sum(left.values())} value(s) outside the model's layers were not written "
            f"({where}): a weights .h5 holds layer weights only, and Keras keeps optimizer "
            "state only in a full-model .h5, which needs the model config that a checkpoint "
            "does not hold")


def _keras3_shaped(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-2] == "vars" and path[-1].isdigit()


def _is_legacy_optimizer(entries: list) -> bool:
    return all("keras_weight_name" in e.tensor.meta and "keras3_key" not in e.tensor.meta
               and not e.tensor.meta.get("keras3_optimizer") for e in entries)


def _plan_from_meta(graph: Graph, model: list, result: _Plan) -> None:
    order: dict[str, int] = {}
    for entry in model:
        layer = entry.tensor.meta["keras_layer"]
        if layer == TOP_LEVEL:
            result.top.append((entry.tensor.meta["keras_weight_name"], entry.tensor))
            continue
        order.setdefault(layer, len(order))
        result.layers.setdefault(layer, []).append(
            (entry.tensor.meta["keras_weight_name"], entry.tensor))
    for weights in [*result.layers.values(), result.top]:
        weights.sort(key=lambda w: w[1].meta.get("keras_weight_index", 1 << 62))
    known = graph.root.meta.get("keras_layer_names")
    if isinstance(known, list) and set(result.layers) <= set(known):
        result.layer_names = [str(n) for n in known]
    else:
        by_index = sorted(order, key=lambda n: (
            _first_meta(result.layers[n], "keras_layer_index"), order[n]))
        result.layer_names = by_index


def _first_meta(weights: list[tuple[str, Tensor]], key: str) -> float:
    value = weights[0][1].meta.get(key)
    return value if isinstance(value, int) else float("inf")


def write(graph: Graph, path: Path, *, overwrite: bool = False, inputs: tuple = (),
          progress: Callable[[int], None] | None = None, report: Any = None,
          **options: Any) -> None:
    result = plan(graph)
    full = isinstance(graph.metadata.get("model_config"), str)
    version = graph.metadata.get("keras_version")
    if not isinstance(version, str) or not version or version == "1":
        if graph.format == "keras-h5" and version is None:
            result.notes.append("the source had no keras_version (a Keras 1 file); "
                                f"written as {DEFAULT_KERAS_VERSION}, so Keras will not "
                                "convert Keras 1 kernels on loading")
        version = DEFAULT_KERAS_VERSION
    backend = graph.metadata.get("backend")
    backend = backend if isinstance(backend, str) and backend else "tensorflow"
    for name in [*result.layer_names, *result.layers]:
        check_component(name, "layer name")
        if "/" in name:
            raise UnsupportedError(f"layer name {name!r} holds '/', which Keras 2 files cannot "
                                   "use as a group name")
    if any(is_bfloat16(t.dtype) for weights in [*result.layers.values(), result.top]
           for _, t in weights):
        result.notes.append("bfloat16 weights are stored as HDF5 opaque values, as Keras 3 "
                            "does; Keras cannot load those from a .h5 (write a .weights.h5)")
    with OutputSet(overwrite, inputs) as out:
        tmp = out.path(path)
        with create(tmp) as f:
            if full:
                f.attrs["backend"] = backend.encode("utf8")
                f.attrs["keras_version"] = version.encode("utf8")
                f.attrs["model_config"] = graph.metadata["model_config"].encode("utf8")
                training = graph.metadata.get("training_config")
                if isinstance(training, str):
                    f.attrs["training_config"] = training.encode("utf8")
                group = f.create_group("model_weights")
            else:
                group = f
            _write_weights(group, result, version, backend, progress, report)
            if full and result.optimizer:
                opt = f.create_group("optimizer_weights")
                _write_subset(opt, result.optimizer, progress, report)
    if report is not None:
        report.files.append(os.fspath(path))
        report.notes.extend(result.notes)
        kept = {"keras_version", "backend", *(("model_config", "training_config") if full else ())}
        note = dropped_values(non_tensor_values(graph, kept),
                              "a Keras 2 .h5 holds weights and its model's config only")
        if note:
            report.notes.append(note)


def _write_weights(group: h5py.Group, result: _Plan, version: str, backend: str,
                   progress, report) -> None:
    names = list(result.layer_names)
    names += [n for n in result.layers if n not in names]
    write_names(group, "layer_names", names)
    group.attrs["backend"] = backend.encode("utf8")
    group.attrs["keras_version"] = version.encode("utf8")
    for name in sorted(names):  # Keras' own order: by name, so no name is a prefix clash
        _write_subset(group.create_group(name), result.layers.get(name, []), progress, report)
    _write_subset(group.create_group(TOP_LEVEL), result.top, progress, report)


def _write_subset(group: h5py.Group, weights: list[tuple[str, Tensor]], progress,
                  report) -> None:
    seen: set[str] = set()
    for name, tensor in weights:
        check_component(name, "weight name")
        check_writable(tensor, f"weight {name!r}")
        if name in seen:
            raise UnsupportedError(f"weight name {name!r} appears twice in layer "
                                   f"{group.name.lstrip('/')}")
        seen.add(name)
    write_names(group, "weight_names", [name for name, _ in weights])
    for name, tensor in weights:
        array = tensor.read()
        write_dataset(group, name, array)
        if progress is not None:
            progress(tensor.nbytes)
        if report is not None:
            report.tensors += 1
            report.bytes += tensor.nbytes
        del array
