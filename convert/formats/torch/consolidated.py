"""The `consolidated` format: Meta's model-parallel checkpoint folders, `consolidated.00.pth`
... `consolidated.NN.pth` beside `params.json` (Llama 1-3, Code Llama, Mistral's first
releases).

Each file is one model-parallel rank's state dict, a torch.save file read by this
package's reader (no pickle code runs). Which way each tensor was split is written
nowhere: fairscale's column-parallel layers split rows, its row-parallel layers split
columns, and Llama 2 split the embedding's columns where Llama 3 split its rows. So the
folder reads as the ranks side by side, rank k's state dict under `k`
(`1/layers.0.attention.wq.weight`), and rules that know the model join them
(`llama-meta-hf`: `{s:each}/...` and `concat`); `--pick 0` takes one rank's state dict.

Which ranks there are: those `checklist.chk` (the md5 list Meta ships) names, else
`consolidated.00.pth` up to the first number missing; a gap, a checklisted file missing,
or ranks whose keys or shapes differ is an error, since a rank left out would join into
a smaller tensor without anything else noticing. `params.json` is kept as the graph's
value `params.json`, and written back beside the ranks.

Writing: a graph whose top level is `0`, `1`, ... (ranks), each rank's state dict into
`consolidated.0k.pth` by this package's writer, and `params.json` when the graph holds it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from convert.core.errors import FormatError
from convert.core.graph import Graph, Node
from convert.core.meta import SOURCE_KEY
from convert.core.notes import count
from convert.io.outputs import OutputSet
from convert.io.reads import read_small

PARAMS = "params.json"
CHECKLIST = "checklist.chk"
_RANK_FILE = re.compile(r"consolidated\.(\d{2,})\.pth")
_MAX_SIDE_FILE = 1 << 20


def is_consolidated(path: Path) -> bool:
    return path.is_dir() and (path / PARAMS).is_file() and (path / "consolidated.00.pth").is_file()


def rank_files(folder: Path) -> list[Path]:
    """The ranks' files, in rank order, checked for completeness."""
    found = {
        int(m.group(1)): folder / m.group(0)
        for n in os.listdir(folder)
        if (m := _RANK_FILE.fullmatch(n))
    }
    listed = _checklisted(folder)
    if listed:
        absent = sorted(n for n in listed if not (folder / n).is_file())
        if absent:
            raise FormatError(f"{CHECKLIST} lists {', '.join(absent)}, which is missing", folder)
    gap = next((k for k in range(len(found)) if k not in found), None)
    if gap is not None:
        raise FormatError(
            f"holds {count(len(found), 'rank file')} but no consolidated.{gap:02d}.pth: "
            "a rank is missing",
            folder,
        )
    return [found[k] for k in range(len(found))]


def _checklisted(folder: Path) -> list[str]:
    """The rank files `checklist.chk` names (lines of `md5  file`), if there is one."""
    text = _side_text(folder / CHECKLIST)
    if text is None:
        return []
    names = [line.split()[-1] for line in text.splitlines() if line.strip()]
    return [n for n in names if _RANK_FILE.fullmatch(n)]


def _side_text(path: Path) -> str | None:
    data = read_small(path, _MAX_SIDE_FILE)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("is not UTF-8 text", path) from None


def read(path: Path, read_rank: Any) -> Graph:
    """`read_rank(file)` reads one rank's torch.save file (the torch format's reader)."""
    files = rank_files(path)
    graph = Graph(format="consolidated", source=str(path), files=[str(f) for f in files])
    params = _side_text(path / PARAMS)
    try:
        if not isinstance(json.loads(params or ""), dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"is not a JSON object ({exc})", path / PARAMS) from None
    graph.values[PARAMS] = params
    graph.files.append(str(path / PARAMS))
    first: dict[str, Any] | None = None
    for k, file in enumerate(files):
        rank = read_rank(file)
        specs = {}
        for entry in rank.entries():
            key = str(entry.tensor.meta.get(SOURCE_KEY, "/".join(entry.path)))
            specs[key] = (entry.tensor.dtype, entry.tensor.shape)
            entry.tensor.meta[SOURCE_KEY] = f"{k}.{key}"
        if first is None:
            first = specs
        elif specs != first:
            differ = sorted(set(specs) ^ set(first)) or [
                key for key in specs if specs[key] != first[key]
            ]
            raise FormatError(
                f"rank {k} holds other tensors than rank 0 ({differ[0]}): the ranks of one "
                "checkpoint hold the same keys and shapes",
                file,
            )
        graph.root.edges[str(k)] = rank.root
    return graph


def write(graph: Graph, path: Path, write_rank: Any, overwrite: bool, inputs: tuple) -> list[str]:
    """The ranks into `path/consolidated.0k.pth` (`write_rank(graph, file)`), and
    `params.json`; the files written."""
    ranks = graph.root.edges
    if (
        not ranks
        or sorted(ranks) != sorted(str(k) for k in range(len(ranks)))
        or not all(type(node) is Node for node in ranks.values())
    ):
        raise FormatError(
            "a consolidated folder is written from ranks 0, 1, ... at the top level "
            f"(this graph's top level is {', '.join(sorted(ranks)[:4]) or 'empty'})",
            path,
        )
    written = []
    with OutputSet(overwrite, inputs) as out:
        for k in range(len(ranks)):
            node = ranks[str(k)]
            assert isinstance(node, Node)
            name = path / f"consolidated.{k:02d}.pth"
            write_rank(
                Graph(root=node, format=graph.format, source=graph.source), out.path(name), name
            )
            written.append(str(name))
        params = graph.values.get(PARAMS)
        if isinstance(params, str):
            with open(out.path(path / PARAMS), "w", encoding="utf-8") as f:
                f.write(params)
            written.append(str(path / PARAMS))
    return written
