"""`ckpt diff`: two checkpoints compared tensor by tensor, through the graph's paths."""

from __future__ import annotations

import json
import sys

import click

from convert.cli.common import user_errors


@click.command("diff", short_help="Compare two checkpoints tensor by tensor.")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option(
    "--rules",
    "rules",
    metavar="NAME|FILE",
    help="Map A into B's layout with these rules first (B is the skeleton).",
)
@click.option("--reverse", is_flag=True, help="Run the rules from their second side.")
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Absolute tolerance (default: bit for bit).",
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Relative tolerance, of the larger magnitude of the two values.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of every tensor's row.")
def diff_command(
    a: str, b: str, rules: str | None, reverse: bool, atol: float, rtol: float, as_json: bool
) -> None:
    """Compare checkpoints A and B tensor by tensor, through the graph's paths (a TF
    checkpoint and its safetensors conversion are equal). Prints each tensor that is not
    identical; exit 0 when all agree within the tolerances, 1 when not, 2 on an error."""
    from convert import compare

    def show(row: compare.DiffRow) -> None:
        if not as_json and not row.identical:
            click.echo(row.line())

    with user_errors():
        report = compare.diff(a, b, rules=rules, reverse=reverse, atol=atol, rtol=rtol, on_row=show)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in report.rows], indent=1))
    else:
        click.echo(report.summary(), err=True)
    sys.exit(0 if report.equal else 1)
