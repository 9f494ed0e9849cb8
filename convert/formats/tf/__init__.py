"""TensorFlow TensorBundle checkpoints: object-based (`tf.train.Checkpoint`, Keras
`save_weights` in TF format, SavedModel variables) and name-based (TF1 `Saver`).

Registered as `tf`. An input may be named by its prefix, its `.index` or a `.data-*`
file, a directory with a `checkpoint` state file, or a SavedModel directory.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from convert.core.errors import ConvertError, FormatError, UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.meta import TF_LAYOUT
from convert.core.notes import dropped_values, non_tensor_values
from convert.formats.tf import objects, state
from convert.formats.tf.bundle import BundleReader, data_path, strip_suffix
from convert.formats.tf.bundle_writer import BundleWriter
from convert.frameworks.tf1_names import name_based_keys
from convert.io import stream
from convert.io.outputs import OutputSet


class NotACheckpoint(ConvertError):
    """The path names no TensorFlow checkpoint at all (so another format may claim it)."""


def resolve(path: str | os.PathLike) -> str:
    """The checkpoint prefix a user's path names, as text: a TF1 `saver.save(sess, "dir/")`
    prefix is `dir/` (files `dir/.index`, `dir/.data-*`), which a Path cannot spell.
    A ConvertError says what was found; NotACheckpoint that it is no checkpoint at all."""
    text = os.fspath(path)
    p = Path(text)
    if p.is_dir():
        return _prefix_in_directory(p)
    prefix = strip_suffix(text)
    if prefix is not None and p.is_file():
        if not text.endswith(".index") and not Path(prefix + ".index").is_file():
            raise FormatError(
                f"is a data shard whose checkpoint index {prefix}.index is missing", p
            )
        return prefix
    if Path(text + ".index").is_file():
        return text
    if glob.glob(glob.escape(text) + ".data-?????-of-?????"):
        raise FormatError(f"has data shards but no {text}.index: the index is missing", p)
    if text.endswith(".meta") and p.is_file():
        raise UnsupportedError(
            "is a TF1 MetaGraph: the graph, without the weights; they are in the "
            f"checkpoint's .index and .data files beside it: name its prefix {text[:-5]!r}",
            p,
        )
    if p.is_file():
        raise NotACheckpoint("is a file, but not a TensorFlow checkpoint's .index or .data file", p)
    raise NotACheckpoint("no such checkpoint: neither this path nor its .index exists", p)


def _prefix_in_directory(directory: Path) -> str:
    variables = directory / "variables" / "variables"
    if (directory / "saved_model.pb").is_file() or (directory / "saved_model.pbtxt").is_file():
        if Path(f"{variables}.index").is_file():
            return str(variables)
        raise FormatError("is a SavedModel without variables/variables.index", directory)
    if (directory / "checkpoint").is_file():
        return state.latest(directory)
    indexes = sorted(directory.glob("*.index"))  # (`.index` too: the prefix `directory/`)
    if len(indexes) == 1:
        return str(indexes[0])[: -len(".index")]
    found = f"{len(indexes)} .index files" if indexes else "no .index file"
    raise FormatError(
        f"is a directory with {found} and no `checkpoint` state file; name the "
        "checkpoint prefix (e.g. dir/ckpt-3)",
        directory,
    )


def sniff(path: Path) -> bool:
    """A path that names a checkpoint's prefix, `.index`, `.data-*` file or directory is
    ours even when the index is damaged: `read` then says what is wrong with it. A path
    that can only be meant as a checkpoint but is not a usable one (a directory of several,
    a state file naming a missing one, a `.meta` file) raises the ConvertError that says
    why, for `registry.detect` to show if no other format claims it."""
    try:
        resolve(path)
    except (NotACheckpoint, OSError):
        return False
    return True


def read(path: Path) -> Graph:
    prefix = resolve(path)
    reader = BundleReader(prefix)
    graph = Graph(source=os.fspath(path), format="tf")
    graph.files = [str(reader.index_path), *map(str, reader.shards)]
    keys = [k.decode("utf-8", "surrogateescape") for k in reader.tensor_keys()]
    if objects.OBJECT_GRAPH_KEY in keys:
        used = objects.read_object_graph(reader, graph)
        graph.root.meta[TF_LAYOUT] = "object"
        rest = [k for k in keys if k not in used and k != objects.OBJECT_GRAPH_KEY]
        if rest:  # values no object claims: keep them, by name
            unowned = Graph(root=graph.add(("(unowned)",), Node()))
            objects.read_name_based(reader, unowned, rest)
            graph.slots.extend(unowned.slots)
    else:
        graph.root.meta[TF_LAYOUT] = "names"
        objects.read_name_based(reader, graph, keys)
    return graph


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs=(),
    progress=None,
    report=None,
    name_based: bool | None = None,
    max_to_keep: int | None = None,
    directory: bool = False,
) -> None:
    """Write one-shard checkpoint `path` (a prefix); with `max_to_keep` or `directory`, or
    when `path` is a directory, write `path/ckpt-N` and keep the newest `max_to_keep` like
    CheckpointManager.

    `name_based` writes TF1 names without an object graph; by default a name-based input
    stays name-based and everything else gets an object graph."""
    if name_based is None:
        name_based = graph.root.meta.get(TF_LAYOUT) == "names"
    text = os.fspath(path)
    managed = max_to_keep is not None or directory or Path(text).is_dir()
    prefix = Path(strip_suffix(text) or text)
    if managed:
        prefix = state.next_prefix(Path(text))
    if name_based:
        entries, object_graph = name_based_keys(graph), None
    else:
        object_graph, entries = objects.build_object_graph(graph)
    with OutputSet(overwrite, inputs) as out:
        index = out.path(f"{prefix}.index")
        data = out.path(data_path(prefix, 0, 1))
        writer = BundleWriter(index, data)
        try:
            writer.data.reserve(sum(tensor.nbytes for _, tensor in entries))
            keys = [key for key, _ in entries]
            for key, (_, stored, array) in zip(
                keys, stream.contents(t for _, t in entries), strict=True
            ):
                if stored is not None:  # (unchanged bytes: copied file to file, checked)
                    size = writer.add_stored(key, stored)
                else:
                    assert array is not None  # (`contents`: no stored bytes, so the value)
                    size = writer.add(key, array)
                del array
                if progress:
                    progress(size)
                if report is not None:
                    report.tensors += 1
                    report.bytes += size
            if object_graph is not None:
                import numpy as np

                writer.add(objects.OBJECT_GRAPH_KEY, np.array(object_graph, dtype=object))
            writer.finish()
        finally:
            writer.close()
        stale = state.update(out, prefix, max_to_keep if managed else None)
    for old in stale:  # (a text prefix: `dir/` names `dir/.index`)
        for f in [f"{old}.index", *glob.glob(glob.escape(old) + ".data-?????-of-?????")]:
            Path(f).unlink(missing_ok=True)
    if report is not None:
        report.files += [f"{prefix}.index", str(data_path(prefix, 0, 1))]
        report.destination = str(prefix)
        note = dropped_values(
            non_tensor_values(graph), "a TensorFlow checkpoint holds tensors only"
        )
        if note:
            report.notes.append(note)
