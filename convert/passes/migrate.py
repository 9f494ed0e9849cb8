"""`ckpt migrate`: re-root, pick and graft sub-graphs of a checkpoint's object graph.

A graph → graph rewrite, applied before a writer sees the graph: `--root PATH` makes an
object the root (a `tf.train.Checkpoint(model=m)` file becomes one `model.load_weights`
restores), `--pick PATH[=NEWPATH]` keeps only some sub-graphs, each where NEWPATH says (the
guide's `Checkpoint(zy=model.dense1, opt=opt)`, after the fact), `--no-optimizer` drops the
optimizers, and `--under EDGE` puts the whole under a new root (a `save_weights` file
becomes one `tf.train.Checkpoint(EDGE=model)` restores).

Optimizer state follows its variables (TF slots, Keras optimizer variable lists):
`optimizers.py`.

The rewrite copies the Nodes and Tensors it is given (aliases stay shared objects) and never
changes the input graph.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from convert.core.errors import UnsupportedError
from convert.core.graph import EdgeTarget, Graph, GraphPath, Node, Slot
from convert.core.meta import PRIMARY_PATH, TF_LAYOUT, VARIABLE_NAME
from convert.core.tensor import Tensor
from convert.passes import optimizers

SAVE_COUNTER = "save_counter"
ATTRIBUTE = ".ATTRIBUTES"


@dataclass
class Migration:
    """What a migration did, path by path (paths joined by `/`; slots at their
    `optimizer/slot/variable` path)."""

    moved: list[dict[str, str]] = field(default_factory=list)  # {"from", "to"}
    kept: list[str] = field(default_factory=list)  # at the same path
    dropped: list[dict[str, str]] = field(default_factory=list)  # {"path", "why"}
    aliased: list[dict[str, str]] = field(default_factory=list)  # {"path", "of"}
    added: list[str] = field(default_factory=list)  # made by the migration (save_counter)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{len(self.moved)} moved, {len(self.kept)} kept, {len(self.dropped)} dropped, "
            f"{len(self.aliased)} aliases"
            + (f", added {', '.join(self.added)}" if self.added else "")
        )


@dataclass(frozen=True)
class Pick:
    path: GraphPath
    new_path: GraphPath


def parse_path(text: str, what: str) -> GraphPath:
    """`a/b/c` as steps; a TF checkpoint key's `.ATTRIBUTES/NAME` is one edge, and a
    variable's own `/.ATTRIBUTES/VARIABLE_VALUE` is the variable itself."""
    parts = [p for p in text.strip("/").split("/")]
    if not text.strip("/") or "" in parts:
        raise UnsupportedError(f"{what} {text!r} is not a path (names joined by '/')")
    steps: list[str] = []
    for part in parts:
        if steps and steps[-1] == ATTRIBUTE:
            steps[-1] = f"{ATTRIBUTE}/{part}"
        else:
            steps.append(part)
    if steps[-1] == f"{ATTRIBUTE}/VARIABLE_VALUE":
        steps.pop()
    if not steps:
        raise UnsupportedError(f"{what} {text!r} names no object")
    return tuple(steps)


def parse_pick(text: str) -> Pick:
    """`PATH` or `PATH=NEWPATH`."""
    path, equals, new = text.partition("=")
    if equals and not new.strip("/"):
        raise UnsupportedError(
            f"--pick {text!r} gives no NEWPATH; {{root}} makes an object the root",
            keywords={"root": "root="},
        )
    steps = parse_path(path, "--pick")
    return Pick(steps, parse_path(new, "--pick NEWPATH") if equals else steps)


