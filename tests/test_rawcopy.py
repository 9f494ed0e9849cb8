"""Stored tensor bytes copied file to file (rawcopy.py): the kernel copy, the buffered
fallback and reading the values (the path every tensor took before) write the same bytes
for every pair of formats, the frameworks load what they wrote, and a damaged source is
refused through the kernel copy with nothing left behind."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import convert
from convert.core.errors import ChecksumError
from convert.core.tensor import Tensor
from convert.formats.tf.bundle import BundleReader, data_path
from convert.io import rawcopy
from tests.conftest import listing

BIG = (300, 1000)  # 1.2 MB: above rawcopy.KERNEL_FROM, copied in the kernel by default
TARGETS = {
    "safetensors": "out.safetensors",
    "torch": "out.pt",
    "tf": "out",
    "npz": "out.npz",
    "flax": "out.msgpack",
}
FROM_ARRAYS = ("flax",)  # the writer that writes arrays (msgpack): no kernel copy


def _values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "big": rng.standard_normal(BIG, dtype=np.float32),
        "small": rng.standard_normal((3, 4), dtype=np.float32),
        "half": rng.standard_normal((7,)).astype(np.float16),
        "count": np.array(41, np.int64),
        "ints": rng.integers(-9, 9, (600, 200), dtype=np.int32),
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One checkpoint of the same values per source format, each written by its framework."""
    import safetensors.torch
    import tensorflow as tf
    import torch

    base = tmp_path_factory.mktemp("sources")
    values = _values()
    checkpoint = tf.train.Checkpoint(**{k: tf.Variable(v) for k, v in values.items()})
    tf_prefix = checkpoint.write(str(base / "tf" / "ckpt"))
    tensors = {k: torch.from_numpy(v.copy()) for k, v in values.items()}
    tensors["transposed"] = tensors["ints"].t()  # a strided view: read, not copied
    torch.save(tensors, base / "model.pt")
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in tensors.items()}, base / "model.safetensors"
    )
    np.savez(base / "model.npz", **values)
    from flax.serialization import msgpack_serialize

    (base / "model.msgpack").write_bytes(msgpack_serialize(dict(values)))
    return {
        "tf": Path(tf_prefix),
        "torch": base / "model.pt",
        "safetensors": base / "model.safetensors",
        "npz": base / "model.npz",
        "flax": base / "model.msgpack",
    }


def _output_files(directory: Path) -> dict[str, bytes]:
    """Every file's bytes (a TF state file's timestamps left out: they are the clock's)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "checkpoint"}


def _count_kernel_copies(m) -> list[str]:
    """Every in-kernel copy call (splice, copy_file_range, sendfile) is named in the list
    returned, as it is made."""
    calls: list[str] = []

    def counted(name, real):
        return lambda *args: calls.append(name) or real(*args)

    m.setattr(rawcopy.Output, "_splice", counted("splice", rawcopy.Output._splice))
    for name in ("_copy_file_range", "_sendfile"):
        m.setattr(rawcopy, name, counted(name, getattr(rawcopy, name)))
    return calls


def _convert(
    source: Path, target: str, directory: Path, monkeypatch, mode: str
) -> tuple[dict[str, bytes], int]:
    """The output's files as `mode` writes them, and how many kernel copies were made."""
    with monkeypatch.context() as m:
        calls = _count_kernel_copies(m)
        if mode == "read":  # every value read in and written from the array
            m.setattr(Tensor, "stored", lambda self: None)
        if mode in ("kernel", "buffered"):  # every stored tensor down the large path
            m.setattr(rawcopy, "KERNEL_FROM", 0)
        if mode == "buffered":
            m.setattr(rawcopy, "KERNEL", False)
        directory.mkdir()
        convert.convert(source, directory / TARGETS[target], to=target)
    return _output_files(directory), len(calls)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("source", ["tf", "torch", "safetensors", "npz", "flax"])
def test_the_kernel_copy_the_fallback_and_reading_write_the_same_bytes(
    sources, source, target, tmp_path, monkeypatch
):
    outputs = {}
    for mode in ("read", "default", "kernel", "buffered"):
        outputs[mode], kernel_copies = _convert(
            sources[source], target, tmp_path / mode, monkeypatch, mode
        )
        if mode in ("buffered", "read"):
            assert kernel_copies == 0
        elif target not in FROM_ARRAYS:
            assert kernel_copies > 0, mode
    assert outputs["default"] == outputs["read"]
    assert outputs["kernel"] == outputs["read"]
    assert outputs["buffered"] == outputs["read"]
    _assert_frameworks_load(tmp_path / "kernel" / TARGETS[target], target)


