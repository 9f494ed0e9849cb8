"""PyTorch `torch.save` files (zip and legacy), read and written without torch.

- zipreader.py / legacy.py: the two container forms, read lazily (centraldir.py: the zip
  central directory, from one read);
- unpickler.py: the restricted pickle machine both use (nothing outside an allowlist is
  imported or called; see its docstring), with records.py (what it builds), allowlist.py
  (what a file may name), opcodes.py (one checked function per opcode), tensorrun.py (the
  per-tensor fast path);
- tree.py: the unpickled object <-> graph Nodes (nested checkpoints, values);
- storage.py: tensors as strided views of storage bytes;
- writer.py / pickler.py / ziparchive.py: torch-compatible zip output (data.pkl as torch
  pickles it; records laid out as torch lays them out);
- dcp.py / dcp_metadata.py / dcp_writer.py: the `dcp` format, `torch.distributed.checkpoint`
  directories, each chunk a torch.save archive inside a `.distcp` file;
- deepspeed.py / deepspeed_states.py: the `deepspeed` format (read only), ZeRO checkpoint
  folders, their fp32 master weights rebuilt from the ranks' partitions;
- consolidated.py: the `consolidated` format, Meta's model-parallel folders
  (`consolidated.00.pth` ... beside `params.json`), the ranks side by side.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from convert.core.errors import FormatError, UnsupportedError
from convert.core.graph import Graph
from convert.core.meta import TF1_NAMES, TORCH_ATTRIBUTES
from convert.io.outputs import OutputSet

# The reader and writer modules are imported where used: safetensors imports this
# package for its key rules only.

EXTENSIONS = (".pt", ".pth", ".bin")  # (.ckpt names TF prefixes too: content decides)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def _looks_like_torch(path: Path) -> bool:
    """A pickle or zip under a torch name, even if damaged: reading it says what is wrong."""
    head = _head(path)
    return path.name.lower().endswith(EXTENSIONS) and (
        head[:2] == b"PK" or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)
    )


def sniff(path: Path) -> bool:
    from convert.formats.torch.legacy import is_legacy
    from convert.formats.torch.zipreader import is_torch_zip

    try:
        return path.is_file() and (is_legacy(path) or is_torch_zip(path) or _looks_like_torch(path))
    except Exception:
        return False


def read(path: Path) -> Graph:
    from convert.formats.torch.legacy import read_legacy
    from convert.formats.torch.zipreader import read_zip
    from convert.frameworks.tf1_names import parse_names, restore_names

    try:
        if _head(path)[:2] == b"PK":
            graph = read_zip(path)  # (a damaged archive: read_zip says what is wrong)
        elif _head(path)[:1] == b"\x80":
            graph = read_legacy(path)  # checks the magic number through the restricted reader
        else:
            raise FormatError(
                "is neither a torch.save zip archive nor a legacy torch.save file", path
            )
    except FormatError as exc:  # (the unpickler's and the tree's errors name no file)
        if exc.path is not None:
            raise
        raise type(exc)(exc.reason, path, exc.keywords) from None
    graph.format, graph.source, graph.files = "torch", str(path), [str(path)]
    names = parse_names(graph.root.meta.get(TORCH_ATTRIBUTES, {}).get(TF1_NAMES))
    if names is not None:  # (kept there, so that torch to torch keeps it too)
        restore_names(graph, names, ".")
    return graph


def dcp_sniff(path: Path) -> bool:
    from convert.formats.torch.dcp import is_dcp

    try:
        return is_dcp(path)
    except OSError:
        return False


def dcp_read(path: Path) -> Graph:
    from convert.formats.torch.dcp import read as read_dcp

    return read_dcp(path)


def dcp_write(graph: Graph, path: Path, **options: Any) -> None:
    from convert.formats.torch.dcp_writer import write as write_dcp

    write_dcp(graph, path, **options)


def deepspeed_sniff(path: Path) -> bool:
    from convert.formats.torch.deepspeed import is_deepspeed

    try:
        return is_deepspeed(path)
    except OSError:
        return False


def deepspeed_read(path: Path) -> Graph:
    from convert.formats.torch.deepspeed import read as read_deepspeed

    return read_deepspeed(path)


def deepspeed_write(graph: Graph, path: Path, **options: Any) -> None:
    raise UnsupportedError(
        "DeepSpeed checkpoints are read, not written: for a sharded start, write dcp", path
    )


def consolidated_sniff(path: Path) -> bool:
    from convert.formats.torch.consolidated import is_consolidated

    try:
        return is_consolidated(path)
    except OSError:
        return False


def consolidated_read(path: Path) -> Graph:
    from convert.formats.torch.consolidated import read as read_consolidated

    return read_consolidated(path, read)


def consolidated_write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Any = None,
    report: Any = None,
    **options: Any,
) -> None:
    from convert.core.report import Report
    from convert.formats.torch.consolidated import write as write_consolidated
    from convert.formats.torch.writer import write_graph

    if report is None:
        report = Report(graph.source, str(path), graph.format, "consolidated")

    def rank(part: Graph, tmp: Path, destination: Path) -> None:
        write_graph(part, tmp, destination, progress, report)

    report.files += write_consolidated(graph, path, rank, overwrite, inputs)


def write(
    graph: Graph,
    path: Path,
    *,
    overwrite: bool = False,
    inputs: tuple = (),
    progress: Any = None,
    report: Any = None,
    max_shard_size: int | None = None,
    strided: bool = False,
    **options: Any,
) -> None:
    """`strided`: permuted tensors as strided views of their sources' bytes (writer.py)."""
    from convert.core.report import Report
    from convert.formats.sharding import is_index, write_sharded
    from convert.formats.torch.writer import write_entries, write_graph
    from convert.frameworks.flatkeys import join_path
    from convert.frameworks.tf1_names import names_to_keep

    if report is None:
        report = Report(graph.source, str(path), graph.format, "torch")
    sharded = max_shard_size is not None or is_index(path)
    names = names_to_keep(graph, None, ".", join_path) if sharded else None
    shard = (
        partial(write_entries, strided=strided)
        if names is None
        else partial(write_entries, attributes={TF1_NAMES: names}, strided=strided)
    )
    if sharded and write_sharded(
        graph,
        path,
        shard,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        inputs=inputs,
        progress=progress,
        report=report,
    ):
        return
    with OutputSet(overwrite, inputs) as out:
        write_graph(graph, out.path(path), path, progress, report, strided)
    report.files.append(str(path))
