"""Every format's record keeps its promises: its module has the three entry points with the
protocols' signatures (`registry.Sniff`, `Read`, `Write`), its writer takes each option the
record names, and the CLI flags and batch manifest keys are the writer options' own."""

from __future__ import annotations

import inspect

import pytest

from convert.core import registry

FORMATS = registry.formats()
WRITE_KEYWORDS = ("overwrite", "inputs", "progress", "report")


def _parameters(function) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_sniff_and_read_take_a_path(name):
    fmt = FORMATS[name]
    for function in (fmt.sniff, fmt.read):
        positional = [
            p
            for p in _parameters(function).values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        assert len(positional) == 1, (name, function.__qualname__)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_write_takes_the_protocols_keywords_and_the_records_options(name):
    fmt = FORMATS[name]
    parameters = _parameters(fmt.write)
    positional = [
        p.name
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert positional[:2] == ["graph", "path"], (name, positional)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    assert takes_any or set(WRITE_KEYWORDS) <= set(parameters), name
    # (a writer that passes **options on names them further down; the record says which)
    options = registry.writer_options()
    for option in fmt.options:
        assert option in options or option == "directory", (name, option)
        assert takes_any or option in parameters, (name, option)


def test_every_writer_option_belongs_to_a_format_and_has_one_spelling_each():
    options = registry.writer_options()
    used = {o for fmt in FORMATS.values() for o in fmt.options}
    assert set(options) <= used
    flags = [o.flag for o in options.values()]
    keys = [o.manifest for o in options.values()]
    assert len(set(flags)) == len(flags) and len(set(keys)) == len(keys)


def test_the_cli_and_the_manifest_are_made_from_the_writer_options():
    from click.testing import CliRunner

    from convert.batches import items
    from convert.cli import main

    for command in ("convert", "batch"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        for option in registry.writer_options().values():
            assert option.flag in text, (command, option.flag)
    for option in registry.writer_options().values():
        assert items.OPTIONS[option.manifest] == option.name
