"""`ckpt batch`: sources written by the real frameworks, converted in worker processes,
failures isolated, resumable, from a manifest, and on a Dask LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, listing, run_cli

from .conftest import assert_same_values, read_safetensors, torch_source

ORDER = ("torch", "flax", "tf", "broken")


def _batch(*args) -> tuple[int, list[dict], str]:
    result = run_cli("batch", *args)
    return result.code, json.loads(result.out) if result.out.strip() else [], result.err


def test_sources_to_safetensors_with_two_workers(sources, tmp_path):
    out = tmp_path / "out"
    code, rows, err = _batch(
        *(sources[k].path for k in ORDER),
        "-j",
        "2",
        "--json",
        "--to",
        "safetensors",
        "--out-dir",
        out,
    )
    assert code == 1, err
    by_src = {Path(r["src"]).name: r for r in rows}
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    for key in ("torch", "flax", "tf"):
        row = by_src[sources[key].path.name]
        assert row["error"] is None and row["tensors"] > 0 and row["bytes"] > 0
        assert row["worker"].startswith("local:") and row["seconds"] >= 0
        assert_same_values(read_safetensors(Path(row["dst"])), sources[key].values)
    assert {Path(r["dst"]).name for r in rows} == {
        "model.safetensors",
        "params.safetensors",
        "ckpt-1.safetensors",
        "broken.safetensors",
    }
    failed = by_src["broken.pt"]
    assert "\n" not in failed["error"] and "broken.pt" in failed["error"]
    assert failed["tensors"] == 0
    assert sorted(listing(out)) == ["ckpt-1.safetensors", "model.safetensors", "params.safetensors"]
    assert len({r["worker"] for r in rows}) <= 2

    # a second run: the finished items are skipped, the broken one fails again
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    code, rows, err = _batch(
        *(sources[k].path for k in ORDER), "--json", "--out-dir", out, "--resume"
    )
    assert code == 1, err
    assert [r["status"] for r in rows] == ["skipped", "skipped", "skipped", "failed"]
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    # without --resume, the outputs that exist are this item's error
    code, rows, err = _batch(sources["torch"].path, "--json", "--out-dir", out)
    assert code == 1 and "exists already" in rows[0]["error"]
    assert "--overwrite" in rows[0]["error"]


def test_manifest_to_npz_tf_and_torch(sources, tmp_path):
    import tensorflow as tf
    import torch

    manifest = tmp_path / "jobs.toml"
    manifest.write_text(f"""
[[convert]]
src = "{sources["torch"].path}"
dst = "out/model.npz"
compress = true

[[convert]]
src = "{sources["flax"].path}"
dst = "out/flax-ckpt"
to = "tf"

