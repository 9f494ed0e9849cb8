#!/usr/bin/env python3
"""Conversion speed and memory, side by side with the pipelines people use today.

Builds synthetic checkpoints (cached in the work directory), then, in one run, times
each conversion as a fresh process and records its peak RSS:
- the floor: copying the same bytes;
- `ckpt convert` for TF -> torch, TF -> safetensors, torch -> safetensors,
  safetensors -> torch and Flax -> torch;
- the alternatives: TF reader + torch.save, TF reader + safetensors, torch.load(mmap) +
  safetensors save_file, safetensors load + torch.save, Flax msgpack_restore + torch.save;
- `ckpt ls` next to `tf.train.list_variables`;
- a port through rules (`keras-dense`): a Keras 3 `.weights.h5` of large Dense layers into a
  torch state dict with `--rules keras-torch --like`, by default and with `--strided`, next
  to loading it in Keras, transposing in NumPy and `torch.save` (and TF1 BERT into Hugging
  Face names in `bert-large`, both ways too);
- `ckpt --version` (start-up alone);
- batch conversion (`batch`, not in the default sets): 16 TF checkpoints of about 100 MB
  into safetensors with `ckpt batch -j 1` against `-j 2`, and on a 2-process Dask
  LocalCluster (one the bench starts and keeps, by its address; and `--scheduler local:2`,
  which starts its own).
Checks a sample of converted tensors against the source (through the real frameworks),
prints a table of wall time, ratio to the floor, ratio to the alternative and peak RSS,
and writes it to WORKDIR/results.md. Needs the test extras (scripts/test installs them).

    scripts/bench.py [--work DIR] [--sets bert-large,4gb,many-small,keras-dense,batch] [--repeat N]
                  [--ls-only] [--ckpt VENV/bin/ckpt]

`--ckpt` runs another install's `ckpt` command (a fresh `pip install` into a new venv, as a
user gets it; the frameworks stay in this one).
The results record the Python, numpy and ml_dtypes versions `ckpt` ran with, the kernel,
and whether `ckpt` was a fresh install or this source tree (it says so when it was not):
start-up depends on them (ml_dtypes 0.7 takes about 0.6 s to import where 0.5 takes
0.1 s). Each row gives the user and kernel CPU time beside the wall time: a copy that stays
in the kernel shows as sys time, Python's own work as user time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
CKPT = [PY, "-m", "convert"]  # the `ckpt` command (--ckpt: an installed one)
CKPT_PY = PY  # the interpreter it runs with
CKPT_ENV = ENV  # (for an installed package: without this tree on PYTHONPATH)


# -- synthetic checkpoints ----------------------------------------------------------------


def bert_shapes(layers: int, width: int = 1024) -> dict[str, tuple[int, ...]]:
    """BERT's TF1 variable names and shapes (BERT-large at 24 layers: 1.34 GB)."""
    ff = 4 * width
    shapes = {
        "bert/embeddings/word_embeddings": (30522, width),
        "bert/embeddings/position_embeddings": (512, width),
        "bert/embeddings/token_type_embeddings": (2, width),
        "bert/embeddings/LayerNorm/gamma": (width,),
        "bert/embeddings/LayerNorm/beta": (width,),
    }
    for i in range(layers):
        p = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            shapes[f"{p}/attention/self/{part}/kernel"] = (width, width)
            shapes[f"{p}/attention/self/{part}/bias"] = (width,)
        shapes[f"{p}/attention/output/dense/kernel"] = (width, width)
        shapes[f"{p}/attention/output/dense/bias"] = (width,)
        shapes[f"{p}/intermediate/dense/kernel"] = (width, ff)
        shapes[f"{p}/intermediate/dense/bias"] = (ff,)
        shapes[f"{p}/output/dense/kernel"] = (ff, width)
        shapes[f"{p}/output/dense/bias"] = (width,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}/{norm}/gamma"] = (width,)
            shapes[f"{p}/{norm}/beta"] = (width,)
    shapes["bert/pooler/dense/kernel"] = (width, width)
    shapes["bert/pooler/dense/bias"] = (width,)
    return shapes


