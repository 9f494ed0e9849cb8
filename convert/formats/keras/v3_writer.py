"""Writing Keras 3 weight files: a graph planned into object paths
(`layers/<name>/vars/<i>`, from the graph's own paths or the `KERAS3_KEY` a Keras 2 file's
config gave each weight), then written as a `.weights.h5`, a sharded `.weights.json` cut
the way Keras cuts it, or a `.keras` archive around the source's config.

The layout is described in `v3_reader.py`; apart from it because writing shares nothing
with reading but that layout.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from convert.core.errors import UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import (
    KERAS3_KEY,
    KERAS3_UNMAPPED,
    KERAS_ASSETS,
    KERAS_CONFIG,
    KERAS_METADATA,
    KERAS_OPTIMIZER,
    KERAS_VERSION,
    VARS_NAME,
)
from convert.core.tensor import Tensor
from convert.formats.keras.hdf5_writer import check_component, check_writable, create, write_dataset
from convert.frameworks.keras.layout import WEIGHTS_MEMBER
from convert.io.reads import OutputSet

KERAS_SHARD_SIZE = 5 * 1024**3  # ShardedH5IOStore's default, 5 GiB


class _Plan:
    def __init__(self) -> None:
        self.variables: list[tuple[str, str, Tensor]] = []  # (vars group path, index, tensor)
        self.names: dict[str, str | None] = {}  # vars group path → `name` attribute
        self.notes: list[str] = []


def _keras3_path(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-2] == "vars" and path[-1].isdigit()


def placement(graph: Graph) -> _Plan:
    result = _Plan()
    entries = graph.entries()
    slots = [e for e in entries if e.slot is not None]
    plain = [e for e in entries if e.slot is None]
    if plain and all(_keras3_path(e.path) for e in plain):
        keys = [("/".join(e.path), e.tensor) for e in plain]
        for path, item in graph.nodes():
            if path and path[-1] == "vars" and VARS_NAME in item.meta:
                result.names["/".join(path)] = str(item.meta[VARS_NAME])
    else:
        model = [e for e in plain if not e.tensor.meta.get(KERAS_OPTIMIZER)]
        dropped = len(plain) - len(model)
        if not model or not all(KERAS3_KEY in e.tensor.meta for e in model):
            reason = graph.root.meta.get(KERAS3_UNMAPPED)
            raise UnsupportedError(
                "the Keras 3 object paths of these weights (layers/<name>/vars/<i>) are not "
                "known" + (f": {reason}" if reason else "") + "; a Keras 3 file needs the target "
                "model's structure: convert from a full-model .h5 or a .keras archive",
                graph.source,
            )
        keys = [(e.tensor.meta[KERAS3_KEY], e.tensor) for e in model]
        if dropped:
            result.notes.append(
                f"{dropped} optimizer weight(s) were not written: optimizer "
                "state is not carried between Keras 2 and Keras 3 layouts"
            )
    if slots:
        result.notes.append(
            f"{len(slots)} optimizer slot(s) were not written: a Keras 3 file "
            "keeps only its own optimizer's variables"
        )
    seen: set[str] = set()
    for key, tensor in keys:
        check_component(key, "Keras 3 key")
        check_writable(tensor, f"weight {key!r}")
        if key in seen:
            raise UnsupportedError(f"two weights would be written to {key!r}")
        seen.add(key)
        group, _, index = key.rpartition("/")
        result.variables.append((group, index, tensor))
    for group in _object_groups(result.variables):
        result.names.setdefault(group, None)
    return result


def _object_groups(variables: list[tuple[str, str, Tensor]]) -> list[str]:
    """The `vars` groups Keras writes for objects that the weights' paths imply: the
    model's own at the root (every Keras model has a name, so Keras always writes it), and
    each layer's in a `layers` list and the object holding that list (a nested model), with
    or without variables. A graph planned by `[[path]]` rules, with no skeleton, has only
    its weights' groups; these make the file the structure Keras itself writes (the
    objects Keras cannot be told of from the paths, an InputLayer or a Flatten, stay
    absent: Keras' loader takes a missing `vars` group as empty)."""
    found = ["vars"]
    for group, _, _ in variables:
        steps = group.split("/")[:-1]  # (the owner's path, without `vars`)
        for i, step in enumerate(steps[:-1]):
            if step == "layers":
                found += ["/".join([*steps[:i], "vars"]), "/".join([*steps[: i + 2], "vars"])]
    return list(dict.fromkeys(found))


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Callable[[int], None] | None = None,
    report: Any = None,
    max_shard_size: float | None = None,
    **options: Any,
) -> None:
    name = path.name.lower()
    result = placement(graph)
    with OutputSet(overwrite, inputs) as out:
        if name.endswith(".json"):
            limit = KERAS_SHARD_SIZE if max_shard_size is None else max_shard_size
            if not isinstance(limit, int | float) or limit <= 0:
                raise UnsupportedError(
                    f"max_shard_size must be a positive number of bytes, not {max_shard_size!r}",
                    path,
                )
            written = _write_sharded(result, path, out, limit, progress, report)
        elif max_shard_size is not None:
            raise UnsupportedError(
                "max_shard_size needs a .weights.json destination (the index of the shards)", path
            )
        elif name.endswith(".keras"):
            written = _write_archive(graph, result, path, out, progress, report)
        else:
            _write_h5(out.path(path), result, progress, report)
            written = [path]
    if report is not None:
        report.files.extend(os.fspath(p) for p in written)
        report.notes.extend(result.notes)


