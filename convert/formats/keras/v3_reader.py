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
their `name` attributes ride along as empty Nodes (`meta[VARS_NAME]`). A `.keras` archive's
config maps each variable to its Keras 2 identity too (`keras_layer`,
`keras_layer_index`, `keras_weight_index`, `keras_weight_name`).

The HDF5 form is known by its `vars` groups (`sniff_h5`): at the root in Keras' own files,
maybe only deeper in another tool's, which Keras loads too. This module reads all three;
`v3_writer.py` writes them. Apart because reading merges shards and checks archives and
indexes against hostile input, while writing plans a graph into object paths: they share
only the layout above.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import h5py

from convert.core.errors import FormatError, UnsafeInputError, UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import (
    KERAS3_KEY,
    KERAS3_OPTIMIZER,
    KERAS_ASSETS,
    KERAS_CONFIG,
    KERAS_LAYER,
    KERAS_LAYER_INDEX,
    KERAS_LAYER_NAMES,
    KERAS_LEGACY_UNMAPPED,
    KERAS_METADATA,
    KERAS_OBJECT,
    KERAS_OPTIMIZER,
    KERAS_VAR_INDEX,
    KERAS_VERSION,
    KERAS_WEIGHT_INDEX,
    KERAS_WEIGHT_NAME,
    SHARD,
    SOURCE_KEY,
    TOTAL_SIZE,
    VARS_NAME,
)
from convert.core.tensor import Tensor
from convert.formats.keras.hdf5_files import Source, zip_member_source
from convert.formats.keras.hdf5_reader import dataset_tensor, members, read_text
from convert.frameworks.keras import config as keras_config
from convert.frameworks.keras import layout
from convert.frameworks.keras.layout import WEIGHTS_MEMBER
from convert.io.zipcheck import lying_sizes, unsafe_name

_MAX_JSON = 64 << 20
_SHARD_NAME = re.compile(r"[^/\\]+\.h5")


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


def _walk(
    group: h5py.Group,
    prefix: str,
    where: Source,
    nodes: dict[str, Node],
    variables: dict[str, dict[str, Tensor]],
    shard: bool,
) -> None:
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
                    node.meta[VARS_NAME] = label
            _walk(item, path, where, nodes, variables, shard)
        elif isinstance(item, h5py.Dataset):
            found = variables.setdefault(prefix, {})
            if name in found:
                raise FormatError(f"dataset {path} is stored in two shards", where.label)
            meta: dict[str, Any] = {SOURCE_KEY: path, KERAS3_KEY: path}
            if (prefix == "vars" or prefix.endswith("/vars")) and name.isdigit():
                owner = prefix[: -len("vars")].rstrip("/")
                meta[KERAS_OBJECT] = owner
                meta[KERAS_VAR_INDEX] = int(name)
                if owner == "optimizer" or owner.startswith("optimizer/"):
                    meta[KERAS_OPTIMIZER] = True
                    meta[KERAS3_OPTIMIZER] = True
            if shard:
                meta[SHARD] = Path(where.path).name
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
    graph = Graph(
        format="keras", source=os.fspath(path), files=[os.fspath(path), *(s.path for s in sources)]
    )
    graph.values[TOTAL_SIZE] = index.get("metadata", {}).get("total_size")
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
                raise UnsafeInputError(
                    f"weight_map entry {key!r} names shard {name!r}; only "
                    "plain .h5 file names beside the index are accepted",
                    path,
                )
    return index