def many_small_shapes(count: int = 20000) -> dict[str, tuple[int, ...]]:
    return {f"model/block_{i // 10}/layer_{i % 10}/kernel": (8, 8) for i in range(count)}


SETS = {
    "bert-large": lambda: bert_shapes(24),
    "4gb": lambda: bert_shapes(72),
    "many-small": many_small_shapes,
}
LARGEST_MIB = {"keras-dense": 64}  # the largest tensor, for the memory goal of a port


def data_path(prefix: Path) -> Path:
    return Path(f"{prefix}.data-00000-of-00001")


# This process stays small (no numpy, no convert): on Linux a child's ru_maxrss starts
# at the peak RSS of the process that spawned it, so every file is built in a child.
BUILD_TF = """
import ast, sys
import numpy as np
from pathlib import Path
from convert.formats.tf.bundle import data_path
from convert.formats.tf.bundle_writer import BundleWriter
prefix, shapes = Path(sys.argv[1]), ast.literal_eval(open(sys.argv[2]).read())
rng = np.random.default_rng(0)
writer = BundleWriter(Path(f"{prefix}.index"), data_path(prefix, 0, 1))
for key, shape in shapes.items():
    writer.add(key, rng.standard_normal(shape, dtype=np.float32))
writer.finish()
"""


def build_tf(prefix: Path, shapes: Mapping[str, tuple[int, ...]]) -> None:
    if Path(f"{prefix}.index").exists():
        return
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spec = prefix.parent / "shapes.txt"
    spec.write_text(repr(shapes))
    subprocess.run(python(BUILD_TF, prefix, spec), env=ENV, check=True)
    spec.unlink()


# Each builder runs in a child process: the frameworks stay out of this process.
BUILD_TORCH = """
import sys, torch, tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
torch.save({k.replace('/', '.'): torch.from_numpy(reader.get_tensor(k))
            for k in sorted(reader.get_variable_to_shape_map())}, sys.argv[2])
"""
BUILD_SAFETENSORS = """
import sys, torch
from safetensors.torch import save_file
save_file(torch.load(sys.argv[1], mmap=True, weights_only=True), sys.argv[2])
"""
BUILD_FLAX = """
import sys, torch
from flax.serialization import msgpack_serialize
tree = {}
for key, value in torch.load(sys.argv[1], mmap=True, weights_only=True).items():
    node = tree
    *scopes, leaf = key.split('.')
    for s in scopes:
        node = node.setdefault(s, {})
    node[leaf] = value.numpy()
open(sys.argv[2], 'wb').write(msgpack_serialize(tree))
"""

# The pipelines people use today.
TF_TO_TORCH = """
import sys, torch, tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
torch.save({k.replace('/', '.'): torch.from_numpy(reader.get_tensor(k))
            for k in reader.get_variable_to_shape_map()}, sys.argv[2])
"""
TF_TO_SAFETENSORS = """
import sys, tensorflow as tf
from safetensors.numpy import save_file
reader = tf.train.load_checkpoint(sys.argv[1])
save_file({k.replace('/', '.'): reader.get_tensor(k)
           for k in reader.get_variable_to_shape_map()}, sys.argv[2])
"""
TORCH_TO_SAFETENSORS = """
import sys, torch
from safetensors.torch import save_file
save_file(torch.load(sys.argv[1], mmap=True, weights_only=True), sys.argv[2])
"""
SAFETENSORS_TO_TORCH = """
import sys, torch
from safetensors.torch import load_file
torch.save(load_file(sys.argv[1]), sys.argv[2])
"""
FLAX_TO_TORCH = """
import sys, torch
from flax.serialization import msgpack_restore
from flax.traverse_util import flatten_dict
tree = msgpack_restore(open(sys.argv[1], 'rb').read())
torch.save({'.'.join(k): torch.from_numpy(v) for k, v in flatten_dict(tree).items()},
           sys.argv[2])
"""
TF_LIST = """
import sys, tensorflow as tf
for key, shape in tf.train.list_variables(sys.argv[1]):
    print(key, shape)
"""
COPY = "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])"

