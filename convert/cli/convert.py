"""`ckpt convert`: one checkpoint into another format, plainly or through rules."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from convert import api, folders
from convert.cli.common import OUTPUT_NAMES, given_options, human, user_errors, writer_options
from convert.core import registry
from convert.core.errors import ConvertError

if TYPE_CHECKING:
    from convert.core.graph import Graph


@click.command("convert")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option(
    "--to",
    "to_format",
    metavar="FORMAT",
    help=f"Output format: {OUTPUT_NAMES} (default: from the DST name).",
)
@click.option(
    "--from",
    "from_format",
    metavar="FORMAT",
    help="Read SRC as this format instead of detecting it.",
)
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists (atomically).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@writer_options
@click.option(
    "--rules",
    "rules",
    metavar="NAME|FILE",
    help="Map layers and tensors with these rules (`ckpt rules` lists them).",
)
@click.option("--reverse", is_flag=True, help="Run the rules from their second side.")
@click.option(
    "--like",
    metavar="TARGET",
    help="Give DST exactly TARGET's keys, shapes and dtypes (a fresh model's file, "
    "or a `ckpt ls --json` listing).",
)
@click.option(
    "--check",
    type=click.Choice(["consumed", "existing", "nontrivial", "partial"]),
    help="What must match (as TF's restore status); default: existing with --like, else consumed.",
)
@click.option(
    "--pick",
    "picks",
    metavar="PATH[=NEWPATH]",
    multiple=True,
    help="Keep only these sub-graphs (as ckpt migrate --pick); one PATH alone becomes the "
    "root: --pick model writes a training checkpoint's model state dict.",
)
@click.option("--emit-rules", metavar="FILE", help="Write the alignment found as a rule file.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the report; write nothing.")
@click.option(
    "--svg", type=click.Path(), help="With --rules or --like: draw the port (layers paired, ops)."
)
@click.option("--png", type=click.Path(), help="The same drawing as a PNG file.")
def convert_command(
    src: str,
    dst: str,
    to_format: str | None,
    from_format: str | None,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
    rules: str | None,
    reverse: bool,
    like: str | None,
    check: str | None,
    emit_rules: str | None,
    dry_run: bool,
    picks: tuple[str, ...],
    svg: str | None,
    png: str | None,
    **writer: Any,
) -> None:
    """Convert SRC into DST, one tensor at a time."""
    options = given_options(writer)  # (no --tf-names: the writer keeps the input's layout)
    to_format = registry.format_asked(dst, to_format, options)
    mapped: dict[str, Any] = {
        "rules": rules,
        "like": like,
        "check": check,
        "reverse": reverse,
        "emit_rules": emit_rules,
        "dry_run": dry_run,
        "pick": picks,
    }
    with user_errors():
        if (svg or png) and not (rules or like):  # (said before anything is written)
            raise ConvertError("--svg and --png draw a port: give --rules or --like", svg or png)
        if rules or like or any(mapped.values()) or folders.is_model_folder(src):
            report = api.convert(
                src,
                dst,
                to=to_format,
                from_format=from_format,
                overwrite=overwrite,
                **mapped,
                **options,
            )
        else:
            graph, picked = api.load_part(src, dst, to_format, from_format)
            with _progress(quiet, graph) as progress:
                report = api.save(
                    graph, dst, to_format, overwrite=overwrite, progress=progress, **options
                )
            note = folders.hint(src, graph, report.target_format)
            report.notes += [n for n in (picked, note) if n]
        if svg or png:
            _draw(report, svg, png)
    if dry_run and not as_json:
        _print_plan(report)
        return
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    elif not quiet:
        click.echo(
            f"{report.source} ({report.source_format}) -> {report.destination} "
            f"({report.target_format}): {report.tensors} tensors, {human(report.bytes)}",
            err=True,
        )
        if report.rules:
            click.echo(f"  {report.rules['summary']}", err=True)
        for note in report.notes:
            click.echo(f"  note: {note}", err=True)


def _draw(report: api.Report, svg: str | None, png: str | None) -> None:
    from convert.pictures.port import port_dot
    from convert.pictures.render import draw

    if not report.rules:  # (a folder converted without rules: nothing was ported)
        raise ConvertError("--svg and --png draw a port: give --rules or --like", svg or png)
    source = f"{report.source} ({report.source_format})"
    target = f"{report.destination} ({report.target_format})"
    for drawn in draw(port_dot(report.rules, source, target), svg, png, False):
        click.echo(f"drew {drawn}", err=True)


def _print_plan(report: api.Report) -> None:
    """`--dry-run`: each output entry with what makes it, then the report."""
    rules = report.rules or {}
    for item in rules.get("plan", []):
        shape = "[" + ", ".join(map(str, item["shape"])) + "]"
        sources = " + ".join(item["sources"]) or "(made by the rules)"
        click.echo(
            f"{item['key']}  {item['dtype']}{shape}  <- {sources}"
            + (f"  ({item['ops']})" if item["ops"] != "copy" else "")
        )
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
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
        mininterval=0.2,
    ) as bar:
        yield bar.update
