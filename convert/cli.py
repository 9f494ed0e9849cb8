"""`ckpt`: list and convert checkpoints. User errors print one line and exit 2."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from . import __version__, api, registry
from .errors import ConvertError

if TYPE_CHECKING:  # (numpy comes with the first format used, not with `ckpt --version`)
    from .graph import Graph, Node


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:  # not the user's error: the reader of our output went away
        raise
    except ConvertError as exc:
        click.echo(f"ckpt: error: {exc.spelled(_FLAGS)}", err=True)
        sys.exit(2)
    except OSError as exc:  # unreadable path, full disk, permissions
        name = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"ckpt: error: {name}{exc.strerror or exc}", err=True)
        sys.exit(2)


# API keywords an error may name, as this command spells them (default: --name-of-it).
_FLAGS = {"name_based": "--tf-names", "to": "--to FORMAT", "overwrite": "--overwrite",
          "max_to_keep": "--max-to-keep", "max_shard_size": "--max-shard-size",
          "compress": "--compress", "directory": "a DST ending in '/'", "root": "--root PATH"}


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


# (the registry's table of formats, without importing any format's module)
_FORMAT_NAMES = ", ".join(registry.formats())


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

    click.echo(f"(root) {graph.format}")
    show(graph.root, "  ", "")
    seen[id(graph.root)] = "(root)"  # (TF1 slots: the optimizer is no object of its own)
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


def _shard_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from .formats.sharded import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
@click.option("--max-to-keep", type=int, default=None,
              help="tf: write DST as a CheckpointManager directory keeping this many.")
@click.option("--tf-names", is_flag=True,
              help="tf: write a name-based (TF1 Saver) checkpoint without an object graph.")
@click.option("--max-shard-size", callback=_shard_size,
              help="torch/safetensors/keras: split DST into shards of at most this size "
                   "(2GB, 500MB).")
@click.option("--compress", is_flag=True, help="npz: deflate the members.")
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
                    overwrite: bool, quiet: bool, as_json: bool, max_to_keep: int | None,
                    tf_names: bool, max_shard_size: int | None, compress: bool,
                    rules: str | None, reverse: bool, like: str | None, check: str | None,
                    emit_rules: str | None, dry_run: bool) -> None:
    """Convert SRC into DST, one tensor at a time."""
    options = {}
    if max_to_keep is not None:
        options["max_to_keep"] = max_to_keep
    if tf_names:
        options["name_based"] = True  # else the writer keeps the input's layout
    if options and to_format is None and registry.by_extension(dst) is None:
        to_format = "tf"  # a name that says no format: these options say TensorFlow
    if max_shard_size is not None:  # (torch/safetensors: the format still comes from DST)
        options["max_shard_size"] = max_shard_size
    if compress:
        options["compress"] = True
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
    from importlib import resources

    from . import rules

    with _user_errors():
        rules.load(name)  # an unknown name gets the usual one-line error
        click.echo(resources.files("convert.mappings").joinpath(f"{name}.toml")
                   .read_text("utf8"), nl=False)


@main.command("formats")
def formats_command() -> None:
    """List the formats this tool reads and writes."""
    rows = [(fmt.name, " ".join(fmt.extensions), fmt.description)
            for fmt in registry.formats().values()]
    name_width, ext_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    for name, extensions, description in rows:
        click.echo(f"{name:<{name_width}}  rw  {extensions:<{ext_width}}  {description}")


@main.command("migrate", short_help="Re-root, pick and graft sub-graphs of a checkpoint.")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--under", metavar="EDGE",
              help="Put the whole under a new root at EDGE: a save_weights file becomes one "
                   "tf.train.Checkpoint(EDGE=model) restores.")
@click.option("--root", "root", metavar="PATH",
              help="Make the object at PATH the root: a tf.train.Checkpoint(model=m) file "
                   "becomes one model.load_weights restores.")
@click.option("--pick", "picks", metavar="PATH[=NEWPATH]", multiple=True,
              help="Keep only these sub-graphs, each at NEWPATH if given (repeatable): "
                   "--pick model/dense1=zy --pick opt.")
@click.option("--no-optimizer", is_flag=True, help="Drop optimizer objects and slots.")
@click.option("--like", metavar="SKELETON",
              help="Align layers to a fresh model's file first (by kind and order).")
@click.option("--to", "to_format", metavar="FORMAT",
              help=f"Output format: {_FORMAT_NAMES} (default: from the DST name, else tf).")
@click.option("--from", "from_format", metavar="FORMAT",
              help="Read SRC as this format instead of detecting it.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists (atomically).")
@click.option("--tf-names", is_flag=True, help="tf: write a name-based checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the report whole, as JSON.")
@click.option("--dry-run", is_flag=True, help="Print what would be moved, dropped and "
                                               "aliased; write nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
def migrate_command(src: str, dst: str, under: str | None, root: str | None,
                    picks: tuple[str, ...], no_optimizer: bool, like: str | None,
                    to_format: str | None, from_format: str | None, overwrite: bool,
                    tf_names: bool, as_json: bool, dry_run: bool, quiet: bool) -> None:
    """Rewrite SRC's object graph into DST (a TensorFlow object checkpoint unless DST's
    name or --to says otherwise); optimizer slots follow their variables."""
    from pathlib import Path
    options = {"name_based": True} if tf_names else {}
    if to_format is None and registry.by_extension(dst) is None and not Path(dst).suffix:
        to_format = "tf"  # a prefix: a TensorFlow checkpoint, whatever SRC was
    with _user_errors():
        report = api.migrate(src, dst, under=under, root=root, pick=picks,
                             no_optimizer=no_optimizer, to=to_format, from_format=from_format,
                             like=like, overwrite=overwrite, dry_run=dry_run, **options)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    elif dry_run:
        _print_migration(report)
    elif not quiet:
        click.echo(f"{report.source} ({report.source_format}) -> {report.destination} "
                   f"({report.target_format}): {report.tensors} tensors, "
                   f"{_human(report.bytes)}; {report.migration['summary']}", err=True)
        for note in report.notes:
            click.echo(f"  note: {note}", err=True)


def _print_migration(report: api.Report) -> None:
    """`migrate --dry-run`: every move, drop, alias and addition, then the summary."""
    done = report.migration or {}
    for move in done.get("moved", []):
        click.echo(f"move   {move['from']} -> {move['to']}")
    for drop in done.get("dropped", []):
        click.echo(f"drop   {drop['path']}  ({drop['why']})")
    for alias in done.get("aliased", []):
        click.echo(f"alias  {alias['path']} = {alias['of']}")
    for path in done.get("added", []):
        click.echo(f"add    {path}")
    click.echo(f"dry run, nothing written: {done.get('summary', '')}", err=True)
    for note in report.notes:
        click.echo(f"  note: {note}", err=True)


@main.command("diff", short_help="Compare two checkpoints tensor by tensor.")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--rules", "rules", metavar="NAME|FILE",
              help="Map A into B's layout with these rules first (B is the skeleton).")
@click.option("--reverse", is_flag=True, help="Run the rules from their second side.")
@click.option("--atol", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Absolute tolerance (default: bit for bit).")
@click.option("--rtol", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Relative tolerance, of the larger magnitude of the two values.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of every tensor's row.")
def diff_command(a: str, b: str, rules: str | None, reverse: bool, atol: float, rtol: float,
                 as_json: bool) -> None:
    """Compare checkpoints A and B tensor by tensor, through the graph's paths (a TF
    checkpoint and its safetensors conversion are equal). Prints each tensor that is not
    identical; exit 0 when all agree within the tolerances, 1 when not, 2 on an error."""
    from . import compare

    def show(row: compare.DiffRow) -> None:
        if not as_json and not row.identical:
            click.echo(row.line())

    with _user_errors():
        report = compare.diff(a, b, rules=rules, reverse=reverse, atol=atol, rtol=rtol,
                              on_row=show)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in report.rows], indent=1))
    else:
        click.echo(report.summary(), err=True)
    sys.exit(0 if report.equal else 1)


@main.command("batch", short_help="Convert many checkpoints, in parallel, resumably.")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("--out-dir", type=click.Path(), help="Write each SRC here, named from SRC.")
@click.option("--manifest", type=click.Path(), metavar="FILE.toml",
              help="Run the [[convert]] tables of this manifest (src, dst, options).")
@click.option("--to", "to_format", metavar="FORMAT",
              help=f"Output format: {_FORMAT_NAMES} (with --out-dir, default safetensors).")
@click.option("--from", "from_format", metavar="FORMAT", help="Read sources as this format.")
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Worker processes (default: the cores).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local",
              show_default=True, help="Run in local processes or on a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS|local:N",
              help="dask: the scheduler's address, or local:N for a LocalCluster of N.")
@click.option("--resume", is_flag=True, help="Skip items whose output is complete already.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of the items' rows.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no lines per item.")
@click.option("--rules", "rules", metavar="NAME|FILE", help="Convert through these rules.")
@click.option("--reverse", is_flag=True, help="Run the rules from their second side.")
@click.option("--like", metavar="TARGET", help="Give each output TARGET's layout.")
@click.option("--check", type=click.Choice(["consumed", "existing", "nontrivial", "partial"]),
              help="What must match, with --rules or --like.")
@click.option("--max-shard-size", callback=_shard_size, help="Split outputs into shards.")
@click.option("--compress", is_flag=True, help="npz: deflate the members.")
@click.option("--tf-names", is_flag=True, help="tf: write name-based checkpoints.")
@click.option("--max-to-keep", type=int, default=None, help="tf: CheckpointManager outputs.")
def batch_command(sources: tuple[str, ...], out_dir: str | None, manifest: str | None,
                  to_format: str | None, from_format: str | None, jobs: int | None,
                  executor: str, scheduler: str | None, resume: bool, overwrite: bool,
                  as_json: bool, quiet: bool, rules: str | None, reverse: bool,
                  like: str | None, check: str | None, max_shard_size: int | None,
                  compress: bool, tf_names: bool, max_to_keep: int | None) -> None:
    """Convert each SRC into --out-dir, or every item of a --manifest, in worker processes
    or on a Dask cluster. A failing item does not stop the others; exit 1 if any failed."""
    import time

    from . import batches

    given = {"to": to_format, "from_format": from_format, "rules": rules, "like": like,
             "check": check, "max_shard_size": max_shard_size, "max_to_keep": max_to_keep,
             "reverse": reverse or None, "compress": compress or None,
             "name_based": tf_names or None, "overwrite": overwrite or None}
    options = {k: v for k, v in given.items() if v is not None}
    start = time.perf_counter()
    with _user_errors():
        if bool(manifest) == bool(sources):
            raise batches.BatchError("give sources (with --out-dir) or --manifest FILE.toml")
        if manifest:
            items = batches.read_manifest(manifest, options, out_dir)
        elif out_dir is None:
            raise batches.BatchError("sources need --out-dir DIR to be written into")
        else:
            items = batches.items_for(sources, out_dir, **options)
        with _batch_progress(quiet, len(items)) as progress:
            results = batches.batch(items, jobs=jobs, executor=executor, scheduler=scheduler,
                                    resume=resume, progress=progress, spellings=_FLAGS)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=1))
    if not quiet:
        click.echo(batches.summary(results, time.perf_counter() - start), err=True)
    sys.exit(1 if any(r.status == "failed" for r in results) else 0)


@contextmanager
def _batch_progress(quiet: bool, total: int) -> Iterator:
    """One line per item as it ends (on stderr), under one bar on a terminal."""
    from . import batches

    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield lambda result: click.echo(batches.line(result), err=True)
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="item", file=sys.stderr, leave=False) as bar:
        def update(result) -> None:
            bar.write(batches.line(result), file=sys.stderr)
            bar.update(1)

        yield update
