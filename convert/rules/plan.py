"""The plan: a graph whose leaves are derived tensors, built before any tensor is read, and
the report of what it consumed, left unused, missed and made up.

With a skeleton (`--like`), the output is the skeleton itself (its keys, shapes, dtypes,
containers and values) with each tensor replaced by the one the rules derive for it;
the source's layers are aligned to the skeleton's by kind and order (`align.py`). Without
one, `[[path]]` rules say where each layer goes and `[[tensor]]` rules name each tensor.
Writers take the plan as they take any graph: they never see a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convert.core import registry
from convert.core.dtypes import dtype_name
from convert.core.errors import RuleError
from convert.core.graph import Entry, Graph, GraphPath, Node
from convert.core.meta import (
    KERAS_CONFIG,
    RULE_EXACT,
    RULE_KEY,
    RULE_OPS,
    RULE_PREFIX,
    RULE_SOURCES,
    SAVED_BY,
    SOURCE_KEY,
    TF_LAYOUT,
    VIEW_OF,
)
from convert.core.tensor import Tensor
from convert.rules import kinds as kinds_module
from convert.rules import model_facts, place, views
from convert.rules.derive import sources_of
from convert.rules.language import RuleSet
from convert.rules.translate import Step, run_tensor_rules

CHECKS = ("consumed", "existing", "nontrivial", "partial")


@dataclass
class RulesReport:
    """The counterpart of TensorFlow's restore status, for a conversion through rules."""

    rules: str
    direction: str
    check: str
    consumed: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # used by a rule that keeps no value
    made: list[str] = field(default_factory=list)  # made by the rules from no source
    missing: list[str] = field(default_factory=list)
    # One tensor at several places, written once and shared ("decoder.weight = embeddings"):
    # the target's (a skeleton's) or, without one, the source's
    tied: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    inexact: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, str]] = field(default_factory=list)
    reordered: list[dict[str, Any]] = field(default_factory=list)  # rows of a flattened map
    objects: bool = False  # layers placed as tf_keras objects (see place.py)
    plan: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = [
            (len(self.unused), "unused"),
            (len(self.skipped), "skipped by the rules"),
            (len(self.dropped), "dropped by the rules"),
            (len(self.made), "made by the rules"),
            (len(self.missing), "target entries missing"),
            (len(self.tied), "tied"),
        ]
        return (
            f"rules {self.rules} ({self.direction}): {len(self.plan)} planned from "
            f"{len(self.consumed)} source tensors"
            + "".join(f", {n} {what}" for n, what in counts if n)
        )


@dataclass
class Planned:
    graph: Graph
    report: RulesReport
    emitted: list[dict[str, Any]]  # [[path]] rules for the alignment found
    ruleset: RuleSet


def steps(
    rules: RuleSet,
    source_format: str | None,
    target_format: str | None,
    reverse: bool,
    saved_by: str | None = None,
) -> list[Step]:
    """The rule sets to run, each in its direction, from the source's side to the target's.
    A file that says whose it is (`saved_by`: a TF-format safetensors file) is that side's
    where the rules have one so named, whatever its format."""
    src: str | None  # (None: the source's format is on no side, or on both)
    said = saved_by if saved_by in rules.sides else None
    if rules.compose:
        first, second = rules.compose
        middle = (set(first.sides) & set(second.sides)).pop()
        src, dst = rules.sides
        if reverse or ((said or rules.side_of(source_format)) == dst):
            src, dst = dst, src
            first, second = second, first
        if said != src:
            _check_side(rules, src, source_format, "source")
        return [Step(first, src, middle), Step(second, middle, dst)]
    src = said or rules.side_of(source_format)
    same = rules.side_formats(rules.sides[0]) == rules.side_formats(rules.sides[1])
    if same:
        src = rules.sides[0]  # both sides are one framework: the file's order decides
    if reverse and not same and src is not None:
        other = rules.sides[1] if src == rules.sides[0] else rules.sides[0]
        raise RuleError(
            f"rules {rules.name}: the source is a {source_format} file, so it "
            f"is read as {src} and written as {other} already; drop --reverse "
            f"(it is for rules whose two sides are files of one format)"
        )
    if reverse:
        src = rules.sides[1] if src != rules.sides[1] else rules.sides[0]
    if src is None:
        raise RuleError(
            f"rules {rules.name} map {' and '.join(rules.sides)} files "
            f"({', '.join(_formats(rules))}); the source is a {source_format} "
            "file (--reverse picks the direction)"
        )
    dst = rules.sides[1] if src == rules.sides[0] else rules.sides[0]
    if target_format and target_format not in rules.side_formats(dst):
        raise RuleError(
            f"rules {rules.name} write {dst} ({', '.join(rules.side_formats(dst))}"
            f"), not a {target_format} file"
        )
    return [Step(rules, src, dst)]


def _check_side(rules: RuleSet, side: str, fmt: str | None, what: str) -> None:
    if fmt not in rules.side_formats(side):
        raise RuleError(
            f"rules {rules.name}: the {what} is a {fmt} file, not {side} "
            f"({', '.join(rules.side_formats(side))})"
        )


