"""`ckpt formats`: the formats this tool reads and writes."""

from __future__ import annotations

import click

from convert.core import registry


@click.command("formats")
def formats_command() -> None:
    """List the formats this tool reads and writes."""
    rows = [
        (fmt.name, " ".join(fmt.extensions) or "(a directory)", fmt.description)
        for fmt in registry.formats().values()
    ]
    name_width, ext_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    for name, extensions, description in rows:
        click.echo(f"{name:<{name_width}}  rw  {extensions:<{ext_width}}  {description}")
