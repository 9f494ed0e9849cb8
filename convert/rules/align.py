"""Aligning the source's layers to a target skeleton's: by kind, then by order within a kind.

Each source layer may become some target kinds (through the rules: a torch module with a
4-D weight and a bias may be a Conv2d or a ConvTranspose2d, and a Keras Conv2D becomes a
torch conv2d); each target layer may be some kinds. Kinds that can stand for one another
form a group; within a group, the source's layers and the target's are paired in file
order. That order must be known across every class in the group: a Keras 3
`.weights.h5` orders layers only within a class (`dense`, `dense_1`, ...), so a group
holding two Keras classes needs a `.keras` archive (its config orders every layer) or a
rule file that pairs the layers by path. Each pair must then agree on exactly one kind.
Whatever is left over on either side is reported (missing or unused), never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .kinds import Layer
from .language import RuleError


@dataclass
class Pair:
    source: Layer
    target: Layer
    kind: str  # the target-side kind both agree on


@dataclass
class Alignment:
    pairs: list[Pair]
    unmatched_source: list[Layer]
    unmatched_target: list[Layer]


def align(sources: list[Layer], routes: list[dict[str, list]], targets: list[Layer],
          usable: Callable[[list, dict], bool]) -> Alignment:
    """Pair `sources` (with `routes[i]`: target kind → the rules on the way) to `targets`;
    `usable(rules, facts)` says whether a route's rules have the layer facts they need."""
    groups = _groups([set(r) for r in routes] + [set(t.kinds) for t in targets])
    pairs: list[Pair] = []
    unmatched_s: list[Layer] = []
    unmatched_t: list[Layer] = []
    for group in groups:
        s_in = [(s, r) for s, r in zip(sources, routes, strict=True) if set(r) & group]
        t_in = [t for t in targets if t.kinds & group]
        _check_order([s for s, _ in s_in], "source", group)
        _check_order(t_in, "target", group)
        for (s, route), t in zip(s_in, t_in, strict=False):
            facts = {**t.facts, **s.facts}
            common = {k for k in set(route) & t.kinds if usable(route[k], facts)}
            if len(common) != 1:
                what = "does not match" if not common else "matches more than one kind of"
                raise RuleError(f"aligning by kind and order: source layer {s.name} "
                                f"({'/'.join(sorted(route)) or 'no rule'}) {what} target layer "
                                f"{t.name} ({'/'.join(sorted(t.kinds))}); pair them with a "
                                "[[path]] rule")
            pairs.append(Pair(s, t, common.pop()))
        unmatched_s += [s for s, _ in s_in[len(t_in):]]
        unmatched_t += t_in[len(s_in):]
    unmatched_s += [s for s, r in zip(sources, routes, strict=True) if not r]
    return Alignment(pairs, unmatched_s, unmatched_t)


def _groups(kind_sets: list[set[str]]) -> list[set[str]]:
    """Kinds joined when one layer may be either (union of overlapping sets)."""
    groups: list[set[str]] = []
    for kinds in kind_sets:
        if not kinds:
            continue
        touching = [g for g in groups if g & kinds]
        merged = set(kinds).union(*touching)
        groups = [g for g in groups if not g & kinds] + [merged]
    return sorted(groups, key=lambda g: sorted(g))


def _check_order(layers: list[Layer], side: str, group: set[str]) -> None:
    """Refuse to pair by order where the file does not give the order."""
    if all(layer.ordered for layer in layers):
        return
    classes = {(layer.cls, layer.parent) for layer in layers}
    if len(classes) > 1:
        names = ", ".join(layer.name for layer in layers[:4])
        raise RuleError(f"the {side} orders its layers only within a class, and "
                        f"{'/'.join(sorted(group))} layers of several classes or places "
                        f"({names}) could pair either way; use a .keras archive (its config "
                        "orders the layers) or pair them with [[path]] rules")
