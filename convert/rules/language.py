"""Rule files: TOML that names two sides and says how layers and tensors map between them.

    name = "keras-torch"
    summary = "Keras 3 layers <-> PyTorch modules"
    sides = ["keras", "torch"]        # ops below are written from the first side to the second
    include = ["other-rules"]         # built-in names or files beside this one
    define = { decoder = "llama_transformer_decoder" }  # an included template's {{decoder}}

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
    [[rename]]                        # how a side's own name parts are spelled in the patterns
    side = "tf"
    from = "{list*}_._{i}"
    to = "{list*}/{i}"
    needs_like = { tf = "why" }       # a side written only with --like a file of its model
    variable_names = ["tf"]           # a side whose tensors go by their TF variable names
    formats = { hf = ["torch", "safetensors"] }   # the formats a side reads and writes
    facts = { heads = { meta = "params.json:n_heads" } }  # numbers beside it (model_facts.py)

    compose = ["keras-torch", "flax-torch"]   # keras <-> flax through their common side

A side's value in a `vars` entry or a `[[tensor]]` rule is a name or a list of names (the
op chain's inputs or outputs, in order; `[]` for none). Every op declares its inverse
(`ops/`), so the same file runs in both directions. Each entry is checked and built in
`entries.py`; the whole reference is docs/rules-language.md.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

from convert.core import registry
from convert.core.errors import RuleError
from convert.rules import model_facts
from convert.rules.entries import (
    LayerRule,
    PathRule,
    Rename,
    TensorRule,
    VarMap,
    layer_rule,
    path_rule,
    rename,
    strings,
    tensor_rule,
)
from convert.rules.kinds import FRAMEWORKS, mappings
from convert.rules.ops import Chain
from convert.rules.patterns import Pattern

if TYPE_CHECKING:
    from convert.rules.kinds import KindSpec

_TABLES = {
    "name",
    "summary",
    "sides",
    "include",
    "define",
    "layer",
    "path",
    "tensor",
    "skip",
    "compose",
    "serves",
    "formats",
    "prefix",
    "kind",
    "rename",
    "needs_like",
    "variable_names",
    "facts",
}
ANY_PREFIX = ("{_}",)  # `prefix = { side = "{_}" }`: one leading segment, whatever its name


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
    renames: list[Rename] = field(default_factory=list)
    needs_like: dict[str, str] = field(default_factory=dict)  # side → why its names need one
    facts: model_facts.Places = field(default_factory=dict)  # [facts]: model_facts.py
    # Sides whose tensors the patterns name by their TF variable names (see translate.py).
    variable_names: tuple[str, ...] = ()

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
        return self.formats.get(side) or (registry.formats_of(side) if side in FRAMEWORKS else ())

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

    fmts = registry.formats_of(framework) or (framework,)
    rules = RuleSet(
        f"{framework}-{framework}",
        f"{framework} layers into another {framework} file, aligned to a skeleton",
        ("source", "target"),
        formats={"source": fmts, "target": fmts},
        source="(built in)",
    )
    for kind, spec in specs()[framework].items():
        if spec.parts:
            continue  # held as its parts, which map themselves
        rules.layers.append(
            LayerRule(
                {"source": kind, "target": kind},
                [VarMap({"source": [v], "target": [v]}, Chain([])) for v in spec.vars],
            )
        )
    if framework == "keras":  # a Dense reads a flattened map the same way in any Keras
        copy = [VarMap({"source": [v], "target": [v]}, Chain([])) for v in ("kernel", "bias")]
        rules.layers += [
            LayerRule({"source": "dense", "target": "flatten_dense"}, copy),
            LayerRule({"source": "flatten_dense", "target": "dense"}, copy),
        ]
    return rules


def builtin_names() -> list[str]:
    root = mappings()
    return sorted(
        p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml") and p.name != "kinds.toml"
    )


def load(
    name_or_file: str | FilePath,
    _seen: tuple[str, ...] = (),
    _define: dict[str, str] | None = None,
) -> RuleSet:
    """A built-in rule set by name, or a rule file by path (`_define`: the `{{slot}}`
    values an including file gives a template)."""
    framework, dash, again = str(name_or_file).partition("-")
    if dash and framework == again and framework in FRAMEWORKS:
        return identity(framework)  # `keras-keras`: one framework on both sides
    text, where, base = _read(name_or_file)
    if where in _seen:
        raise RuleError(f"rule files include each other: {' -> '.join((*_seen, where))}")
    text = _filled(text, _define or {}, where)
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
        raise RuleError(
            f"unknown rule set {text!r}; built in: {', '.join(builtin_names())} "
            "(or give a .toml file)"
        )
    return resource.read_text("utf8"), f"{text} (built in)", None


def _ruleset(
    table: dict[str, Any], where: str, base: FilePath | None, seen: tuple[str, ...]
) -> RuleSet:
    unknown = set(table) - _TABLES
    if unknown:
        raise RuleError(
            f"unknown table(s) {', '.join(sorted(unknown))}; a rule file holds "
            f"{', '.join(sorted(_TABLES))}",
            where,
        )
    composed = [load(_beside(n, base), seen) for n in strings(table, "compose", where)]
    sides = table.get("sides")
    if sides is None and composed:
        sides = _composed_sides(composed, where)
    if not (
        isinstance(sides, list)
        and len(sides) == 2
        and all(isinstance(s, str) for s in sides)
        and sides[0] != sides[1]
    ):
        raise RuleError('`sides` must name the two sides, e.g. sides = ["keras", "torch"]', where)
    rules = RuleSet(
        str(table.get("name", FilePath(where).stem)),
        str(table.get("summary", "")),
        (sides[0], sides[1]),
        source=where,
        compose=composed,
        serves=str(table.get("serves", "")),
    )
    formats = table.get("formats", {})
    if not isinstance(formats, dict) or not all(
        s in rules.sides and isinstance(v, list) for s, v in formats.items()
    ):
        raise RuleError(
            "`formats` gives each side's format names, e.g. "
            'formats = { hf = ["torch", "safetensors"] }',
            where,
        )
    rules.formats = {s: tuple(v) for s, v in formats.items()}
    prefix = table.get("prefix", {})
    if not isinstance(prefix, dict) or not all(
        s in rules.sides and isinstance(v, str) and v.strip("/") for s, v in prefix.items()
    ):
        raise RuleError(
            '`prefix` gives a side\'s optional leading path, e.g. prefix = { hf = "bert" }', where
        )
    rules.prefix = {s: tuple(v.strip("/").split("/")) for s, v in prefix.items()}
    needs_like = table.get("needs_like", {})
    if not isinstance(needs_like, dict) or not all(
        s in rules.sides and isinstance(v, str) for s, v in needs_like.items()
    ):
        raise RuleError(
            "`needs_like` gives, for a side written only with --like, what only a file of "
            'the model tells, e.g. needs_like = { tf = "TF variable names" }',
            where,
        )
    rules.needs_like = dict(needs_like)
    rules.facts = model_facts.parse(table.get("facts", {}), rules.sides, where)
    by_variable = strings(table, "variable_names", where)
    if not set(by_variable) <= set(rules.sides):
        raise RuleError('`variable_names` lists sides, e.g. variable_names = ["tf"]', where)
    rules.variable_names = tuple(by_variable)
    define = table.get("define", {})
    if not isinstance(define, dict) or not all(
        isinstance(v, str) and _SLOT_VALUE.fullmatch(v) for v in define.values()
    ):
        raise RuleError(
            "`define` gives the names an included template's {{slots}} stand for, e.g. "
            'define = { decoder = "llama_transformer_decoder" }',
            where,
        )
    for name in strings(table, "include", where):
        included = load(_beside(name, base), seen, define)
        if set(included.sides) != set(rules.sides):
            raise RuleError(
                f"includes {name!r}, whose sides {list(included.sides)} are not "
                f"{list(rules.sides)}",
                where,
            )
        rules.layers += included.layers
        rules.paths += included.paths
        rules.tensors += included.tensors
        rules.skip += included.skip
        for framework, kinds in included.kinds.items():
            rules.kinds.setdefault(framework, {}).update(kinds)
        rules.formats = {**included.formats, **rules.formats}
        rules.prefix = {**included.prefix, **rules.prefix}
        rules.renames += included.renames
        rules.needs_like = {**included.needs_like, **rules.needs_like}
        rules.facts = {**included.facts, **rules.facts}
        rules.variable_names = tuple({*included.variable_names, *rules.variable_names})
    for i, entry in enumerate(table.get("kind", [])):
        _kind(entry, rules, f"{where}: kind {i + 1}")
    for i, entry in enumerate(table.get("layer", [])):
        rules.layers.append(layer_rule(entry, rules.sides, f"{where}: layer rule {i + 1}"))
    for i, entry in enumerate(table.get("path", [])):
        rules.paths.append(path_rule(entry, rules.sides, f"{where}: path rule {i + 1}"))
    for i, entry in enumerate(table.get("tensor", [])):
        rules.tensors.append(tensor_rule(entry, rules.sides, f"{where}: tensor rule {i + 1}"))
    for i, entry in enumerate(table.get("rename", [])):
        rules.renames.append(rename(entry, rules.sides, f"{where}: rename {i + 1}"))
    rules.skip += [Pattern(p) for p in strings(table, "skip", where)]
    return rules


def _beside(name: str, base: FilePath | None) -> str | FilePath:
    """An included name: a file beside the including one (a built-in's: among the
    built-in files, `templates/...`), else a built-in rule set's name."""
    if not name.endswith(".toml"):
        return name
    if base is not None:
        return base / name
    return FilePath(str(mappings().joinpath(name)))


