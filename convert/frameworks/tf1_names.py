"""TF1 (name-based) checkpoint keys, and keeping them through flat formats.

A TF1 `Saver` checkpoint keys each variable by its name, and an optimizer slot by its
variable's name and the slot's (`dense/kernel/Adam`). A flat format writes a slot under
its optimizer instead (`Adam/dense/kernel`: `graph.slot_path`), so the TF1 key is gone
unless the file keeps it beside the tensors. Formats with a place for such facts keep,
for a name-based graph, each key's TF1 name where it is not the key itself with `/` for
the format's separator (`TF1_NAMES`: safetensors in `__metadata__`, a torch state dict in
an attribute beside torch's own `_metadata`). Reading such a file back gives each tensor
its TF1 name (`VARIABLE_NAME`) and the graph the name-based layout, so a TF checkpoint
written from it has the keys the first one had. npz and Flax msgpack files have no place
that a reader of theirs would not see (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convert.core.graph import Entry, Graph
from convert.core.meta import TF_LAYOUT, VARIABLE_NAME
from convert.core.tensor import Tensor


def name_based_keys(graph: Graph, entries: list[Entry] | None = None) -> list[tuple[str, Tensor]]:
    """TF1 keys: each variable's own name (`VARIABLE_NAME`: a TF2 `full_name`, a Keras
    `.h5` weight name, where every one is known and unique), else its path joined by `/`;
    a slot is `<variable name>/<slot name>`."""
    entries = graph.entries() if entries is None else entries
    plain = [e for e in entries if e.slot is None]
    full: list[Any] = [e.tensor.meta.get(VARIABLE_NAME) for e in plain]  # (None: unknown)
    use_full = all(full) and len(set(full)) == len(full)
    names = {
        id(e.tensor): (f if use_full else "/".join(e.path))
        for e, f in zip(plain, full, strict=True)
    }
    return [
        (f"{names[id(e.slot.variable)]}/{e.slot.name}" if e.slot else names[id(e.tensor)], e.tensor)
        for e in entries
    ]


def names_to_keep(
    graph: Graph, entries: list[Entry] | None, sep: str, key_of: Callable[[tuple[str, ...]], str]
) -> dict[str, str] | None:
    """For a name-based graph, the TF1 name of each flat key (`key_of` an entry's path)
    that reading back would not give by itself; None for any other graph (without a walk
    of its entries)."""
    if graph.root.meta.get(TF_LAYOUT) != "names":
        return None
    entries = graph.entries() if entries is None else entries
    kept = {}
    for entry, (name, _) in zip(entries, name_based_keys(graph, entries), strict=True):
        key = key_of(entry.path)
        if name != key.replace(sep, "/"):
            kept[key] = name
    return kept


def restore_names(graph: Graph, names: dict[str, str], sep: str) -> None:
    """Each tensor's TF1 name from `names` (else its key with `/` for `sep`); the graph
    becomes name-based, so a TF checkpoint written from it is one again."""
    for entry in graph.entries():
        key = sep.join(entry.path)  # (the flat readers' paths join back to their keys)
        entry.tensor.meta[VARIABLE_NAME] = names.get(key, key.replace(sep, "/"))
    graph.root.meta[TF_LAYOUT] = "names"


def parse_names(value: object) -> dict[str, str] | None:
    """The names a file kept, if they are what `names_to_keep` writes (else None: a file
    from elsewhere that happens to use the key is read as it is)."""
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return value
    return None
