"""The order in which one group's layers pair (see `align.py`): what each file says of its
layers' order, and where it says too little, names and shapes.

A file orders its layers fully (torch and Flax state dicts, a `.keras` archive through its
config), or in chains: a Keras 3 `.weights.h5` numbers each class in creation order within
its parent (`dense`, `dense_1`; a nested `Sequential`'s `block1/layers/conv2d`), and a
subclassed model's attributes (`conv1`, `head`) each stand alone. Pairing such a side with
a fully ordered one means choosing how its chains interleave: the one interleaving in
which every layer fits its partner's kinds and shapes is taken; none, or more than one, is
refused, naming the layers, since a guess there could be silently wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, TypeVar

from convert.core.errors import RuleError
from convert.core.graph import GraphPath
from convert.rules.kinds import Layer

S = TypeVar("S")
A = TypeVar("A")  # an item of a chain (`_interleave`)
B = TypeVar("B")  # an item of the other side
# Interleavings tried (search steps) before an unordered group is given up as ambiguous.
_BUDGET = 200_000
_SEQUENCE_LEVELS = ("layers",)  # Keras' list of a model's layers: no level in torch or Flax


def pairing(
    sources: list[tuple[Layer, S]],
    targets: list[Layer],
    group: set[str],
    fits: Callable[[tuple[Layer, S], Layer], bool],
) -> tuple[str, list[tuple[tuple[Layer, S], Layer]], list[tuple[Layer, S]], list[Layer]]:
    """How the group pairs ("order", "name", "shapes"), the pairs, and what is left on each
    side (only where both sides are fully ordered and one has more layers)."""
    s_ordered, t_ordered = _ordered([s for s, _ in sources]), _ordered(targets)
    by_name = _names_both(sources, targets)
    if s_ordered and t_ordered:
        if len(by_name) == len(sources) == len(targets) and [t for _, t in by_name] != targets:
            return "name", by_name, [], []  # every name on both sides, in another order
        n = min(len(sources), len(targets))
        return "order", list(zip(sources[:n], targets[:n], strict=True)), sources[n:], targets[n:]
    named_s = {id(p[0]) for p, _ in by_name}
    named_t = {id(t) for _, t in by_name}
    rest_s = [p for p in sources if id(p[0]) not in named_s]
    rest_t = [t for t in targets if id(t) not in named_t]
    if not rest_s or not rest_t:
        return "name", by_name, rest_s, rest_t  # (what one side alone has is left over)
    if len(rest_s) != len(rest_t) or (
        not _ordered([s for s, _ in rest_s]) and not _ordered(rest_t)
    ):
        _refuse(rest_s, rest_t, group, "their names differ from the other side's")
    if _ordered([s for s, _ in rest_s]) and _ordered(rest_t):
        return (
            "name" if by_name else "order",
            by_name + list(zip(rest_s, rest_t, strict=True)),
            [],
            [],
        )
    if _ordered(rest_t):
        found = _interleave(_chains(rest_s, lambda p: p[0]), rest_t, lambda s, t: fits(s, t))
        pairs = [(s, t) for s, t in zip(found, rest_t, strict=True)] if found else None
    else:
        found_t = _interleave(_chains(rest_t, lambda t: t), rest_s, lambda t, s: fits(s, t))
        pairs = [(s, t) for s, t in zip(rest_s, found_t, strict=True)] if found_t else None
    if pairs is None:
        _refuse(rest_s, rest_t, group, "no single pairing fits every kind and shape")
    return "shapes", by_name + pairs, [], []


def _refuse(
    rest_s: list[tuple[Layer, S]], rest_t: list[Layer], group: set[str], why: str
) -> NoReturn:
    unordered = [s for s, _ in rest_s] if not _ordered([s for s, _ in rest_s]) else rest_t
    side = "source" if unordered is not rest_t else "target"
    raise RuleError(
        f"the {side} orders its layers only within a class, and "
        f"{'/'.join(sorted(group))} layers of several classes or places "
        f"({names(unordered)}) could pair either way ({why}); use a .keras "
        "archive (its config orders the layers) or pair them with [[path]] "
        "rules (--emit-rules writes a template)"
    )


def _ordered(layers: list[Layer]) -> bool:
    """Whether file order pairs these layers: every one ordered, or all of one class in one
    place (a Keras 3 file numbers a class's layers in creation order)."""
    if all(layer.ordered for layer in layers):
        return True
    return len({(layer.cls, layer.parent) for layer in layers}) <= 1 and all(
        layer.cls is not None for layer in layers
    )


def _key(layer: Layer) -> tuple[str, ...]:
    return tuple(p for p in layer.path if p not in _SEQUENCE_LEVELS)


def _names_both(
    sources: list[tuple[Layer, S]], targets: list[Layer]
) -> list[tuple[tuple[Layer, S], Layer]]:
    """Layers named alike on both sides, in the source's order: at the same path (Keras'
    `layers` levels aside), else by a last name that each side uses once."""
    pairs: list[tuple[tuple[Layer, S], Layer]] = []
    for key in (_key, lambda layer: layer.path[-1:]):
        taken = {id(p[0]) for p, _ in pairs} | {id(t) for _, t in pairs}
        s_left = [p for p in sources if id(p[0]) not in taken]
        t_left = [t for t in targets if id(t) not in taken]
        at: dict[tuple[str, ...], list[Layer]] = {}
        for t in t_left:
            at.setdefault(key(t), []).append(t)
        counts: dict[tuple[str, ...], int] = {}
        for p in s_left:
            counts[key(p[0])] = counts.get(key(p[0]), 0) + 1
        pairs += [
            (p, at[key(p[0])][0])
            for p in s_left
            if key(p[0]) and len(at.get(key(p[0]), ())) == 1 and counts[key(p[0])] == 1
        ]
    order = {id(p[0]): i for i, p in enumerate(sources)}
    return sorted(pairs, key=lambda pair: order[id(pair[0][0])])


def _chains(items: list[A], layer_of: Callable[[A], Layer]) -> list[list[A]]:
    """Items in chains of known order: a class's layers within one parent, by counter."""
    chains: dict[tuple[str, GraphPath | int], list[A]] = {}
    for i, item in enumerate(items):
        layer = layer_of(item)
        key = (layer.cls, layer.parent) if layer.cls is not None else ("#", i)
        chains.setdefault(key, []).append(item)
    return [sorted(c, key=lambda item: layer_of(item).order) for c in chains.values()]


def _interleave(
    chains: list[list[A]], other: list[B], ok: Callable[[A, B], bool]
) -> list[A] | None:
    """The one merge of `chains` whose items fit `other`'s, position by position (None:
    no merge, or more than one, or too many to try). A depth-first search kept on a list,
    not the call stack: a group may hold thousands of layers."""
    heads = [0] * len(chains)
    chosen: list[int] = []  # the chain taken at each position so far
    tries = [0]  # per position reached: the next chain to try there
    found: list[list[int]] = []
    memo: dict[tuple[int, int, int], bool] = {}
    for _ in range(_BUDGET):
        if not tries:
            return _merge(chains, found[0]) if len(found) == 1 else None
        position = len(chosen)
        c = tries[-1]
        if position < len(other):
            while c < len(chains) and not (
                heads[c] < len(chains[c]) and _fit(memo, ok, chains, heads, c, other, position)
            ):
                c += 1
        if position == len(other) or c == len(chains):
            if position == len(other):
                found.append(list(chosen))
                if len(found) > 1:
                    return None
            tries.pop()  # back up one position
            if chosen:
                heads[chosen.pop()] -= 1
            continue
        tries[-1] = c + 1
        chosen.append(c)
        heads[c] += 1
        tries.append(0)
    return None


def _fit(
    memo: dict[tuple[int, int, int], bool],
    ok: Callable[[A, B], bool],
    chains: list[list[A]],
    heads: list[int],
    c: int,
    other: list[B],
    position: int,
) -> bool:
    key = (c, heads[c], position)
    if key not in memo:
        memo[key] = ok(chains[c][heads[c]], other[position])
    return memo[key]


def _merge(chains: list[list[A]], chosen: list[int]) -> list[A]:
    heads = [0] * len(chains)
    merged: list[A] = []
    for c in chosen:
        merged.append(chains[c][heads[c]])
        heads[c] += 1
    return merged


def names(layers: list[Layer]) -> str:
    shown = ", ".join(layer.name for layer in layers[:4])
    return shown + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
