"""The alignment a conversion found, written back as a rule file a user can edit: the
built-in rules it used, and one `[[path]]` rule per layer pair. Converting with that file
alone (`--rules FILE`, no `--like`) places every layer where the skeleton had it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.core.errors import RuleError
from convert.rules.kinds import Layer, with_variants
from convert.rules.language import RuleSet

if TYPE_CHECKING:
    from convert.rules.align import AlignmentError


def _string(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string for these characters


def rule_file(
    base: RuleSet,
    pairs: list[dict[str, Any]],
    source: str,
    like: str,
    sides: tuple[str, str] | None = None,
) -> str:
    src, dst = sides or base.sides
    lines = [
        f"# The alignment of {source} to {like}, as `ckpt convert --emit-rules` found it:",
        "# one [[path]] rule per layer. Edit freely; `--rules THIS_FILE` alone converts.",
        f"name = {_string(base.name + '-aligned')}",
    ]
    reference = base.name if base.source.endswith("(built in)") else os.path.abspath(base.source)
    if base.compose:
        lines.append(
            "compose = ["
            + ", ".join(
                _string(c.name if c.source.endswith("(built in)") else os.path.abspath(c.source))
                for c in base.compose
            )
            + "]"
        )
    else:
        lines.append(f"sides = [{_string(src)}, {_string(dst)}]")
        lines.append(f"include = [{_string(reference)}]")
    for pair in pairs:
        for side in (src, dst):
            if "{" in pair[side] or "}" in pair[side]:
                raise RuleError(
                    f"layer path {pair[side]!r} holds a brace, which a rule file cannot spell"
                )
        lines += [
            "",
            "[[path]]",
            f"{src} = {_string(pair[src] or '/')}",
            f"{dst} = {_string(pair[dst] or '/')}",
            f"kind = {_string(pair['kind'])}",
        ]
        lines += [
            f"{name} = {_value(value)}"
            for name, value in pair.items()
            if name not in (src, dst, "kind")
        ]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {list(v)}" for k, v in value.items()) + " }"
    return str(list(value))


def template(error: AlignmentError, source: str, like: str) -> str:
    """The rule file for an alignment that failed: the pairs found, as rules, and each
    layer left open as a commented [[path]] rule to fill in."""
    src, dst = error.sides
    text = rule_file(error.rules, error.emitted, source, like, sides=error.sides)
    found = error.alignment
    count = len(found.open_pairs) + len(found.open_source)
    lines = [
        "",
        f"# Not aligned: {count} layer(s), below. "
        + (_comment(error.reason) if not found.open_pairs else ""),
        "# Uncomment and complete a [[path]] rule for each layer below; then convert with",
        "# --rules THIS_FILE (with --like, which still checks every shape).",
    ]
    for s, t, why in found.open_pairs:
        lines += [
            "",
            f"# {_comment(why)}",
            "# [[path]]",
            f"# {src} = {_string(_path(s))}",
            f"# {dst} = {_string(_path(t))}",
            f"# kind = {_string(sorted(t.kinds)[0])}   # may be: "
            + ", ".join(sorted(with_variants(s.kinds | t.kinds))),
        ]
    if found.open_source or found.open_target:
        lines += [
            "",
            f"# {dst} layers left open: "
            + ("; ".join(_layer(t) for t in found.open_target) or "none"),
        ]
        for s in found.open_source:
            lines += [
                "",
                "# [[path]]",
                f"# {src} = {_string(_path(s))}   # {_layer(s)}",
                f'# {dst} = "?"',
                f"# kind = {_string(sorted(s.kinds)[0])}",
            ]
    return text + "\n".join(lines) + "\n"


def _layer(layer: Layer) -> str:
    shapes = ", ".join(f"{n} {list(t.shape)}" for n, t in layer.vars.items())
    return f"{layer.name} ({'/'.join(sorted(layer.kinds))}: {shapes})"


def _path(layer: Layer) -> str:
    return "/".join(layer.path) or "/"


def _comment(text: str) -> str:
    return " ".join(text.split())


def write(path: str | os.PathLike[str], text: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf8")
    os.replace(tmp, target)
