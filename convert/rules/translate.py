"""Running rules over tensors: a layer's variables through each step's layer rule, and
tensors through `[[tensor]]` rules, into derived tensors (no data read).

A step is one rule set in one direction. Going the way a file is written, the ops run as
written; going back, each op's inverse is built from the specs the forward ops were given,
which are the target's (from the skeleton) where there is one, else what the ops can tell
from the source's shapes alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from convert.core.errors import RuleError
from convert.core.graph import GraphPath
from convert.core.tensor import Tensor
from convert.rules import model_facts
from convert.rules.derive import derive
from convert.rules.entries import LayerRule, TensorRule
from convert.rules.language import ANY_PREFIX, RuleSet
from convert.rules.ops import Chain, NeedShapes, OpError, Spec
from convert.rules.patterns import Pattern
from convert.rules.spelling import Skeleton, spelled, spellings

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Step:
    rules: RuleSet
    src: str  # side read
    dst: str  # side written

    @property
    def forward(self) -> bool:
        return self.src == self.rules.sides[0]


@dataclass(frozen=True)
class Route:
    """One way a layer goes from the source's side to the target's: its kind on each side
    and the layer rule of each step."""

    source: str
    target: str
    rules: tuple[LayerRule, ...]

    @property
    def needs(self) -> set[str]:
        """Layer facts its ops name: it applies only where a file or a rule gives them."""
        return {n for rule in self.rules for n in rule.needs}

    def signature(
        self, steps: list[Step]
    ) -> tuple[tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...], ...]:
        """What the route does to the variables: two routes with one signature give the
        same tensors from the same layer (keras-torch's conv2d and conv2d_transpose)."""
        return tuple(
            tuple(
                (tuple(v.names[step.src]), tuple(v.names[step.dst]), repr(v.chain.ops))
                for v in rule.vars
            )
            for rule, step in zip(self.rules, steps, strict=True)
        )

    def reorders(self, steps: list[Step]) -> bool:
        """Whether it reorders a flattened map's rows (channels-last ↔ channels-first): the
        `channels_first` ops it runs forward and back do not cancel."""
        net = 0
        for rule, step in zip(self.rules, steps, strict=True):
            count = sum(op.name == "channels_first" for v in rule.vars for op in v.chain.ops)
            net += count if step.forward else -count
        return net != 0


def routes(kinds: frozenset[str], steps: list[Step]) -> list[Route]:
    """Every way a layer of one of `kinds` goes through the steps' layer rules."""
    frontier: list[tuple[str, str, tuple[LayerRule, ...]]] = [(k, k, ()) for k in sorted(kinds)]
    for step in steps:
        frontier = [
            (first, rule.kinds[step.dst], (*path, rule))
            for first, kind, path in frontier
            for rule in step.rules.layer_rules(step.src, kind)
        ]
    return [Route(first, kind, path) for first, kind, path in frontier]


def usable(route: Route, facts: dict[str, list[int]]) -> bool:
    """Whether the layer facts the route's rules need are known."""
    return route.needs <= facts.keys()


def run_layer(
    variables: dict[str, Tensor],
    route: Route,
    steps: list[Step],
    want: dict[str, Tensor] | None,
    where: str,
    facts: dict[str, list[int]] | None = None,
) -> tuple[dict[str, Tensor], list[str]]:
    """The target layer's variables from the source layer's, and the source variables left
    unused (the target has no place for them)."""
    current = variables
    unused: list[str] = []
    for i, (step, rule) in enumerate(zip(steps, route.rules, strict=True)):
        last = i == len(steps) - 1
        current, left = _run_rule(rule, step, current, want if last else None, where, facts or {})
        unused += left
    return current, unused


def _run_rule(
    rule: LayerRule,
    step: Step,
    current: dict[str, Tensor],
    want: dict[str, Tensor] | None,
    where: str,
    facts: dict[str, list[int]],
) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {}
    unused: list[str] = []
    for var in rule.vars:
        src, dst = var.names[step.src], var.names[step.dst]
        inputs = [current.get(n) for n in src]
        if src and all(t is None for t in inputs):
            continue  # a variable this layer does not have (a bias it was built without)
        if not _all_present(inputs):
            missing = [n for n, t in zip(src, inputs, strict=True) if t is None]
            raise RuleError(
                f"layer {where}: has {', '.join(n for n in src if n not in missing)}"
                f" but not {', '.join(missing)}, which the rule maps together"
            )
        if want is not None and dst and not any(n in want for n in dst):
            unused += src  # the target layer has no such variable (built without a bias)
            continue
        targets = (
            [want[n] for n in dst] if want is not None and all(n in want for n in dst) else None
        )
        chain = _oriented(
            var.chain.bind(facts), step, inputs, targets, f"layer {where}: {' + '.join(src)}"
        )
        out.update(zip(dst, derive(inputs, chain), strict=True))
    return out, unused


def _oriented(
    written: Chain,
    step: Step,
    inputs: list[Tensor],
    targets: list[Tensor] | None,
    where: str,
    hint: str = "give --like TARGET",
) -> Chain:
    """The chain from `inputs` to the step's side (`written` runs from the rule file's first
    side to its second), checked against `targets` if known; `hint` says where the shapes
    it may need come from."""
    specs = [(t.dtype, t.shape) for t in inputs]
    try:
        if step.forward:
            chain = written
            got = chain.specs(specs)
        else:
            wanted = (
                [(t.dtype, t.shape) for t in targets]
                if targets is not None
                else written.back(specs)
            )
            if written.specs(wanted) != specs:
                raise RuleError(
                    f"{where}: the target holds {_specs(wanted)}, which the source "
                    f"would hold as {_specs(written.specs(wanted))}; it holds "
                    f"{_specs(specs)}"
                )
            chain = written.inverse(wanted)
            got = wanted
    except NeedShapes as exc:
        raise RuleError(f"{where}: {exc.reason}; {hint}") from None
    except OpError as exc:
        raise RuleError(f"{where}: {exc.reason}") from None
    if targets is not None and got != [(t.dtype, t.shape) for t in targets]:
        raise RuleError(
            f"{where}: the rule makes {_specs(got)}, the target holds "
            f"{_specs([(t.dtype, t.shape) for t in targets])}"
        )
    return chain


def _specs(specs: list[Spec]) -> str:
    from convert.core.dtypes import dtype_name

    return ", ".join(f"{dtype_name(d)}{list(s)}" for d, s in specs)


def run_tensor_rules(
    rules: RuleSet,
    step: Step,
    tensors: dict[GraphPath, Tensor],
    want: dict[GraphPath, Tensor] | None,
    facts: model_facts.Facts | None = None,
) -> tuple[dict[GraphPath, Tensor], set[int]]:
    """Target path → tensor for every source tensor a `[[tensor]]` rule matches, and the
    ids of the source tensors used. The first rule that matches wins; with a skeleton, the
    first whose outputs the skeleton holds (a 2-D `weight` is a TF `kernel` or
    `embeddings`: the skeleton's names tell)."""
    if want is None and step.dst in rules.needs_like:
        raise RuleError(
            f"rules {rules.name} write {step.dst} names only with --like a {step.dst} file "
            f"of the model: {rules.needs_like[step.dst]}"
        )
    tensors = spelled(tensors, rules, step.src, "source")[0]
    native: dict[GraphPath, GraphPath] = {}
    dst_renames = [r for r in rules.renames if r.side == step.dst]
    if want is not None and (dst_renames or step.dst in rules.variable_names):
        want, native = spelled(want, rules, step.dst, "skeleton")
    elif dst_renames:
        raise RuleError(
            f"rules {rules.name} spell {step.dst} names in ways only a file of the model can "
            f"undo; give --like a {step.dst} file of the model"
        )
    produced: dict[GraphPath, Tensor] = {}
    used: set[int] = set()
    src_prefix, dst_prefix = rules.prefix.get(step.src), rules.prefix.get(step.dst)
    skeleton = Skeleton(want, dst_prefix) if want is not None else None
    if src_prefix == ANY_PREFIX:
        src_prefix = None  # (no name to put in: only a skeleton's names can tell it)
    tensor_rules = model_facts.bound(rules.tensors, facts or model_facts.Facts(places=rules.facts))
    for path, tensor in tensors.items():
        if id(tensor) in used:
            continue
        for spelled_path, original in spellings(path, src_prefix):
            hit = _first_rule(tensor_rules, step, spelled_path, original, tensor, tensors, skeleton)
            if hit is not None:
                made, sources = hit
                for out, value in made.items():
                    out = native.get(out, out)
                    if out in produced:
                        raise RuleError(
                            f"two rules write {'/'.join(out)} (the second from {'/'.join(path)})"
                        )
                    produced[out] = value
                used.update(id(t) for t in sources)
                break
    return produced, used


def _first_rule(
    rules: list[TensorRule],
    step: Step,
    path: GraphPath,
    original: Callable[[GraphPath], GraphPath],
    tensor: Tensor,
    tensors: dict[GraphPath, Tensor],
    skeleton: Skeleton | None,
) -> tuple[dict[GraphPath, Tensor], list[Tensor]] | None:
    want = skeleton.want if skeleton is not None else None
    fallback: tuple[TensorRule, list[GraphPath], list[Tensor]] | None = None
    for rule in rules:
        values = rule.patterns[step.src][0].match(path)
        if values is None or (step.forward and not rule.holds(tensor.dtype, tensor.shape)):
            continue
        listed, listing = rule.patterns[step.src], rule.patterns[step.dst]
        if listed[0].each is not None:
            sources = _listed(listed, values, original, tensors)
        else:
            sources = [
                tensors.get(original(p.fill(values)))
                if not p.skips
                else (tensors.get(found) if (found := p.resolve(values, tensors)) else None)
                for p in rule.patterns[step.src]
            ]
        if not _all_present(sources):
            continue
        if listing[0].each is not None:
            count = _list_length(rule, step, sources, listing, values, skeleton)
            if count is None:
                continue
            outputs = [p.each_path(values, k) for p in listing for k in range(count)]
        else:
            outputs = [
                p.resolve(values, want or ()) or p.fill(values) for p in rule.patterns[step.dst]
            ]
        if skeleton is not None:
            outputs = [skeleton.spelling(o) for o in outputs]
        wanted = [want.get(o) for o in outputs] if want is not None else None
        targets = wanted if wanted is not None and _all_present(wanted) else None
        if not step.forward and not _holds_back(rule, sources, targets):
            continue  # the conditions are on the first side's tensor: here, the target's
        if want is not None and targets is None:
            fallback = fallback or (rule, outputs, sources)
            continue  # a later rule may name what the skeleton holds
        return _made(rule, step, path, outputs, sources, targets)
    if fallback is not None:
        rule, outputs, chosen = fallback
        absent = "/".join(outputs[0])
        hint = f"the --like file holds no {absent}: is it a model these rules are for?"
        return _made(rule, step, path, outputs, chosen, None, hint)
    return None


def _listed(
    patterns: list[Pattern],
    values: dict[str, str | GraphPath],
    original: Callable[[GraphPath], GraphPath],
    tensors: dict[GraphPath, Tensor],
) -> list[Tensor | None]:
    """The tensors `{name:each}` patterns name with the other `values`: each pattern's item
    0, 1, ... while there is one, one pattern's list after another's; [None] unless every
    list is as long, and the matched tensor's number is in it (a gap before it)."""
    lists: list[list[Tensor | None]] = []
    for pattern in patterns:
        found: list[Tensor | None] = []
        while (item := tensors.get(original(pattern.each_path(values, len(found))))) is not None:
            found.append(item)
        lists.append(found)
    each = patterns[0].each
    assert each is not None
    if len({len(found) for found in lists}) != 1 or int(str(values[each])) >= len(lists[0]):
        return [None]
    return [item for found in lists for item in found]


def _list_length(
    rule: TensorRule,
    step: Step,
    sources: list[Tensor],
    patterns: list[Pattern],
    values: dict[str, str | GraphPath],
    skeleton: Skeleton | None,
) -> int | None:
    """How many tensors each of a rule's `{name:each}` target patterns names: what its ops
    make of the sources, shared among the patterns, else (their shapes cannot tell) how
    many the skeleton holds."""
    specs = [(t.dtype, t.shape) for t in sources]
    try:
        made = len(rule.chain.specs(specs) if step.forward else rule.chain.back(specs))
    except (NeedShapes, OpError):
        made = None
    if made is not None:
        return made // len(patterns) if made % len(patterns) == 0 and made else None
    if skeleton is None:
        return None
    count = 0
    while skeleton.spelling(patterns[0].each_path(values, count)) in skeleton.want:
        count += 1
    return count or None


def _made(
    rule: TensorRule,
    step: Step,
    path: GraphPath,
    outputs: list[GraphPath],
    sources: list[Tensor],
    targets: list[Tensor] | None,
    hint: str = "give --like TARGET",
) -> tuple[dict[GraphPath, Tensor], list[Tensor]]:
    if rule.unknown:
        raise RuleError(f"tensor {'/'.join(path)}: {rule.unknown}")
    chain = _oriented(rule.chain, step, sources, targets, f"tensor {'/'.join(path)}", hint)
    return dict(zip(outputs, derive(sources, chain), strict=True)), sources


def _all_present(tensors: list[Tensor | None]) -> TypeGuard[list[Tensor]]:
    return all(t is not None for t in tensors)


def _holds_back(rule: TensorRule, sources: list[Tensor], targets: list[Tensor] | None) -> bool:
    """Going back, whether the rule fits: its first side is the target, whose tensor is the
    skeleton's, or what the ops say it would be; a rule whose ops do not fit the source's
    shapes at all is not this tensor's rule (a LayerNorm `weight` is no kernel)."""
    if targets:
        return rule.holds(targets[0].dtype, targets[0].shape)
    try:
        (dtype, shape), *_ = rule.chain.back([(t.dtype, t.shape) for t in sources])
    except NeedShapes:
        return True  # the conditions cannot be told; the ops check the shapes as they go
    except OpError:
        return False
    return rule.holds(dtype, shape)
