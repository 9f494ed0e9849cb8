#!/usr/bin/env python3
"""Peak memory of reading and converting a Flax msgpack checkpoint, next to Flax's own restore.

Builds a ~300 MB file in the layout `flax.serialization.to_bytes` writes (with numpy and
msgpack only), then runs each task in a fresh subprocess and reports that child's peak
resident set size (ru_maxrss from os.wait4), with the ratio to the file size. Baselines
(a process that only imports convert, or flax) show what the interpreter itself costs.
On Linux a child's ru_maxrss starts at its parent's peak (exec keeps the high-water mark),
so this parent imports nothing heavy and builds the file in a child of its own.

    scripts/bench_flax_memory.py [--mib 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(path: Path, mib: int) -> None:
    """{"params": {"layer_i": {"kernel": f32[1024, 2048], "bias": f32[2048]}}}."""
    import msgpack
    import numpy as np

    rng = np.random.default_rng(0)
    layers = max(1, round(mib / 8))  # each kernel is 8 MiB
    packer = msgpack.Packer(use_bin_type=True)

    def ext(array: np.ndarray) -> bytes:
        payload = msgpack.packb((array.shape, array.dtype.name, array.tobytes()), use_bin_type=True)
        return packer.pack(msgpack.ExtType(1, payload))

    with open(path, "wb") as f:
        f.write(packer.pack_map_header(1) + packer.pack("params"))
        f.write(packer.pack_map_header(layers))
        for i in range(layers):
            kernel = rng.standard_normal((1024, 2048), dtype=np.float32)
            bias = np.zeros(2048, np.float32)
            f.write(packer.pack(f"layer_{i}") + packer.pack_map_header(2))
            f.write(packer.pack("kernel") + ext(kernel) + packer.pack("bias") + ext(bias))


def peak_rss(args: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of one fresh child process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(args)} failed:\n{err.read().decode(errors='replace')}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start  # Linux: KiB


def use_repo_venv() -> None:
    """Run under the project's .venv (it has convert, msgpack, numpy and flax)."""
    venv = ROOT / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), __file__, *sys.argv[1:]])


def main() -> None:
    use_repo_venv()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=300, help="file size to build (MiB)")
    parser.add_argument("--keep", type=Path, help="build in this directory and keep it")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.build_only:
        build(opts.build_only, opts.mib)
        return
    py = sys.executable
    has_flax = importlib.util.find_spec("flax") is not None
    with tempfile.TemporaryDirectory() as scratch:
        folder = opts.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        src, npz, back = folder / "big.msgpack", folder / "big.npz", folder / "back.msgpack"
        for stale in (npz, back):
            stale.unlink(missing_ok=True)
        subprocess.run([py, __file__, "--mib", str(opts.mib), "--build-only", str(src)], check=True)
        size = src.stat().st_size
        read_all = (
            "import sys, convert\n"
            "for entry in convert.load(sys.argv[1]).entries():\n"
            "    array = entry.tensor.read()\n"
            "    del array\n"
        )
        tasks = [
            ("baseline: import convert", [py, "-c", "import convert.cli, convert.formats"]),
            ("(a) ckpt ls", [py, "-m", "convert", "ls", str(src)]),
            ("(b) read every tensor", [py, "-c", read_all, str(src)]),
            (
                "(c) convert msgpack -> npz",
                [py, "-m", "convert", "convert", "-q", str(src), str(npz)],
            ),
            (
                "(c) convert npz -> msgpack",
                [py, "-m", "convert", "convert", "-q", str(npz), str(back)],
            ),
        ]
        if has_flax:
            restore = (
                "import sys\nfrom flax import serialization\n"
                "with open(sys.argv[1], 'rb') as f:\n"
                "    tree = serialization.msgpack_restore(f.read())\n"
            )
            tasks += [
                ("baseline: import flax", [py, "-c", "from flax import serialization"]),
                ("(d) flax msgpack_restore", [py, "-c", restore, str(src)]),
            ]
        print(
            f"file: {size / 2**20:.1f} MiB, largest tensor 8.0 MiB, "
            f"{round(opts.mib / 8) * 2} tensors"
        )
        print(
            f"{'task':<30} {'peak RSS':>10} {'- baseline':>11} {'peak/file':>10} "
            f"{'(peak-base)/file':>17} {'time':>7}"
        )
        baseline = 0
        for name, args in tasks:
            rss, seconds = peak_rss(args)
            if name.startswith("baseline"):
                baseline = rss
            extra = rss - baseline
            print(
                f"{name:<30} {rss / 2**20:>7.0f} MiB {extra / 2**20:>7.0f} MiB "
                f"{rss / size:>10.2f} {extra / size:>17.2f} {seconds:>6.1f}s"
            )
        same = filecmp.cmp(src, back, shallow=False)
        print(f"msgpack -> npz -> msgpack gives the same bytes: {'yes' if same else 'NO'}")
        if not has_flax:
            print("flax is not installed: no comparison with msgpack_restore")


if __name__ == "__main__":
    main()