def looks_like_index(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_JSON:
            return False
        index = json.loads(path.read_text(encoding="utf8"))
        weight_map = index["weight_map"]
        return (
            isinstance(weight_map, dict)
            and bool(weight_map)
            and all(
                isinstance(k, str) and k.startswith("/") and k.endswith("vars") for k in weight_map
            )
        )
    except Exception:
        return False


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    seen: set[str] = set()
    for info in archive.infolist():
        problem = unsafe_name(info.filename) or lying_sizes(
            info.filename,
            info.compress_type == zipfile.ZIP_STORED,
            info.file_size,
            info.compress_size,
        )
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
    except (
        zipfile.BadZipFile,
        OSError,
        UnicodeDecodeError,
        EOFError,
        zlib.error,
        NotImplementedError,
    ) as exc:  # (a member cut short, bad deflate, odd method)
        raise FormatError(
            f"is not a readable .keras archive ({exc}): the file is damaged or truncated", path
        ) from None
    if WEIGHTS_MEMBER not in names:
        other = sorted(n for n in names if n.startswith("model.weights"))
        raise UnsupportedError(
            f"the archive holds no {WEIGHTS_MEMBER}"
            + (f" (it has {other[0]}, which is not read)" if other else ""),
            path,
        )
    graph = _read_sources(path, [zip_member_source(path, WEIGHTS_MEMBER)])
    if "config.json" in texts:
        graph.values[KERAS_CONFIG] = texts["config.json"]
    if "metadata.json" in texts:
        graph.values[KERAS_METADATA] = texts["metadata.json"]
        fields = keras_config.decode(texts["metadata.json"]) or {}
        if isinstance(fields.get("keras_version"), str):
            graph.values[KERAS_VERSION] = fields["keras_version"]
    assets = sorted(n for n in names if n.startswith("assets/"))
    if assets:
        graph.root.meta[KERAS_ASSETS] = assets
    _annotate_legacy(graph)
    return graph


def _objects(graph: Graph) -> tuple[dict[str, list[Tensor]], dict[str, str]]:
    """Object path → its variables in index order, and → the `name` of its `vars` group."""
    objects: dict[str, list[Tensor]] = {}
    names: dict[str, str] = {}
    for path, item in graph.nodes():
        if path and path[-1] == "vars":
            owner = "/".join(path[:-1])
            if VARS_NAME in item.meta:
                names[owner] = item.meta[VARS_NAME]
            objects[owner] = [
                t for k, t in item.edges.items() if isinstance(t, Tensor) and k.isdigit()
            ]
    return objects, names


def _annotate_legacy(graph: Graph) -> None:
    """Give each variable its Keras 2 identity, from the archive's config."""
    config = keras_config.decode(graph.values.get(KERAS_CONFIG))
    if config is None:
        graph.root.meta[KERAS_LEGACY_UNMAPPED] = "the archive holds no config.json"
        return
    objects, names = _objects(graph)
    try:
        layer_names, layers = layout.keras3_to_legacy(config, objects, names)
    except layout.Unmappable as exc:
        graph.root.meta[KERAS_LEGACY_UNMAPPED] = str(exc)
        return
    graph.root.meta[KERAS_LAYER_NAMES] = layer_names
    index = 0
    for weights in layers:
        for j, weight in enumerate(weights):
            weight.tensor.meta.update(
                {
                    KERAS_LAYER: weight.layer,
                    KERAS_LAYER_INDEX: index,
                    KERAS_WEIGHT_INDEX: j,
                    KERAS_WEIGHT_NAME: weight.name,
                }
            )
        if weights:
            index += 1


# Bounds on the sniff's walk for a `vars` group: a damaged or hostile file may hold hard
# links in a cycle or millions of groups, and sniffing must end (Keras' object paths are a
# few levels deep: `layers/sequential/layers/lstm/cell/vars`).
_SNIFF_GROUPS = 10_000
_SNIFF_DEPTH = 32


def sniff_h5(f: h5py.File) -> bool:
    """A Keras 3 weights file: object groups with `vars`, no Keras 2 `layer_names`.

    Keras' own files have the model's `vars` at the root; a file without it (written by
    another tool, the objects of a subclassed model at their attribute names: `fc/vars/0`)
    is one Keras loads all the same, since its loader looks each object's `vars` up by path
    and takes a missing one as empty: any `vars` group below the root makes it Keras 3."""
    if "layer_names" in f.attrs or "layer_names0" in f.attrs or "model_weights" in f:
        return False
    if any(name in f for name in ("vars", "layers", "optimizer")):
        return True
    return _holds_vars(f)


def _holds_vars(root: h5py.Group) -> bool:
    """Whether a group named `vars` lies below `root` (hard links only, breadth first,
    within the bounds above)."""
    level, seen = [root], 0
    for _ in range(_SNIFF_DEPTH):
        below = []
        for group in level:
            for name in group:
                if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                    continue
                item = group.get(name)
                if not isinstance(item, h5py.Group):
                    continue
                if name == "vars":
                    return True
                seen += 1
                if seen > _SNIFF_GROUPS:
                    return False
                below.append(item)
        if not below:
            return False
        level = below
    return False
