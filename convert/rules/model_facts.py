"""Model facts: numbers a side's own files tell beside its weights, where no tensor's shape
tells them. Meta's query weight holds each head's rotary pairs interleaved and Hugging
Face's holds them as two halves; reordering them needs the head count, which only
`params.json` (`n_heads`) or `config.json` (`num_attention_heads`) says. A rule file
names where each side keeps a fact:

    [facts]
    heads = { meta = "params.json:n_heads", hf = "config.json:num_attention_heads" }
    kv_heads = { meta = ["params.json:n_kv_heads", "params.json:n_heads"], hf = [...] }

A place is `file:key` (`/` in the key reaches into nested objects:
`config.json:text_config/num_attention_heads`); of a list, the first place that holds
the key wins (Llama 2's `params.json` leaves `n_kv_heads` out when it equals `n_heads`).
The file is looked for beside the source and beside the `--like` file (in the folder
itself for a folder); where both tell a fact, they must agree. Ops name a fact in a size
(`shape = ["@heads", -1, 2]`), tensor conditions in a shape (`shape = [-1, "@dim"]`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.core.errors import FormatError, RuleError
from convert.io.reads import read_json

if TYPE_CHECKING:
    from convert.core.graph import Graph
    from convert.rules.entries import TensorRule

# side files are a few KiB: a bigger one is not the file the rules mean
_MAX_BYTES = 1 << 20
_EXAMPLE = 'heads = { meta = "params.json:n_heads", hf = "config.json:num_attention_heads" }'

Places = dict[str, dict[str, tuple[str, ...]]]  # fact → side → places, "file:key"


def parse(table: Any, sides: tuple[str, str], where: str) -> Places:
    """The `[facts]` table of a rule file."""
    if not isinstance(table, dict):
        raise RuleError(f"`facts` names where each side keeps a fact, e.g. {_EXAMPLE}", where)
    places: Places = {}
    for name, per_side in table.items():
        if not isinstance(per_side, dict) or not per_side:
            raise RuleError(f"fact {name!r}: give its place on a side, e.g. {_EXAMPLE}", where)
        places[name] = {}
        for side, value in per_side.items():
            listed = [value] if isinstance(value, str) else value
            if (
                side not in sides
                or not isinstance(listed, list)
                or not listed
                or not all(isinstance(p, str) and _split(p) for p in listed)
            ):
                raise RuleError(
                    f"fact {name!r}: a side ({', '.join(sides)}) gives a place `file:key` "
                    f"or a list of them, not {side} = {value!r}",
                    where,
                )
            places[name][side] = tuple(listed)
    return places


def _split(place: str) -> tuple[str, list[str]] | None:
    file, _, key = place.partition(":")
    if not file or not key or "/" in file or file in (".", ".."):
        return None
    return file, key.split("/")


@dataclass
class Facts:
    values: dict[str, int] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)  # fact → where it was read
    places: Places = field(default_factory=dict)

    def missing(self, name: str) -> str:
        """Why a fact a rule needs is not known: where it was looked for."""
        where = "; ".join(
            f"{side}: {' or '.join(p.replace(':', ' ', 1) for p in places)}"
            for side, places in self.places.get(name, {}).items()
        )
        if not where:
            return f"the rules use the fact {name!r} but their `facts` do not say where it is"
        return (
            f"needs the model's {name}, which no file beside the source or the --like file "
            f"tells ({where})"
        )


def read(places: Places, files: list[tuple[str, Graph | None]]) -> Facts:
    """The facts the files beside each (side, graph) tell."""
    facts = Facts(places=places)
    for side, graph in files:
        if graph is None or graph.source is None:
            continue
        folder = Path(graph.source)
        folder = folder if folder.is_dir() else folder.parent
        for name, per_side in places.items():
            for place in per_side.get(side, ()):
                value = _value(folder, place)
                if value is None:
                    continue
                seen = facts.values.get(name)
                if seen is not None and seen != value:
                    raise RuleError(
                        f"the files disagree on the model's {name}: {facts.found[name]} says "
                        f"{seen}, {folder / place.split(':')[0]} says {value}"
                    )
                facts.values[name] = value
                facts.found[name] = os.fspath(folder / place.split(":")[0])
                break
    return facts


def _value(folder: Path, place: str) -> int | None:
    split = _split(place)
    assert split is not None  # (parse checked it)
    file, keys = split
    data = read_json(folder / file, _MAX_BYTES, "a model's settings")
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    if data is None or (isinstance(data, int) and not isinstance(data, bool) and data <= 0):
        return None  # (unset: Llama 2's `"vocab_size": -1` leaves it to the tokenizer)
    if isinstance(data, bool) or not isinstance(data, int):
        what = f"{'/'.join(keys)} is {data!r}, not a positive whole number"
        raise FormatError(what, folder / file)
    return data


def bound(rules: list[TensorRule], facts: Facts) -> list[TensorRule]:
    """The tensor rules with the facts they name put in. A rule that names one no file
    told keeps why (`unknown`): chosen for a tensor, it stops the conversion with that."""
    out = []
    for rule in rules:
        shape = rule.when.get("shape")
        named = {d[1:] for d in shape or () if isinstance(d, str) and d.startswith("@")}
        needs = rule.chain.needs | named
        unknown = sorted(needs - facts.values.keys())
        when = dict(rule.when)
        if shape is not None:  # (an unknown size matches anything: the rule then stops)
            when["shape"] = [
                facts.values.get(d[1:], -1) if isinstance(d, str) else d for d in shape
            ]
        out.append(
            replace(
                rule,
                chain=rule.chain.bind(facts.values),
                when=when,
                unknown=facts.missing(unknown[0]) if unknown else "",
            )
        )
    return out
