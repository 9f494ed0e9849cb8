"""Writing Keras 2 legacy HDF5 weight files (`keras-h5`), weights-only or full-model.

The layout is described in `legacy_reader.py`. The order is the file's meaning, so it comes
from the source or the conversion is refused (`plan`): the Keras identities the readers
give each weight, or a tf_keras model found in a TF object graph (`tfgraph`); never path
or sorted order. Apart from reading because that recovery of order from any source is
the whole of writing, and reading needs none of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from convert.core.dtypes import is_bfloat16
from convert.core.errors import UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import (
    BACKEND,
    KERAS3_KEY,
    KERAS3_OPTIMIZER,
    KERAS_ALSO_IN,
    KERAS_LAYER,
    KERAS_LAYER_INDEX,
    KERAS_LAYER_NAMES,
    KERAS_LEGACY_UNMAPPED,
    KERAS_OPTIMIZER,
    KERAS_VERSION,
    KERAS_WEIGHT_INDEX,
    KERAS_WEIGHT_NAME,
    MODEL_CONFIG,
    TRAINING_CONFIG,
)
from convert.core.notes import dropped_values, non_tensor_values
from convert.core.tensor import Tensor
from convert.formats.keras import tfgraph
from convert.formats.keras.hdf5_writer import (
    check_component,
    check_writable,
    create,
    write_dataset,
    write_names,
)
from convert.frameworks.keras.layout import TOP_LEVEL
from convert.io.reads import OutputSet

DEFAULT_KERAS_VERSION = "2.15.0"  # any version but "1": without one Keras assumes Keras 1


class _Plan:
    def __init__(self) -> None:
        self.layer_names: list[str] = []
        self.layers: dict[str, list[tuple[str, Tensor]]] = {}
        self.top: list[tuple[str, Tensor]] = []
        self.optimizer: list[tuple[str, Tensor]] = []
        self.notes: list[str] = []


def placement(graph: Graph) -> _Plan:
    """Which layer group and weight name each tensor of `graph` goes to, in order.

    The order is the file's meaning (Keras loads by position), so it comes from the
    source or the conversion is refused: Keras' own identities of each weight (a Keras
    file read here), or a tf_keras model's TF object checkpoint (`tfgraph`)."""
    result = _Plan()
    entries = graph.entries()
    optimizer = [e for e in entries if e.tensor.meta.get(KERAS_OPTIMIZER)]
    model = [e for e in entries if not e.tensor.meta.get(KERAS_OPTIMIZER) and e.slot is None]
    if model and all(
        KERAS_LAYER in e.tensor.meta and KERAS_WEIGHT_NAME in e.tensor.meta for e in model
    ):
        _plan_from_meta(graph, model, result)
    elif tfgraph.is_object_graph(graph):
        _plan_from_objects(graph, entries, result)
        return result
    else:
        raise UnsupportedError(_order_unknown(graph, model), graph.source)
    slots = [e for e in entries if e.slot is not None and not e.tensor.meta.get(KERAS_OPTIMIZER)]
    if slots:
        result.notes.append(
            f"{len(slots)} optimizer slot(s) from another format were not "
            "written: Keras 2 files keep only a Keras optimizer's own weights"
        )
    full = isinstance(graph.values.get(MODEL_CONFIG), str)
    if optimizer and full and _is_legacy_optimizer(optimizer):
        optimizer.sort(key=lambda e: e.tensor.meta.get(KERAS_WEIGHT_INDEX, 1 << 62))
        result.optimizer = [(e.tensor.meta[KERAS_WEIGHT_NAME], e.tensor) for e in optimizer]
    elif optimizer:
        result.notes.append(
            f"{len(optimizer)} optimizer weight(s) were not written: only a "
            "full-model .h5 read from a Keras 2 file carries them over"
        )
    return result


def _order_unknown(graph: Graph, model: list) -> str:
    """Why the source cannot give a .h5's order, and what would."""
    give = (
        "; convert from what records it: a full-model .h5, a .keras archive, or the "
        "tf_keras model's own TF checkpoint (save_weights, tf.train.Checkpoint); or give "
        "the model's own .h5 as --like SKELETON.h5 to map layers into it"
    )
    if model and all(_keras3_shaped(e.path) for e in model):
        reason = graph.root.meta.get(KERAS_LEGACY_UNMAPPED)
        return (
            "these are Keras 3 weights (object paths like layers/dense/vars/0) without the "
            "model's layer order and weight lists that a Keras 2 .h5 needs"
            + (f" ({reason})" if reason else "")
            + "; convert from a .keras archive"
        )
    if graph.format == "tf":
        what = "a name-based TensorFlow checkpoint (TF1 variable names)"
    else:
        what = f"a {graph.format} file" if graph.format else "this graph"
    return (
        f"a Keras 2 .h5 is loaded by position (layer order, then each layer's weight "
        f"order), and {what} does not record that order" + give
    )


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
            "does not hold"
        )