# What the Hugging Face conversion of Google's BERT does: TF's reader, renames, transposes.
BERT_TF1_TO_HF = """
import re, sys, numpy as np, torch, tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
state = {}
for name in reader.get_variable_to_shape_map():
    if name.endswith(('adam_m', 'adam_v')) or name == 'global_step':
        continue
    value = reader.get_tensor(name)
    key = re.sub(r'layer_(\\d+)', r'layer.\\1', name).replace('/', '.')
    if key.endswith('.kernel'):
        key, value = key[:-len('kernel')] + 'weight', np.ascontiguousarray(value.T)
    elif key.endswith('_embeddings'):
        key += '.weight'
    key = key.replace('LayerNorm.gamma', 'LayerNorm.weight').replace('LayerNorm.beta',
                                                                     'LayerNorm.bias')
    state[key] = torch.from_numpy(value)
torch.save(state, sys.argv[2])
"""
CHECK_BERT = """
import sys, numpy as np, torch, tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
out = torch.load(sys.argv[2], mmap=True, weights_only=True)
for i in (0, 23):
    tf1 = f'bert/encoder/layer_{i}/attention/self/query/kernel'
    hf = f'bert.encoder.layer.{i}.attention.self.query.weight'
    assert np.array_equal(reader.get_tensor(tf1).T, out[hf].numpy())
assert np.array_equal(reader.get_tensor('bert/embeddings/word_embeddings'),
                      out['bert.embeddings.word_embeddings.weight'].numpy())
"""

# The rules set: KERAS_LAYERS Dense layers of KERAS_WIDTH (16 x 4096^2 float32: 1.07 GB).
KERAS_WIDTH, KERAS_LAYERS = 4096, 16
KERAS_MODEL = """
import os, sys
os.environ['KERAS_BACKEND'] = 'tensorflow'
import numpy as np, keras
def model(width, layers):
    return keras.Sequential([keras.Input((width,))]
                            + [keras.layers.Dense(width) for _ in range(layers)])
"""
BUILD_KERAS = (
    KERAS_MODEL
    + """
m = model(int(sys.argv[2]), int(sys.argv[3]))
rng = np.random.default_rng(0)
for v in m.weights:
    v.assign(rng.standard_normal(v.shape, dtype=np.float32))
m.save_weights(sys.argv[1])
"""
)
BUILD_LINEAR_SKELETON = """
import sys, torch
width, layers = int(sys.argv[2]), int(sys.argv[3])
torch.save(torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
           .state_dict(), sys.argv[1])
"""
KERAS_TO_TORCH = (
    KERAS_MODEL
    + """
import torch
m = model(int(sys.argv[3]), int(sys.argv[4]))
m.load_weights(sys.argv[1])
state = {}
for i, layer in enumerate(m.layers):
    kernel, bias = layer.get_weights()
    state[f'{i}.weight'] = torch.from_numpy(np.ascontiguousarray(kernel.T))
    state[f'{i}.bias'] = torch.from_numpy(bias)
torch.save(state, sys.argv[2])
"""
)
CHECK_PORT = """
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[3])
import convert
source = {e.path: e.tensor for e in convert.load(sys.argv[1]).entries()}
loaded = torch.load(sys.argv[2], mmap=True, weights_only=True)
for i in (0, int(sys.argv[4]) - 1):
    group = ('layers', 'dense' if i == 0 else f'dense_{i}', 'vars')
    assert np.array_equal(source[(*group, '0')].read().T, loaded[f'{i}.weight'].numpy())
    assert np.array_equal(source[(*group, '1')].read(), loaded[f'{i}.bias'].numpy())
"""


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float  # wall
    peak_mib: float
    user: float = 0.0  # CPU seconds of the process, in user space and in the kernel
    sys: float = 0.0


