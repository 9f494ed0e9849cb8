"""Rule files: TOML that names two sides and says how layers and tensors map between them.

    name = "keras-torch"
    summary = "Keras 3 layers <-> PyTorch modules"
    sides = ["keras", "torch"]        # ops below are written from the first side to the second
    include = ["other-rules"]         # built-in names or files beside this one

    [[layer]]                         # how a layer kind's variables map
    kind = "dense"                    # or { keras = "depthwise_conv2d", torch = "conv2d" }
    vars = [
      { keras = "kernel", torch = "weight", ops = ["transpose"] },
      { keras = "bias", torch = "bias" },
    ]

    [[path]]                          # where a layer goes (what --emit-rules writes)
    keras = "layers/dense_1"
    torch = "fc2"

    [[tensor]]                        # a tensor by its path (model families)
    tf1 = "bert/encoder/layer_{i}/output/dense/kernel"
    hf = "bert/encoder/layer/{i}/output/dense/weight"
    ops = ["transpose"]
    rank = 2                          # of the first side's tensor; also: shape, dtype

    skip = ["{x*}/adam_m"]            # source tensors the rules leave out on purpose (report)
    prefix = { hf = "bert" }          # a side's leading path, there or not (BertModel has none)
    formats = { hf = ["torch", "safetensors"] }   # the formats a side reads and writes

    compose = ["keras-torch", "flax-torch"]   # keras <-> flax through their common side

A side's value in a `vars` entry or a `[[tensor]]` rule is a name or a list of names (the
op chain's inputs or outputs, in order; `[]` for none). Every op declares its inverse
(`ops.py`), so the same file runs in both directions.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

from convert.core import registry
from convert.core.errors import RuleError
from convert.rules.kinds import FRAMEWORKS, mappings
from convert.rules.ops import Chain, parse
from convert.rules.patterns import Pattern

if TYPE_CHECKING:
    from convert.rules.kinds import KindSpec

_TABLES = {"name", "summary", "sides", "include", "layer", "path", "tensor", "skip", "compose",
           "serves", "formats", "prefix", "kind"}


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


@dataclass
class RuleSet:
    name: str
    summary: str
    sides: tuple[str, str]
    layers: list[LayerRule] = field(default_factory=list)
    paths: list[PathRule] = field(default_factory=list)
    tensors: list[TensorRule] = field(default_factory=list)
    skip: list[Pattern] = field(default_factory=list)
    compose: list[RuleSet] = field(default_factory=list)
    source: str = ""
    serves: str = ""
    formats: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prefix: dict[str, tuple[str, ...]] = field(default_factory=dict)  # optional, per side
    kinds: dict[str, dict[str, KindSpec]] = field(default_factory=dict)  # [[kind]]: framework → …

    def declared(self) -> dict[str, dict[str, KindSpec]]:
        """The kinds this rule set and the sets it composes declare."""
        found: dict[str, dict[str, KindSpec]] = {}
        for rules in (*self.compose, self):
            for framework, kinds in rules.kinds.items():
                found.setdefault(framework, {}).update(kinds)
        return found

    def side_formats(self, side: str) -> tuple[str, ...]:
        """What a side reads and writes: its `formats`, else, for a side called after a
        framework, that framework's formats (the registry's records say which)."""
        return self.formats.get(side) or (registry.formats_of(side)
                                          if side in FRAMEWORKS else ())

    def side_of(self, fmt: str | None) -> str | None:
        """The side whose files are of format `fmt`."""
        found = [s for s in self.sides if fmt in self.side_formats(s)]
        return found[0] if len(found) == 1 else None

    def layer_rules(self, side: str, kind: str) -> list[LayerRule]:
        return [rule for rule in self.layers if rule.kinds.get(side) == kind]


def identity(framework: str) -> RuleSet:
    """Rules between two files of one framework (a tf_keras checkpoint into a Keras 3
    model's file): every layer kind maps to itself, variable by variable, with no op; the
    alignment by kind and order does the rest."""
    from convert.rules.kinds import specs
    from convert.rules.ops import Chain

    fmts = registry.formats_of(framework) or (framework,)
    rules = RuleSet(f"{framework}-{framework}", f"{framework} layers into another {framework} "
                    "file, aligned to a skeleton", ("source", "target"),
                    formats={"source": fmts, "target": fmts}, source="(built in)")
    for kind, spec in specs()[framework].items():
        if spec.parts:
            continue  # held as its parts, which map themselves
        rules.layers.append(LayerRule({"source": kind, "target": kind},
                                      [VarMap({"source": [v], "target": [v]}, Chain([]))
                                       for v in spec.vars]))
    if framework == "keras":  # a Dense reads a flattened map the same way in any Keras
        copy = [VarMap({"source": [v], "target": [v]}, Chain([])) for v in ("kernel", "bias")]
        rules.layers += [LayerRule({"source": "dense", "target": "flatten_dense"}, copy),
                         LayerRule({"source": "flatten_dense", "target": "dense"}, copy)]
    return rules


def builtin_names() -> list[str]:
    root = mappings()
    return sorted(p.name[:-5] for p in root.iterdir()
                  if p.name.endswith(".toml") and p.name != "kinds.toml")


def load(name_or_file: str | FilePath, _seen: tuple[str, ...] = ()) -> RuleSet:
    """A built-in rule set by name, or a rule file by path."""
    framework, dash, again = str(name_or_file).partition("-")
    if dash and framework == again and framework in FRAMEWORKS:
        return identity(framework)  # `keras-keras`: one framework on both sides
    text, where, base = _read(name_or_file)
    if where in _seen:
        raise RuleError(f"rule files include each other: {' -> '.join((*_seen, where))}")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"is not valid TOML: {exc}", where) from None
    return _ruleset(table, where, base, (*_seen, where))


def _read(name_or_file: str | FilePath) -> tuple[str, str, FilePath | None]:
    text = str(name_or_file)
    path = FilePath(text)
    if path.suffix == ".toml" or "/" in text or path.is_file():
        if not path.is_file():
            raise RuleError("no such rule file", path)
        return path.read_text("utf8"), str(path), path.parent
    resource = mappings().joinpath(f"{text}.toml")
    if text == "kinds" or not resource.is_file():
        raise RuleError(f"unknown rule set {text!r}; built in: {', '.join(builtin_names())} "
                        "(or give a .toml file)")
    return resource.read_text("utf8"), f"{text} (built in)", None


def _ruleset(table: dict, where: str, base: FilePath | None, seen: tuple[str, ...]) -> RuleSet:
    unknown = set(table) - _TABLES
    if unknown:
        raise RuleError(f"unknown table(s) {', '.join(sorted(unknown))}; a rule file holds "
                        f"{', '.join(sorted(_TABLES))}", where)
    composed = [load(_beside(n, base), seen) for n in _strings(table, "compose", where)]
    sides = table.get("sides")
    if sides is None and composed:
        sides = _composed_sides(composed, where)
    if not (isinstance(sides, list) and len(sides) == 2 and all(isinstance(s, str) for s in sides)
            and sides[0] != sides[1]):
        raise RuleError("`sides` must name the two sides, e.g. sides = [\"keras\", \"torch\"]",
                        where)
    rules = RuleSet(str(table.get("name", FilePath(where).stem)), str(table.get("summary", "")),
                    (sides[0], sides[1]), source=where, compose=composed,
                    serves=str(table.get("serves", "")))
    formats = table.get("formats", {})
    if not isinstance(formats, dict) or not all(
            s in rules.sides and isinstance(v, list) for s, v in formats.items()):
        raise RuleError("`formats` gives each side's format names, e.g. "
                        "formats = { hf = [\"torch\", \"safetensors\"] }", where)
    rules.formats = {s: tuple(v) for s, v in formats.items()}
    prefix = table.get("prefix", {})
    if not isinstance(prefix, dict) or not all(
            s in rules.sides and isinstance(v, str) and v.strip("/") for s, v in prefix.items()):
        raise RuleError("`prefix` gives a side's optional leading path, e.g. "
                        "prefix = { hf = \"bert\" }", where)
    rules.prefix = {s: tuple(v.strip("/").split("/")) for s, v in prefix.items()}
    for name in _strings(table, "include", where):
        included = load(_beside(name, base), seen)
        if set(included.sides) != set(rules.sides):
            raise RuleError(f"includes {name!r}, whose sides {list(included.sides)} are not "
                            f"{list(rules.sides)}", where)
        rules.layers += included.layers
        rules.paths += included.paths
        rules.tensors += included.tensors
        rules.skip += included.skip
        for framework, kinds in included.kinds.items():
            rules.kinds.setdefault(framework, {}).update(kinds)
        rules.formats = {**included.formats, **rules.formats}
        rules.prefix = {**included.prefix, **rules.prefix}
    for i, entry in enumerate(table.get("kind", [])):
        _kind(entry, rules, f"{where}: kind {i + 1}")
    for i, entry in enumerate(table.get("layer", [])):
        rules.layers.append(_layer_rule(entry, rules.sides, f"{where}: layer rule {i + 1}"))
    for i, entry in enumerate(table.get("path", [])):
        rules.paths.append(_path_rule(entry, rules.sides, f"{where}: path rule {i + 1}"))
    for i, entry in enumerate(table.get("tensor", [])):
        rules.tensors.append(_tensor_rule(entry, rules.sides, f"{where}: tensor rule {i + 1}"))
    rules.skip += [Pattern(p) for p in _strings(table, "skip", where)]
    return rules


def _beside(name: str, base: FilePath | None) -> str | FilePath:
    if base is not None and name.endswith(".toml"):
        return base / name
    return name


def _composed_sides(composed: list[RuleSet], where: str) -> list[str]:
    if len(composed) != 2:
        raise RuleError("`compose` names two rule sets that share one side", where)
    a, b = composed
    common = set(a.sides) & set(b.sides)
    if len(common) != 1:
        raise RuleError(f"`compose`: {a.name} and {b.name} share no single side", where)
    (middle,) = common
    return [next(s for s in a.sides if s != middle), next(s for s in b.sides if s != middle)]


def _strings(table: dict, key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"`{key}` is a list of strings", where)
    return value


def _names(entry: dict, side: str, where: str) -> list[str]:
    value = entry.get(side)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise RuleError(f"{where}: `{side}` must be a name or a list of names, not {value!r}")


def _chain(entry: dict, where: str) -> Chain:
    ops = entry.get("ops", [])
    if not isinstance(ops, list):
        raise RuleError(f"{where}: `ops` is a list")
    return Chain([parse(op, where) for op in ops])


def _layer_rule(entry: Any, sides: tuple[str, str], where: str) -> LayerRule:
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: a layer rule is a table")
    kind = entry.get("kind")
    kinds = {s: kind for s in sides} if isinstance(kind, str) else kind
    if not isinstance(kinds, dict) or set(kinds) != set(sides):
        raise RuleError(f"{where}: `kind` names the kind, or the kind on each side "
                        f"({', '.join(sides)})")
    maps = []
    for j, var in enumerate(entry.get("vars", [])):
        at = f"{where}, var {j + 1}"
        if not isinstance(var, dict):
            raise RuleError(f"{at}: a var entry is a table")
        maps.append(VarMap({s: _names(var, s, at) for s in sides}, _chain(var, at)))
    if not maps:
        raise RuleError(f"{where}: a layer rule lists its `vars`")
    return LayerRule(kinds, maps)


def _kind(entry: Any, rules: RuleSet, where: str) -> None:
    """A `[[kind]]` table: a layer kind the built-in ones lack, as in mappings/kinds.toml,
    with its `name`: per framework, `vars` (creation order; `?` optional, `a|b` other
    names), `ranks`, and the `classes` that are that kind."""
    from convert.rules.kinds import spec_of

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RuleError(f"{where}: a [[kind]] table has a `name` and a table per framework "
                        f"({', '.join(FRAMEWORKS)})")
    sides = {k: v for k, v in entry.items() if k != "name"}
    for framework, table in sides.items():
        if framework not in FRAMEWORKS or not isinstance(table, dict):
            raise RuleError(f"{where}: {framework!r} is not a framework "
                            f"({', '.join(FRAMEWORKS)}) with a table")
        names = table.get("vars")
        ranks = table.get("ranks", {})
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise RuleError(f"{where}: {framework}.vars lists the layer's variable names")
        if not (isinstance(ranks, dict) and all(isinstance(r, int) for r in ranks.values())):
            raise RuleError(f"{where}: {framework}.ranks gives each variable's rank")
        classes = table.get("classes", [])
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise RuleError(f"{where}: {framework}.classes is a list of class names")
        try:
            spec = spec_of(entry["name"], framework, table)
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"{where}: {framework}: {exc}") from None
        rules.kinds.setdefault(framework, {})[entry["name"]] = spec


def _path_rule(entry: Any, sides: tuple[str, str], where: str) -> PathRule:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(s), str) for s in sides):
        raise RuleError(f"{where}: a path rule gives a pattern for each side "
                        f"({', '.join(sides)})")
    patterns = {s: Pattern(entry[s]) for s in sides}
    _same_names(patterns, where)
    kind = entry.get("kind")
    facts = {k: v for k, v in entry.items() if k not in (*sides, "kind", "shapes")}
    for name, value in facts.items():
        if not _ints(value):
            raise RuleError(f"{where}: layer fact {name!r} is a list of integers "
                            "(e.g. flatten = [4, 4, 8])")
    shapes = entry.get("shapes", {})
    if not isinstance(shapes, dict) or not all(_ints(v) for v in shapes.values()):
        raise RuleError(f"{where}: `shapes` gives the target variables' shapes, e.g. "
                        "shapes = { kernel = [3, 3, 8, 1] }")
    return PathRule(patterns, kind if isinstance(kind, str) else None, facts,
                    {k: tuple(v) for k, v in shapes.items()})


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


def _tensor_rule(entry: Any, sides: tuple[str, str], where: str) -> TensorRule:
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: a tensor rule is a table")
    patterns = {s: [Pattern(p) for p in _names(entry, s, where)] for s in sides}
    flat = {f"{s}{i}": p for s, ps in patterns.items() for i, p in enumerate(ps)}
    _same_names(flat, where)
    when = {k: entry[k] for k in ("kind", "rank", "shape", "dtype") if k in entry}
    text = " | ".join(" + ".join(p.text for p in ps) for ps in patterns.values())
    return TensorRule(patterns, _chain(entry, where), when, text)


def _same_names(patterns: dict[str, Pattern], where: str) -> None:
    """Every pattern of a rule has the same placeholders: each side can be filled from the
    other, which is what makes a rule run both ways (and never over-match in reverse)."""
    names = {p.names for p in patterns.values()}
    if len(names) > 1:
        raise RuleError(f"{where}: the patterns must use the same placeholders ("
                        + "; ".join(f"{p.text}: {sorted(p.names)}" for p in patterns.values())
                        + ")")