def migrate(
    graph: Graph,
    *,
    under: str | None = None,
    root: str | None = None,
    pick: Iterable[str | Pick] = (),
    no_optimizer: bool = False,
    checkpoint_root: bool = False,
    new_root: bool = False,
) -> tuple[Graph, Migration]:
    """The rewritten graph and what was done. `checkpoint_root`: the output is a TF object
    checkpoint, so a new root (`under`, `pick`, or `new_root`: made by an earlier step) is a
    `tf.train.Checkpoint` and gets the `save_counter` its `restore().assert_consumed()`
    expects."""
    picks = [p if isinstance(p, Pick) else parse_pick(p) for p in pick]
    _check_picks(picks)
    source = _copy(graph)
    before = _paths(source)
    # The report knows objects by id: hold every source tensor and slot until it is made, so
    # that a tensor made on the way (the save counter) cannot take a dropped one's id.
    alive = ([e.tensor for e in source.entries()], list(source.slots))
    known = optimizers.variables(source, optimizers.find(source))
    out = source
    why: dict[int, str] = {}  # (each dropped tensor's reason, by id)
    # TF1 names: the checkpoint itself keeps the slots (their optimizer is the root), so they
    # follow their variables to whatever becomes the root
    held = {id(s) for s in source.slots if s.optimizer is source.root}
    if root is not None:
        out = _reroot(out, parse_path(root, "--root"))
        _mark(why, before, out, held, "outside --root")
    if picks:
        out = _picked(out, picks)
        _mark(why, before, out, held, "not picked")
    if no_optimizer:
        optimizers.drop_optimizers(out)
        _mark(why, before, out, held, "optimizer state (--no-optimizer)")
    report = Migration()
    optimizers.follow_slots(out, known, report.notes)
    _mark(why, before, out, held, "optimizer state of a variable that is not kept")
    if under is not None:
        new = Graph(root=Node(), slots=out.slots)
        new.add(parse_path(under, "--under"), out.root)
        out = _like(new, out)
    new_root = new_root or bool(picks) or under is not None
    if checkpoint_root and new_root and SAVE_COUNTER not in out.root:
        out.root.edges[SAVE_COUNTER] = _save_counter(source)
        if id(out.root.edges[SAVE_COUNTER]) not in before:
            report.added.append(SAVE_COUNTER)
    _primary_paths(out)
    _describe(report, before, out, why)
    del alive
    return out, report


# -- the steps ---------------------------------------------------------------------------


def _check_picks(picks: list[Pick]) -> None:
    targets: dict[GraphPath, Pick] = {}
    for p in picks:
        if p.new_path in targets:
            raise UnsupportedError(
                f"two picks go to {'/'.join(p.new_path)!r} "
                f"({'/'.join(targets[p.new_path].path)} and "
                f"{'/'.join(p.path)}); give each its own NEWPATH"
            )
        targets[p.new_path] = p
    for new in targets:
        for other in targets:
            if other != new and new[: len(other)] == other:
                raise UnsupportedError(
                    f"pick {'/'.join(new)!r} lands inside pick "
                    f"{'/'.join(other)!r}; pick the enclosing object, or "
                    "give a NEWPATH outside it"
                )


def _get(graph: Graph, path: GraphPath, what: str) -> EdgeTarget:
    item: EdgeTarget = graph.root
    for i, name in enumerate(path):
        if not isinstance(item, Node) or name not in item.edges:
            here = "/".join(path[:i]) or "the root"
            if not isinstance(item, Node):
                raise UnsupportedError(
                    f"{what} {'/'.join(path)!r}: {here} is a variable, not an object", graph.source
                )
            names = [n for n in item.edges if not n.startswith(ATTRIBUTE)]
            shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
            raise UnsupportedError(
                f"{what} {'/'.join(path)!r}: {here} has no {name!r} "
                f"(it has: {shown or 'nothing'}); `ckpt ls --tree` shows "
                "the paths",
                graph.source,
            )
        item = item.edges[name]
    return item


def _reroot(graph: Graph, path: GraphPath) -> Graph:
    item = _get(graph, path, "--root")
    if not isinstance(item, Node):
        raise UnsupportedError(
            f"--root {'/'.join(path)!r} is a variable, not an object; "
            f"--pick {'/'.join(path)}=NAME puts it under a new root",
            graph.source,
        )
    return _like(Graph(root=item, slots=graph.slots), graph)


def _picked(graph: Graph, picks: list[Pick]) -> Graph:
    out = _like(Graph(root=Node(), slots=graph.slots), graph)
    for p in picks:
        out.add(p.new_path, _get(graph, p.path, "--pick"))
    return out


