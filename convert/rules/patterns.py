"""Path patterns: graph paths matched segment by segment, with named placeholders.

A pattern is written with `/` between segments whatever the format's own separator (graph
paths are tuples, so `encoder.layer.0.weight` and `encoder/layer/0/weight` are the same
path). A segment is literal text, or holds placeholders:
- `{name}` alone in its segment matches the whole segment; beside other text it matches
  one name part, never across `-` or `_` (`conv{n}` matches `conv4`, not `conv4_1` or
  `conv1-BN`);
- `{name*}` alone in its segment matches zero or more whole segments; beside other text,
  any run of characters (`{table*}_embeddings` matches `token_type_embeddings`);
- `{name:counter}` at the end of a segment is a Keras 3 per-class counter: nothing for the
  first object of a class (`dense`), `_1`, `_2`, ... after it; its value is 0, 1, 2, ...;
- `{i+1}`, `{i-1}`, `{2*i}`, `{2*i+1}`: a number that is `i` through that arithmetic (Keras
  `p_re_lu{i:counter}` ↔ torch `prelu{i+1}`; Keras `conv2d{i:counter}` ↔ a torch
  `Sequential` index `{2*i}`); it runs both ways, and a number the arithmetic cannot give
  back as a whole `i` ≥ 0 does not match; `{i+0}` is a number as it is (digits only);
- `{_}` matches one segment (or one name part) and keeps no value: a level that one side
  has and the other does not (`conv1/{_}/kernel`). Going the other way it is filled from
  the skeleton (`--like`), the only place that knows it;
- `{name:each}` is a number (digits) on one side only, whose pattern then names a list:
  every path it matches with the rule's other values, in the number's order from 0 (a
  mixture's experts, `experts/{e:each}/w1/weight`), where the other side has one tensor
  (their stack). `each` says which placeholder it is.
A pattern matches a whole path, never a part of one, and each placeholder keeps one value
wherever it appears. Filling a pattern with the values found puts a path back together,
which is how a rule renames in either direction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from convert.core.errors import ConvertError

Path = tuple[str, ...]
_PLACEHOLDER = re.compile(
    r"\{(?:(?P<mul>\d+)\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sign>[+-])(?P<add>\d+))?"
    r"(?P<tail>\*|:counter|:each)?\}"
)
SKIP = "_"  # the anonymous placeholder


class PatternError(ConvertError):
    """A pattern in a rule file is malformed."""


@dataclass(frozen=True)
class _Slot:
    """One placeholder inside a segment: its regex group and how its number is written."""

    group: str
    name: str
    mul: int = 1
    add: int = 0
    counter: bool = False
    number: bool = False  # written with arithmetic, if only `+0`, or `:each`: digits alone
    each: bool = False

    @property
    def arithmetic(self) -> bool:
        return self.number or self.mul != 1 or self.add != 0

    def value(self, text: str) -> str | None:
        """The placeholder's value from the text it matched (None: arithmetic that does not
        give a whole number ≥ 0)."""
        if not self.arithmetic:
            return text
        i, rest = divmod(int(text) - self.add, self.mul)
        return str(i) if rest == 0 and i >= 0 else None

    def text(self, value: str) -> str:
        if self.counter:
            return "" if value == "0" else f"_{value}"
        if not self.arithmetic:
            return value
        if not value.isdigit():
            raise PatternError(
                f"placeholder {{{self.name}}} has the value {value!r}, which is "
                "no number for its arithmetic"
            )
        return str(int(value) * self.mul + self.add)


@dataclass(frozen=True)
class _Segment:
    text: str
    many: str | None  # the placeholder's name when the segment is `{name*}`
    regex: re.Pattern[str] | None  # for a segment with `{name}` inside
    names: tuple[str, ...]
    slots: tuple[_Slot, ...] = ()


def _segment(text: str, pattern: str) -> _Segment:
    found = list(_PLACEHOLDER.finditer(text))
    if not found:
        if "{" in text or "}" in text:
            raise PatternError(f"pattern {pattern!r}: stray brace in segment {text!r}")
        return _Segment(text, None, None, ())
    alone = len(found) == 1 and found[0].group(0) == text
    if alone and found[0]["tail"] == "*" and not (found[0]["mul"] or found[0]["sign"]):
        return _Segment(text, found[0]["name"], None, (found[0]["name"],))
    parts, last, slots = [], 0, []
    for k, m in enumerate(found):
        if "{" in text[last : m.start()] or "}" in text[last : m.start()]:
            raise PatternError(f"pattern {pattern!r}: stray brace in segment {text!r}")
        parts.append(re.escape(text[last : m.start()]))
        name, tail = m["name"], m["tail"]
        mul = int(m["mul"] or 1)
        add = int(m["add"] or 0) * (-1 if m["sign"] == "-" else 1)
        each = tail == ":each"
        number = bool(m["mul"] or m["sign"]) or each
        slot = _Slot(f"g{k}", name, mul, add, tail == ":counter", number, each)
        if (mul != 1 or add) and tail:
            raise PatternError(f"pattern {pattern!r}: {m.group(0)} mixes arithmetic with {tail!r}")
        if tail == ":counter":
            if m.end() != len(text):
                raise PatternError(f"pattern {pattern!r}: a {{name:counter}} ends its segment")
            parts.append(f"(?:_(?P<{slot.group}>[1-9][0-9]*))?")
        elif slot.arithmetic:
            parts.append(f"(?P<{slot.group}>[0-9]+)")
        elif alone or tail == "*":
            parts.append(f"(?P<{slot.group}>.+?)")
        else:
            parts.append(f"(?P<{slot.group}>[^_-]+?)")
        slots.append(slot)
        last = m.end()
    if "{" in text[last:] or "}" in text[last:]:
        raise PatternError(f"pattern {pattern!r}: stray brace in segment {text!r}")
    parts.append(re.escape(text[last:]))
    names = [s.name for s in slots if s.name != SKIP]
    if len(set(names)) != len(names):
        raise PatternError(f"pattern {pattern!r}: a placeholder appears twice in one segment")
    return _Segment(text, None, re.compile("".join(parts) + r"\Z"), tuple(names), tuple(slots))


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
        eaches = {slot.name for seg in self.segments for slot in seg.slots if slot.each}
        if len(eaches) > 1:
            raise PatternError(f"pattern {text!r} has more than one {{name:each}}")
        self.each = next(iter(eaches), None)  # the placeholder that makes it name a list

    def each_path(self, values: dict[str, str | Path], k: int) -> Path:
        """The path of the list's item `k` (a pattern with `{name:each}`)."""
        assert self.each is not None
        return self.fill({**values, self.each: str(k)})

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
            elif seg.slots:
                if any(slot.name == SKIP for slot in seg.slots):
                    raise PatternError(
                        f"pattern {self.text!r}: {{_}} names a level only the "
                        "skeleton knows; give --like TARGET"
                    )
                out.append(_put(seg, [slot.text(_one(values[slot.name])) for slot in seg.slots]))
            else:
                out.append(seg.text)
        return tuple(out)

    def resolve(self, values: dict[str, str | Path], known: Iterable[Path]) -> Path | None:
        """The path this pattern names with `values`; where a `{_}` leaves a level open, the
        one path among `known` (a skeleton's) that matches with those values (None: no
        such path, or more than one)."""
        if not self.skips:
            return self.fill(values)
        hits = [
            p
            for p in known
            if (found := self.match(p)) is not None
            and all(found.get(k) == v for k, v in values.items() if k in self.names)
        ]
        return hits[0] if len(hits) == 1 else None

    @property
    def skips(self) -> bool:
        """Whether a `{_}` makes `fill` impossible (only a skeleton's paths can tell it)."""
        return any(slot.name == SKIP for seg in self.segments for slot in seg.slots)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


def _put(seg: _Segment, texts: list[str]) -> str:
    """The segment's text with each placeholder replaced by its text, in order."""
    found = iter(texts)
    return _PLACEHOLDER.sub(lambda m: next(found), seg.text)


def _one(value: str | Path) -> str:
    return "/".join(value) if isinstance(value, tuple) else value


def _bind(
    values: dict[str, str | Path], name: str, value: str | Path
) -> dict[str, str | Path] | None:
    if name in values:
        return values if values[name] == value else None
    return {**values, name: value}


def _match(
    segments: tuple[_Segment, ...], i: int, path: Path, j: int, values: dict[str, str | Path]
) -> dict[str, str | Path] | None:
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
    for slot in seg.slots:
        if slot.name == SKIP:
            continue
        value = slot.value(m.group(slot.group) or "0")  # (an absent counter is 0)
        bound = _bind(values, slot.name, value) if value is not None else None
        if bound is None:
            return None
        values = bound
    return _match(segments, i + 1, path, j + 1, values)
