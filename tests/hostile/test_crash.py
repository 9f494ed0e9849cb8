"""Crash safety of writes, in the suite's budget: a handful of SIGKILLs per output
format on 32 MB (scripts/kill_writes.py runs 22 per format on 256 MB), and a full
disk (RLIMIT_FSIZE) in every format: a one-line error, nothing left behind."""

from __future__ import annotations

import pytest

from . import crash


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return crash.make_sources(tmp_path_factory.mktemp("crash-sources"), 8)


def test_sigkill_during_a_write_leaves_nothing_or_the_old_output(tmp_path, capsys):
    rows = crash.run(tmp_path, 32, 2)
    with capsys.disabled():
        print("\n" + crash.table(rows))
    assert {r.target for r in rows} == set(crash.TARGETS)
    assert sum(r.kills for r in rows) >= len(rows)  # (most runs are killed mid-way)
    assert not [p for r in rows for p in r.problems]


@pytest.mark.parametrize("target", list(crash.TARGETS))
def test_a_full_disk_gives_one_line_and_leaves_nothing(sources, tmp_path, target):
    kind, name, options = crash.TARGETS[target]
    code, err, left = crash.full_disk(tmp_path / "out", sources[kind], name, options, 1 << 20)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "cannot be written" in lines[0] and str(tmp_path / "out") in lines[0], lines[0]
    assert left == []


def test_a_full_tmpfs_gives_one_line_and_leaves_nothing(sources, tmp_path):
    import os
    import subprocess
    import sys

    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "convert",
                "convert",
                str(sources["flat"]),
                str(mount / "out.safetensors"),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (
            f"ckpt: error: {mount / 'out.safetensors'}: cannot be written: No space left on device"
        )
        assert os.listdir(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)
