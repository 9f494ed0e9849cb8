"""The wording of the notes writers add to a Report: counted, grammatical, and alike
across formats ("dropped 18 non-tensor values (…): a, b, c, d, e and 13 more")."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convert.core.graph import Graph


def count(n: int, thing: str, things: str | None = None) -> str:
    """`1 tensor`, `2 tensors` (`things`: an irregular plural)."""
    return f"{n:,} {thing if n == 1 else (things or thing + 's')}"


def some(names: Iterable[object], limit: int = 5) -> str:
    """The first `limit` names, and how many more there are."""
    shown = [str(n) for n in names]
    more = len(shown) - limit
    return ", ".join(shown[:limit]) + (f" and {more:,} more" if more > 0 else "")


def dropped_values(names: list[str], why: str) -> str | None:
    """The note for the non-tensor values a writer has no place for (None: none)."""
    if not names:
        return None
    return f"dropped {count(len(names), 'non-tensor value')} ({why}): {some(names)}"


def non_tensor_values(graph: Graph, kept: Container[str] = ()) -> list[str]:
    """Every non-tensor value of `graph` by name: the file-level ones (except `kept`),
    then the Nodes' (paths joined by `/`)."""
    return [
        *(str(k) for k in graph.values if k not in kept),
        *("/".join(p) for p in graph.value_paths()),
    ]


def size(n: int) -> str:
    """Bytes as a person gives them: `10 KB (10,000 bytes)`."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:g} {unit} ({n:,} bytes)"
    return count(n, "byte")


def binary_size(n: float) -> str:
    """Bytes in binary units, as listings give them: `512 B`, `1.5 KiB`, `3.2 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
