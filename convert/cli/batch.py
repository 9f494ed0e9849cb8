"""`ckpt batch`: many conversions, in worker processes or on a Dask cluster, resumably.
(`convert.batches` is imported when the command runs: it brings numpy.)"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from convert.cli.common import FLAGS, OUTPUT_NAMES, given_options, user_errors, writer_options


@click.command("batch", short_help="Convert many checkpoints, in parallel, resumably.")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("--out-dir", type=click.Path(), help="Write each SRC here, named from SRC.")
@click.option(
    "--manifest",
    type=click.Path(),
    metavar="FILE.toml",
    help="Run the [[convert]] tables of this manifest (src, dst, options).",
)
@click.option(
    "--to",
    "to_format",
    metavar="FORMAT",
    help=f"Output format: {OUTPUT_NAMES} (with --out-dir, default safetensors).",
)
@click.option("--from", "from_format", metavar="FORMAT", help="Read sources as this format.")
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: the cores)."
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Run in local processes or on a Dask cluster.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS|local:N",
    help="dask: the scheduler's address, or local:N for a LocalCluster of N.",
)
@click.option("--resume", is_flag=True, help="Skip items whose output is complete already.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of the items' rows.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no lines per item.")
@click.option("--rules", "rules", metavar="NAME|FILE", help="Convert through these rules.")
@click.option("--reverse", is_flag=True, help="Run the rules from their second side.")
@click.option("--like", metavar="TARGET", help="Give each output TARGET's layout.")
@click.option(
    "--check",
    type=click.Choice(["consumed", "existing", "nontrivial", "partial"]),
    help="What must match, with --rules or --like.",
)
@writer_options
def batch_command(
    sources: tuple[str, ...],
    out_dir: str | None,
    manifest: str | None,
    to_format: str | None,
    from_format: str | None,
    jobs: int | None,
    executor: str,
    scheduler: str | None,
    resume: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
    rules: str | None,
    reverse: bool,
    like: str | None,
    check: str | None,
    **writer: Any,
) -> None:
    """Convert each SRC into --out-dir, or every item of a --manifest, in worker processes
    or on a Dask cluster. A failing item does not stop the others; exit 1 if any failed."""
    import time

    from convert.batches import items, run

    given = {
        "to": to_format,
        "from_format": from_format,
        "rules": rules,
        "like": like,
        "check": check,
        "reverse": reverse or None,
        "overwrite": overwrite or None,
    }
    options = {**{k: v for k, v in given.items() if v is not None}, **given_options(writer)}
    start = time.perf_counter()
    with user_errors():
        if bool(manifest) == bool(sources):
            raise items.BatchError("give sources (with --out-dir) or --manifest FILE.toml")
        if manifest:
            todo = items.read_manifest(manifest, options, out_dir)
        elif out_dir is None:
            raise items.BatchError("sources need --out-dir DIR to be written into")
        else:
            todo = items.items_for(sources, out_dir, **options)
        with _batch_progress(quiet, len(todo)) as progress:
            results = run.batch(
                todo,
                jobs=jobs,
                executor=executor,
                scheduler=scheduler,
                resume=resume,
                progress=progress,
                spellings=FLAGS,
            )
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=1))
    if not quiet:
        click.echo(run.summary(results, time.perf_counter() - start), err=True)
    sys.exit(1 if any(r.status == "failed" for r in results) else 0)


@contextmanager
def _batch_progress(quiet: bool, total: int) -> Iterator:
    """One line per item as it ends (on stderr), under one bar on a terminal."""
    from convert.batches import run

    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield lambda result: click.echo(run.line(result), err=True)
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="item", file=sys.stderr, leave=False) as bar:

        def update(result) -> None:
            bar.write(run.line(result), file=sys.stderr)
            bar.update(1)

        yield update