def measure(cmd: list[str], repeat: int, output: Path | None = None) -> Run:
    """Best wall time of `repeat` fresh processes, and the peak RSS of that process."""
    return measure_side_by_side([(cmd, output)], repeat)[0]


def measure_side_by_side(jobs: list[tuple[list[str], Path | None]], repeat: int) -> list[Run]:
    """The best run of each command, taking turns (A B A B ...): this machine's write
    throughput drifts, and a drift then reaches both sides of a ratio alike.

    Every run writes a new output (removed first) after a sync: replacing a file (ext4
    then flushes the new one to disk at rename or close) or writing back the previous
    run's data is no part of what is measured."""
    best: list[Run | None] = [None] * len(jobs)
    for _ in range(repeat):
        for i, (cmd, output) in enumerate(jobs):
            run = _run_once(cmd, output)
            held = best[i]
            if held is None or run.seconds < held.seconds:
                best[i] = run
    return [run for run in best if run is not None]


def _run_once(cmd: list[str], output: Path | None) -> Run:
    if output is not None and output.is_dir():  # (a batch's output folder)
        shutil.rmtree(output)
    elif output is not None:
        output.unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    env = CKPT_ENV if cmd[: len(CKPT)] == CKPT else ENV
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    assert proc.stderr is not None  # (stderr=PIPE)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return Run(seconds, usage.ru_maxrss / 1024, usage.ru_utime, usage.ru_stime)


def python(script: str, *args: Path | str) -> list[str]:
    return [PY, "-c", script, *map(str, args)]


def ckpt(*args: str | Path) -> list[str]:
    return [*CKPT, *map(str, args)]


VERSIONS = """
import importlib.metadata as m, os, platform, convert
print(f"Python {platform.python_version()}, numpy {m.version('numpy')}, ml_dtypes "
      f"{m.version('ml_dtypes')}, convert from {os.path.dirname(convert.__file__)}")
"""


def ckpt_versions() -> str:
    """What `ckpt` ran with: Python, numpy, ml_dtypes, and where the package came from."""
    return subprocess.run(
        [CKPT_PY, "-c", VERSIONS], env=CKPT_ENV, check=True, cwd="/", capture_output=True, text=True
    ).stdout.strip()


def install_kind(ckpt_command: Path | None) -> str:
    """Whether `ckpt` ran from a fresh install (a venv of its own, made by `pip install`,
    as a user gets it) or from this source tree: start-up differs between the two."""
    if ckpt_command is None:
        return (
            "NOT a fresh install: ckpt ran from this source tree (PYTHONPATH) in the "
            "bench's environment; pass --ckpt VENV/bin/ckpt after `python -m venv VENV "
            "&& VENV/bin/pip install .` to time one"
        )
    venv = ckpt_command.resolve().parent.parent
    made = venv / "pyvenv.cfg"
    age = (
        f"made {(time.time() - made.stat().st_mtime) / 3600:.1f} h before this run"
        if made.exists()
        else "no pyvenv.cfg: not a venv"
    )
    return f"an installed ckpt, {ckpt_command} (venv {venv}: {age})"


# -- checking -----------------------------------------------------------------------------

CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, sys.argv[4])
import convert
source = {e.path: e.tensor for e in convert.load(sys.argv[1]).entries()}
keys = sorted(source)[:: max(1, len(source) // 7)]
out, fmt = sys.argv[2], sys.argv[3]
if fmt == 'torch':
    loaded = torch.load(out, mmap=True, weights_only=True)
    get = lambda k: loaded[k].numpy()
else:
    from safetensors import safe_open
    f = safe_open(out, 'np')
    get = f.get_tensor
for path in keys:
    theirs = get('.'.join(path))
    assert np.array_equal(source[path].read(), theirs), path
print(len(keys))
"""


def check(source: Path, output: Path, fmt: str) -> None:
    subprocess.run(
        [PY, "-c", CHECK, str(source), str(output), fmt, str(ROOT)],
        env=ENV,
        check=True,
        stdout=subprocess.DEVNULL,
    )


# -- the run ------------------------------------------------------------------------------


@dataclass
class Row:
    dataset: str
    task: str
    ours: Run
    floor: Run | None
    alternative: Run | None
    alternative_name: str


def ls_rows(name: str, tf_prefix: Path, others: list[tuple[str, Path]], repeat: int) -> list[Row]:
    print(f"  {name}: ls", flush=True)
    rows = [
        Row(name, "ckpt --version", measure(ckpt("--version"), repeat), None, None, ""),
        Row(
            name,
            "ls (TF)",
            measure(ckpt("ls", tf_prefix), repeat),
            None,
            measure(python(TF_LIST, tf_prefix), 1),
            "tf.train.list_variables",
        ),
    ]
    for label, path in others:
        rows.append(Row(name, f"ls ({label})", measure(ckpt("ls", path), repeat), None, None, ""))
    return rows


def run_rules_set(name: str, work: Path, repeat: int) -> list[Row]:
    """A Keras 3 file of large Dense layers into torch through rules, with a skeleton."""
    base = work / name
    base.mkdir(parents=True, exist_ok=True)
    source, skeleton = base / "model.weights.h5", base / "skeleton.pt"
    dims = [str(KERAS_WIDTH), str(KERAS_LAYERS)]
    if not source.exists():
        subprocess.run(python(BUILD_KERAS, source, *dims), env=ENV, check=True)
    if not skeleton.exists():
        subprocess.run(python(BUILD_LINEAR_SKELETON, skeleton, *dims), env=ENV, check=True)
    out = base / "out"
    out.mkdir(exist_ok=True)
    print(f"  {name}: Keras -> torch (rules; default and --strided)", flush=True)

    def port(dst: Path, *extra: str) -> list[str]:
        return ckpt(
            "convert", source, dst, "--rules", "keras-torch", "--like", skeleton, "--quiet", *extra
        )

    floor_run, ours, strided = measure_side_by_side(
        [
            (python(COPY, source, out / "copy"), out / "copy"),
            (port(out / "x.pt"), out / "x.pt"),
            (port(out / "xs.pt", "--strided"), out / "xs.pt"),
        ],
        repeat,
    )
    for output in ("x.pt", "xs.pt"):
        subprocess.run(
            [PY, "-c", CHECK_PORT, str(source), str(out / output), str(ROOT), str(KERAS_LAYERS)],
            env=ENV,
            check=True,
        )
    theirs = measure(python(KERAS_TO_TORCH, source, out / "alt.pt", *dims), 1, out / "alt.pt")
    shutil.rmtree(out)
    alt_name = "Keras load_weights + NumPy .T + torch.save"
    return [
        Row(name, "Keras -> torch (rules, --like)", ours, floor_run, theirs, alt_name),
        Row(
            name, "Keras -> torch (rules, --like, --strided)", strided, floor_run, theirs, alt_name
        ),
    ]


def bert_port_rows(name: str, prefix: Path, out: Path, raw: Path, repeat: int) -> list[Row]:
    """Google's TF1 BERT names into Hugging Face's, next to what the HF script does: the
    default output, and `--strided` (kernels stored untouched, with swapped strides)."""
    print(f"  {name}: TF1 BERT -> HF (rules; default and --strided)", flush=True)

    def port(dst: Path, *extra: str) -> list[str]:
        return ckpt("convert", prefix, dst, "--rules", "bert-tf1-hf", "--quiet", *extra)

    floor_run, ours, strided = measure_side_by_side(
        [
            (python(COPY, raw, out / "copy"), out / "copy"),
            (port(out / "hf.bin"), out / "hf.bin"),
            (port(out / "hfs.bin", "--strided"), out / "hfs.bin"),
        ],
        repeat,
    )
    for output in ("hf.bin", "hfs.bin"):
        subprocess.run([PY, "-c", CHECK_BERT, str(prefix), str(out / output)], env=ENV, check=True)
    theirs = measure(python(BERT_TF1_TO_HF, prefix, out / "alt-hf.bin"), 1, out / "alt-hf.bin")
    alt_name = "TF reader + NumPy .T + torch.save"
    return [
        Row(name, "TF1 BERT -> HF (rules)", ours, floor_run, theirs, alt_name),
        Row(name, "TF1 BERT -> HF (rules, --strided)", strided, floor_run, theirs, alt_name),
    ]


# The batch set: BATCH_COUNT TF checkpoints of 25 x 4 MiB float32 tensors (105 MB each).
BATCH_COUNT = 16
BATCH_SHAPES = {f"model/layer_{i}/kernel": (1024, 1024) for i in range(25)}
COPY_ALL = """
import os, shutil, sys
for a, b in zip(sys.argv[1::2], sys.argv[2::2]):
    os.makedirs(os.path.dirname(b), exist_ok=True)
    shutil.copyfile(a, b)
"""
# The machine's headroom for two processes: CPU-bound Python, two side by side or in turn
# (2x on two free cores, 1x when others already keep both busy).
HEADROOM = """
import subprocess, sys
spin = [sys.executable, "-c", "sum(range(3 * 10**7))"]
if sys.argv[1] == "parallel":
    for p in [subprocess.Popen(spin) for _ in range(2)]:
        p.wait()
else:
    for _ in range(2):
        subprocess.run(spin)
"""
DASK_CLUSTER = """
import sys, time, distributed
cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # (until the bench closes our input)
cluster.close()
"""


def batch_sources(work: Path) -> list[Path]:
    prefixes = [work / "batch" / "sources" / f"model-{i:02d}" for i in range(BATCH_COUNT)]
    for prefix in prefixes:
        build_tf(prefix, BATCH_SHAPES)
    return prefixes


def run_batch_set(name: str, work: Path, repeat: int) -> list[Row]:
    """`ckpt batch` of 16 checkpoints: one worker against two, and on Dask."""
    prefixes = batch_sources(work)
    out = work / name / "out"
    sources = [str(p) for p in prefixes]
    data = [data_path(p) for p in prefixes]
    copies = [x for i, d in enumerate(data) for x in (d, out / f"copy{i}")]

    def batch(*extra: str) -> list[str]:
        return ckpt("batch", *sources, "--out-dir", out, "--to", "safetensors", *extra)

    print(f"  {name}: {BATCH_COUNT} x TF -> safetensors, -j 1, -j 2, Dask", flush=True)
    cluster = subprocess.Popen(
        [PY, "-c", DASK_CLUSTER], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert cluster.stdin is not None and cluster.stdout is not None  # (both PIPE)
    try:
        address = cluster.stdout.readline().strip()
        # the floor: the same bytes copied by one process
        floor_run = measure(python(COPY_ALL, *copies), repeat, out)
        one, two, dask, dask_local, turns, side_by_side = measure_side_by_side(
            [
                (batch("-j", "1"), out),
                (batch("-j", "2"), out),
                (batch("--executor", "dask", "--scheduler", address), out),
                (batch("--executor", "dask", "--scheduler", "local:2"), out),
                ([PY, "-c", HEADROOM, "turns"], None),
                ([PY, "-c", HEADROOM, "parallel"], None),
            ],
            repeat,
        )
    finally:
        cluster.stdin.close()
        cluster.wait(60)
    for prefix in (prefixes[0], prefixes[-1]):
        check(prefix, out / f"{prefix.name}.safetensors", "safetensors")
    shutil.rmtree(out)
    task = f"{BATCH_COUNT} x TF -> safetensors"
    return [
        Row(name, f"{task}, batch -j 1", one, floor_run, None, ""),
        Row(name, f"{task}, batch -j 2", two, floor_run, one, "ckpt batch -j 1"),
        Row(
            name,
            f"{task}, Dask LocalCluster(2) by address",
            dask,
            floor_run,
            two,
            "ckpt batch -j 2",
        ),
        Row(
            name,
            f"{task}, Dask --scheduler local:2 (starts it)",
            dask_local,
            floor_run,
            two,
            "ckpt batch -j 2",
        ),
        Row(
            name,
            "control: 2 CPU-bound Python processes side by side",
            side_by_side,
            None,
            turns,
            "the same two in turn",
        ),
    ]


def run_set(name: str, work: Path, repeat: int, ls_only: bool = False) -> list[Row]:
    if name == "keras-dense":
        return [] if ls_only else run_rules_set(name, work, repeat)
    if name == "batch":
        return [] if ls_only else run_batch_set(name, work, repeat)
    shapes = SETS[name]()
    base = work / name
    tf_prefix = base / "model.ckpt"
    build_tf(tf_prefix, shapes)
    if ls_only:
        return ls_rows(name, tf_prefix, [], repeat)
    torch_file, st_file, flax_file = (
        base / "model.pt",
        base / "model.safetensors",
        base / "model.msgpack",
    )
    if not torch_file.exists():
        subprocess.run(python(BUILD_TORCH, tf_prefix, torch_file), env=ENV, check=True)
    if not st_file.exists():
        subprocess.run(python(BUILD_SAFETENSORS, torch_file, st_file), env=ENV, check=True)
    if not flax_file.exists():
        subprocess.run(python(BUILD_FLAX, torch_file, flax_file), env=ENV, check=True)
    out = base / "out"
    out.mkdir(exist_ok=True)
    tf_data = data_path(tf_prefix)
    rows: list[Row] = []

    tasks = [
        ("TF -> torch", tf_prefix, "x.pt", "torch", TF_TO_TORCH, "TF reader + torch.save", tf_data),
        (
            "TF -> safetensors",
            tf_prefix,
            "x.safetensors",
            "safetensors",
            TF_TO_SAFETENSORS,
            "TF reader + safetensors",
            tf_data,
        ),
        (
            "torch -> safetensors",
            torch_file,
            "x.safetensors",
            "safetensors",
            TORCH_TO_SAFETENSORS,
            "torch.load(mmap) + save_file",
            torch_file,
        ),
        (
            "safetensors -> torch",
            st_file,
            "x.pt",
            "torch",
            SAFETENSORS_TO_TORCH,
            "load_file + torch.save",
            st_file,
        ),
        (
            "Flax -> torch",
            flax_file,
            "x.pt",
            "torch",
            FLAX_TO_TORCH,
            "msgpack_restore + torch.save",
            flax_file,
        ),
    ]
    if name == "bert-large":
        rows += bert_port_rows(name, tf_prefix, out, tf_data, repeat)
    for task, src, dst, fmt, alternative, alt_name, raw in tasks:
        print(f"  {name}: {task}", flush=True)
        floor_run, ours = measure_side_by_side(
            [
                (python(COPY, raw, out / "copy"), out / "copy"),
                (ckpt("convert", src, out / dst, "--quiet"), out / dst),
            ],
            repeat,
        )
        check(src, out / dst, fmt)
        theirs = measure(python(alternative, src, out / f"alt-{dst}"), 1, out / f"alt-{dst}")
        rows.append(Row(name, task, ours, floor_run, theirs, alt_name))
    rows += ls_rows(
        name,
        tf_prefix,
        [("torch", torch_file), ("safetensors", st_file), ("Flax", flax_file)],
        repeat,
    )
    shutil.rmtree(out)
    return rows


def table(rows: list[Row], sizes: dict[str, float]) -> str:
    head = (
        "| checkpoint | task | ckpt (s) | ckpt user + sys (s) | x floor | floor user + "
        "sys (s) | alternative | alt (s) | x faster | ckpt peak RSS | alt peak RSS |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        floor = f"{r.ours.seconds / r.floor.seconds:.2f}" if r.floor else "-"
        alt = r.alternative
        floor_cpu = f"{r.floor.user:.2f} + {r.floor.sys:.2f}" if r.floor else "-"
        lines.append(
            f"| {r.dataset} ({sizes[r.dataset]:.2f} GB) | {r.task} | {r.ours.seconds:.2f} | "
            f"{r.ours.user:.2f} + {r.ours.sys:.2f} | {floor} | {floor_cpu} | "
            f"{r.alternative_name or '-'} | {f'{alt.seconds:.2f}' if alt else '-'} | "
            f"{f'{alt.seconds / r.ours.seconds:.1f}' if alt else '-'} | "
            f"{r.ours.peak_mib:.0f} MiB | {f'{alt.peak_mib:.0f} MiB' if alt else '-'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, kernel "
        f"{platform.release()}, Python {platform.python_version()}, load {load:.1f} at "
        f"start, {time.strftime('%Y-%m-%d')}"
    )


def use_repo_venv() -> None:
    """Run under the project's .venv (scripts/test fills it with the frameworks)."""
    venv = ROOT / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), __file__, *sys.argv[1:]])


