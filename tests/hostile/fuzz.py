"""Fuzz targets, one per reader: hypothesis damages a seed file (written by the real
framework, see seeds.py) with flips, overwritten integers, cuts, insertions and deletions,
then the reader lists the result and reads every tensor. The only exception allowed is a
ConvertError; anything else (a crash, a MemoryError under the address-space limit, an
answer slower than `TIMEOUT` seconds) is a finding, saved with the damaged bytes.

`run(fmt, seeds_dir, seconds, findings_dir)` is what scripts/fuzz.py and the suite call."""

from __future__ import annotations

import faulthandler
import json
import resource
import shutil
import signal
import struct
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from convert.core import registry
from convert.core.errors import ConvertError

TIMEOUT = 5  # seconds an answer may take
# The file of each seed that is damaged (the rest of its set is copied as it is).
TARGETS = {
    "tf": [("tf", "tf/ckpt.index", "tf/ckpt"), ("tf", "tf/ckpt.data-00000-of-00001", "tf/ckpt")],
    "safetensors": [("safetensors", "model.safetensors", None)],
    "sharded": [
        ("sharded", "sharded/model.safetensors.index.json", None),
        (
            "sharded",
            "sharded/model-00002-of-00002.safetensors",
            "sharded/model.safetensors.index.json",
        ),
        ("sharded_bin", "sharded_bin/pytorch_model.bin.index.json", None),
    ],
    "torch": [("torch", "model.pt", None), ("torch", "legacy.pt", None)],
    "npz": [("npz", "arrays.npz", None), ("npz", "compressed.npz", None)],
    "flax": [("flax", "model.msgpack", None)],
    "keras": [("keras", "model.weights.h5", None), ("keras", "model.keras", None)],
    "keras-h5": [("keras-h5", "legacy_weights.h5", None), ("keras-h5", "legacy_full.h5", None)],
}
FORMATS = tuple(TARGETS)
_INTS = [
    0,
    1,
    7,
    13,
    255,
    2**16 - 1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**40,
    2**62,
    2**63 - 1,
    2**64 - 1,
]


class Timeout(Exception):
    pass


@dataclass
class Stats:
    executions: int = 0
    refused: int = 0
    accepted: int = 0
    findings: list[dict] = field(default_factory=list)


_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("byte"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(
        st.just("int"), st.integers(0, 2**20), st.sampled_from([1, 2, 4, 8]), st.sampled_from(_INTS)
    ),
    st.tuples(st.just("cut"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 256)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        if not buf:
            break
        pos = op[1] % len(buf)
        if op[0] == "flip":
            buf[pos] ^= 1 << op[2]
        elif op[0] == "byte":
            buf[pos] = op[2]
        elif op[0] == "int":
            width, value = op[2], op[3] % (1 << (8 * op[2]))
            buf[pos : pos + width] = value.to_bytes(width, "little")
        elif op[0] == "cut":
            del buf[pos:]
        elif op[0] == "insert":
            buf[pos:pos] = op[2]
        elif op[0] == "delete":
            del buf[pos : pos + op[2]]
    return bytes(buf)


def read_everything(fmt: str, path: Path) -> int:
    """List `path` as `fmt` and read every tensor's data; the number of tensors."""
    graph = registry.get(fmt).read(path)
    entries = graph.entries()
    for entry in entries:
        entry.tensor.read()
    return len(entries)


def _on_alarm(signum, frame):
    raise Timeout(f"no answer within {TIMEOUT} s")


def _limit_memory(extra: int = 2 << 30) -> None:
    """Cap the address space at what it is now plus `extra`: a reader that believes a
    lying size fails with MemoryError (a finding) instead of taking the machine."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def run(
    fmt: str,
    seeds_dir: Path,
    seconds: float,
    findings_dir: Path | None = None,
    examples_per_round: int = 200,
) -> Stats:
    stats = Stats()
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{fmt}-"))
    old = signal.signal(signal.SIGALRM, _on_alarm)
    soft_as = resource.getrlimit(resource.RLIMIT_AS)
    _limit_memory()
    try:
        deadline = time.monotonic() + seconds
        round_no = 0
        while time.monotonic() < deadline:
            for seed_dir, target, read_as in TARGETS[fmt]:
                _round(
                    fmt,
                    seeds_dir,
                    seed_dir,
                    target,
                    read_as,
                    work / str(round_no),
                    stats,
                    findings_dir,
                    examples_per_round,
                    deadline,
                )
                round_no += 1
                if time.monotonic() >= deadline:
                    break
    finally:
        resource.setrlimit(resource.RLIMIT_AS, soft_as)
        signal.signal(signal.SIGALRM, old)
        shutil.rmtree(work, ignore_errors=True)
    return stats


def _round(fmt, seeds_dir, seed_dir, target, read_as, work, stats, findings_dir, n, deadline):
    del seed_dir
    original = (seeds_dir / target).read_bytes()
    top = Path(target).parts[0] if len(Path(target).parts) > 1 else None
    work.mkdir(parents=True)
    if top:  # the whole set the damaged file belongs to
        shutil.copytree(seeds_dir / top, work / top)
    damaged_path = work / target
    input_path = work / (read_as or target)

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_op, min_size=1, max_size=6))
    def one(ops):
        if time.monotonic() >= deadline:
            return
        data = mutate(original, ops)
        damaged_path.write_bytes(data)
        stats.executions += 1
        signal.alarm(TIMEOUT)
        # A hang inside a C library (libhdf5) never returns to Python for the alarm:
        # then the process ends with every thread's stack, naming the damaged file.
        faulthandler.dump_traceback_later(3 * TIMEOUT, exit=True)
        try:
            read_everything(fmt, input_path)
            stats.accepted += 1
        except ConvertError:
            stats.refused += 1
        except Exception as exc:  # noqa: BLE001  (every other exception is the finding)
            _record(stats, findings_dir, fmt, target, data, exc)
        finally:
            signal.alarm(0)
            faulthandler.cancel_dump_traceback_later()

    one()


def _record(
    stats: Stats, findings_dir: Path | None, fmt: str, target: str, data: bytes, exc: BaseException
) -> None:
    where = traceback.extract_tb(exc.__traceback__)[-1]
    signature = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
    finding = {
        "format": fmt,
        "file": target,
        "signature": signature,
        "error": f"{type(exc).__name__}: {exc}"[:300],
    }
    if any(f["signature"] == signature for f in stats.findings):
        return
    stats.findings.append(finding)
    if findings_dir is not None:
        findings_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{fmt}-{len(stats.findings)}"
        (findings_dir / f"{stem}{''.join(Path(target).suffixes) or '.bin'}").write_bytes(data)
        (findings_dir / f"{stem}.json").write_text(
            json.dumps({**finding, "traceback": traceback.format_exception(exc)}, indent=1)
        )


def pack_int(value: int, width: int) -> bytes:
    return struct.pack({1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width], value)