[[convert]]
src = "{sources["tf"].path}"
dst = "out/from-tf.pt"
""")
    code, rows, err = _batch("--manifest", manifest, "--json", "-j", "2")
    assert code == 0, err
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    out = tmp_path / "out"  # (relative to the manifest's folder)
    with np.load(out / "model.npz") as npz:
        got = {k.replace("/", "."): npz[k] for k in npz.files}
    assert_same_values(got, sources["torch"].values)
    reader = tf.train.load_checkpoint(str(out / "flax-ckpt"))
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    got = {
        k.removesuffix(suffix).replace("/", "."): reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if k != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }
    assert_same_values(got, sources["flax"].values)
    loaded = torch.load(out / "from-tf.pt", weights_only=True)
    assert_same_values({k: v.numpy() for k, v in loaded.items()}, sources["tf"].values)


def test_refused_before_anything_runs(sources, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.pt").write_bytes(sources["torch"].path.read_bytes())
    out = tmp_path / "out"
    result = run_cli("batch", sources["torch"].path, tmp_path / "a" / "model.pt", "--out-dir", out)
    assert_one_line_error(result, "items 1 and 2 both write", "model.safetensors")
    assert not out.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[convert]]\nsrc = "x.pt"\ndst = "y.npz"\nshard = 3\n')
    assert_one_line_error(run_cli("batch", "--manifest", bad), "bad.toml", "unknown option 'shard'")
    bad.write_text('[[convert]\nsrc = "x.pt"\n')
    assert_one_line_error(run_cli("batch", "--manifest", bad), "not a TOML manifest")
    assert_one_line_error(run_cli("batch", sources["torch"].path), "--out-dir")
    assert_one_line_error(
        run_cli("batch", sources["torch"].path, "--out-dir", out, "--to", "onnx"), "onnx"
    )


def test_python_api(sources, tmp_path):
    import convert

    items = [
        {"src": sources["torch"].path, "dst": tmp_path / "m.safetensors"},
        convert.Item(str(sources["broken"].path), str(tmp_path / "b.npz")),
    ]
    results = convert.batch(items, jobs=2)
    assert [type(r) for r in results] == [convert.ItemResult] * 2
    assert [r.status for r in results] == ["ok", "failed"]
    assert_same_values(read_safetensors(tmp_path / "m.safetensors"), sources["torch"].values)
    assert [r.status for r in convert.batch(items, resume=True)] == ["skipped", "failed"]


def test_dask_missing_is_said(sources, tmp_path):
    script = "import sys; sys.modules['distributed'] = None; from convert.cli import main; main()"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "batch",
            str(sources["torch"].path),
            "--out-dir",
            str(tmp_path),
            "--executor",
            "dask",
            "--scheduler",
            "local:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "pip install 'ckpt-convert[dask]'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_dask_local_cluster(sources, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        workers = set(client.scheduler_info()["workers"])
        good = [sources[k].path for k in ("torch", "flax", "tf")]
        code, rows, err = _batch(
            *good,
            "--executor",
            "dask",
            "--scheduler",
            cluster.scheduler_address,
            "--json",
            "--out-dir",
            tmp_path,
        )
    assert code == 0, err
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert len(workers) == 2 and {r["worker"] for r in rows} <= workers
    for key, row in zip(("torch", "flax", "tf"), rows, strict=True):
        assert_same_values(read_safetensors(Path(row["dst"])), sources[key].values)


def test_killed_midway_then_resumed(tmp_path):
    """SIGKILL to a batch while it runs: its workers die with it, no output is partial,
    and --resume finishes every item with outputs equal to the sources."""
    psutil = pytest.importorskip("psutil")
    srcs = [torch_source(tmp_path / f"m{i}.pt", seed=i, width=500_000) for i in range(10)]
    out = tmp_path / "out"
    args = [*(s.path for s in srcs), "--out-dir", out, "-j", "2", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "convert", "batch", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and any(p.suffix == ".safetensors" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(children, timeout=10)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    done = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors")
    assert 0 < len(done) < len(srcs), done  # (killed midway)
    for name in done:  # what is there under an output's name is whole
        index = int(name[1 : -len(".safetensors")])
        assert_same_values(read_safetensors(out / name), srcs[index].values)
    code, rows, err = _batch(*args[:-1], "--json", "--resume")
    assert code == 0, err
    statuses = [r["status"] for r in rows]
    assert statuses.count("skipped") >= len(done) and "failed" not in statuses
    for src, row in zip(srcs, rows, strict=True):
        assert_same_values(read_safetensors(Path(row["dst"])), src.values)
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"]  # (the killed run's, removed)


def test_a_worker_killed_fails_its_own_item_only(tmp_path):
    """SIGKILL to one worker: its item fails with a line that says so (and has no
    output), a new worker takes the rest, and every other item is converted."""
    psutil = pytest.importorskip("psutil")
    srcs = [torch_source(tmp_path / f"m{i}.pt", seed=i, width=500_000) for i in range(8)]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convert",
            "batch",
            *(str(s.path) for s in srcs),
            "--out-dir",
            str(out),
            "-j",
            "2",
            "--json",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and any(p.suffix == ".safetensors" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    workers = [
        c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())
    ]  # (not the resource tracker)
    assert len(workers) == 2
    workers[0].kill()
    stdout, _ = proc.communicate(timeout=120)
    rows = json.loads(stdout)
    failed = [r for r in rows if r["status"] == "failed"]
    assert proc.returncode == 1 and len(failed) == 1, rows
    assert failed[0]["worker"] == f"local:{workers[0].pid}"
    # The kill comes right after the first output appears: the killed worker may have been
    # between writing an output and reporting it. Either way the line says which it was.
    if Path(failed[0]["dst"]).exists():
        assert failed[0]["error"] == (
            "the worker process was killed by SIGKILL after writing this item's output "
            "(whole: outputs appear at once), before reporting it"
        )
        src = srcs[[r["dst"] for r in rows].index(failed[0]["dst"])]
        assert_same_values(read_safetensors(Path(failed[0]["dst"])), src.values)
    else:
        assert failed[0]["error"] == (
            "the worker process was killed by SIGKILL while converting this item"
        )
    for src, row in zip(srcs, rows, strict=True):
        if row["status"] == "ok":
            assert_same_values(read_safetensors(Path(row["dst"])), src.values)
    assert len({r["worker"] for r in rows if r["status"] == "ok"}) >= 2


def test_lines_name_the_paths_as_given(sources, tmp_path):
    """Workers get absolute paths; the lines and the JSON give the user's own spelling."""
    src = tmp_path / "here" / "model.pt"
    src.parent.mkdir()
    src.write_bytes(sources["torch"].path.read_bytes())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convert",
            "batch",
            "model.pt",
            "--out-dir",
            "out",
            "-j",
            "1",
            "--quiet",
            "--json",
        ],
        cwd=src.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert (row["src"], row["dst"]) == ("model.pt", os.path.join("out", "model.safetensors"))
    proc = subprocess.run(
        [sys.executable, "-m", "convert", "batch", "model.pt", "--out-dir", "out2", "-j", "1"],
        cwd=src.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("ok"))
    assert line.startswith(f"ok       model.pt -> {os.path.join('out2', 'model.safetensors')}:")
    assert str(tmp_path) not in line and " 0.0 MiB" not in line