def main() -> None:
    global CKPT, CKPT_PY, CKPT_ENV
    use_repo_venv()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--sets", default="bert-large,4gb,many-small,keras-dense")
    # (10: on a VM that pages out idle memory and hands freed pages back to its host, one
    # copy's kernel time varies up to 2x from run to run, and the best of 4 often missed
    # the quiet moments; the alternatives, which run once, cost most of the time anyway)
    parser.add_argument(
        "--repeat", type=int, default=10, help="runs of each ckpt command and of the floor"
    )
    parser.add_argument(
        "--ls-only", action="store_true", help="only `ckpt ls` next to tf.train.list_variables"
    )
    parser.add_argument(
        "--ckpt", type=Path, help="time this installed ckpt command (VENV/bin/ckpt) instead"
    )
    args = parser.parse_args()
    if args.ckpt:
        CKPT, CKPT_PY = [str(args.ckpt)], str(args.ckpt.parent / "python")
        CKPT_ENV = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    # Byte-compile the package first, as pip does on install: with PYTHONDONTWRITEBYTECODE
    # set, every timed process would otherwise compile the sources again.
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "convert")], check=True)
    rows: list[Row] = []
    sizes: dict[str, float] = {}
    for name in args.sets.split(","):
        rows += run_set(name, args.work, args.repeat, args.ls_only)
        prefix = args.work / name / "model.ckpt"
        source = (
            data_path(prefix) if name != "keras-dense" else args.work / name / "model.weights.h5"
        )
        if name == "batch":
            sizes[name] = sum(data_path(p).stat().st_size for p in batch_sources(args.work)) / 1e9
        elif source.exists():
            sizes[name] = source.stat().st_size / 1e9
    text = (
        f"Machine: {machine()}\nckpt ran with: {ckpt_versions()}\n"
        f"Install: {install_kind(args.ckpt)}\n\n"
        f"{table(rows, sizes)}\n\n"
        "Wall time of a fresh process (best of the ckpt runs; one run of each "
        "alternative), with the CPU time of that run in user space and in the kernel, "
        "warm page cache, each writing a new file after a sync; floor = copying the "
        "source's data file (shutil.copyfile: sendfile, in the kernel); peak RSS of that "
        "process.\n"
    )
    many = [r for r in rows if r.dataset == "many-small" and r.task != "ckpt --version"]
    for r in many:
        count = len(many_small_shapes())
        text += f"\nmany-small {r.task}: {count / r.ours.seconds:,.0f} tensors/s"
    print(text)
    (args.work / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
