"""The transpose that ports spend their time in: the banded copy gives numpy's own
transpose byte for byte, for every dtype and shape, and torch agrees with it."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from convert.io.permute import banded_transpose
from convert.rules import ops

DTYPES = [
    "float32",
    "float16",
    "float64",
    "int8",
    "uint8",
    "bool",
    "int64",
    "complex64",
    "complex128",
    ml_dtypes.bfloat16,
    ml_dtypes.float8_e4m3fn,
]
# Rows that are no multiple of the band, one row, one column, and larger than a band.
SHAPES = [(1, 1), (1, 700), (700, 1), (15, 17), (16, 16), (33, 65), (1000, 1037), (257, 3)]


def _random(shape, dtype) -> np.ndarray:
    """Random bytes viewed as the dtype: NaN payloads and signed zeros included."""
    dtype = np.dtype(dtype)
    raw = np.random.default_rng(0).integers(0, 256, (*shape, dtype.itemsize), dtype=np.uint8)
    if dtype == np.bool_:
        raw &= 1
    return raw.view(dtype).reshape(shape)


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_banded_transpose_is_numpys_transpose(shape, dtype):
    array = _random(shape, dtype)
    out = banded_transpose(array)
    assert out.flags.c_contiguous
    assert _same_bytes(out, array.T.copy())


def test_a_strided_input_and_an_output_buffer():
    base = _random((300, 400), "float32")
    view = base[::2, 1::3]  # not contiguous: taken element by element
    assert _same_bytes(banded_transpose(view), view.T.copy())
    out = np.empty((400, 300), np.float32)
    assert banded_transpose(base, out) is out
    assert _same_bytes(out, base.T.copy())


def test_the_op_takes_the_banded_path_above_a_megabyte_and_agrees():
    array = _random((1024, 768), "float32")  # 3 MiB: banded
    out = ops.Transpose((1, 0)).apply1(array)
    assert _same_bytes(out, np.ascontiguousarray(array.T))
    small = _random((20, 30), "float32")
    assert _same_bytes(ops.Transpose((1, 0)).apply1(small), small.T.copy())


def test_torch_transposes_the_same():
    torch = pytest.importorskip("torch")
    array = _random((1031, 517), "float32")
    theirs = torch.from_numpy(array.copy()).t().contiguous().numpy()
    assert _same_bytes(banded_transpose(array), theirs)


def test_a_read_only_source_is_only_read():
    """Readers may hand out read-only mappings of the file: the transpose writes only its
    own output."""
    array = _random((1024, 300), "float32")
    array.setflags(write=False)
    assert _same_bytes(banded_transpose(array), array.T.copy())
    assert _same_bytes(ops.Transpose((1, 0)).apply1(array), array.T.copy())
