"""`ckpt ls`: every tensor with its key, dtype, shape and size, or the object graph as a
tree."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from convert import api
from convert.cli.common import FORMAT_NAMES, human, user_errors
from convert.core.meta import SOURCE_KEY

if TYPE_CHECKING:  # (numpy comes with the first format used, not with `ckpt --version`)
    from convert.core.graph import Graph, Node


@click.command("ls", short_help="List every tensor: key, dtype, shape, size.")
@click.argument("path", type=click.Path())
@click.option(
    "--from",
    "from_format",
    metavar="FORMAT",
    help=f"Read as this format instead of detecting it: {FORMAT_NAMES}.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of tensors.")
@click.option("--tree", is_flag=True, help="Show the object graph: edges, slots, aliases.")
@click.option("--dot", "as_dot", is_flag=True, help="Print the object graph as Graphviz DOT.")
@click.option("--svg", type=click.Path(), help="Draw the object graph into this SVG file.")
@click.option("--png", type=click.Path(), help="Draw the object graph into this PNG file.")
@click.option("--expand", is_flag=True, help="Draw repeated blocks one by one (with --dot...).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --svg or --png file.")
def ls_command(
    path: str,
    from_format: str | None,
    as_json: bool,
    tree: bool,
    as_dot: bool,
    svg: str | None,
    png: str | None,
    expand: bool,
    overwrite: bool,
) -> None:
    """List every tensor with its key, dtype, shape and size (reads no tensor data)."""
    with user_errors():
        graph = api.load(path, from_format)
        if tree:
            _print_tree(graph)
            return
        if as_dot or svg or png:
            _picture(graph, as_dot, svg, png, expand, overwrite)
            return
        entries = graph.entries()
    if as_json:
        click.echo(json.dumps([_row(e) for e in entries], indent=1))
        return
    lines, total = _listing(entries)
    if lines:
        click.echo("\n".join(lines))
    click.echo(f"{len(lines)} tensors, {human(total)} ({graph.format})", err=True)
    for note in graph.notes:
        click.echo(f"note: {note}", err=True)


def _listing(entries: list) -> tuple[list[str], int]:
    """One aligned line per tensor, and the bytes of them all."""
    keys = [_key(e) for e in entries]
    width = min(max(map(len, keys), default=3), 80)
    # Thousands of tensors share a few dtypes and shapes: each is spelled out once.
    columns: dict = {}
    lines, total = [], 0
    for key, entry in zip(keys, entries, strict=True):
        t = entry.tensor
        nbytes = t.nbytes
        total += nbytes
        kind = (t.dtype, t.shape, nbytes)
        text = columns.get(kind)
        if text is None:
            shape = "[" + ", ".join(map(str, t.shape)) + "]"
            text = columns[kind] = f"{t.dtype_name:<9} {shape:<18} {human(nbytes):>10}"
        lines.append(f"{key:<{width}}  {text}")
    return lines, total


def _key(entry) -> str:
    return entry.tensor.meta.get(SOURCE_KEY) or "/".join(entry.path)


def _row(entry) -> dict:
    t = entry.tensor
    row = {
        "key": _key(entry),
        "dtype": t.dtype_name,
        "shape": list(t.shape),
        "nbytes": t.nbytes,
        "path": list(entry.path),
    }
    if len(entry.paths) > 1:
        row["aliases"] = [list(p) for p in entry.paths[1:]]
    if entry.slot is not None:
        row["slot"] = entry.slot.name
    return row


def _picture(
    graph: Graph, as_dot: bool, svg: str | None, png: str | None, expand: bool, overwrite: bool
) -> None:
    from convert.pictures.dot import to_dot
    from convert.pictures.render import draw

    text = to_dot(graph, expand)
    if as_dot:
        click.echo(text, nl=False)
    for target in draw(text, svg, png, overwrite):
        click.echo(f"drew {target}", err=True)


def _print_tree(graph: Graph) -> None:
    from convert.core.tensor import Tensor

    seen: dict[int, str] = {}

    def show(node: Node, indent: str, here: str) -> None:
        for name, item in node.edges.items():
            path = f"{here}/{name}" if here else name
            if id(item) in seen:
                click.echo(f"{indent}{name} -> alias of {seen[id(item)]}")
                continue
            seen[id(item)] = path
            if isinstance(item, Tensor):
                shape = "[" + ", ".join(map(str, item.shape)) + "]"
                click.echo(f"{indent}{name}: {item.dtype_name}{shape}")
            else:
                click.echo(f"{indent}{name}/")
                show(item, indent + "  ", path)

    # Before the walk: an edge back to the root (tf_keras' `save_weights` root has one, `root`)
    # is an alias; after it, TF1 slots name it as their optimizer (no object of its own).
    seen[id(graph.root)] = "(root)"
    click.echo(f"(root) {graph.format}")
    show(graph.root, "  ", "")
    for slot in graph.slots:
        value = slot.value
        shape = "[" + ", ".join(map(str, value.shape)) + "]"
        click.echo(
            f"  slot {slot.name!r} of {seen.get(id(slot.variable), '?')} "
            f"kept by {seen.get(id(slot.optimizer), '?')}: {value.dtype_name}{shape}"
        )
    for name, value in graph.values.items():
        click.echo(f"  [metadata] {name}: {_short(value)}")
    for note in graph.notes:
        click.echo(f"note: {note}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
