"""What every `ckpt` command shares: one-line user errors (exit 2), the API keywords as the
CLI spells them, sizes for people, the format names, the writer options."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from convert.core import registry
from convert.core.errors import ConvertError
from convert.core.notes import binary_size

human = binary_size


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:  # not the user's error: the reader of our output went away
        raise
    except ConvertError as exc:
        click.echo(f"ckpt: error: {exc.spelled(FLAGS)}", err=True)
        sys.exit(2)
    except OSError as exc:  # unreadable path, full disk, permissions
        name = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"ckpt: error: {name}{exc.strerror or exc}", err=True)
        sys.exit(2)


# API keywords an error may name, as this command spells them (default: --name-of-it).
FLAGS = {
    "to": "--to FORMAT",
    "overwrite": "--overwrite",
    "directory": "a DST ending in '/'",
    "root": "--root PATH",
    "like": "--like",
    **{o.name: o.flag for o in registry.writer_options().values()},
}

# (the registry's table of formats, without importing any format's module)
FORMAT_NAMES = ", ".join(registry.formats())
OUTPUT_NAMES = ", ".join(registry.output_formats())


def writer_options(command: Callable) -> Callable:
    """The writer options (the registry's records) as click options on `command`, each
    passed as its API keyword; `given_options` takes the ones the user gave."""
    for option in reversed(registry.writer_options().values()):
        if option.kind == "flag":
            command = click.option(option.flag, option.name, is_flag=True, help=option.help)(
                command
            )
        elif option.kind == "size":
            command = click.option(
                option.flag, option.name, callback=_shard_size, help=option.help
            )(command)
        else:
            command = click.option(
                option.flag, option.name, type=int, default=None, help=option.help
            )(command)
    return command


def given_options(values: dict[str, Any]) -> dict[str, Any]:
    """The writer options among a command's `values` that the user gave."""
    names = registry.writer_options()
    return {k: v for k, v in values.items() if k in names and v is not None and v is not False}


def _shard_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from convert.formats.sharded import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
