"""`ckpt migrate`: re-root, pick and graft sub-graphs of a checkpoint's object graph."""

from __future__ import annotations

import json
from typing import Any

import click

from convert import api
from convert.cli.common import OUTPUT_NAMES, human, user_errors


@click.command("migrate", short_help="Re-root, pick and graft sub-graphs of a checkpoint.")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option(
    "--under",
    metavar="EDGE",
    help="Put the whole under a new root at EDGE: a save_weights file becomes one "
    "tf.train.Checkpoint(EDGE=model) restores.",
)
@click.option(
    "--root",
    "root",
    metavar="PATH",
    help="Make the object at PATH the root: a tf.train.Checkpoint(model=m) file "
    "becomes one model.load_weights restores.",
)
@click.option(
    "--pick",
    "picks",
    metavar="PATH[=NEWPATH]",
    multiple=True,
    help="Keep only these sub-graphs, each at NEWPATH if given (repeatable): "
    "--pick model/dense1=zy --pick opt.",
)
@click.option("--no-optimizer", is_flag=True, help="Drop optimizer objects and slots.")
@click.option(
    "--like",
    metavar="SKELETON",
    help="Align layers to a fresh model's file first (by kind and order).",
)
@click.option(
    "--to",
    "to_format",
    metavar="FORMAT",
    help=f"Output format: {OUTPUT_NAMES} (default: from the DST name, else tf).",
)
@click.option(
    "--from",
    "from_format",
    metavar="FORMAT",
    help="Read SRC as this format instead of detecting it.",
)
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists (atomically).")
@click.option("--tf-names", is_flag=True, help="tf: write a name-based checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the report whole, as JSON.")
@click.option(
    "--dry-run", is_flag=True, help="Print what would be moved, dropped and aliased; write nothing."
)
@click.option(
    "--svg", type=click.Path(), help="Draw SRC's graph, coloured by what is kept, moved, dropped."
)
@click.option("--png", type=click.Path(), help="The same drawing as a PNG file.")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
def migrate_command(
    src: str,
    dst: str,
    under: str | None,
    root: str | None,
    picks: tuple[str, ...],
    no_optimizer: bool,
    like: str | None,
    to_format: str | None,
    from_format: str | None,
    overwrite: bool,
    tf_names: bool,
    as_json: bool,
    dry_run: bool,
    svg: str | None,
    png: str | None,
    quiet: bool,
) -> None:
    """Rewrite SRC's object graph into DST (a TensorFlow object checkpoint unless DST's
    name or --to says otherwise); optimizer slots follow their variables."""

    options: dict[str, Any] = {"name_based": True} if tf_names else {}
    with user_errors():
        report = api.migrate(
            src,
            dst,
            under=under,
            root=root,
            pick=picks,
            no_optimizer=no_optimizer,
            to=to_format,
            from_format=from_format,
            like=like,
            overwrite=overwrite,
            dry_run=dry_run,
            **options,
        )
        if svg or png:
            _draw(src, from_format, report, svg, png)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    elif dry_run:
        _print_migration(report)
    elif not quiet:
        assert report.migration is not None  # (`api.migrate` always sets it)
        click.echo(
            f"{report.source} ({report.source_format}) -> {report.destination} "
            f"({report.target_format}): {report.tensors} tensors, "
            f"{human(report.bytes)}; {report.migration['summary']}",
            err=True,
        )
        for note in report.notes:
            click.echo(f"  note: {note}", err=True)


def _draw(
    src: str, from_format: str | None, report: api.Report, svg: str | None, png: str | None
) -> None:
    """SRC's graph with each variable coloured by what the migration does to it."""
    from convert.pictures.dot import migration_marks, to_dot
    from convert.pictures.render import draw

    marks, added = migration_marks(report.migration or {})
    for target in draw(
        to_dot(api.load(src, from_format), marks=marks, added=added), svg, png, False
    ):
        click.echo(f"drew {target}", err=True)


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
