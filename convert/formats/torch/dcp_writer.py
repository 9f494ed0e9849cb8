"""Writing `torch.distributed.checkpoint` (DCP) directories without torch, as DCP's own
`FileSystemWriter` lays them out (the default, torch.save serialization): `__<rank>_0.distcp`
files of torch.save archives, one per tensor chunk, and a `.metadata` pickle of DCP's
dataclasses (written by this package's pickler as records: the class by name, then its
state, as Python pickles a dataclass).

`shards` N splits every tensor of at least N rows along its first dimension into N
chunks, the first ones a row larger where N does not divide it (as FSDP shards), one file
each, as N ranks would have written them; smaller tensors, scalars and values go whole to
the first file. `dcp.load` reads the directory in one process, and a job of any number of
ranks loads it: DCP puts each rank's part together from the chunks.

Keys are the graph's paths joined with ".", the state dict's own: `planner_data` maps each
to itself, so `dcp.load` into a model's `state_dict()` and `dcp_to_torch_save` give flat
state dicts. A tensor of one chunk is written from where its bytes lie (copied file to
file when unchanged); a chunk of several is read from its tensor, one at a time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from convert.core.dtypes import dtype_name
from convert.core.errors import UnsupportedError
from convert.core.graph import Graph, Node
from convert.core.tensor import Tensor
from convert.formats.torch.pickler import Pickler
from convert.formats.torch.records import TORCH_NAMES, PickledCall, PickledRecord, torch_dtype
from convert.formats.torch.tree import is_plain
from convert.formats.torch.writer import write_into
from convert.io.outputs import OutputSet
from convert.io.rawcopy import Output

_DCP = "torch.distributed.checkpoint"
VERSION = "1.0.0"  # (Metadata.version as torch 2.13 writes it)
ARCHIVE = "archive"  # (the folder name torch.save gives an archive written to a stream)


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Any = None,
    report: Any = None,
    shards: int | None = None,
    **options: Any,
) -> None:
    ranks = 1 if shards is None else shards
    if ranks < 1:
        raise UnsupportedError(f"--shards {ranks}: a DCP checkpoint has at least one file")
    path = Path(path)
    state: dict[str, Any] = {}
    storage: dict[Any, Any] = {}
    # (every key a tensor is at: a model's tied weights are two keys its state_dict has)
    entries = [(".".join(p), e.tensor) for e in graph.entries() for p in e.paths]
    chunks: dict[str, list[PickledRecord]] = {key: [] for key, _ in entries}
    with OutputSet(overwrite, inputs) as out:
        # (a file at a time, as its rank would write it: one open output, one buffer)
        for rank in range(ranks):
            name = f"__{rank}_0.distcp"
            with Output(out.path(path / name)) as stream:
                for key, value in _values(graph.root, (), report) if rank == 0 else ():
                    offset = stream.position
                    write_into(stream, value, ARCHIVE, None, None)
                    storage[_index(key, None)] = _stored(name, offset, stream.position)
                    state[key] = _record("metadata", "BytesStorageMetadata", {})
                for key, tensor in entries:
                    for offsets, piece in _pieces(tensor, ranks, rank):
                        offset = stream.position
                        write_into(stream, piece, ARCHIVE, progress, None)
                        storage[_index(key, offsets)] = _stored(name, offset, stream.position)
                        chunks[key].append(_chunk(offsets, piece.shape))
        for key, tensor in entries:
            state[key] = _tensor_metadata(tensor, chunks[key], key)
            if report is not None:
                report.tensors += 1
                report.bytes += tensor.nbytes
        metadata = _record(
            "metadata",
            "Metadata",
            {
                "state_dict_metadata": state,
                "planner_data": {key: (key,) for key in state},
                "storage_data": storage,
                "storage_meta": None,
                "version": VERSION,
            },
        )
        (out.path(path / ".metadata")).write_bytes(Pickler().dump(metadata))


def _pieces(tensor: Tensor, ranks: int, rank: int) -> list[tuple[tuple[int, ...], Tensor]]:
    """(offsets, the chunk) of `tensor` that file `rank` holds: its share of the rows in
    `ranks` parts (as torch.chunk splits them), or, in the first file, the whole of a
    tensor with fewer rows than ranks."""
    shape = tensor.shape
    if ranks == 1 or not shape or shape[0] < ranks:
        return [((0,) * len(shape), tensor)] if rank == 0 else []
    step = math.ceil(shape[0] / ranks)
    start, stop = rank * step, min((rank + 1) * step, shape[0])
    if start >= stop:
        return []
    return [((start, *(0,) * (len(shape) - 1)), _rows(tensor, start, stop))]


def _rows(tensor: Tensor, start: int, stop: int) -> Tensor:
    def load() -> np.ndarray:
        return np.ascontiguousarray(tensor.read()[start:stop])

    return Tensor(tensor.dtype, (stop - start, *tensor.shape[1:]), load, {})


def _values(node: Node, where: tuple[str, ...], report: Any) -> list[tuple[str, Any]]:
    """Each plain value of the graph, by its key; what is not plain data is left out."""
    found = []
    for name, value in node.values.items():
        key = ".".join((*where, str(name)))
        if is_plain(value):
            found.append((key, value))
        elif report is not None:
            report.notes.append(f"left out the value {key}: not plain data")
    for name, item in node.edges.items():
        if type(item) is Node:
            found.extend(_values(item, (*where, name), report))
    return found


def _record(module: str, kind: str, fields: dict[str, Any]) -> PickledRecord:
    return PickledRecord(kind, fields, None, f"{_DCP}.{module}")


def _size(dims: tuple[int, ...]) -> PickledCall:
    return PickledCall("torch", "Size", (tuple(dims),))


def _index(key: str, offsets: tuple[int, ...] | None) -> PickledRecord:
    offset = None if offsets is None else _size(offsets)
    return _record("metadata", "MetadataIndex", {"fqn": key, "offset": offset, "index": None})


def _stored(file: str, start: int, end: int) -> PickledRecord:
    fields = {
        "relative_path": file,
        "offset": start,
        "length": end - start,
        "transform_descriptors": None,
    }
    return _record("filesystem", "_StorageInfo", fields)


def _chunk(offsets: tuple[int, ...], sizes: tuple[int, ...]) -> PickledRecord:
    return _record(
        "metadata", "ChunkStorageMetadata", {"offsets": _size(offsets), "sizes": _size(sizes)}
    )


def _tensor_metadata(tensor: Tensor, chunks: list[PickledRecord], key: str) -> PickledRecord:
    name = TORCH_NAMES.get(dtype_name(tensor.dtype))
    if name is None:
        raise UnsupportedError(f"tensor {key!r} is {dtype_name(tensor.dtype)}, which torch lacks")
    properties = PickledRecord(
        "TensorProperties",
        {},
        (
            torch_dtype(name),
            PickledCall("torch.serialization", "_get_layout", ("torch.strided",)),
            False,  # requires_grad
            PickledCall(f"{_DCP}.metadata", "_MEM_FORMAT_ENCODING", (0,)),  # contiguous
            False,  # pin_memory
        ),
        f"{_DCP}.metadata",
    )
    fields = {"properties": properties, "size": _size(tensor.shape), "chunks": chunks}
    return _record("metadata", "TensorStorageMetadata", fields)