def _digests(arrays) -> set[tuple[str, tuple[int, ...], str]]:
    return {
        (str(a.dtype), tuple(a.shape), hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())
        for a in arrays
    }


def _assert_frameworks_load(path: Path, target: str) -> None:
    """The framework reads every value of the sources back, bit for bit."""
    if target == "torch":
        import torch

        loaded = [v.numpy() for v in torch.load(path, weights_only=True).values()]
    elif target == "safetensors":
        from safetensors.numpy import load_file

        loaded = list(load_file(path).values())
    elif target == "tf":
        import tensorflow as tf

        reader = tf.train.load_checkpoint(str(path))
        loaded = [
            reader.get_tensor(k)
            for k in reader.get_variable_to_shape_map()
            if k != "_CHECKPOINTABLE_OBJECT_GRAPH"
        ]
    elif target == "flax":
        from flax.serialization import msgpack_restore
        from flax.traverse_util import flatten_dict

        loaded = list(flatten_dict(msgpack_restore(path.read_bytes())).values())
    else:
        with np.load(path) as archive:
            loaded = [archive[k] for k in archive.files]
    assert _digests(_values().values()) <= _digests(loaded)


def _flip_byte(shard: Path, offset: int) -> None:
    with open(shard, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("tensor, threshold", [("big", None), ("small", 0), ("small", None)])
@pytest.mark.parametrize("target", ["safetensors", "torch", "tf"])
def test_a_flipped_byte_in_a_tf_shard_is_refused_with_nothing_left(
    sources, tmp_path, monkeypatch, tensor, threshold, target
):
    """Through the kernel copy (the big tensor; the small one with every copy made in the
    kernel) and the small-tensor path: the checksum error, and no output file."""
    import shutil

    copy = tmp_path / "source"
    shutil.copytree(sources["tf"].parent, copy)
    prefix = copy / sources["tf"].name
    reader = BundleReader(prefix)
    key = next(k for k in reader.tensor_keys() if k.startswith(tensor.encode() + b"/"))
    entry = reader.entry(key)
    _flip_byte(data_path(prefix, 0, 1), entry.offset + entry.size // 2)
    calls = _count_kernel_copies(monkeypatch)
    if threshold is not None:
        monkeypatch.setattr(rawcopy, "KERNEL_FROM", threshold)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ChecksumError, match="checksum does not match"):
        convert.convert(prefix, out / TARGETS[target], to=target)
    assert listing(out) == set()
    if tensor == "big" or threshold == 0:
        assert calls  # (the copy was made in the kernel: the check still refused it)


def test_a_flipped_byte_in_a_torch_storage_is_refused_through_the_kernel_copy(
    sources, tmp_path, monkeypatch
):
    import zipfile

    damaged = tmp_path / "model.pt"
    raw = bytearray(sources["torch"].read_bytes())
    with zipfile.ZipFile(sources["torch"]) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the big tensor's storage
    name_len, extra_len = np.frombuffer(raw, "<u2", 2, info.header_offset + 26)
    raw[info.header_offset + 30 + int(name_len) + int(extra_len) + 1000] ^= 0x01
    damaged.write_bytes(bytes(raw))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ChecksumError, match="CRC-32"):
        convert.convert(damaged, out / "x.safetensors")
    assert listing(out) == set()


def _refuse(*args):
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


def _refuse_pipe():
    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))