def _formats(rules: RuleSet) -> list[str]:
    return [f for s in rules.sides for f in rules.side_formats(s)]


def plan(
    source: Graph,
    rules: RuleSet,
    *,
    like: Graph | None = None,
    target_format: str | None = None,
    check: str | None = None,
    reverse: bool = False,
) -> Planned:
    """Map `source` through `rules` into a graph of lazy derived tensors."""
    with kinds_module.declared(rules.declared()):
        return _plan(source, rules, like, target_format, check, reverse)


def _plan(
    source: Graph,
    rules: RuleSet,
    like: Graph | None,
    target_format: str | None,
    check: str | None,
    reverse: bool,
) -> Planned:
    check = check or ("existing" if like is not None else "consumed")
    if check not in CHECKS:
        raise RuleError(f"unknown check {check!r}; one of {', '.join(CHECKS)}")
    target_format = like.format if like is not None else target_format
    chain = steps(rules, source.format, target_format, reverse, source.root.meta.get(SAVED_BY))
    report = RulesReport(rules.name, f"{chain[0].src} -> {chain[-1].dst}", check)
    every = source.entries()  # (walked once: a graph may hold 20,000 tensors)
    _name_sources(every)
    if like is None and chain[0].src in rules.variable_names:
        # (a variable two layers use, at both places in the file: one name, written once)
        report.tied = [_tie(e.paths, _source_key(e.tensor), "/") for e in every if len(e.paths) > 1]
    entries = [e for e in every if e.slot is None]
    skipped = [e for e in entries if any(p.match(e.path) is not None for p in rules.skip)]
    report.skipped = [_source_key(e.tensor) for e in skipped]
    report.skipped += [_source_key(e.tensor) for e in every if e.slot is not None]
    left_out = {id(e.tensor) for e in skipped}
    left = {path: e.tensor for e in entries if id(e.tensor) not in left_out for path in e.paths}
    want = _targets(like) if like is not None else None
    facts = model_facts.read(rules.facts, [(chain[0].src, source), (chain[-1].dst, like)])
    produced, used = (
        ({}, set()) if rules.compose else run_tensor_rules(rules, chain[0], left, want, facts)
    )
    left = {p: t for p, t in left.items() if id(t) not in used}
    emitted: list[dict[str, Any]] = []
    if rules.layers or rules.compose:
        layer_out, layer_used = _plan_layers(
            source, left, chain, like, target_format, report, emitted, rules
        )
        produced.update(layer_out)
        used |= layer_used
    report.unused = sorted(
        {_source_key(t) for t in left.values() if id(t) not in used} | set(report.unused)
    )
    graph = _output(source, like, produced, target_format, report)
    _check(report, check, rules)
    report.dropped = sorted(
        {_source_key(t) for t in left.values() if id(t) in used} - set(report.consumed)
    )
    return Planned(graph, report, emitted, rules)


def _name_sources(entries: list[Entry]) -> None:
    for entry in entries:
        if SOURCE_KEY not in entry.tensor.meta:
            entry.tensor.meta[RULE_KEY] = "/".join(entry.path)


def _tie(paths: list[GraphPath], key: str, separator: str) -> str:
    """`key` and its other places: "cls.predictions.decoder.weight = bert.embeddings…"."""
    others = [name for name in (separator.join(p) for p in paths) if name != key]
    return " = ".join([*others, key])


def _source_key(tensor: Tensor) -> str:
    return str(tensor.meta.get(SOURCE_KEY) or tensor.meta.get(RULE_KEY) or "?")


def _targets(like: Graph) -> dict[GraphPath, Tensor]:
    return {path: e.tensor for e in like.entries() if e.slot is None for path in e.paths}


def _plan_layers(
    source: Graph,
    left: dict[GraphPath, Tensor],
    chain: list[Step],
    like: Graph | None,
    target_format: str | None,
    report: RulesReport,
    emitted: list[dict[str, Any]],
    rules: RuleSet,
) -> tuple[dict[GraphPath, Tensor], set[int]]:
    remaining = {id(t) for t in left.values()}
    found = views.view(source, place.framework(chain[0].src, source.format))
    layers = [
        layer for layer in found.layers if all(id(t) in remaining for t in layer.vars.values())
    ]
    if like is not None:
        target = views.view(like, place.framework(chain[-1].dst, like.format))
        where = {id(t): p for p, t in _targets(like).items()}
        configured = KERAS_CONFIG in source.values or KERAS_CONFIG in like.values
        placed = place.with_skeleton(layers, target.layers, where, chain, rules, configured)
    else:
        placed = place.by_path_rules(layers, chain, rules, target_format)
    report.layers += placed.layers
    report.reordered += placed.reordered
    report.objects = report.objects or placed.objects
    report.warnings += placed.warnings
    emitted += placed.emitted
    return placed.produced, placed.used