def _count(tensor: Tensor, progress, report) -> None:
    if progress is not None:
        progress(tensor.nbytes)
    if report is not None:
        report.tensors += 1
        report.bytes += tensor.nbytes


def _vars_group(f: h5py.File, group_path: str, name: str | None) -> h5py.Group:
    group = f.get(group_path)
    if group is None:
        group = f.create_group(group_path)
        if name is not None:
            group.attrs["name"] = name
    elif not isinstance(group, h5py.Group):
        raise UnsupportedError(f"{group_path} would be both a dataset and a group")
    return group


def _write_h5(tmp: Path, result: _Plan, progress, report) -> None:
    with create(tmp) as f:
        for group_path, name in result.names.items():
            _vars_group(f, group_path, name)
        for group_path, index, tensor in result.variables:
            group = _vars_group(f, group_path, result.names.get(group_path))
            array = tensor.read()
            write_dataset(group, index, array)
            _count(tensor, progress, report)
            del array


def _write_sharded(
    result: _Plan, path: Path, out: OutputSet, limit: float, progress, report
) -> list[Path]:
    """Shards the way Keras' ShardedH5IOStore cuts them: a new file once the running size
    passes `limit` bytes (Keras takes GiB: `max_shard_size=2` is 2 * 1024**3 here); a group
    cut in two continues, unnamed, in the next file; a tensor larger than the limit gets a
    file of its own (Keras refuses it)."""
    base = path.name[: -len(".json")]
    base = base[: -len(".weights")] if base.endswith(".weights") else base
    shards: list[Path] = []
    weight_map: dict[str, Any] = {}
    total = 0.0
    current = 0.0
    handle: h5py.File | None = None

    def new_shard() -> h5py.File:
        shard = path.with_name(f"{base}_{len(shards):05}.weights.h5")
        shards.append(shard)
        return create(out.path(shard))

    try:
        handle = new_shard()
        started: set[str] = set()
        for group_path, index, tensor in result.variables:
            size = tensor.size * tensor.dtype.itemsize
            total += size
            current += size
            if current > limit and current > size:
                handle.close()
                handle = new_shard()
                current = size
            name = result.names.get(group_path) if group_path not in started else None
            started.add(group_path)
            group = _vars_group(handle, group_path, name)
            array = tensor.read()
            write_dataset(group, index, array)
            _count(tensor, progress, report)
            del array
            key = "/" + group_path
            shard_name = shards[-1].name
            if key not in weight_map:
                weight_map[key] = shard_name
            else:
                if not isinstance(weight_map[key], list):
                    weight_map[key] = [weight_map[key]]
                if shard_name not in weight_map[key]:
                    weight_map[key].append(shard_name)
        for group_path, name in result.names.items():
            if group_path not in started:
                _vars_group(handle, group_path, name)
    finally:
        if handle is not None:
            handle.close()
    index_text = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=4)
    out.path(path).write_text(index_text, encoding="utf8")
    return [path, *shards]


def _write_archive(
    graph: Graph, result: _Plan, path: Path, out: OutputSet, progress, report
) -> list[Path]:
    config = graph.values.get(KERAS_CONFIG)
    if not isinstance(config, str):
        raise UnsupportedError(
            "a .keras archive needs the model's config.json, which only a "
            ".keras file carries (a source, or a skeleton given to "
            "{like}); write a .weights.h5 instead",
            path,
            {"like": "like="},
        )
    metadata = graph.values.get(KERAS_METADATA)
    if not isinstance(metadata, str):
        metadata = json.dumps({"keras_version": graph.values.get(KERAS_VERSION, "3")})
    if graph.root.meta.get(KERAS_ASSETS):
        result.notes.append("the source archive's assets/ were not copied")
    archive_tmp = out.path(path)
    weights_tmp = out.scratch(path.parent, f"{path.name}.weights.h5")
    _write_h5(weights_tmp, result, progress, report)
    with zipfile.ZipFile(archive_tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("metadata.json", metadata)
        archive.writestr("config.json", config)
        archive.write(weights_tmp, WEIGHTS_MEMBER)
    return [path]
