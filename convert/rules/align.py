"""Pairing the source's layers with a skeleton's, and choosing each pair's kind.

Rules come first: a `[[path]]` rule pairs the layer its source pattern matches with the
skeleton's layer its target pattern names, and its `kind` and facts (`flatten = [...]`)
win over what the files suggest. The other layers pair by kind, then by order within a
kind: each source layer may become some target kinds (through the rules: a torch module
with a 4-D weight and a bias may be a Conv2d or a ConvTranspose2d), and each target layer
may be some kinds. Kinds that can stand for one another form a group; within a group,
layers pair in file order where the file gives it. A Keras 3 `.weights.h5` orders layers
only within a class (`dense`, `dense_1`, ...), and a model's attributes (`conv1`,
`head`) have no order at all: such a group pairs by name where every name is on both
sides, and is refused otherwise.

Shapes have the last word. Where the order pairs two layers whose shapes disagree, and
exactly one pairing within the group fits every shape (two heads named the other way
round), that pairing is taken and the report says so. A pair's kind is the one its
candidates leave (`choose`): those the rules can run with the facts known, the most
specific of them (a rule that uses a known fact beats one that needs none), those that fit
the target's shapes; several left are taken only when they do the same thing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convert.core.errors import RuleError
from convert.core.tensor import Tensor
from convert.rules import order
from convert.rules.entries import PathRule
from convert.rules.kinds import Layer, with_variants
from convert.rules.language import RuleSet
from convert.rules.translate import Route, Step, run_layer, usable

# The most mismatched layers whose pairings are all tried (8! = 40320 orders).
_MAX_SWAPPED = 8
_MAX_PROBE = 1 << 22  # elements of a layer run through each candidate route to compare


@dataclass
class Pair:
    source: Layer
    target: Layer
    route: Route
    facts: dict[str, list[int]] = field(default_factory=dict)
    how: str = "order"  # "rule", "name", "order", "shapes"
    ruled: bool = False  # a [[path]] rule chose the kind

    @property
    def kind(self) -> str:
        return self.route.target


@dataclass
class Alignment:
    pairs: list[Pair]
    unmatched_source: list[Layer]
    unmatched_target: list[Layer]
    notes: list[str] = field(default_factory=list)
    # What could not be paired, and why: the first reason is the error; the rest is a
    # template for the user's [[path]] rules (--emit-rules).
    problems: list[str] = field(default_factory=list)
    open_pairs: list[tuple[Layer, Layer, str]] = field(default_factory=list)
    open_source: list[Layer] = field(default_factory=list)
    open_target: list[Layer] = field(default_factory=list)


class AlignmentError(RuleError):
    """Layers that could not be paired; it carries what was, and what was not (with each
    layer's kinds), for `--emit-rules` to write as a template."""

    def __init__(
        self,
        message: str,
        alignment: Alignment,
        emitted: list[dict[str, Any]],
        rules: RuleSet,
        sides: tuple[str, str],
    ):
        super().__init__(message)
        self.alignment = alignment
        self.emitted = emitted
        self.rules = rules
        self.sides = sides


# (source, route, target, facts) → why the shapes do not fit
Fits = Callable[[Layer, Route, Layer, dict[str, list[int]]], str | None]


def choose(
    source: Layer,
    routes: list[Route],
    target: Layer | None,
    facts: dict[str, list[int]],
    steps: list[Step],
    kind: str | None = None,
    fits: Fits | None = None,
) -> Route:
    """The route a pair takes (see the module docstring); `kind` is a rule's choice."""
    where = source.name if target is None else f"{source.name} -> {target.name}"
    allowed = with_variants(target.kinds) if target is not None else None
    candidates = [r for r in routes if allowed is None or r.target in allowed]
    if kind is not None:
        # (a rule's kind is the target's, as --emit-rules writes it; else the source's)
        named = [r for r in candidates if r.target == kind] or [
            r for r in candidates if r.source == kind
        ]
        if not named:
            may = sorted({r.target for r in candidates}) or ["no kind the rules map"]
            raise RuleError(
                f"layer {where}: the rule's kind {kind!r} is not one this layer "
                f"can take (it may be {' or '.join(may)})"
            )
        ready = [r for r in named if usable(r, facts)]
        if not ready:
            need = sorted(set().union(*(r.needs for r in named)) - facts.keys())
            raise RuleError(
                f"layer {where}: kind {kind!r} needs the layer fact(s) "
                f"{', '.join(need)} (e.g. flatten = [h, w, c] on its [[path]] rule)"
            )
        candidates = ready
    else:
        candidates = [r for r in candidates if usable(r, facts)]
        most = max((len(r.needs) for r in candidates), default=0)
        candidates = [r for r in candidates if len(r.needs) == most]
    if fits is not None and target is not None and len(candidates) > 1:
        fitting = [r for r in candidates if fits(source, r, target, facts) is None]
        candidates = fitting or candidates
    ways = {r.signature(steps): r for r in candidates}
    if len(ways) == 1 or (
        len(ways) > 1 and _same_effect(source, list(ways.values()), target, facts, steps)
    ):
        return candidates[0]
    kinds = sorted({r.target for r in candidates} | {r.source for r in candidates})
    if not candidates:
        what = f"({'/'.join(sorted(target.kinds))})" if target is not None else ""
        raise RuleError(
            f"layer {where}: no rule maps a {'/'.join(sorted(source.kinds))} "
            f"layer to a {what or 'target'} layer"
        )
    raise RuleError(
        f"layer {where} may be {' or '.join(kinds)}, which map it differently; "
        "say which with `kind` in its [[path]] rule (--emit-rules writes one)"
    )


def _same_effect(
    source: Layer,
    candidates: list[Route],
    target: Layer | None,
    facts: dict[str, list[int]],
    steps: list[Step],
) -> bool:
    """Whether routes that differ in their ops give the same tensors from this layer (a
    depthwise and a plain convolution of one input channel): each is run on a probe whose
    every element differs, of the layer's own shapes (float layers of up to 4M elements)."""
    if any(t.dtype.kind != "f" or t.dtype.itemsize < 4 for t in source.vars.values()):
        return False
    if sum(t.size for t in source.vars.values()) > _MAX_PROBE:
        return False
    start = 0
    probe: dict[str, Tensor] = {}
    for name, tensor in source.vars.items():
        values = np.arange(start, start + tensor.size, dtype=tensor.dtype).reshape(tensor.shape)
        probe[name] = Tensor.from_array(values)
        start += tensor.size
    want = target.vars if target is not None else None
    results = []
    for route in candidates:
        try:
            made, _ = run_layer(probe, route, steps, want, source.name, facts)
            results.append({k: t.read() for k, t in made.items()})
        except RuleError:
            return False
    first = results[0]
    return all(
        r.keys() == first.keys()
        and all(r[k].shape == first[k].shape and np.array_equal(r[k], first[k]) for k in first)
        for r in results[1:]
    )


def by_rules(
    sources: list[Layer],
    routes: list[list[Route]],
    targets: list[Layer],
    rules: list[PathRule],
    src: str,
    dst: str,
    steps: list[Step],
) -> list[Pair]:
    """The pairs `[[path]]` rules make: each source layer a rule's pattern matches, with the
    skeleton's layer at the path the rule fills in."""
    at = {t.path: t for t in targets}
    pairs = []
    taken: dict[int, Layer] = {}
    for layer, route in zip(sources, routes, strict=True):
        rule, values = next(
            ((r, v) for r in rules if (v := r.patterns[src].match(layer.path)) is not None),
            (None, None),
        )
        if rule is None or values is None:
            continue
        path = rule.patterns[dst].resolve(values, at) or rule.patterns[dst].text.split("/")
        target = at.get(tuple(path))
        if target is None:
            raise RuleError(
                f"a [[path]] rule places layer {layer.name} at "
                f"{'/'.join(path) or '(root)'}, where the target has no layer "
                f"(its layers: {order.names(targets)})"
            )
        if id(target) in taken:
            raise RuleError(
                f"[[path]] rules place both {taken[id(target)].name} and "
                f"{layer.name} at target layer {target.name}"
            )
        taken[id(target)] = layer
        facts = {**target.facts, **layer.facts, **rule.facts}
        chosen = choose(layer, route, target, facts, steps, rule.kind)
        pairs.append(
            Pair(layer, target, chosen, facts, "rule", rule.kind is not None or bool(rule.facts))
        )
    return pairs


def align(
    sources: list[Layer],
    routes: list[list[Route]],
    targets: list[Layer],
    steps: list[Step],
    fits: Fits,
) -> Alignment:
    """Pair `sources` (with `routes[i]`, the ways each may go) to `targets`."""
    groups = _groups(
        [{r.target for r in rs} for rs in routes] + [set(with_variants(t.kinds)) for t in targets]
    )
    found = Alignment([], [], [])
    for group in groups:
        s_in = [
            (s, r) for s, r in zip(sources, routes, strict=True) if {x.target for x in r} & group
        ]
        t_in = [t for t in targets if with_variants(t.kinds) & group]
        try:
            how, pairs, left_s, left_t = order.pairing(
                s_in, t_in, group, lambda sr, t: not _misfit(sr[0], sr[1], t, steps, fits)
            )
        except RuleError as exc:
            found.problems.append(str(exc))
            found.open_source += [s for s, _ in s_in]
            found.open_target += t_in
            continue
        paired = [(s, r, t) for (s, r), t in pairs]
        if any(_misfit(s, r, t, steps, fits) for s, r, t in paired):
            swapped = _by_shapes(
                [(s, r) for s, r, _ in paired], [t for *_, t in paired], steps, fits
            )
            if swapped is not None:
                found.notes.append(
                    f"paired {'/'.join(sorted(group))} layers by shape, not by {how}: "
                    + ", ".join(
                        f"{s.name} -> {t.name}"
                        for (s, _, old), t in zip(paired, swapped, strict=True)
                        if t is not old
                    )
                )
                paired = [(s, r, t) for (s, r, _), t in zip(paired, swapped, strict=True)]
                how = "shapes"
        for s, r, t in paired:
            facts = {**t.facts, **s.facts}
            try:
                route = choose(s, r, t, facts, steps, fits=fits)
            except RuleError as exc:
                found.problems.append(str(exc))
                found.open_pairs.append((s, t, str(exc)))
                continue
            found.pairs.append(Pair(s, t, route, facts, how))
        found.unmatched_source += [s for s, _ in left_s]
        found.unmatched_target += left_t
    found.unmatched_source += [s for s, r in zip(sources, routes, strict=True) if not r]
    return found


def _misfit(
    source: Layer, routes: list[Route], target: Layer, steps: list[Step], fits: Fits
) -> bool:
    """Whether no route of `source` fits `target`'s kinds and shapes."""
    facts = {**target.facts, **source.facts}
    allowed = with_variants(target.kinds)
    return not any(
        r.target in allowed and usable(r, facts) and fits(source, r, target, facts) is None
        for r in routes
    )


def _by_shapes(
    sources: list[tuple[Layer, list[Route]]], targets: list[Layer], steps: list[Step], fits: Fits
) -> list[Layer] | None:
    """Where the order pairs layers whose shapes disagree: the one way of pairing those
    layers among themselves in which every one fits its partner, if exactly one does."""
    wrong = [
        i
        for i, ((s, r), t) in enumerate(zip(sources, targets, strict=True))
        if _misfit(s, r, t, steps, fits)
    ]
    if len(wrong) > _MAX_SWAPPED:
        return None
    ok = {(i, j): not _misfit(*sources[i], targets[j], steps, fits) for i in wrong for j in wrong}
    found = [
        order
        for order in itertools.permutations(wrong)
        if all(ok[i, j] for i, j in zip(wrong, order, strict=True))
    ]
    if len(found) != 1:
        return None
    swapped = list(targets)
    for i, j in zip(wrong, found[0], strict=True):
        swapped[i] = targets[j]
    return swapped


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