def _output(
    source: Graph,
    like: Graph | None,
    produced: dict[GraphPath, Tensor],
    target_format: str | None,
    report: RulesReport,
) -> Graph:
    if like is None:
        graph = Graph(format=target_format, source=source.source, files=list(source.files))
        if target_format == "tf":  # tensors named by path: a TF1 (name-based) checkpoint,
            # or Keras layers as tf_keras objects (`layer_with_weights-0/kernel`)
            graph.root.meta[TF_LAYOUT] = "object" if report.objects else "names"
        for path, tensor in produced.items():
            graph.add(path, tensor)
        for path, tensor in produced.items():
            report.plan.append(_planned(_key(path, target_format), tensor))
        return graph
    fill: dict[int, Tensor] = {}
    like_entries = like.entries()
    for entry in like_entries:
        if entry.slot is not None:
            continue
        made = next((produced[p] for p in entry.paths if p in produced), None)
        key = str(entry.tensor.meta.get(SOURCE_KEY) or _key(entry.path, like.format))
        if made is None:
            report.missing.append(key)
            continue
        fill[id(entry.tensor)] = made
        report.plan.append(_planned(key, made))
        if len(entry.paths) > 1:
            report.tied.append(_tie(entry.paths, key, registry.separator(like.format)))
    known = {p for e in like_entries for p in e.paths}
    report.unexpected = [_key(p, like.format) for p in produced if p not in known]
    # What the target has no place for (a BertModel has no pre-training heads) is unused.
    report.unused = sorted(
        {*report.unused, *(s for p, t in produced.items() if p not in known for s in sources_of(t))}
    )
    graph = Graph(
        root=_copy(like.root, fill, {}, {}),
        values=dict(like.values),
        format=like.format,
        source=source.source,
        files=[*source.files, *like.files],
    )
    return graph


def _copy(
    node: Node, fill: dict[int, Tensor], memo: dict[int, Node], copied: dict[int, Tensor]
) -> Node:
    """The skeleton's Node tree with its tensors replaced (aliases stay aliases): `memo`
    holds the nodes copied, `copied` the tensors put in, each by the skeleton's id."""
    if id(node) in memo:
        return memo[id(node)]
    new = memo[id(node)] = Node(dict(node.meta))
    new.values = dict(node.values)
    for name, item in node.edges.items():
        if isinstance(item, Node):
            new.edges[name] = _copy(item, fill, memo, copied)
        elif id(item) in fill:
            new.edges[name] = _as(item, fill[id(item)], copied)
    return new


def _as(skeleton: Tensor, made: Tensor, memo: dict[int, Tensor]) -> Tensor:
    """`made` in the skeleton's place: the skeleton's format facts (its Keras weight name
    and position, its TF full name, its own key) with the rules' provenance, so the writer
    lays it out as the skeleton's own (an alias of the skeleton tensor gets the same one)."""
    key = id(skeleton)
    if key not in memo:
        memo[key] = Tensor(
            made.dtype,
            made.shape,
            made.read,
            {
                **skeleton.meta,
                **{k: v for k, v in made.meta.items() if k.startswith(RULE_PREFIX) or k == VIEW_OF},
                RULE_SOURCES: made.meta.get(RULE_SOURCES, [_source_key(made)]),
            },
        )
    return memo[key]


def _key(path: GraphPath, fmt: str | None) -> str:
    return registry.separator(fmt).join(path)


def _planned(key: str, tensor: Tensor) -> dict[str, Any]:
    return {
        "key": key,
        "dtype": dtype_name(tensor.dtype),
        "shape": list(tensor.shape),
        "sources": sources_of(tensor),
        "ops": tensor.meta.get(RULE_OPS, "copy"),
        "exact": tensor.meta.get(RULE_EXACT, True),
    }


def _check(report: RulesReport, check: str, rules: RuleSet) -> None:
    consumed = {s for item in report.plan for s in item["sources"]}
    report.consumed = sorted(consumed - {"?"})
    report.unused = sorted(set(report.unused) - consumed)
    report.inexact = [
        {"key": p["key"], "ops": p["ops"]} for p in report.plan if not p["exact"] and p["sources"]
    ]
    report.made = [p["key"] for p in report.plan if not p["sources"]]
    problems = []
    if check in ("consumed", "existing") and report.missing:
        problems.append(_some(report.missing, "target entries missing"))
    if check == "consumed" and report.unused:
        problems.append(_some(report.unused, "source tensors unused"))
    if check == "consumed" and report.unexpected:
        problems.append(_some(report.unexpected, "made but not in the target"))
    if check == "nontrivial" and not report.plan:
        problems.append("nothing matched")
    if not report.plan and check != "partial":
        problems.append(f"rules {rules.name} matched nothing in the source")
    if problems:
        raise RuleError(
            f"check {check!r} failed: "
            + "; ".join(dict.fromkeys(problems))
            + " (--check partial writes what matched)"
        )


def _some(keys: list[str], what: str) -> str:
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"{len(keys)} {what} ({shown})"
