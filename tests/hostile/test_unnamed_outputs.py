"""OutputSet's temporaries: unnamed files (O_TMPFILE) that no kill can leave behind,
named pid-tagged ones where there are none, and the stale ones of dead processes removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from convert.core.errors import ConvertError
from convert.io import outputs

unnamed = pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="no O_TMPFILE here")


@unnamed
def test_an_output_being_written_has_no_name_until_commit(tmp_path):
    with outputs.OutputSet() as out:
        tmp = out.path(tmp_path / "a.bin")
        with outputs.open_output(tmp) as f:
            f.write(b"x" * 100_000)
        assert os.listdir(tmp_path) == []  # (nothing a SIGKILL now could leave)
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 100_000
    assert os.listdir(tmp_path) == ["a.bin"]


@unnamed
def test_overwrite_replaces_and_abort_keeps_the_old_file(tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), outputs.OutputSet(overwrite=True) as out:
        out.path(dest).write_bytes(b"new")
        raise RuntimeError
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    with outputs.OutputSet(overwrite=True) as out:
        out.path(dest).write_bytes(b"new")
    assert dest.read_bytes() == b"new" and os.listdir(tmp_path) == ["a.bin"]


def test_without_unnamed_files_temporaries_carry_the_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_unnamed_file", lambda directory, mode: None)
    with outputs.OutputSet() as out:
        tmp = out.path(tmp_path / "a.bin")
        assert tmp.name.startswith(f".a.bin.ckpt-{os.getpid()}-")
        tmp.write_bytes(b"x")
    assert os.listdir(tmp_path) == ["a.bin"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".a.bin.ckpt-{dead}-x1y2.tmp"
    alive = tmp_path / f".a.bin.ckpt-{os.getppid()}-x1y2.tmp"  # (a running process)
    other = tmp_path / f".b.bin.ckpt-{dead}-x1y2.tmp"  # another destination's
    for p in (stale, alive, other):
        p.write_bytes(b"partial")
    with outputs.OutputSet() as out:
        out.path(tmp_path / "a.bin").write_bytes(b"x")
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_write_error_names_the_destination(tmp_path):
    with pytest.raises(ConvertError) as info, outputs.OutputSet() as out:
        out.path(tmp_path / "a.bin")
        raise OSError(28, "No space left on device")
    assert str(info.value) == f"{tmp_path / 'a.bin'}: cannot be written: No space left on device"
    assert os.listdir(tmp_path) == []
