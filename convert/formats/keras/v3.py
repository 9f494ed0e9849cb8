"""Keras 3 weight files (`keras`): `.weights.h5`, sharded `.weights.json`, `.keras` archives.

`.weights.h5` (Keras ≥ 3.0, `model.save_weights`): one group per object of the model's
object tree (`layers/dense`, `layers/sequential/layers/dense_1`, `optimizer`, attribute
names of subclassed models, `container_N` for nested lists), each with a `vars` group
holding the object's own variables as datasets `0`, `1`, … (trainable, then
non-trainable, in creation order) and a `name` attribute (the object's `name`). bfloat16
variables are 2-byte opaque datasets with attribute `dtype="bfloat16"`.

Sharded (`save_weights("x.weights.json", max_shard_size=GB)`): a JSON index
`{"metadata": {"total_size": bytes}, "weight_map": {"/layers/dense/vars": shard or
[shards]}}` beside shards `x_00000.weights.h5`, `x_00001.weights.h5`, …; a `vars` group cut
by a shard boundary continues, without its `name` attribute, in the next shard.

`.keras` (`model.save`): a zip holding `metadata.json`, `config.json` and
`model.weights.h5` (stored, not deflated), read in place.

Graph: the group path split on `/`, `vars/<i>` kept (`layers/dense/vars/0`), so a graph
that went through a flat format comes back to the same layout; empty `vars` groups and
their `name` attributes ride along as empty Nodes (`meta["name"]`). A `.keras` archive's
config maps each variable to its Keras 2 identity too (`keras_layer`,
`keras_layer_index`, `keras_weight_index`, `keras_weight_name`).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from ...errors import FormatError, UnsafeInputError, UnsupportedError
from ...fileio import OutputSet
from ...graph import Graph, Node
from ...tensor import Tensor
from ...zipcheck import lying_sizes, unsafe_name
from . import layout
from .hdf5 import (
    Source,
    check_component,
    check_writable,
    create,
    dataset_tensor,
    members,
    read_text,
    write_dataset,
    zip_member_source,
)

WEIGHTS_MEMBER = "model.weights.h5"
KERAS_SHARD_SIZE = 5 * 1024**3  # ShardedH5IOStore's default, 5 GiB
_MAX_JSON = 64 << 20
_SHARD_NAME = re.compile(r"[^/\\]+\.h5")


# -- reading ---------------------------------------------------------------------------------

def read(path: Path) -> Graph:
    name = path.name.lower()
    if name.endswith(".json"):
        return _read_sharded(path)
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            return _read_archive(path)
    return _read_sources(path, [Source(os.fspath(path))])


def _read_sources(path: Path, sources: list[Source], graph: Graph | None = None) -> Graph:
    """Merge the object trees of one or more HDF5 files (shards) into one graph."""
    if graph is None:
        graph = Graph(format="keras", source=os.fspath(path), files=[os.fspath(path)])
    nodes: dict[str, Node] = {"": graph.root}
    variables: dict[str, dict[str, Tensor]] = {}
    for where in sources:
        with where.open() as f:
            _walk(f, "", where, nodes, variables, len(sources) > 1)
    for group_path, found in variables.items():
        node = nodes[group_path]
        for index in sorted(found, key=_index_order):
            if index in node.edges:
                raise FormatError(f"{group_path}/{index} is both a dataset and a group", path)
            node.edges[index] = found[index]
    return graph


def _index_order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def _walk(group: h5py.Group, prefix: str, where: Source, nodes: dict[str, Node],
          variables: dict[str, dict[str, Tensor]], shard: bool) -> None:
    for name, item in members(group, where):
        path = f"{prefix}/{name}" if prefix else name
        parent = nodes[prefix]
        if isinstance(item, h5py.Group):
            node = nodes.get(path)
            if node is None:
                existing = parent.edges.get(name)
                if existing is not None and not isinstance(existing, Node):
                    raise FormatError(f"{path} is both a dataset and a group", where.label)
                node = nodes[path] = Node()
                parent.edges[name] = node
            if name == "vars":
                label = read_text(item, "name", where)
                if label is not None:
                    node.meta["name"] = label
            _walk(item, path, where, nodes, variables, shard)
        elif isinstance(item, h5py.Dataset):
            found = variables.setdefault(prefix, {})
            if name in found:
                raise FormatError(f"dataset {path} is stored in two shards", where.label)
            meta: dict[str, Any] = {"key": path, "keras3_key": path}
            if (prefix == "vars" or prefix.endswith("/vars")) and name.isdigit():
                owner = prefix[: -len("vars")].rstrip("/")
                meta["keras_object"] = owner
                meta["keras_var_index"] = int(name)
                if owner == "optimizer" or owner.startswith("optimizer/"):
                    meta["keras_optimizer"] = True
                    meta["keras3_optimizer"] = True
            if shard:
                meta["shard"] = Path(where.path).name
            found[name] = dataset_tensor(item, where, meta)


def _read_sharded(path: Path) -> Graph:
    index = _load_index(path)
    files: list[str] = []
    for value in index["weight_map"].values():
        for name in value if isinstance(value, list) else [value]:
            if name not in files:
                files.append(name)
    files.sort()
    sources = []
    for name in files:
        shard = path.parent / name
        if not shard.is_file():
            raise FormatError(f"the index names shard {name}, which does not exist", path)
        sources.append(Source(os.fspath(shard)))
    graph = Graph(format="keras", source=os.fspath(path),
                  files=[os.fspath(path), *(s.path for s in sources)])
    graph.metadata["total_size"] = index.get("metadata", {}).get("total_size")
    _read_sources(path, sources, graph)
    return graph


def _load_index(path: Path) -> dict:
    try:
        if path.stat().st_size > _MAX_JSON:
            raise FormatError("is too large for a sharded-weights index", path)
        index = json.loads(path.read_text(encoding="utf8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"is not a JSON index of Keras weight shards ({exc})", path) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError("is not a Keras sharded-weights index: no `weight_map`", path)
    for key, value in weight_map.items():
        names = value if isinstance(value, list) else [value]
        for name in names:
            if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name) or name in (".", ".."):
                raise UnsafeInputError(f"weight_map entry {key!r} names shard {name!r}; only "
                                       "plain .h5 file names beside the index are accepted",
                                       path)
    return index


def looks_like_index(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_JSON:
            return False
        index = json.loads(path.read_text(encoding="utf8"))
        weight_map = index["weight_map"]
        return isinstance(weight_map, dict) and bool(weight_map) and all(
            isinstance(k, str) and k.startswith("/") and k.endswith("vars")
            for k in weight_map)
    except Exception:
        return False


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    seen: set[str] = set()
    for info in archive.infolist():
        problem = unsafe_name(info.filename) or lying_sizes(
            info.filename, info.compress_type == zipfile.ZIP_STORED, info.file_size,
            info.compress_size)
        if problem is None and info.filename in seen:
            problem = f"holds member {info.filename} twice"
        if problem:
            raise FormatError(problem, path)
        seen.add(info.filename)


def _read_archive(path: Path) -> Graph:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            _check_members(archive, path)
            texts = {}
            for member in ("config.json", "metadata.json"):
                if member in names:
                    info = archive.getinfo(member)
                    if info.file_size > _MAX_JSON:
                        raise FormatError(f"member {member} is too large", path)
                    texts[member] = archive.read(member).decode("utf8")
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError, zlib.error,
            NotImplementedError) as exc:  # (a member cut short, bad deflate, odd method)
        raise FormatError(f"is not a readable .keras archive ({exc}): the file is damaged or "
                          "truncated", path) from None
    if WEIGHTS_MEMBER not in names:
        other = sorted(n for n in names if n.startswith("model.weights"))
        raise UnsupportedError(f"the archive holds no {WEIGHTS_MEMBER}"
                               + (f" (it has {other[0]}, which is not read)" if other else ""),
                               path)
    graph = _read_sources(path, [zip_member_source(path, WEIGHTS_MEMBER)])
    if "config.json" in texts:
        graph.metadata["keras_config"] = texts["config.json"]
    if "metadata.json" in texts:
        graph.metadata["keras_metadata"] = texts["metadata.json"]
        meta = layout.parse_config(texts["metadata.json"]) or {}
        if isinstance(meta.get("keras_version"), str):
            graph.metadata["keras_version"] = meta["keras_version"]
    assets = sorted(n for n in names if n.startswith("assets/"))
    if assets:
        graph.root.meta["keras_assets"] = assets
    _annotate_legacy(graph)
    return graph


def _objects(graph: Graph) -> tuple[dict[str, list[Tensor]], dict[str, str]]:
    """Object path → its variables in index order, and → the `name` of its `vars` group."""
    objects: dict[str, list[Tensor]] = {}
    names: dict[str, str] = {}
    for path, item in graph.nodes():
        if path and path[-1] == "vars":
            owner = "/".join(path[:-1])
            if "name" in item.meta:
                names[owner] = item.meta["name"]
            objects[owner] = [t for k, t in item.edges.items()
                              if isinstance(t, Tensor) and k.isdigit()]
    return objects, names


def _annotate_legacy(graph: Graph) -> None:
    """Give each variable its Keras 2 identity, from the archive's config."""
    config = layout.parse_config(graph.metadata.get("keras_config"))
    if config is None:
        graph.root.meta["keras_legacy_unmapped"] = "the archive holds no config.json"
        return
    objects, names = _objects(graph)
    try:
        layer_names, layers = layout.keras3_to_legacy(config, objects, names)
    except layout.Unmappable as exc:
        graph.root.meta["keras_legacy_unmapped"] = str(exc)
        return
    graph.root.meta["keras_layer_names"] = layer_names
    index = 0
    for weights in layers:
        for j, weight in enumerate(weights):
            weight.tensor.meta.update({
                "keras_layer": weight.layer, "keras_layer_index": index,
                "keras_weight_index": j, "keras_weight_name": weight.name})
        if weights:
            index += 1


