"""`ckpt`: list and convert checkpoints. User errors print one line and exit 2."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from . import __version__, api, cli_jobs, registry
from .cli_common import _FORMAT_NAMES, _human, _user_errors, given_options, writer_options

# numpy's OpenBLAS starts a thread per core that spins for about 0.15 s of CPU after numpy
# is imported; no command multiplies matrices, and on two cores that spin takes the core the
# checksum pass runs on. (A library user's process keeps its own setting.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if TYPE_CHECKING:  # (numpy comes with the first format used, not with `ckpt --version`)
    from .graph import Graph, Node


class _Group(click.Group):
    """Ends quietly when the reader of the output goes away (`ckpt ls BIG | head -1`):
    killed by SIGPIPE, as `ls` is. (Python ignores SIGPIPE and raises BrokenPipeError,
    which click would turn into exit 1; only output to a closed pipe raises it here, after
    any conversion has been committed.)"""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # (what is still buffered would fail at exit, loudly)
            return result
        except BrokenPipeError:
            _die_of_sigpipe()


def _die_of_sigpipe() -> None:
    import os
    import signal

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(1)  # (no SIGPIPE on this system: end without flushing into the closed pipe)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, package_name="ckpt-convert")
def main() -> None:
    """List and convert neural-network checkpoints without any framework installed."""
    # A graph is many small long-lived objects and little cyclic garbage: with the default
    # thresholds the collector rescans them over and over (a third of listing 20,000
    # tensors). Collect young objects rarely; the imported modules are never scanned.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


@main.command("ls", short_help="List every tensor: key, dtype, shape, size.")
@click.argument("path", type=click.Path())
@click.option("--from", "from_format", metavar="FORMAT",
              help=f"Read as this format instead of detecting it: {_FORMAT_NAMES}.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of tensors.")
@click.option("--tree", is_flag=True, help="Show the object graph: edges, slots, aliases.")
def ls_command(path: str, from_format: str | None, as_json: bool, tree: bool) -> None:
    """List every tensor with its key, dtype, shape and size (reads no tensor data)."""
    with _user_errors():
        graph = api.load(path, from_format)
        if tree:
            _print_tree(graph)
            return
        entries = graph.entries()
    if as_json:
        click.echo(json.dumps([_row(e) for e in entries], indent=1))
        return
    lines, total = _listing(entries)
    if lines:
        click.echo("\n".join(lines))
    click.echo(f"{len(lines)} tensors, {_human(total)} ({graph.format})", err=True)
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
            text = columns[kind] = f"{t.dtype_name:<9} {shape:<18} {_human(nbytes):>10}"
        lines.append(f"{key:<{width}}  {text}")
    return lines, total


def _key(entry) -> str:
    return entry.tensor.meta.get("key") or "/".join(entry.path)


def _row(entry) -> dict:
    t = entry.tensor
    row = {"key": _key(entry), "dtype": t.dtype_name, "shape": list(t.shape), "nbytes": t.nbytes,
           "path": list(entry.path)}
    if len(entry.paths) > 1:
        row["aliases"] = [list(p) for p in entry.paths[1:]]
    if entry.slot is not None:
        row["slot"] = entry.slot.name
    return row


def _print_tree(graph: Graph) -> None:
    from .tensor import Tensor

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
        click.echo(f"  slot {slot.name!r} of {seen.get(id(slot.variable), '?')} "
                   f"kept by {seen.get(id(slot.optimizer), '?')}: {value.dtype_name}{shape}")
    for name, value in graph.metadata.items():
        click.echo(f"  [metadata] {name}: {_short(value)}")
    for note in graph.notes:
        click.echo(f"note: {note}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


@main.command("convert")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--to", "to_format", metavar="FORMAT",
              help=f"Output format: {_FORMAT_NAMES} (default: from the DST name).")
@click.option("--from", "from_format", metavar="FORMAT",
              help="Read SRC as this format instead of detecting it.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists (atomically).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@writer_options
@click.option("--rules", "rules", metavar="NAME|FILE",
              help="Map layers and tensors with these rules (`ckpt rules` lists them).")
@click.option("--reverse", is_flag=True, help="Run the rules from their second side.")
@click.option("--like", metavar="TARGET",
              help="Give DST exactly TARGET's keys, shapes and dtypes (a fresh model's file, "
                   "or a `ckpt ls --json` listing).")
@click.option("--check", type=click.Choice(["consumed", "existing", "nontrivial", "partial"]),
              help="What must match (as TF's restore status); default: existing with --like, "
                   "else consumed.")
@click.option("--emit-rules", metavar="FILE", help="Write the alignment found as a rule file.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the report; write nothing.")
def convert_command(src: str, dst: str, to_format: str | None, from_format: str | None,
                    overwrite: bool, quiet: bool, as_json: bool, rules: str | None,
                    reverse: bool, like: str | None, check: str | None,
                    emit_rules: str | None, dry_run: bool, **writer: Any) -> None:
    """Convert SRC into DST, one tensor at a time."""
    options = given_options(writer)  # (no --tf-names: the writer keeps the input's layout)
    tf_only = any(o.chooses_tf and name in options
                  for name, o in registry.writer_options().items())
    if tf_only and to_format is None and registry.by_extension(dst) is None:
        to_format = "tf"  # a name that says no format: these options say TensorFlow
    mapped = {"rules": rules, "like": like, "check": check, "reverse": reverse,
              "emit_rules": emit_rules, "dry_run": dry_run}
    with _user_errors():
        if rules or like or any(mapped.values()):
            report = api.convert(src, dst, to=to_format, from_format=from_format,
                                 overwrite=overwrite, **mapped, **options)
        else:
            graph = api.load(src, from_format)
            with _progress(quiet, graph) as progress:
                report = api.save(graph, dst, to_format, overwrite=overwrite,
                                  progress=progress, **options)
    if dry_run and not as_json:
        _print_plan(report)
        return
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    elif not quiet:
        click.echo(f"{report.source} ({report.source_format}) -> {report.destination} "
                   f"({report.target_format}): {report.tensors} tensors, {_human(report.bytes)}",
                   err=True)
        if report.rules:
            click.echo(f"  {report.rules['summary']}", err=True)
        for note in report.notes:
            click.echo(f"  note: {note}", err=True)


def _print_plan(report: api.Report) -> None:
    """`--dry-run`: each output entry with what makes it, then the report."""
    rules = report.rules or {}
    for item in rules.get("plan", []):
        shape = "[" + ", ".join(map(str, item["shape"])) + "]"
        sources = " + ".join(item["sources"]) or "(made by the rules)"
        click.echo(f"{item['key']}  {item['dtype']}{shape}  <- {sources}"
                   + (f"  ({item['ops']})" if item["ops"] != "copy" else ""))
    for layer in rules.get("layers", []):
        click.echo(f"layer {layer['source']} -> {layer['target']} ({layer['kind']})", err=True)
    click.echo(f"dry run, nothing written: {rules.get('summary', '')}", err=True)
    for note in report.notes:
        click.echo(f"  note: {note}", err=True)


@contextmanager
def _progress(quiet: bool, graph: Graph) -> Iterator[api.Progress | None]:
    """A bar (bytes done, throughput, time left) on a terminal; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    total = sum(entry.tensor.nbytes for entry in graph.entries())
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
              leave=False, mininterval=0.2) as bar:
        yield bar.update


