"""Placing the source's layers in the target: paired with a skeleton's layers (`--like`,
`align.py`), or where `[[path]]` rules say (no skeleton); each layer's variables derived
through the route its pair takes.

A Dense that reads a flattened feature map is where a port goes silently wrong: its rows
are in the order the Flatten read the map, which the weights do not record. The plan
reorders them only where a config shows the Flatten reading a convolution's or pooling's
map directly (`keras_config.py`), says so in the report, and refuses where a layer in
between leaves the order open, unless a `[[path]]` rule says which it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from convert.core.errors import RuleError
from convert.core.graph import GraphPath
from convert.core.tensor import Tensor
from convert.rules import kinds as kinds_module
from convert.rules.align import AlignmentError, Fits, Pair, align, by_rules, choose
from convert.rules.kinds import Layer, keras_index, with_variants
from convert.rules.language import RuleSet
from convert.rules.translate import Route, Step, routes, run_layer

_TF_KERAS_LAYER = re.compile(r"layer(_with_weights)?-\d+")
_CONVOLUTIONS = {
    "conv1d",
    "conv2d",
    "conv3d",
    "conv1d_transpose",
    "conv2d_transpose",
    "conv3d_transpose",
    "depthwise_conv2d",
}


@dataclass
class Placed:
    produced: dict[GraphPath, Tensor] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)
    layers: list[dict[str, str]] = field(default_factory=list)
    emitted: list[dict[str, Any]] = field(default_factory=list)
    reordered: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    objects: bool = False  # Keras layers placed as tf_keras objects (a TF object checkpoint)


def framework(side: str, fmt: str | None) -> str:
    if side in kinds_module.FRAMEWORKS:
        return side
    return kinds_module.framework_of_format(fmt) or side


def layer_routes(layer: Layer, chain: list[Step]) -> list[Route]:
    return routes(with_variants(layer.kinds), chain)


def with_skeleton(
    layers: list[Layer],
    targets: list[Layer],
    where: dict[int, GraphPath],
    chain: list[Step],
    rules: RuleSet,
    configured: bool,
) -> Placed:
    """Each source layer paired with a skeleton's layer: by `[[path]]` rules first, the rest
    by kind and order, shapes having the last word."""
    placed = Placed()
    paths = [layer_routes(layer, chain) for layer in layers]
    src, dst = chain[0].src, chain[-1].dst
    ruled = by_rules(layers, paths, targets, rules.paths, src, dst, chain)
    taken_s = {id(p.source) for p in ruled}
    taken_t = {id(p.target) for p in ruled}
    rest = [i for i, layer in enumerate(layers) if id(layer) not in taken_s]
    result = align(
        [layers[i] for i in rest],
        [paths[i] for i in rest],
        [t for t in targets if id(t) not in taken_t],
        chain,
        _fits(chain),
    )
    placed.warnings += result.notes
    place = {id(layer): i for i, layer in enumerate(targets)}
    pairs = sorted(ruled + result.pairs, key=lambda pair: place[id(pair.target)])
    position = {id(layer): i for i, layer in enumerate(layers)}
    good = []
    for pair in pairs:
        try:
            _doubt(pair, paths[position[id(pair.source)]], chain)
            made, unused = run_layer(
                pair.source.vars,
                pair.route,
                chain,
                pair.target.vars,
                f"{pair.source.name} -> {pair.target.name}",
                pair.facts,
            )
        except RuleError as exc:
            result.problems.append(str(exc))
            result.open_pairs.append((pair.source, pair.target, str(exc)))
            continue
        good.append(pair)
        for var, tensor in made.items():
            placed.produced[where[id(pair.target.vars[var])]] = tensor
        placed.used.update(id(t) for n, t in pair.source.vars.items() if n not in unused)
    convolutions = any(p.kind in _CONVOLUTIONS for p in good)
    for pair in good:
        placed.layers.append(
            {
                "source": pair.source.name,
                "target": pair.target.name,
                "kind": pair.kind,
                "paired_by": pair.how,
            }
        )
        _say_reorder(pair, chain, placed)
        if not configured and convolutions:
            _warn_flatten(pair, chain, placed)
        placed.emitted.append(
            {
                src: "/".join(pair.source.path),
                dst: "/".join(pair.target.path),
                "kind": pair.kind,
                **{k: list(v) for k, v in pair.facts.items() if k in pair.route.needs},
                **_shapes(pair, chain),
            }
        )
    if result.problems:
        raise AlignmentError(result.problems[0], result, placed.emitted, rules, (src, dst))
    return placed


def _shapes(pair: Pair, chain: list[Step]) -> dict[str, Any]:
    """The target's shapes, for an emitted rule, where the ops cannot tell them alone."""
    if all(step.forward for step in chain):
        return {}  # (ops run as written tell every output's shape)
    try:
        run_layer(pair.source.vars, pair.route, chain, None, "", pair.facts)
    except RuleError:
        return {"shapes": {v: list(t.shape) for v, t in pair.target.vars.items()}}
    return {}


