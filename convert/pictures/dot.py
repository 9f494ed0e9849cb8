"""A graph as Graphviz DOT: what a checkpoint holds, to look at rather than read.

- Objects are boxes (named by the edge that first reaches them, with the layer kind the
  rules' views find where the file tells one); variables are leaves with dtype and shape.
- Edges carry their names, numbered in the object's order; an edge that reaches an object
  or variable already drawn (TensorFlow's `layer-0` beside `layer_with_weights-0`, a tied
  embedding) is dashed.
- A slot is a side node tied to its variable by a dotted edge named after the slot; the
  optimizer and everything only it reaches sit apart, in a cluster of their own.
- Repeated blocks fold: sibling objects whose names differ only by a number
  (`layer_0` … `layer_23`, `layer/0` … `layer/23`) and that hold the same structure (the
  same paths, dtypes and shapes) are drawn once, named `layer_{0..23}`, with `×24`;
  `expand` draws them all. Every variable node says how many variables it stands for
  (`ckpt_count`), so the counts add up to the checkpoint's.

Graphviz reads DOT; no Python binding is needed (render.py runs `dot`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from convert.core.graph import Graph, Node
from convert.core.meta import KERAS_OPTIMIZER
from convert.core.tensor import Tensor

_NUMBER = re.compile(r"\d+")
_OPTIMIZER_EDGES = ("optimizer", "opt")  # (tf.train.Checkpoint and Keras' own names)
LEGEND = (
    "boxes: objects · ovals: variables (dtype[shape]) · dashed: another edge to the same "
    "item · dotted: a slot of its variable · ×N: N repeated blocks drawn once"
)


MIGRATION_LEGEND = (
    "green: kept · orange: moved (→ its new path) · grey: dropped (why) · blue: added · "
    "dashed edge: another edge to the same item · dotted: a slot of its variable"
)
_COLOURS = {"kept": "#2e7d32", "moved": "#ef6c00", "dropped": "#9e9e9e", "added": "#1565c0"}


@dataclass(frozen=True)
class Mark:
    """What a migration does to a variable: `kept`, `moved` (to `note`), `dropped` (for the
    reason in `note`)."""

    status: str
    note: str = ""


def migration_marks(migration: dict) -> tuple[dict[str, Mark], list[str]]:
    """Each variable's mark by its path, and the paths added, from a migration's report."""
    marks = {path: Mark("kept") for path in migration.get("kept", [])}
    marks |= {m["from"]: Mark("moved", "→ " + m["to"]) for m in migration.get("moved", [])}
    marks |= {d["path"]: Mark("dropped", d["why"]) for d in migration.get("dropped", [])}
    return marks, list(migration.get("added", []))


@dataclass
class _Drawing:
    expand: bool
    lines: list[str] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)  # id(item) → DOT node id
    apart: set[int] = field(default_factory=set)  # optimizer objects
    kinds: dict[tuple[str, ...], str] = field(default_factory=dict)
    shared: set[int] = field(default_factory=set)  # items more than one path reaches
    marks: dict[str, Mark] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)  # id(tensor) → its path (slots too)

    def node_id(self, item: object) -> str:
        return self.ids.setdefault(id(item), f"n{len(self.ids)}")

    def variable(self, tensor: Tensor, label: str, attr: str, value: str, count: int) -> str:
        """A variable's DOT attributes; a migration's mark colours it and says, inside,
        what becomes of it."""
        shape = "[" + ", ".join(map(str, tensor.shape)) + "]"
        text = f"{label}\\n{tensor.dtype_name}{shape}" + (f"\\n×{count}" if count > 1 else "")
        mark = self.marks.get(self.keys.get(id(tensor), ""))
        colour = ""
        if mark is not None:
            text += f"\\n{mark.status}" + (f": {mark.note}" if mark.note else "")
            paint = _COLOURS[mark.status]
            colour = f', color="{paint}", fontcolor="{paint}", penwidth=2'
        return (
            f'shape=ellipse, label="{quote(text, keep_breaks=True)}", '
            f'{attr}="{quote(value)}", ckpt_count="{count}"{colour}'
        )


def to_dot(
    graph: Graph,
    expand: bool = False,
    marks: dict[str, Mark] | None = None,
    added: list[str] | None = None,
) -> str:
    """`marks` and `added` (a migration's, `migration_marks`) colour the variables, and
    draw what it adds; with marks, nothing folds, since each block may fare differently."""
    drawing = _Drawing(expand or bool(marks))
    drawing.marks = marks or {}
    if marks:
        drawing.keys = {id(e.tensor): "/".join(e.path) for e in graph.entries()}
    drawing.apart = {id(slot.optimizer) for slot in graph.slots}
    drawing.apart |= {id(n) for _, n in graph.nodes() if n.meta.get(KERAS_OPTIMIZER)}
    drawing.apart |= {
        id(item) for name, item in graph.root.edges.items() if name in _OPTIMIZER_EDGES
    }
    drawing.kinds = _kinds(graph)
    reached: dict[int, int] = {}
    for _, item in graph.walk():
        reached[id(item)] = reached.get(id(item), 0) + 1
    drawing.shared = {i for i, n in reached.items() if n > 1}
    root = drawing.node_id(graph.root)
    drawing.lines.append(f'{root} [shape=box, style=bold, label="(root)\\n{graph.format}"];')
    main, apart = _draw(drawing, graph.root, (), root, 1)
    slots = []
    for slot in graph.slots:
        owner = drawing.ids.get(id(slot.variable))
        if owner is None:
            continue
        value = drawing.node_id(slot.value)
        attrs = drawing.variable(slot.value, f"slot {slot.name}", "ckpt_slot", slot.name, 1)
        slots.append(f"{value} [{attrs}];")
        slots.append(
            f'{owner} -> {value} [style=dotted, arrowhead=none, label="{quote(slot.name)}"];'
        )
    for k, path in enumerate(added or []):
        colour = _COLOURS["added"]
        slots.append(
            f'a{k} [shape=ellipse, style=dashed, color="{colour}", fontcolor="{colour}", '
            f'label="{quote(path)}\\nadded", ckpt_added="{quote(path)}"];'
        )
        slots.append(f'{root} -> a{k} [style=dashed, color="{colour}"];')
    legend = MIGRATION_LEGEND if marks else LEGEND
    head = [
        "digraph checkpoint {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=10, labelloc=b, '
        f'label="{quote(legend)}"];',
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    body = [f"  {line}" for line in drawing.lines + main + slots]
    if apart:
        body += ["  subgraph cluster_optimizer {", '    label="optimizer"; style=dashed;']
        body += [f"    {line}" for line in apart] + ["  }"]
    return "\n".join(head + body + ["}"]) + "\n"


def _draw(
    drawing: _Drawing, node: Node, where: tuple[str, ...], parent: str, count: int
) -> tuple[list[str], list[str]]:
    """The DOT lines of `node`'s edges and what they reach: (the model's, the optimizer's)."""
    main: list[str] = []
    apart: list[str] = []
    groups = [[n] for n in node.edges] if drawing.expand else _groups(node, drawing.shared)
    position = {name: i for i, name in enumerate(node.edges, 1)}
    for names in groups:
        name, item = names[0], node.edges[names[0]]
        order = position[name]
        label = _folded_name(names) if len(names) > 1 else name
        times = count * len(names)
        out = apart if id(node) in drawing.apart or id(item) in drawing.apart else main
        seen = id(item) in drawing.ids
        target = drawing.node_id(item)
        style = ", style=dashed" if seen else ""
        # (edges stay outside the optimizer's frame: an edge drawn inside it would pull
        # both ends in, the model's object that holds the optimizer too)
        main.append(f'{parent} -> {target} [label="{order}. {quote(label)}"{style}];')
        if seen:
            continue
        if isinstance(item, Tensor):
            path = "/".join((*where, name))
            attrs = drawing.variable(item, label, "ckpt_var", path, times)
            out.append(f"{target} [{attrs}];")
            continue
        kind = drawing.kinds.get((*where, name))
        text = f"{label}\\n({kind})" if kind else label
        if len(names) > 1:
            text += f"\\n×{len(names)}"
        out.append(f'{target} [shape=box, label="{quote(text, keep_breaks=True)}"];')
        inner_main, inner_apart = _draw(drawing, item, (*where, name), target, times)
        (apart if out is apart else main).extend(inner_main)
        apart.extend(inner_apart)
    return main, apart


def _groups(node: Node, shared: set[int]) -> list[list[str]]:
    """`node`'s edges, with sibling objects that differ only by a number and hold the
    same structure folded into one group (in the order of their first member). An object
    any other path reaches, or that holds such an item, is never folded: the other path
    must find it drawn."""
    groups: dict[tuple[str, tuple], list[str]] = {}
    for name, item in node.edges.items():
        key: tuple[str, tuple] = (name, ("single",))
        if isinstance(item, Node) and _NUMBER.search(name) and not _holds_shared(item, shared):
            structure = _structure(item)
            if _has_tensor(structure):  # (empty objects stay apart: nothing says they match)
                key = (_NUMBER.sub("{N}", name), structure)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _has_tensor(structure: tuple) -> bool:
    return any(len(p) == 3 or _has_tensor(p[1]) for p in structure if isinstance(p, tuple))


def _holds_shared(node: Node, shared: set[int], depth: int = 0) -> bool:
    if id(node) in shared or depth > 32:
        return True
    return any(
        id(item) in shared or (isinstance(item, Node) and _holds_shared(item, shared, depth + 1))
        for item in node.edges.values()
    )


def _structure(node: Node, depth: int = 0) -> tuple:
    if depth > 32:
        return ("deep",)
    parts: list[tuple] = []
    for name, item in node.edges.items():
        if isinstance(item, Tensor):
            parts.append((name, item.dtype_name, item.shape))
        else:
            parts.append((name, _structure(item, depth + 1)))
    return tuple(parts)


def _folded_name(names: list[str]) -> str:
    """`layer_{0..23}`, or `layer-{0,3,4}` where the numbers have gaps."""
    numbers = sorted(int(m.group()) for m in (_NUMBER.search(n) for n in names) if m)
    first = _NUMBER.search(names[0])
    assert first is not None
    if numbers == list(range(min(numbers), max(numbers) + 1)):
        span = f"{{{min(numbers)}..{max(numbers)}}}"
    else:
        span = "{" + ",".join(map(str, numbers)) + "}"
    return names[0][: first.start()] + span + names[0][first.end() :]


def _kinds(graph: Graph) -> dict[tuple[str, ...], str]:
    """The layer kind the rules' views find at each object's path, where they find one."""
    from convert.core.errors import ConvertError
    from convert.rules import views

    try:
        found = views.view(graph)
    except (ConvertError, ValueError, KeyError):
        return {}
    return {  # (only where one kind is left: a torch 2-D `weight` may be several)
        tuple(layer.path): next(iter(layer.kinds))
        for layer in found.layers
        if layer.path and len(layer.kinds) == 1
    }


def quote(text: str, keep_breaks: bool = False) -> str:
    """`text` inside a DOT string; `keep_breaks`: its `\\n` stay line breaks."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return quoted.replace("\\\\n", "\\n") if keep_breaks else quoted
