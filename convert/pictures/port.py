"""A port through rules as Graphviz DOT, from its report: the source's layers on the left,
the target's on the right, each pairing edge labelled with the layer kind, how the pair was
made (by order, by a rule, by name) and the ops each variable goes through; what the
rules left unused (source) or could not fill (target) marked red.

A port by tensor rules (a model family: no layers) draws its tensors instead, with
repeated blocks folded: keys that differ only by numbers are one edge (`layers.{N}.q_proj
.weight ← layers/{N}/attention/wq ×24`), so a 32-layer model is a page, not a poster.
"""

from __future__ import annotations

import re
from collections import Counter

from convert.pictures.dot import quote

# a number that is a whole name part (`layers.3.`, `layer_3/`), not inside a name (`w1`)
_NUMBER = re.compile(r"(?<![^./_-])\d+(?![^./])")
_RED, _GREY = "#c62828", "#616161"
LEGEND = (
    "left: the source's layers · right: the target's · edges: kind, how paired, and each "
    "variable's ops · red: left unused, or not filled"
)


def port_dot(rules: dict, source: str, target: str) -> str:
    """`rules`: a conversion report's `rules` part (`Report.rules`)."""
    lines: list[str] = []
    left: list[str] = []
    right: list[str] = []
    plan = rules.get("plan", [])
    if rules.get("layers"):
        for k, pair in enumerate(rules["layers"]):
            left.append(f's{k} [shape=box, label="{quote(pair["source"])}"];')
            right.append(f't{k} [shape=box, label="{quote(pair["target"])}"];')
            ops = [
                f"{_tail(row['key'])} ← {_tail(row['sources'][0]) if row.get('sources') else '∅'}"
                f": {row.get('ops', 'copy')}"
                for row in plan
                if _under(row["key"], pair["target"])
            ]
            label = "\\n".join([f"{pair.get('kind', '')} (by {pair.get('paired_by', '?')})"] + ops)
            lines.append(f's{k} -> t{k} [label="{quote(label, keep_breaks=True)}"];')
    else:
        groups = Counter(
            (
                _folded(" + ".join(row.get("sources", [])) or "∅"),
                _folded(row["key"]),
                row.get("ops", "copy"),
            )
            for row in plan
        )
        for k, ((sources, key, ops), count) in enumerate(groups.items()):
            times = f" ×{count}" if count > 1 else ""
            left.append(f's{k} [shape=box, label="{quote(sources)}"];')
            right.append(f't{k} [shape=box, label="{quote(key)}{times}"];')
            lines.append(f's{k} -> t{k} [label="{quote(ops)}"];')
    unused = _folded_counts(rules.get("unused", []))
    missing = _folded_counts(rules.get("missing", []))
    for k, (name, count) in enumerate(unused.items()):
        times = f" ×{count}" if count > 1 else ""
        left.append(
            f'u{k} [shape=box, style=dashed, color="{_RED}", fontcolor="{_RED}", '
            f'label="{quote(name)}{times}\\nunused", ckpt_unused="{count}"];'
        )
    for k, (name, count) in enumerate(missing.items()):
        times = f" ×{count}" if count > 1 else ""
        right.append(
            f'm{k} [shape=box, style=dashed, color="{_RED}", fontcolor="{_RED}", '
            f'label="{quote(name)}{times}\\nnot filled", ckpt_missing="{count}"];'
        )
    return (
        "\n".join(
            [
                "digraph port {",
                '  graph [rankdir=LR, fontname="Helvetica", fontsize=10, labelloc=b, '
                f'label="{quote(LEGEND)}"];',
                '  node [fontname="Helvetica", fontsize=10];',
                f'  edge [fontname="Helvetica", fontsize=9, fontcolor="{_GREY}"];',
                f'  subgraph cluster_source {{ label="{quote(source)}"; style=rounded;',
                *(f"    {line}" for line in left),
                "  }",
                f'  subgraph cluster_target {{ label="{quote(target)}"; style=rounded;',
                *(f"    {line}" for line in right),
                "  }",
                *(f"  {line}" for line in lines),
                "}",
            ]
        )
        + "\n"
    )


def _under(key: str, layer: str) -> bool:
    """Whether target key `key` (`fc1.weight`, `layers/dense/vars/0`) is of `layer`."""
    spelled = re.sub(r"[./]", "/", key)
    return spelled.startswith(re.sub(r"[./]", "/", layer) + "/")


def _tail(key: str) -> str:
    """A variable's own name: `fc1.weight` → `weight`; TF keys lose `/.ATTRIBUTES/...`."""
    key = key.split("/.ATTRIBUTES/")[0]
    return re.split(r"[./]", key)[-1]


def _sources(keys: list[str]) -> str:
    """A rule's sources, folded, each once (a rank list `{N}.wq` is one name)."""
    return " + ".join(dict.fromkeys(_folded(key) for key in keys)) or "∅"


def _folded(key: str) -> str:
    return _NUMBER.sub("{N}", key.split("/.ATTRIBUTES/")[0])


def _folded_counts(keys: list[str]) -> dict[str, int]:
    return dict(Counter(_folded(key) for key in keys))