def _fits(chain: list[Step]) -> Fits:
    def fits(source: Layer, route: Route, target: Layer, facts: dict[str, list[int]]) -> str | None:
        try:
            run_layer(source.vars, route, chain, target.vars, "", facts)
        except RuleError as exc:
            return str(exc)
        return None

    return fits


def _doubt(pair: Pair, routes_: list[Route], chain: list[Step]) -> None:
    """Refuse a pair whose rows may need a reorder that no file or rule settles."""
    doubt = pair.source.doubt or pair.target.doubt
    if doubt is None or pair.ruled:
        return
    if not any(r.reorders(chain) for r in routes_ if r.target in with_variants(pair.target.kinds)):
        return  # both sides flatten a map alike (channels-last Keras and Flax)
    layer = pair.source if pair.source.doubt else pair.target
    raise RuleError(
        f"dense layer {layer.name} reads a Flatten whose row order is open ({doubt}): the "
        f"port may flatten either way; say which in a [[path]] rule pairing {pair.source.name}"
        f' with {pair.target.name}: kind = "dense" keeps the rows as they are, kind = '
        '"flatten_dense" with flatten = [h, w, c] reorders them for a channels-first '
        "flatten (--emit-rules writes the file)"
    )


def _say_reorder(pair: Pair, chain: list[Step], placed: Placed) -> None:
    if not pair.route.reorders(chain):
        return
    shape = pair.facts.get("flatten")
    placed.reordered.append(
        {
            "source": pair.source.name,
            "target": pair.target.name,
            "map": list(shape or []),
            "by": "rule" if pair.ruled else "config",
        }
    )
    placed.warnings.append(
        f"reordered the rows of dense layer {pair.source.name} -> {pair.target.name}: it "
        f"reads a flattened {tuple(shape or ())} channels-last map, and the target flattens "
        "channels first"
        + (
            " (as its [[path]] rule says)"
            if pair.ruled
            else " (the config shows the Flatten reading a convolution's or pooling's map)"
        )
    )


def _warn_flatten(pair: Pair, chain: list[Step], placed: Placed) -> None:
    """A dense layer after convolutions may read a flattened feature map, whose order only a
    Keras config records: where neither file has one and the two sides flatten a map
    differently, say so rather than stay silent."""
    if pair.kind not in ("dense", "flatten_dense") or pair.ruled or pair.facts:
        return
    alternatives = routes(with_variants(pair.source.kinds), chain)
    if not any(r.reorders(chain) for r in alternatives):
        return
    placed.warnings.append(
        f"dense layer {pair.source.name} -> {pair.target.name} follows convolutions: if it "
        "reads a flattened feature map, its rows need the map's shape, which neither file "
        "records (a .keras archive's config does; or write `flatten = [h, w, c]` on its "
        "[[path]] rule, e.g. from --emit-rules)"
    )


def by_path_rules(
    layers: list[Layer], chain: list[Step], rules: RuleSet, target_format: str | None
) -> Placed:
    """Layers placed by `[[path]]` rules, without a skeleton (in the rules' order)."""
    placed = Placed()
    src = chain[0].src
    order = sorted(range(len(layers)), key=lambda i: _rule_index(rules, src, layers[i]))
    for layer in (layers[i] for i in order):
        made = _place(layer, chain, rules, target_format, placed)
        if made is None:
            continue
        placed.produced.update(made)
        placed.used.update(id(t) for t in layer.vars.values())
    return placed


