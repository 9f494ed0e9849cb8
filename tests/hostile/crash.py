"""Crash safety of writes: `ckpt convert` killed (SIGKILL) at random points while it
writes a large output, in every output format. After each kill the destination must be
absent, or, where it existed before and `--overwrite` was given, exactly as it was; and
no temporary file may be left in its directory. `run(directory, megabytes, kills)` is what
scripts/kill_writes.py and the suite call; it returns one row per output format."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# output format -> (source kind, destination name, extra options)
TARGETS = {
    "safetensors": ("flat", "out.safetensors", []),
    "sharded": ("flat", "model.safetensors", ["--max-shard-size", "{shard}"]),
    "torch": ("flat", "out.pt", []),
    "npz": ("flat", "out.npz", []),
    "flax": ("flat", "out.msgpack", []),
    "tf": ("flat", "ckpt", ["--to", "tf"]),
    "keras": ("keras", "out.weights.h5", []),
    "keras .keras": ("keras", "out.keras", []),
    "keras-h5": ("keras", "out.h5", []),
}


@dataclass
class Row:
    target: str
    megabytes: float
    seconds: float  # a whole conversion
    kills: int = 0  # runs killed while still running
    finished_first: int = 0  # runs that ended before their kill came
    committed: int = 0  # killed runs that had already put their whole output in place
    while_writing: int = 0  # kills that came while an output file was open
    problems: list[str] = field(default_factory=list)


def make_sources(directory: Path, megabytes: float) -> dict[str, Path]:
    """A flat safetensors file (written by safetensors) and a .keras archive (written by
    Keras 3) of about `megabytes` each."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width = 512
    layers = max(2, int(megabytes * 2**20 / (width * width * 4)))
    flat = directory / "flat.safetensors"
    save_file(
        {
            f"layer{i}/kernel": rng.standard_normal((width, width), np.float32)
            for i in range(layers)
        },
        flat,
    )
    code = (
        "import os, sys; os.environ.setdefault('KERAS_BACKEND', 'tensorflow');"
        "import keras; w, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3];"
        "m = keras.Sequential([keras.Input((w,))] + [keras.layers.Dense(w) for _ in range(n)]);"
        "m.save(out)"
    )
    archive = directory / "model.keras"
    subprocess.run(
        [sys.executable, "-c", code, str(width), str(layers), str(archive)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return {"flat": flat, "keras": archive}


def _state(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(directory.iterdir())
    }


def _command(
    source: Path, destination: Path, options: list[str], overwrite: bool, megabytes: float
) -> list[str]:
    shard = f"{max(1, int(megabytes / 4))}MB"
    return [
        sys.executable,
        "-m",
        "convert",
        "convert",
        str(source),
        str(destination),
        "-q",
        *[o.replace("{shard}", shard) for o in options],
    ] + (["--overwrite"] if overwrite else [])


def _same_output(after: dict, full: dict, before: dict) -> bool:
    """`after` is the whole output of a finished run (with what was there before and
    that output does not name: a set of fewer shards leaves the old ones). TF's
    `checkpoint` state file holds the time it was written (compared by presence), and a
    .keras archive its members' times (compared by size)."""
    for k in full:
        if k not in after:
            return False
        if k == "checkpoint":  # (its timestamps' digits vary: present is enough)
            continue
        if after[k][0] != full[k][0] or not (k.endswith(".keras") or after[k] == full[k]):
            return False
    return all(before.get(k) == after[k] for k in after if k not in full)


def _wait_for_output(pid: int, out: Path, seconds: float) -> bool:
    """Wait until process `pid` has a file open in `out` (its unnamed output shows in
    /proc as `out/#INODE (deleted)`): then it is writing. False if it never does."""
    deadline = time.monotonic() + seconds
    fds = Path(f"/proc/{pid}/fd")
    while time.monotonic() < deadline:
        try:
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(f"{out}/"):
                        return True
        except OSError:
            return False  # (it has ended)
        time.sleep(0.002)
    return False


def run(directory: Path, megabytes: float, kills: int, targets=None, seed: int = 14) -> list[Row]:
    sources = make_sources(directory / "sources", megabytes)
    old_sources = make_sources(directory / "old_sources", 0.5)  # what --overwrite replaces
    rng = random.Random(seed)
    rows = []
    for target in targets or TARGETS:
        kind, name, options = TARGETS[target]
        slug = target.replace(" ", "_")
        old = directory / f"{slug}.old"
        old.mkdir()
        subprocess.run(
            _command(old_sources[kind], old / name, options, False, 0.5),
            check=True,
            capture_output=True,
            timeout=600,
        )
        old_full = _state(old)
        out = directory / slug
        out.mkdir()
        start = time.monotonic()
        subprocess.run(
            _command(sources[kind], out / name, options, False, megabytes),
            check=True,
            capture_output=True,
            timeout=600,
        )
        row = Row(target, megabytes, time.monotonic() - start)
        new_full = _state(out)
        for i in range(kills):
            overwrite = i % 2 == 1  # every other run replaces an existing output
            shutil.rmtree(out)
            if overwrite:
                shutil.copytree(old, out)
            else:
                out.mkdir()
            before = old_full if overwrite else {}
            proc = subprocess.Popen(
                _command(sources[kind], out / name, options, overwrite, megabytes),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            began = time.monotonic()
            writing = _wait_for_output(proc.pid, out, row.seconds * 2)
            left = row.seconds - (time.monotonic() - began)
            time.sleep(rng.uniform(0.0, 0.95) * max(left, 0.02))
            alive = proc.poll() is None
            row.while_writing += alive and writing
            if alive:
                proc.send_signal(signal.SIGKILL)
                row.kills += 1
            else:
                row.finished_first += 1
            err = proc.communicate()[1].decode(errors="replace")
            if not alive and proc.returncode != 0:
                row.problems.append(f"run {i} failed (exit {proc.returncode}): {err.strip()}")
                continue
            after = _state(out)
            if after == before and alive:
                continue
            if _same_output(after, new_full, before):
                row.committed += alive  # (killed after its commit, before it exited)
                continue
            extra = sorted(set(after) - set(before))
            changed = sorted(k for k in before if after.get(k) != before[k])
            row.problems.append(
                f"run {i} ({'overwrite' if overwrite else 'new'}, "
                f"{'killed' if alive else 'ended'}): left {extra}, "
                f"changed {changed}"
            )
        rows.append(row)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        f"{'output':<14}{'MB':>6}{'run s':>7}{'killed':>8}{'while writing':>15}"
        f"{'after commit':>14}{'ended first':>13}{'problems':>10}"
    ]
    for r in rows:
        lines.append(
            f"{r.target:<14}{r.megabytes:>6.0f}{r.seconds:>7.2f}{r.kills:>8}"
            f"{r.while_writing:>15}{r.committed:>14}{r.finished_first:>13}"
            f"{len(r.problems):>10}"
        )
    return "\n".join(lines)


def full_disk(
    directory: Path, source: Path, name: str, options: list[str], limit_bytes: int
) -> tuple[int, str, list[str]]:
    """Convert into `directory` under a file size limit (RLIMIT_FSIZE, with SIGXFSZ
    ignored so that the write fails with EFBIG as on a full disk): (exit status, stderr,
    what is left in `directory`)."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        _command(source, directory / name, options, False, 64),
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=600,
    )
    return proc.returncode, proc.stderr, sorted(os.listdir(directory))
