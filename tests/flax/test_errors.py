"""Damaged or foreign msgpack: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import msgpack
import pytest

from ..conftest import assert_one_line_error, listing


def _array_ext(shape, dtype, raw):
    payload = msgpack.packb((shape, dtype, raw), use_bin_type=True)
    return msgpack.ExtType(1, payload)


def _bad_files(golden: bytes) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """name -> (content, fragments the error line must hold)."""
    return {
        "truncated": (golden[: len(golden) * 2 // 3], ("truncated",)),
        "bad_shape": (
            msgpack.packb({"params": {"w": _array_ext([4, 4], "float32", b"\0" * 60)}}),
            ("params/w", "float32[4, 4]", "64 bytes", "60 bytes"),
        ),
        "no_arrays": (msgpack.packb({"step": 3, "config": {"name": "x"}}), ("no arrays",)),
        "bad_dtype": (msgpack.packb({"w": _array_ext([1], "object", b"\0" * 8)}), ("'object'",)),
        # (numpy would parse these with `ast`; a fuzzed "," raised SyntaxError there)
        "comma_dtype": (msgpack.packb({"w": _array_ext([1], ",", b"\0" * 4)}), ("','",)),
        "shaped_dtype": (msgpack.packb({"w": _array_ext([1], "(2,)f4", b"\0" * 8)}), ("'(2,)f4'",)),
        "unknown_ext": (msgpack.packb({"w": msgpack.ExtType(7, b"abc")}), ("type 7",)),
        "trailing": (golden + b"\xc0", ("after the msgpack value",)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "truncated",
        "bad_shape",
        "no_arrays",
        "bad_dtype",
        "comma_dtype",
        "shaped_dtype",
        "unknown_ext",
        "trailing",
    ],
)
def test_bad_msgpack_gives_one_line_and_writes_nothing(linen_cnn, tmp_path, ckpt, name):
    content, fragments = _bad_files(linen_cnn.path.read_bytes())[name]
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(content)
    result = ckpt("convert", bad, tmp_path / "out.npz")
    assert_one_line_error(result, "bad.msgpack", *fragments)
    assert listing(tmp_path) == {"bad.msgpack"}


def test_ls_of_truncated_file_is_one_line(linen_block, tmp_path, ckpt):
    bad = tmp_path / "cut.msgpack"
    bad.write_bytes(linen_block.path.read_bytes()[:40])
    assert_one_line_error(ckpt("ls", bad), "cut.msgpack", "truncated")