# -- writing ---------------------------------------------------------------------------------

class _Plan:
    def __init__(self) -> None:
        self.variables: list[tuple[str, str, Tensor]] = []  # (vars group path, index, tensor)
        self.names: dict[str, str] = {}  # vars group path → `name` attribute
        self.notes: list[str] = []


def _keras3_path(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-2] == "vars" and path[-1].isdigit()


def plan(graph: Graph) -> _Plan:
    result = _Plan()
    entries = graph.entries()
    slots = [e for e in entries if e.slot is not None]
    plain = [e for e in entries if e.slot is None]
    if plain and all(_keras3_path(e.path) for e in plain):
        keys = [("/".join(e.path), e.tensor) for e in plain]
        for path, item in graph.nodes():
            if path and path[-1] == "vars" and "name" in item.meta:
                result.names["/".join(path)] = str(item.meta["name"])
    else:
        model = [e for e in plain if not e.tensor.meta.get("keras_optimizer")]
        dropped = len(plain) - len(model)
        if not model or not all("keras3_key" in e.tensor.meta for e in model):
            reason = graph.root.meta.get("keras3_unmapped")
            raise UnsupportedError(
                "the Keras 3 object paths of these weights (layers/<name>/vars/<i>) are not "
                "known" + (f": {reason}" if reason else "") + "; a Keras 3 file needs the target "
                "model's structure: convert from a full-model .h5 or a .keras archive",
                graph.source)
        keys = [(e.tensor.meta["keras3_key"], e.tensor) for e in model]
        if dropped:
            result.notes.append(f"{dropped} optimizer weight(s) were not written: optimizer "
                                "state is not carried between Keras 2 and Keras 3 layouts")
    if slots:
        result.notes.append(f"{len(slots)} optimizer slot(s) were not written: a Keras 3 file "
                            "keeps only its own optimizer's variables")
    seen: set[str] = set()
    for key, tensor in keys:
        check_component(key, "Keras 3 key")
        check_writable(tensor, f"weight {key!r}")
        if key in seen:
            raise UnsupportedError(f"two weights would be written to {key!r}")
        seen.add(key)
        group, _, index = key.rpartition("/")
        result.variables.append((group, index, tensor))
    return result