def _rule_index(rules: RuleSet, side: str, layer: Layer) -> int:
    """Layers go out in the order of the [[path]] rules that place them (the skeleton's
    order, in a file --emit-rules wrote)."""
    return next(
        (i for i, r in enumerate(rules.paths) if r.patterns[side].match(layer.path) is not None),
        len(rules.paths),
    )


def _place(
    layer: Layer, chain: list[Step], rules: RuleSet, target_format: str | None, placed: Placed
) -> dict[GraphPath, Tensor] | None:
    src, dst = chain[0].src, chain[-1].dst
    for rule in rules.paths:
        values = rule.patterns[src].match(layer.path)
        if values is None:
            continue
        facts = {**layer.facts, **rule.facts}
        every = layer_routes(layer, chain)
        route = choose(layer, every, None, facts, chain, rule.kind)
        dtype = next(iter(layer.vars.values())).dtype
        want = {v: Tensor(dtype, shape, _no_data) for v, shape in rule.shapes.items()} or None
        made, _ = run_layer(layer.vars, route, chain, want, layer.name, facts)
        target = rule.patterns[dst].fill(values)
        fw = framework(dst, target_format)
        spec = kinds_module.specs()[fw][route.target]
        pair = Pair(
            layer,
            Layer(target, frozenset({route.target}), {}),
            route,
            facts,
            "rule",
            rule.kind is not None or bool(rule.facts),
        )
        _doubt(pair, every, chain)
        _say_reorder(pair, chain, placed)
        placed.layers.append(
            {
                "source": layer.name,
                "target": "/".join(target),
                "kind": route.target,
                "paired_by": "rule",
            }
        )
        if fw == "keras" and target_format == "tf" and _TF_KERAS_LAYER.fullmatch(target[0]):
            # A tf_keras model's layer in its TF object graph (what a rule file --emit-rules
            # wrote against one says): its variables go by name (`kernel`), as it restores
            # them. Keras 3 paths (`layers/dense`) stay, and are refused for TF (porting.py).
            fw = "keras2"
            placed.objects = True
        return {_target_path(fw, target, var, spec, set(made)): t for var, t in made.items()}
    if rules.layers and not rules.paths:
        raise RuleError(
            f"rules {rules.name} map layers by kind; the target's layer names come "
            "from --like TARGET (a fresh model's file, or a `ckpt ls --json` "
            "listing of one), or from [[path]] rules (--emit-rules writes them)"
        )
    return None


def _whole(layer: GraphPath) -> tuple[kinds_module.KindSpec, dict[str, str]] | None:
    """The Keras layer holding `layer` as a part, and the part's variable names in it."""
    if len(layer) < 2:
        return None
    hit = kinds_module.keras_group(layer[-2])
    spec = kinds_module.specs()["keras"].get(hit[1]) if hit else None
    if spec is None:
        return None
    return next(((spec, names) for name, _, names in spec.parts if name == layer[-1]), None)


def _no_data() -> NoReturn:
    raise RuleError("a rule's target shape holds no data")


def _target_path(
    fw: str, layer: GraphPath, var: str, spec: kinds_module.KindSpec, present: set[str]
) -> GraphPath:
    if fw == "keras":
        whole = _whole(layer)
        if whole is not None:  # a part of a layer Keras holds as one (SeparableConv2D)
            parent, names = whole
            return (*layer[:-1], *keras_index(parent, names.get(var, var)))
        return (*layer, *keras_index(spec, var, present))
    if fw == "flax":
        collection, _, rest = var.partition("/")
        if layer[:1] and layer[0] in kinds_module.FLAX_COLLECTIONS:
            layer = layer[1:]  # (a rule that spells the collection: the variable gives it)
        return (collection, *layer, *rest.split("/"))
    return (*layer, *var.split("/"))
