"""The alignment a conversion found, written back as a rule file a user can edit: the
built-in rules it used, and one `[[path]]` rule per layer pair. Converting with that file
alone (`--rules FILE`, no `--like`) places every layer where the skeleton had it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .language import RuleError, RuleSet


def _string(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string for these characters


def rule_file(base: RuleSet, pairs: list[dict[str, str]], source: str, like: str) -> str:
    src, dst = base.sides
    lines = [f"# The alignment of {source} to {like}, as `ckpt convert --emit-rules` found it:",
             "# one [[path]] rule per layer. Edit freely; `--rules THIS_FILE` alone converts.",
             f"name = {_string(base.name + '-aligned')}"]
    reference = base.name if base.source.endswith("(built in)") else os.path.abspath(base.source)
    if base.compose:
        lines.append("compose = [" + ", ".join(_string(c.name if c.source.endswith("(built in)")
                                                       else os.path.abspath(c.source))
                                               for c in base.compose) + "]")
    else:
        lines.append(f"sides = [{_string(src)}, {_string(dst)}]")
        lines.append(f"include = [{_string(reference)}]")
    for pair in pairs:
        for side in (src, dst):
            if "{" in pair[side] or "}" in pair[side]:
                raise RuleError(f"layer path {pair[side]!r} holds a brace, which a rule file "
                                "cannot spell")
        lines += ["", "[[path]]", f"{src} = {_string(pair[src] or '/')}",
                  f"{dst} = {_string(pair[dst] or '/')}", f"kind = {_string(pair['kind'])}"]
        lines += [f"{name} = {value}" for name, value in pair.items()
                  if name not in (src, dst, "kind")]
    return "\n".join(lines) + "\n"


def write(path: str | os.PathLike, text: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf8")
    os.replace(tmp, target)
