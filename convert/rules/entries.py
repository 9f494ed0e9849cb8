"""The entries of a rule file, each checked and built: a `[[layer]]` rule (a kind's
variables and their ops), a `[[path]]` rule (where a layer goes), a `[[tensor]]` rule (a
tensor by its path), a `[[rename]]` (how one side spells its names in the patterns).
`language.py` reads the file around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convert.core.dtypes import dtype_name
from convert.core.errors import RuleError
from convert.rules.ops import Chain, parse
from convert.rules.patterns import Pattern

if TYPE_CHECKING:
    import numpy as np

    from convert.core.graph import GraphPath

# A name part a [[rename]] may rewrite again (`a___b___c`), at most this often.
_MAX_REWRITES = 16


@dataclass
class VarMap:
    """Variables of one layer kind on each side, and the ops from the first to the second."""

    names: dict[str, list[str]]
    chain: Chain


@dataclass
class LayerRule:
    kinds: dict[str, str]  # side → kind on that side
    vars: list[VarMap]

    @property
    def needs(self) -> set[str]:
        """Layer facts its ops name: the rule applies only where a file gives them."""
        return {n for var in self.vars for n in var.chain.needs}


@dataclass
class PathRule:
    patterns: dict[str, Pattern]
    kind: str | None = None
    facts: dict[str, list[int]] = field(default_factory=dict)  # e.g. flatten = [4, 4, 8]
    # The target layer's variable shapes, where the ops cannot tell them from the source's
    # (a depthwise kernel's multiplier): what a skeleton gives, written down.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class TensorRule:
    patterns: dict[str, list[Pattern]]
    chain: Chain
    when: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    unknown: str = ""  # why a model fact its ops or shape name is not known (model_facts)

    def holds(self, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of the first side meets the rule's conditions."""
        when = self.when
        if "rank" in when and len(shape) != when["rank"]:
            return False
        if "shape" in when and (  # (-1: any size)
            len(shape) != len(when["shape"])
            or any(w not in (-1, s) for w, s in zip(when["shape"], shape, strict=True))
        ):
            return False
        return not ("dtype" in when and dtype_name(dtype) != when["dtype"])


@dataclass
class Rename:
    """How one side spells a name part in the patterns: a segment that matches `source` is
    the segments `spelled` fills (TF's `layer_._0` is `layer/0`, `mlm___cls` is `cls`; an
    empty `spelled` drops the segment, as Flax's `params` collection).
    It runs one way only, from the side's own names; going back, the skeleton's names are
    spelled the same way and looked up, since a dropped part (`mlm___`) has no inverse."""

    side: str
    source: Pattern
    spelled: Pattern

    def apply(self, segment: str) -> tuple[str, ...] | None:
        values = self.source.match((segment,))
        return None if values is None else self.spelled.fill(values)


def spell(path: GraphPath, renames: list[Rename]) -> GraphPath:
    """`path` as the patterns spell it: each segment rewritten by the first rename that
    matches it, again and again until none does."""
    if not renames:
        return path
    out: list[str] = []
    for segment in path:
        pending, rounds = [segment], 0
        while pending:
            part = pending.pop(0)
            new = next((r for rule in renames if (r := rule.apply(part)) is not None), None)
            if new is None or rounds >= _MAX_REWRITES:
                out.append(part)
                continue
            rounds += 1
            pending[:0] = list(new)
    return tuple(out)


def rename(entry: Any, sides: tuple[str, str], where: str) -> Rename:
    if not (
        isinstance(entry, dict)
        and entry.get("side") in sides
        and isinstance(entry.get("from"), str)
        and isinstance(entry.get("to"), str)
        and set(entry) == {"side", "from", "to"}
    ):
        raise RuleError(
            f"{where}: a rename gives `side` (one of {', '.join(sides)}), `from` (a pattern "
            'for one name part) and `to` (what the patterns call it), e.g. side = "tf", '
            'from = "{list*}_._{i}", to = "{list*}/{i}"'
        )
    source, spelled = Pattern(entry["from"]), Pattern(entry["to"])
    if len(source.segments) != 1 or source.skips:
        raise RuleError(f"{where}: `from` is one name part (no `/`, no {{_}})")
    if not spelled.names <= source.names or spelled.skips:
        raise RuleError(f"{where}: `to` uses only the placeholders `from` keeps")
    return Rename(entry["side"], source, spelled)