@main.group("rules", invoke_without_command=True)
@click.pass_context
def rules_command(ctx: click.Context) -> None:
    """List the built-in rule sets (`ckpt rules show NAME` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    from . import rules

    with _user_errors():
        for name in rules.builtin_names():
            ruleset = rules.load(name)
            click.echo(f"{name:<14} {' <-> '.join(ruleset.sides):<16} {ruleset.summary}")
            if ruleset.serves:
                click.echo(f"{'':<14} serves: {ruleset.serves}")
        click.echo(f"{'keras-keras':<14} {'(and torch-torch, flax-flax)':<16} one framework's "
                   "layers into another file of it (tf_keras .h5 or checkpoint into a Keras 3 "
                   "model's file), aligned by kind and order; what --like picks")


@rules_command.command("show")
@click.argument("name")
def rules_show_command(name: str) -> None:
    """Print a built-in rule set's file."""
    from . import rules
    from .rules.kinds import mappings

    with _user_errors():
        rules.load(name)  # an unknown name gets the usual one-line error
        click.echo(mappings().joinpath(f"{name}.toml").read_text("utf8"), nl=False)


@main.command("formats")
def formats_command() -> None:
    """List the formats this tool reads and writes."""
    rows = [(fmt.name, " ".join(fmt.extensions), fmt.description)
            for fmt in registry.formats().values()]
    name_width, ext_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    for name, extensions, description in rows:
        click.echo(f"{name:<{name_width}}  rw  {extensions:<{ext_width}}  {description}")


# Commands over object graphs, pairs of checkpoints and many files: their own module.
for _command in (cli_jobs.migrate_command, cli_jobs.diff_command, cli_jobs.batch_command):
    main.add_command(_command)