def write(graph: Graph, path: Path, *, overwrite: bool = False, inputs: tuple = (),
          progress: Callable[[int], None] | None = None, report: Any = None,
          max_shard_size: float | None = None, **options: Any) -> None:
    name = path.name.lower()
    result = plan(graph)
    with OutputSet(overwrite, inputs) as out:
        if name.endswith(".json"):
            limit = KERAS_SHARD_SIZE if max_shard_size is None else max_shard_size
            if not isinstance(limit, int | float) or limit <= 0:
                raise UnsupportedError(f"max_shard_size must be a positive number of bytes, "
                                       f"not {max_shard_size!r}", path)
            written = _write_sharded(result, path, out, limit, progress, report)
        elif max_shard_size is not None:
            raise UnsupportedError("max_shard_size needs a .weights.json destination (the "
                                   "index of the shards)", path)
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


def _write_sharded(result: _Plan, path: Path, out: OutputSet, limit: float, progress,
                   report) -> list[Path]:
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
    index_text = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                            indent=4)
    out.path(path).write_text(index_text, encoding="utf8")
    return [path, *shards]


def _write_archive(graph: Graph, result: _Plan, path: Path, out: OutputSet, progress,
                   report) -> list[Path]:
    config = graph.metadata.get("keras_config")
    if not isinstance(config, str):
        raise UnsupportedError("a .keras archive needs the model's config.json, which only a "
                               ".keras source carries; write a .weights.h5 instead", path)
    metadata = graph.metadata.get("keras_metadata")
    if not isinstance(metadata, str):
        metadata = json.dumps({"keras_version": graph.metadata.get("keras_version", "3")})
    if graph.root.meta.get("keras_assets"):
        result.notes.append("the source archive's assets/ were not copied")
    archive_tmp = out.path(path)
    weights_tmp = out.scratch(path.parent, f"{path.name}.weights.h5")
    _write_h5(weights_tmp, result, progress, report)
    with zipfile.ZipFile(archive_tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("metadata.json", metadata)
        archive.writestr("config.json", config)
        archive.write(weights_tmp, WEIGHTS_MEMBER)
    return [path]


def sniff_h5(f: h5py.File) -> bool:
    """A Keras 3 weights file: object groups with `vars`, no Keras 2 `layer_names`."""
    if "layer_names" in f.attrs or "layer_names0" in f.attrs or "model_weights" in f:
        return False
    return any(name in f for name in ("vars", "layers", "optimizer"))

