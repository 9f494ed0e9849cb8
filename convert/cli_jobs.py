"""`ckpt migrate`, `ckpt diff` and `ckpt batch`: the commands over object graphs, pairs of
checkpoints and many files, registered on the `ckpt` group by `cli.py`. (Each imports what
it needs when it runs: `import convert.cli` stays free of numpy.)"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from . import api, registry
from .cli_common import (
    _FLAGS,
    _FORMAT_NAMES,
    _human,
    _user_errors,
    given_options,
    writer_options,
)


@click.command("migrate", short_help="Re-root, pick and graft sub-graphs of a checkpoint.")
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


@click.command("diff", short_help="Compare two checkpoints tensor by tensor.")
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


@click.command("batch", short_help="Convert many checkpoints, in parallel, resumably.")
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
@writer_options
def batch_command(sources: tuple[str, ...], out_dir: str | None, manifest: str | None,
                  to_format: str | None, from_format: str | None, jobs: int | None,
                  executor: str, scheduler: str | None, resume: bool, overwrite: bool,
                  as_json: bool, quiet: bool, rules: str | None, reverse: bool,
                  like: str | None, check: str | None, **writer: Any) -> None:
    """Convert each SRC into --out-dir, or every item of a --manifest, in worker processes
    or on a Dask cluster. A failing item does not stop the others; exit 1 if any failed."""
    import time

    from . import batches

    given = {"to": to_format, "from_format": from_format, "rules": rules, "like": like,
             "check": check, "reverse": reverse or None, "overwrite": overwrite or None}
    options = {**{k: v for k, v in given.items() if v is not None}, **given_options(writer)}
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