# A template (mappings/templates/) is a rule file whose patterns hold `{{slot}}`s, each
# filled, before the TOML is read, with the name the including file's `define` gives it:
# the decoder families share one template and differ only in KerasHub's layer names.
_SLOT = re.compile(r"\{\{(\w+)\}\}")
_SLOT_VALUE = re.compile(r"[\w./-]*")  # (put into TOML strings: no quote, no escape)


def _filled(text: str, define: dict[str, str], where: str) -> str:
    def fill(slot: re.Match[str]) -> str:
        value = define.get(slot.group(1))
        if value is None:
            raise RuleError(
                f"has the slot {slot.group(0)}, which no including file's `define` fills", where
            )
        return value

    return _SLOT.sub(fill, text)


def _composed_sides(composed: list[RuleSet], where: str) -> list[str]:
    if len(composed) != 2:
        raise RuleError("`compose` names two rule sets that share one side", where)
    a, b = composed
    common = set(a.sides) & set(b.sides)
    if len(common) != 1:
        raise RuleError(f"`compose`: {a.name} and {b.name} share no single side", where)
    (middle,) = common
    return [next(s for s in a.sides if s != middle), next(s for s in b.sides if s != middle)]


def _kind(entry: Any, rules: RuleSet, where: str) -> None:
    """A `[[kind]]` table: a layer kind the built-in ones lack, as in mappings/kinds.toml,
    with its `name`: per framework, `vars` (creation order; `?` optional, `a|b` other
    names), `ranks`, and the `classes` that are that kind."""
    from convert.rules.kinds import spec_of

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RuleError(
            f"{where}: a [[kind]] table has a `name` and a table per framework "
            f"({', '.join(FRAMEWORKS)})"
        )
    sides = {k: v for k, v in entry.items() if k != "name"}
    for framework, table in sides.items():
        if framework not in FRAMEWORKS or not isinstance(table, dict):
            raise RuleError(
                f"{where}: {framework!r} is not a framework ({', '.join(FRAMEWORKS)}) with a table"
            )
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