def strings(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"`{key}` is a list of strings", where)
    return value


def side_names(entry: dict[str, Any], side: str, where: str) -> list[str]:
    value = entry.get(side)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise RuleError(f"{where}: `{side}` must be a name or a list of names, not {value!r}")


def op_chain(entry: dict[str, Any], where: str) -> Chain:
    ops = entry.get("ops", [])
    if not isinstance(ops, list):
        raise RuleError(f"{where}: `ops` is a list")
    return Chain([parse(op, where) for op in ops])


def layer_rule(entry: Any, sides: tuple[str, str], where: str) -> LayerRule:
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: a layer rule is a table")
    kind = entry.get("kind")
    kinds = {s: kind for s in sides} if isinstance(kind, str) else kind
    if not isinstance(kinds, dict) or set(kinds) != set(sides):
        raise RuleError(
            f"{where}: `kind` names the kind, or the kind on each side ({', '.join(sides)})"
        )
    maps = []
    for j, var in enumerate(entry.get("vars", [])):
        at = f"{where}, var {j + 1}"
        if not isinstance(var, dict):
            raise RuleError(f"{at}: a var entry is a table")
        maps.append(VarMap({s: side_names(var, s, at) for s in sides}, op_chain(var, at)))
    if not maps:
        raise RuleError(f"{where}: a layer rule lists its `vars`")
    return LayerRule(kinds, maps)


def path_rule(entry: Any, sides: tuple[str, str], where: str) -> PathRule:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(s), str) for s in sides):
        raise RuleError(f"{where}: a path rule gives a pattern for each side ({', '.join(sides)})")
    patterns = {s: Pattern(entry[s]) for s in sides}
    same_names(patterns, where)
    kind = entry.get("kind")
    facts = {k: v for k, v in entry.items() if k not in (*sides, "kind", "shapes")}
    for name, value in facts.items():
        if not _ints(value):
            raise RuleError(
                f"{where}: layer fact {name!r} is a list of integers (e.g. flatten = [4, 4, 8])"
            )
    shapes = entry.get("shapes", {})
    if not isinstance(shapes, dict) or not all(_ints(v) for v in shapes.values()):
        raise RuleError(
            f"{where}: `shapes` gives the target variables' shapes, e.g. "
            "shapes = { kernel = [3, 3, 8, 1] }"
        )
    return PathRule(
        patterns,
        kind if isinstance(kind, str) else None,
        facts,
        {k: tuple(v) for k, v in shapes.items()},
    )


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


def tensor_rule(entry: Any, sides: tuple[str, str], where: str) -> TensorRule:
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: a tensor rule is a table")
    patterns = {s: [Pattern(p) for p in side_names(entry, s, where)] for s in sides}
    flat = {f"{s}{i}": p for s, ps in patterns.items() for i, p in enumerate(ps)}
    listing = [s for s, ps in patterns.items() if any(p.each is not None for p in ps)]
    if listing:
        each = {p.each for p in patterns[listing[0]]}
        if len(listing) > 1 or len(each) != 1 or None in each:
            raise RuleError(
                f"{where}: {{name:each}} is on one side only, in every pattern of that side "
                "(one list after another), the same name in each"
            )
    same_names(flat, where, {p.each for p in flat.values() if p.each is not None})
    when = {k: entry[k] for k in ("kind", "rank", "shape", "dtype") if k in entry}
    if "shape" in when and not (
        isinstance(when["shape"], list)
        and all(isinstance(d, int) or (isinstance(d, str) and d[:1] == "@") for d in when["shape"])
    ):
        raise RuleError(
            f'{where}: `shape` lists sizes: a number, -1 for any, or a model fact ("@dim")'
        )
    text = " | ".join(" + ".join(p.text for p in ps) for ps in patterns.values())
    return TensorRule(patterns, op_chain(entry, where), when, text)


def same_names(patterns: dict[str, Pattern], where: str, listing: set[str] | None = None) -> None:
    """Every pattern of a rule has the same placeholders (but for a `{name:each}`, which
    numbers a list): each side can be filled from the other, which is what makes a rule
    run both ways (and never over-match in reverse)."""
    names = {p.names - (listing or set()) for p in patterns.values()}
    if len(names) > 1:
        raise RuleError(
            f"{where}: the patterns must use the same placeholders ("
            + "; ".join(f"{p.text}: {sorted(p.names)}" for p in patterns.values())
            + ")"
        )
