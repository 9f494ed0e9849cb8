"""`ckpt rules`: the built-in rule sets, and one printed whole."""

from __future__ import annotations

import click

from convert.cli.common import user_errors


@click.group("rules", invoke_without_command=True)
@click.pass_context
def rules_command(ctx: click.Context) -> None:
    """List the built-in rule sets (`ckpt rules show NAME` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    from convert import rules

    with user_errors():
        sets = [rules.load(name) for name in rules.builtin_names()]
        width = max(len(r.name) for r in sets)
        for ruleset in sets:
            sides = " <-> ".join(ruleset.sides)
            click.echo(f"{ruleset.name:<{width}} {sides:<18} {ruleset.summary}")
            if ruleset.serves:
                click.echo(f"{'':<{width}} serves: {ruleset.serves}")
        click.echo(
            f"{'keras-keras':<{width}} {'(and torch-torch, flax-flax)':<18} one framework's "
            "layers into another file of it (tf_keras .h5 or checkpoint into a Keras 3 "
            "model's file), aligned by kind and order; what --like picks"
        )


@rules_command.command("show")
@click.argument("name")
def rules_show_command(name: str) -> None:
    """Print a built-in rule set's file."""
    from convert import rules
    from convert.rules.kinds import mappings

    with user_errors():
        rules.load(name)  # an unknown name gets the usual one-line error
        click.echo(mappings().joinpath(f"{name}.toml").read_text("utf8"), nl=False)
