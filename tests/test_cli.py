"""The command line on the example checkpoint shipped in the repo (written by real
TensorFlow): reports, options that do not fit the output, the format list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import convert
from tests.conftest import assert_one_line_error, listing

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "regress"


def test_convert_reports_json(tmp_path, ckpt):
    result = ckpt("convert", EXAMPLE, tmp_path / "r.safetensors", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["source_format"] == "tf" and report["target_format"] == "safetensors"
    listed = json.loads(ckpt("ls", EXAMPLE, "--json").out)
    assert report["tensors"] == len(listed)
    assert report["bytes"] == sum(row["nbytes"] for row in listed)


@pytest.mark.parametrize(
    "target, option", [("r.msgpack", "--max-shard-size=1GB"), ("r.pt", "--compress")]
)
def test_option_the_output_does_not_take(tmp_path, ckpt, target, option):
    before = listing(tmp_path)
    result = ckpt("convert", EXAMPLE, tmp_path / target, option)
    assert_one_line_error(result, "does not take the option")
    assert listing(tmp_path) == before


def test_missing_source_is_named(tmp_path, ckpt):
    assert_one_line_error(
        ckpt("convert", tmp_path / "r.safetensors", tmp_path / "x"), "no such file"
    )


def test_formats_lists_every_format(ckpt):
    names = {line.split()[0] for line in ckpt("formats").out.splitlines()}
    assert names == {
        *("tf", "safetensors", "sharded", "torch", "npz", "flax", "keras", "keras-h5", "dcp"),
        *("deepspeed", "consolidated", "orbax"),
    }


def _stderr_on_a_terminal(*args) -> str:
    """Run ckpt with stderr on a pseudo-terminal, as a person at a shell would."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "convert", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is done writing
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(tmp_path, ckpt):
    shown = _stderr_on_a_terminal("convert", EXAMPLE, tmp_path / "a.safetensors")
    assert "B/s" in shown or "%|" in shown, shown  # tqdm's bar: bytes, rate, time left
    piped = ckpt("convert", EXAMPLE, tmp_path / "b.safetensors")
    assert piped.code == 0 and "%|" not in piped.err
    quiet = _stderr_on_a_terminal("convert", EXAMPLE, tmp_path / "c.safetensors", "--quiet")
    assert quiet.strip() == ""


@pytest.fixture(scope="module")
def long_listing(tmp_path_factory) -> Path:
    """A checkpoint whose listing is far larger than a pipe's buffer (64 KiB)."""
    import numpy as np

    from convert.formats.tf.bundle import data_path
    from convert.formats.tf.bundle_writer import BundleWriter

    prefix = tmp_path_factory.mktemp("long") / "many"
    writer = BundleWriter(Path(f"{prefix}.index"), data_path(prefix, 0, 1))
    for i in range(3000):
        writer.add(f"model/block_{i // 10}/layer_{i % 10}/kernel", np.zeros(2, np.float32))
    writer.finish()
    return prefix


@pytest.mark.parametrize("args, stderr_too", [(["--tree"], False), ([], True)])
def test_a_pipe_closed_early_ends_quietly(long_listing, args, stderr_too):
    """As `ls | head -1`: killed by SIGPIPE, nothing said."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "convert", "ls", long_listing, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    err = b"" if stderr_too else proc.stderr.read()
    assert proc.wait(timeout=120) == -signal.SIGPIPE, err
    assert first and err == b""


def test_help_lines_are_whole_and_name_the_formats(ckpt):
    top = ckpt("--help").out
    assert "ls       List every tensor: key, dtype, shape, size." in top
    commands = top[top.index("Commands:") :].splitlines()[1:]
    assert commands and not any(line.endswith("...") for line in commands), commands
    options = " ".join(ckpt("convert", "--help").out.split())
    assert (
        "--to FORMAT Output format: tf, orbax, dcp, consolidated, safetensors, sharded, torch, "
        "npz, flax, keras, keras-h5" in options
    )


def test_formats_table_is_aligned(ckpt):
    from convert.core import registry

    rows = ckpt("formats").out.splitlines()
    formats = list(registry.formats().values())
    assert len(rows) == len(formats)
    columns = {row.index(fmt.description) for row, fmt in zip(rows, formats, strict=True)}
    assert len(columns) == 1, rows


CHECKOUT = """
import runpy, sys
# As from a source checkout: the editable install's finder (which maps `mappings/` to
# `convert.mappings`) removed, the repository first on the path.
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv[1])
sys.argv = ["convert", "rules", "show", "keras-torch"]
runpy.run_module("convert", run_name="__main__")
"""


def test_python_m_convert_works_from_a_source_checkout():
    """`convert.mappings` exists once installed; a checkout finds `mappings/` itself."""
    root = Path(convert.__file__).parent.parent
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            + CHECKOUT.replace(
                'runpy.run_module("convert", run_name="__main__")',
                'import importlib.util as u; print(u.find_spec("convert.mappings"))',
            ),
            str(root),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "None"  # (the test is about a checkout, or proves nothing)
    result = subprocess.run(
        [sys.executable, "-c", CHECKOUT, str(root)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (root / "mappings" / "keras-torch.toml").read_text()