@pytest.mark.parametrize(
    "refused, used",
    [
        (["splice"], "_copy_file_range"),
        (["splice", "_copy_file_range"], "_sendfile"),
        (["splice", "_copy_file_range", "_sendfile"], None),
        (["pipe"], "_copy_file_range"),
        (["into the output"], "_copy_file_range"),
    ],
)
@pytest.mark.parametrize("target", ["safetensors", "torch"])
def test_a_refusing_kernel_falls_back_with_the_same_bytes(
    sources, tmp_path, monkeypatch, refused, used, target
):
    """Where splice, then copy_file_range, then sendfile are refused (a filesystem without
    them), or no 1 MiB pipe can be had, or the output refuses what the pipe holds, the
    next way copies the same bytes; with every kernel way refused, the buffer does."""
    expected, _ = _convert(sources["tf"], target, tmp_path / "read", monkeypatch, "read")
    if "splice" in refused:
        monkeypatch.setattr(rawcopy.Output, "_splice", lambda self, *args: _refuse())
    if "pipe" in refused:  # (as the kernel refuses more than fs/pipe-max-size)
        monkeypatch.setattr(rawcopy.fcntl, "fcntl", lambda *args: _refuse_pipe())
    if "into the output" in refused:
        real = os.splice
        monkeypatch.setattr(
            os,
            "splice",
            lambda src, dst, count, **kw: _refuse() if not kw else real(src, dst, count, **kw),
        )
    for name in ("_copy_file_range", "_sendfile"):
        if name in refused:
            monkeypatch.setattr(rawcopy, name, _refuse)
    calls = _count_kernel_copies(monkeypatch)
    (tmp_path / "refused").mkdir()
    convert.convert(sources["tf"], tmp_path / "refused" / TARGETS[target])
    assert _output_files(tmp_path / "refused") == expected
    made = [c for c in calls if c not in refused]
    assert (used in made) if used else not made


def test_a_big_tensor_goes_through_the_pipe_in_pieces(tmp_path, monkeypatch):
    """A tensor larger than the pipe is spliced in pipe-sized pieces, at offsets that
    straddle every piece boundary, and comes out whole."""
    import safetensors.numpy

    values = {"a": np.arange(3, dtype=np.uint8), "b": np.arange(700_001, dtype=np.float32)}
    source = tmp_path / "in.safetensors"
    safetensors.numpy.save_file(values, source)
    monkeypatch.setattr(rawcopy, "PIPE", 1 << 16)
    monkeypatch.setattr(rawcopy, "KERNEL_FROM", 0)
    calls = _count_kernel_copies(monkeypatch)
    convert.convert(source, tmp_path / "out.pt")
    import torch

    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert {k: v.numpy().tobytes() for k, v in loaded.items()} == {
        k: v.tobytes() for k, v in values.items()
    }
    assert calls.count("splice") >= 700_001 * 4 // (1 << 16)


@pytest.mark.parametrize("target", ["safetensors", "torch", "tf", "npz"])
def test_the_writers_reserve_their_tensors_blocks_and_no_more(
    sources, tmp_path, monkeypatch, target
):
    """One reservation before the tensors, covering them; the file is what was written,
    with no blocks held past its end."""
    reserved = []
    real = rawcopy._fallocate()
    if real is None:
        pytest.skip("no fallocate(2) here")
    monkeypatch.setattr(
        rawcopy,
        "_fallocate",
        lambda: (
            lambda fd, mode, offset, n: (
                reserved.append((mode, offset, n)) or real(fd, mode, offset, n)
            )
        ),
    )
    out = tmp_path / "out"
    out.mkdir()
    convert.convert(sources["tf"], out / TARGETS[target], to=target)
    tensors = sum(v.nbytes for v in _values().values())
    assert len(reserved) == 1
    mode, offset, n = reserved[0]
    assert mode == 1 and tensors <= offset + n  # (FALLOC_FL_KEEP_SIZE)
    for path in out.rglob("*"):
        if path.is_file():
            assert path.stat().st_blocks * 512 <= -(-path.stat().st_size // 65536) * 65536
    _assert_frameworks_load(out / TARGETS[target], target)


def test_a_disk_too_full_for_the_reservation_is_said_with_nothing_left(
    sources, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from convert.cli import main

    monkeypatch.setattr(rawcopy, "_fallocate", lambda: lambda *args: -1)
    monkeypatch.setattr(rawcopy, "_errno", lambda: errno.ENOSPC)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(
        main, ["convert", str(sources["torch"]), str(out / "x.safetensors")]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(f"{out / 'x.safetensors'}: cannot be written: No space left on device")
    )
    assert listing(out) == set()


def test_a_filesystem_without_fallocate_gets_the_same_bytes(sources, tmp_path, monkeypatch):
    expected, _ = _convert(sources["tf"], "torch", tmp_path / "read", monkeypatch, "read")
    monkeypatch.setattr(rawcopy, "_fallocate", lambda: lambda *args: -1)
    monkeypatch.setattr(rawcopy, "_errno", lambda: errno.EOPNOTSUPP)
    (tmp_path / "refused").mkdir()
    convert.convert(sources["tf"], tmp_path / "refused" / "out.pt")
    assert _output_files(tmp_path / "refused") == expected