def _keras3_shaped(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-2] == "vars" and path[-1].isdigit()


def _is_legacy_optimizer(entries: list) -> bool:
    return all(
        KERAS_WEIGHT_NAME in e.tensor.meta
        and KERAS3_KEY not in e.tensor.meta
        and not e.tensor.meta.get(KERAS3_OPTIMIZER)
        for e in entries
    )


def _plan_from_meta(graph: Graph, model: list, result: _Plan) -> None:
    order: dict[str, int] = {}
    placed: dict[str, list[tuple[float, str, Tensor]]] = {}
    for entry in model:
        meta = entry.tensor.meta
        layer, weight_name = meta[KERAS_LAYER], meta[KERAS_WEIGHT_NAME]
        if layer == TOP_LEVEL:
            result.top.append((weight_name, entry.tensor))
            continue
        index = meta.get(KERAS_WEIGHT_INDEX, 1 << 62)
        for where, at in [(layer, index), *meta.get(KERAS_ALSO_IN, [])]:
            order.setdefault(where, len(order))
            placed.setdefault(where, []).append((at, weight_name, entry.tensor))
    for layer, weights in placed.items():
        weights.sort(key=lambda w: w[0])
        result.layers[layer] = [(name, tensor) for _, name, tensor in weights]
    result.top.sort(key=lambda w: w[1].meta.get(KERAS_WEIGHT_INDEX, 1 << 62))
    known = graph.root.meta.get(KERAS_LAYER_NAMES)
    if isinstance(known, list) and set(result.layers) <= set(known):
        result.layer_names = [str(n) for n in known]
    else:
        by_index = sorted(
            order, key=lambda n: (_first_meta(result.layers[n], KERAS_LAYER_INDEX), order[n])
        )
        result.layer_names = by_index


def _first_meta(weights: list[tuple[str, Tensor]], key: str) -> float:
    value = weights[0][1].meta.get(key)
    return value if isinstance(value, int) else float("inf")


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Callable[[int], None] | None = None,
    report: Any = None,
    **options: Any,
) -> None:
    result = placement(graph)
    full = isinstance(graph.values.get(MODEL_CONFIG), str)
    version = graph.values.get(KERAS_VERSION)
    if not isinstance(version, str) or not version or version == "1":
        if graph.format == "keras-h5" and version is None:
            result.notes.append(
                "the source had no keras_version (a Keras 1 file); "
                f"written as {DEFAULT_KERAS_VERSION}, so Keras will not "
                "convert Keras 1 kernels on loading"
            )
        version = DEFAULT_KERAS_VERSION
    backend = graph.values.get(BACKEND)
    backend = backend if isinstance(backend, str) and backend else "tensorflow"
    for name in [*result.layer_names, *result.layers]:
        check_component(name, "layer name")
        if "/" in name:
            raise UnsupportedError(
                f"layer name {name!r} holds '/', which Keras 2 files cannot use as a group name"
            )
    if any(
        is_bfloat16(t.dtype)
        for weights in [*result.layers.values(), result.top]
        for _, t in weights
    ):
        result.notes.append(
            "bfloat16 weights are stored as HDF5 opaque values, as Keras 3 "
            "does; Keras cannot load those from a .h5 (write a .weights.h5)"
        )
    with OutputSet(overwrite, inputs) as out:
        tmp = out.path(path)
        with create(tmp) as f:
            if full:
                f.attrs["backend"] = backend.encode("utf8")
                f.attrs["keras_version"] = version.encode("utf8")
                f.attrs["model_config"] = graph.values[MODEL_CONFIG].encode("utf8")
                training = graph.values.get(TRAINING_CONFIG)
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
        kept = {KERAS_VERSION, BACKEND, *((MODEL_CONFIG, TRAINING_CONFIG) if full else ())}
        note = dropped_values(
            non_tensor_values(graph, kept),
            "a Keras 2 .h5 holds weights and its model's config only",
        )
        if note:
            report.notes.append(note)


def _write_weights(
    group: h5py.Group, result: _Plan, version: str, backend: str, progress, report
) -> None:
    names = list(result.layer_names)
    names += [n for n in result.layers if n not in names]
    write_names(group, "layer_names", names)
    group.attrs["backend"] = backend.encode("utf8")
    group.attrs["keras_version"] = version.encode("utf8")
    for name in sorted(names):  # Keras' own order: by name, so no name is a prefix clash
        _write_subset(group.create_group(name), result.layers.get(name, []), progress, report)
    _write_subset(group.create_group(TOP_LEVEL), result.top, progress, report)


def _write_subset(group: h5py.Group, weights: list[tuple[str, Tensor]], progress, report) -> None:
    seen: set[str] = set()
    for name, tensor in weights:
        check_component(name, "weight name")
        check_writable(tensor, f"weight {name!r}")
        if name in seen:
            raise UnsupportedError(
                f"weight name {name!r} appears twice in layer {group.name.lstrip('/')}"
            )
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
