"""What every `ckpt` command shares: one-line user errors (exit 2), the API keywords as the
CLI spells them, sizes for people, the format names, the shard-size option."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from . import registry
from .errors import ConvertError
from .notes import binary_size

_human = binary_size


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
          "compress": "--compress", "directory": "a DST ending in '/'", "root": "--root PATH",
          "like": "--like"}

# (the registry's table of formats, without importing any format's module)
_FORMAT_NAMES = ", ".join(registry.formats())


def _shard_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from .formats.sharded import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
