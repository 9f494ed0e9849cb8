"""`ckpt formats`: the formats this tool reads and writes."""

from __future__ import annotations

import click

from convert.core import registry


@click.command("formats")
def formats_command() -> None:
    """List the formats this tool reads and writes."""
    rows = [
        (fmt.name, "rw" if fmt.writes else "r ", " ".join(fmt.extensions) or "(a directory)")
        + (fmt.description,)
        for fmt in registry.formats().values()
    ]
    name_width, ext_width = (max(len(row[i]) for row in rows) for i in (0, 2))
    for name, modes, extensions, description in rows:
        click.echo(f"{name:<{name_width}}  {modes}  {extensions:<{ext_width}}  {description}")