def _like(new: Graph, old: Graph) -> Graph:
    """`new` with `old`'s file facts (format, source, notes; the TF layout on the root)."""
    new.format, new.source, new.files = old.format, old.source, old.files
    new.notes, new.values = list(old.notes), dict(old.values)
    if TF_LAYOUT in old.root.meta:
        new.root.meta.setdefault(TF_LAYOUT, old.root.meta[TF_LAYOUT])
    return new


def _save_counter(source: Graph) -> Tensor:
    """The source's own counter where its root has one, else 1 (one `save()` made it)."""
    old = source.root.edges.get(SAVE_COUNTER)
    if isinstance(old, Tensor) and old.shape == () and old.dtype == np.int64:
        return old
    return Tensor.from_array(np.array(1, np.int64), {VARIABLE_NAME: SAVE_COUNTER})


# -- copies, paths, the report ----------------------------------------------------------


def _copy(graph: Graph) -> Graph:
    """Nodes and Tensors copied (loaders shared), aliases still shared, slots remapped."""
    memo: dict[int, EdgeTarget] = {}

    def tensor(t: Tensor) -> Tensor:
        if id(t) not in memo:
            memo[id(t)] = Tensor(t.dtype, t.shape, t._load, dict(t.meta))
        return memo[id(t)]  # type: ignore[return-value]

    def node(n: Node) -> Node:
        if id(n) in memo:
            return memo[id(n)]  # type: ignore[return-value]
        new = memo[id(n)] = Node(dict(n.meta))
        new.values = dict(n.values)
        pending = [(n, new)]
        while pending:  # iterative: deep graphs must not hit the recursion limit
            old, copy = pending.pop()
            for name, item in old.edges.items():
                if isinstance(item, Tensor):
                    copy.edges[name] = tensor(item)
                elif id(item) in memo:
                    copy.edges[name] = memo[id(item)]
                else:
                    child = memo[id(item)] = Node(dict(item.meta))
                    child.values = dict(item.values)
                    copy.edges[name] = child
                    pending.append((item, child))
        return new

    out = _like(Graph(root=node(graph.root)), graph)
    out.root.meta = dict(graph.root.meta)
    out.slots = [
        Slot(tensor(s.variable), node(s.optimizer), s.name, tensor(s.value)) for s in graph.slots
    ]
    return out


def _paths(graph: Graph) -> dict[int, str]:
    """Each tensor's (and slot value's) path, as the report names it."""
    return {id(e.tensor): "/".join(e.path) for e in graph.entries()}


def _mark(
    why: dict[int, str], before: dict[int, str], graph: Graph, held: set[int], reason: str
) -> None:
    """Give each tensor `graph` no longer reaches the reason, if it has none yet (slots
    hanging on what is gone go with it; those the root holds, `held`, move to the new one)."""
    for s in graph.slots:
        if id(s) in held:
            s.optimizer = graph.root
    reached = {id(item) for _, item in graph.walk()} | {id(graph.root)}
    graph.slots = [
        s for s in graph.slots if id(s.variable) in reached and id(s.optimizer) in reached
    ]
    here = _paths(graph)
    for key in before:
        if key not in here:
            why.setdefault(key, reason)


def _primary_paths(graph: Graph) -> None:
    """Each tensor's first breadth-first path: the one TF names its key by and writers
    without aliases write (the source's own is stale once it moved)."""
    seen = {id(graph.root)}
    queue: deque[tuple[GraphPath, Node]] = deque([((), graph.root)])
    while queue:
        prefix, node = queue.popleft()
        for name, item in node.edges.items():
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, Tensor):
                item.meta[PRIMARY_PATH] = prefix + (name,)
            else:
                queue.append((prefix + (name,), item))


def _describe(report: Migration, before: dict[int, str], out: Graph, why: dict[int, str]) -> None:
    after = _paths(out)
    for key, path in after.items():
        if key not in before:
            continue
        if before[key] == path:
            report.kept.append(path)
        else:
            report.moved.append({"from": before[key], "to": path})
    report.dropped = [
        {"path": path, "why": why.get(key, "not reachable")}
        for key, path in before.items()
        if key not in after
    ]
    first: dict[int, str] = {id(out.root): "(root)"}
    for where, item in out.walk():
        text = "/".join(where)
        if id(item) in first:
            report.aliased.append({"path": text, "of": first[id(item)]})
        else:
            first[id(item)] = text
