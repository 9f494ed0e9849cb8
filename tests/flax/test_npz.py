"""`.npz`: keys are `/`-joined paths; np.load reads what we write; we read what numpy writes."""

from __future__ import annotations

import json
import zipfile

import ml_dtypes
import numpy as np
import pytest
from flax import serialization
from safetensors import safe_open

import convert
from convert.core.errors import ChecksumError

from ..conftest import assert_one_line_error, listing
from .trees import assert_bit_exact, flatten_graph, flatten_tree


@pytest.mark.parametrize("compress", [False, True])
def test_msgpack_to_npz_loads_with_numpy(misc, tmp_path, compress):
    out = tmp_path / "m.npz"
    report = convert.convert(misc.path, out, compress=compress)
    want, _ = flatten_tree(serialization.msgpack_restore(misc.path.read_bytes()))
    with np.load(out) as npz:
        got = {tuple(k.split("/")): npz[k] for k in npz.files}
    assert_bit_exact(got, want)
    assert "params/w" in {"/".join(p) for p in got}
    methods = {i.compress_type for i in zipfile.ZipFile(out).infolist()}
    assert methods == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}
    assert any("bfloat16" in note for note in report.notes)


@pytest.mark.parametrize("compress", [False, True])
def test_msgpack_npz_msgpack_gives_the_same_tree(linen_cnn, tmp_path, compress):
    convert.convert(linen_cnn.path, tmp_path / "a.npz", compress=compress)
    convert.convert(tmp_path / "a.npz", tmp_path / "b.msgpack")
    want = serialization.msgpack_restore(linen_cnn.path.read_bytes())
    got = serialization.msgpack_restore((tmp_path / "b.msgpack").read_bytes())
    assert flatten_tree(got)[1] == {}
    assert_bit_exact(flatten_tree(got)[0], flatten_tree(want)[0])
    # the nesting, not just the leaves
    assert {k: set(v) for k, v in got.items()} == {k: set(v) for k, v in want.items()}


@pytest.fixture(scope="module")
def numpy_npz(tmp_path_factory):
    """np.savez / np.savez_compressed files in the layouts found in the wild."""
    folder = tmp_path_factory.mktemp("npz_golden")
    rng = np.random.default_rng(1)
    arrays = {
        "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel": rng.standard_normal((4, 6)).astype(
            np.float32
        ),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "big_endian": np.arange(7, dtype=">i4"),
        "bf16": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),  # saved as <V2
        "scalar": np.float16(2.5),
        "flags": np.array([True, False, True]),
    }
    np.savez(folder / "plain.npz", **arrays)
    np.savez_compressed(folder / "packed.npz", **arrays)
    return folder, arrays


@pytest.mark.parametrize("name", ["plain.npz", "packed.npz"])
def test_numpy_written_npz_reads_bit_exact(numpy_npz, name):
    folder, arrays = numpy_npz
    graph = convert.load(folder / name)
    got, values = flatten_graph(graph)
    assert values == {}
    with np.load(folder / name) as npz:
        want = {tuple(k.split("/")): npz[k] for k in npz.files}
    want[("bf16",)] = want[("bf16",)].view(ml_dtypes.bfloat16)  # numpy gives raw <V2 bytes
    want[("big_endian",)] = want[("big_endian",)].astype(np.int32)  # we give native order
    assert_bit_exact(got, {k: np.require(v, requirements="C") for k, v in want.items()})
    np.testing.assert_array_equal(got[("bf16",)], arrays["bf16"])
    assert graph.get(("bf16",)).meta["npz_descr"] == "|V2"


def test_written_bfloat16_loads_as_bfloat16(linen_bf16, tmp_path):
    convert.convert(linen_bf16.path, tmp_path / "bf.npz")
    want, _ = flatten_tree(serialization.msgpack_restore(linen_bf16.path.read_bytes()))
    with np.load(tmp_path / "bf.npz") as npz:
        got = {tuple(k.split("/")): npz[k] for k in npz.files}
    assert {a.dtype for a in got.values()} == {np.dtype(ml_dtypes.bfloat16)}
    assert_bit_exact(got, want)


def test_npz_written_here_is_byte_stable(linen_block, tmp_path):
    convert.convert(linen_block.path, tmp_path / "1.npz")
    convert.convert(tmp_path / "1.npz", tmp_path / "2.npz")
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()


def test_object_arrays_are_refused(tmp_path, ckpt):
    np.savez(tmp_path / "obj.npz", weights=np.ones(2), meta=np.array([{"a": 1}], object))
    result = ckpt("convert", tmp_path / "obj.npz", tmp_path / "out.msgpack")
    assert_one_line_error(result, "obj.npz", "meta.npy", "Python objects")
    assert listing(tmp_path) == {"obj.npz"}


@pytest.mark.parametrize("size", [100, 100_000])  # read whole at open / only when loaded
def test_corrupted_member_fails_its_checksum(tmp_path, size):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.arange(size, dtype=np.float32))
    data = bytearray(path.read_bytes())
    data[data.index(b"\x00\x00\x80\x3f")] ^= 0xFF  # a byte inside the value 1.0
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="CRC"):
        convert.load(path).get(("a",)).read()


def test_npz_tensors_are_lazy_and_fresh(numpy_npz):
    folder, arrays = numpy_npz
    tensor = convert.load(folder / "packed.npz").get(("fortran",))
    first = tensor.read()
    first[...] = 0
    np.testing.assert_array_equal(tensor.read(), arrays["fortran"])
    assert tensor.read().flags.c_contiguous


def test_ls_shows_npz_keys(numpy_npz, ckpt):
    folder, arrays = numpy_npz
    result = ckpt("ls", folder / "plain.npz", "--json")
    assert result.code == 0, result.err
    rows = {r["key"]: r for r in json.loads(result.out)}
    assert set(rows) == set(arrays)
    assert rows["bf16"]["dtype"] == "bfloat16" and rows["scalar"]["shape"] == []


@pytest.mark.parametrize("descr", [",", "f4,,i4"])
def test_a_descr_numpy_cannot_parse_is_one_line(tmp_path, ckpt, descr):
    """numpy parses comma descrs with `ast`: a damaged one raised SyntaxError through."""
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': (1,), }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("w.npy", member + b"\0" * 8)
    assert_one_line_error(ckpt("ls", bad), "bad.npz", "w.npy", "descr cannot be parsed")


def test_members_that_are_no_tensor_are_named_in_the_report(tmp_path, ckpt):
    """np.savez of strings or a record array: the numeric members convert, the others are
    named in a note (by `ckpt ls` and `ckpt convert`), not carried as an opaque value."""
    source = tmp_path / "mixed.npz"
    np.savez(
        source,
        w=np.arange(6, dtype=np.float32).reshape(2, 3),
        labels=np.array(["cat", "dog"]),
        rec=np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]),
    )
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("README.txt", "not an array")
    note = (
        "left out 3 members with no numeric array: labels.npy (<U3 strings), "
        "rec.npy (structured: x, y), README.txt (not a .npy member)"
    )
    listed = ckpt("ls", source)
    assert listed.code == 0 and note in listed.err, listed.err
    out = tmp_path / "out.safetensors"
    done = ckpt("convert", source, out)
    assert done.code == 0 and note in done.err, done.err
    assert "npz_skipped" not in done.err
    with safe_open(out, "np") as written:
        assert list(written.keys()) == ["w"]
        assert "npz_skipped" not in (written.metadata() or {})
        np.testing.assert_array_equal(
            written.get_tensor("w"), np.arange(6, dtype=np.float32).reshape(2, 3)
        )