def test_every_writer_option_reaches_batch_and_manifests(sources, tmp_path):
    """The writer options are one table (the registry's): `--strided`, which `ckpt
    convert` took and `ckpt batch` did not, is a flag and a manifest key of batch too."""
    import torch

    from convert.core import registry

    batch_help = run_cli("batch", "--help").out
    assert all(o.flag in batch_help for o in registry.writer_options().values())
    skeleton = tmp_path / "skeleton.pt"
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2)).state_dict(), skeleton
    )
    manifest = tmp_path / "jobs.toml"
    manifest.write_text(f"""
[[convert]]
src = "{sources["flax"].path}"
dst = "out/manifest.pt"
like = "{skeleton}"
strided = true
""")
    code, rows, err = _batch("--manifest", manifest, "--json", "-j", "1")
    assert code == 0 and [r["status"] for r in rows] == ["ok"], err
    code, rows, err = _batch(
        sources["flax"].path,
        "--out-dir",
        tmp_path / "cli",
        "--to",
        "torch",
        "--like",
        skeleton,
        "--strided",
        "--json",
        "-j",
        "1",
    )
    assert code == 0 and [r["status"] for r in rows] == ["ok"], err
    kernel = sources["flax"].values["params.layers_0.kernel"]
    for out in (tmp_path / "out" / "manifest.pt", Path(rows[0]["dst"])):
        weight = torch.load(out, weights_only=True)["0.weight"]
        assert not weight.is_contiguous()  # written as torch.save writes w.t()
        np.testing.assert_array_equal(weight.numpy(), kernel.T)
