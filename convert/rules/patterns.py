"""Path patterns: graph paths matched segment by segment, with named placeholders.

A pattern is written with `/` between segments whatever the format's own separator (graph
paths are tuples, so `encoder.layer.0.weight` and `encoder/layer/0/weight` are the same
path). A segment is literal text, or holds placeholders:
- `{name}` matches one segment, or part of one (`layer_{i}` matches `layer_0`);
- `{name*}` alone in its segment matches zero or more whole segments;
- `{name:counter}` at the end of a segment is a Keras 3 per-class counter: nothing for the
  first object of a class (`dense`), `_1`, `_2`, ... after it; its value is 0, 1, 2, ...
A pattern matches a whole path, never a part of one, and each placeholder keeps one value
wherever it appears. Filling a pattern with the values found puts a path back together,
which is how a rule renames in either direction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConvertError

Path = tuple[str, ...]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*|:counter)?\}")


class PatternError(ConvertError):
    """A pattern in a rule file is malformed."""


@dataclass(frozen=True)
class _Segment:
    text: str
    many: str | None  # the placeholder's name when the segment is `{name*}`
    regex: re.Pattern | None  # for a segment with `{name}` inside
    names: tuple[str, ...]


def _segment(text: str, pattern: str) -> _Segment:
    found = list(_PLACEHOLDER.finditer(text))
    if not found:
        if "{" in text or "}" in text:
            raise PatternError(f"pattern {pattern!r}: stray brace in segment {text!r}")
        return _Segment(text, None, None, ())
    if any(m.group(2) == "*" for m in found):
        if len(found) > 1 or found[0].group(0) != text:
            raise PatternError(f"pattern {pattern!r}: a {{name*}} placeholder must be a whole "
                               "segment")
        return _Segment(text, found[0].group(1), None, (found[0].group(1),))
    parts, last, names = [], 0, []
    for m in found:
        parts.append(re.escape(text[last:m.start()]))
        if m.group(2) == ":counter":
            if m.end() != len(text):
                raise PatternError(f"pattern {pattern!r}: a {{name:counter}} ends its segment")
            parts.append(f"(?:_(?P<{m.group(1)}>[1-9][0-9]*))?")
        else:
            parts.append(f"(?P<{m.group(1)}>.+?)")
        names.append(m.group(1))
        last = m.end()
    parts.append(re.escape(text[last:]))
    if len(set(names)) != len(names):
        raise PatternError(f"pattern {pattern!r}: a placeholder appears twice in one segment")
    return _Segment(text, None, re.compile("".join(parts) + r"\Z"), tuple(names))


class Pattern:
    """A compiled path pattern (see the module docstring)."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise PatternError(f"pattern {text!r} is not a string")
        self.text = text
        parts = text.strip("/").split("/") if text.strip("/") else []  # "/" is the root
        self.segments = tuple(_segment(s, text) for s in parts)
        if any(s == "" for s in parts):
            raise PatternError(f"pattern {text!r} has an empty segment")
        self.names = frozenset(n for s in self.segments for n in s.names)

    def match(self, path: Path) -> dict[str, str | Path] | None:
        """The placeholders' values if the whole `path` matches, else None."""
        return _match(self.segments, 0, path, 0, {})

    def fill(self, values: dict[str, str | Path]) -> Path:
        """The path this pattern names with `values` put in."""
        out: list[str] = []
        for seg in self.segments:
            if seg.many is not None:
                value = values[seg.many]
                out.extend(value if isinstance(value, tuple) else (value,))
            elif seg.names:
                out.append(_PLACEHOLDER.sub(lambda m: _filled(m, values), seg.text))
            else:
                out.append(seg.text)
        return tuple(out)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


def _filled(m: re.Match, values: dict) -> str:
    value = _one(values[m.group(1)])
    if m.group(2) == ":counter":
        return "" if value == "0" else f"_{value}"
    return value


def _one(value: str | Path) -> str:
    return "/".join(value) if isinstance(value, tuple) else value


def _bind(values: dict, name: str, value: str | Path) -> dict | None:
    if name in values:
        return values if values[name] == value else None
    return {**values, name: value}


def _match(segments: tuple[_Segment, ...], i: int, path: Path, j: int,
           values: dict) -> dict | None:
    if i == len(segments):
        return values if j == len(path) else None
    seg = segments[i]
    if seg.many is not None:
        # Shortest first: a fixed tail after `{x*}` decides where it stops.
        for end in range(j, len(path) + 1):
            bound = _bind(values, seg.many, tuple(path[j:end]))
            if bound is not None:
                found = _match(segments, i + 1, path, end, bound)
                if found is not None:
                    return found
        return None
    if j == len(path):
        return None
    if seg.regex is None:
        return _match(segments, i + 1, path, j + 1, values) if path[j] == seg.text else None
    m = seg.regex.match(path[j])
    if m is None:
        return None
    for name, value in m.groupdict(default="0").items():  # (an absent counter is 0)
        values = _bind(values, name, value)
        if values is None:
            return None
    return _match(segments, i + 1, path, j + 1, values)
