"""Permuted copies (permute.py): the banded paths give numpy's transpose byte for byte, and
`view_layout` finds the whole array a strided view permutes, or says there is none."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

from convert.io import permute

SHAPES = [(5, 7), (3, 1, 4), (2, 3, 4, 5), (1, 6, 1, 17), (33, 1, 18)]


def _random(shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    raw = np.random.default_rng(1).integers(0, 256, (*shape, dtype.itemsize), dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _numpys(array: np.ndarray, axes) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(array, axes))


@pytest.mark.parametrize("banded_from", [0, permute.BANDED_BYTES], ids=["bands", "as-is"])
@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "int8", ml_dtypes.bfloat16, "complex128"], ids=str
)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_permutation_is_numpys(shape, dtype, banded_from, monkeypatch):
    """With the threshold at 0, every swap-shaped permutation takes the banded path."""
    monkeypatch.setattr(permute, "BANDED_BYTES", banded_from)
    array = _random(shape, dtype)
    for axes in itertools.permutations(range(len(shape))):
        out = permute.permuted(array, axes)
        expected = _numpys(array, axes)
        assert out.flags.c_contiguous and out.dtype == array.dtype
        assert out.shape == expected.shape and out.tobytes() == expected.tobytes(), axes


@pytest.mark.parametrize(
    "shape, axes, swap",
    [
        ((4, 6), (1, 0), (1, 4, 6)),
        ((2, 3, 4), (0, 2, 1), (2, 3, 4)),  # channels_last per output channel
        ((2, 3, 4), (2, 0, 1), (1, 6, 4)),  # two axes that stay together, moved as one
        ((2, 3, 4, 5), (0, 2, 3, 1), (2, 3, 20)),
        ((2, 1, 4), (2, 1, 0), (1, 2, 4)),  # a size-1 axis changes no byte
        ((2, 3, 4), (1, 0, 2), None),  # no swap of two halves: numpy's copy
        ((2, 3, 4), (0, 1, 2), None),
    ],
)
def test_swaps_are_found(shape, axes, swap):
    assert permute._as_swap(shape, axes) == swap


def test_a_large_matrix_and_a_channels_last_stack_go_in_bands(monkeypatch):
    calls = []
    banded = permute.banded_transpose
    monkeypatch.setattr(
        permute, "banded_transpose", lambda a, out=None: calls.append(a.shape) or banded(a, out)
    )
    matrix = _random((700, 520), "float32")  # 1.4 MiB
    assert permute.permuted(matrix, (1, 0)).tobytes() == _numpys(matrix, (1, 0)).tobytes()
    stack = _random((2, 9, 70_000), "float16")  # each (9, 70000) slice 1.2 MiB
    assert permute.permuted(stack, (0, 2, 1)).tobytes() == _numpys(stack, (0, 2, 1)).tobytes()
    small = _random((300, 9, 64), "float32")  # a conv weight's slices fit in cache: as is
    assert permute.permuted(small, (0, 2, 1)).tobytes() == _numpys(small, (0, 2, 1)).tobytes()
    assert calls == [(700, 520), (9, 70_000), (9, 70_000)]


def _view_strides(shape, axes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shape and element strides of np.transpose of a C-contiguous `shape` array."""
    view = np.transpose(np.empty(shape, np.int8), axes)
    return view.shape, view.strides


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_view_layout_finds_the_whole_array_of_every_permutation(shape):
    whole = np.arange(np.prod(shape)).reshape(shape)
    for axes in itertools.permutations(range(len(shape))):
        view_shape, stride = _view_strides(shape, axes)
        found = permute.view_layout(view_shape, stride)
        assert found is not None, axes
        source_shape, back = found
        rebuilt = np.transpose(np.arange(np.prod(shape)).reshape(source_shape), back)
        assert rebuilt.shape == view_shape
        np.testing.assert_array_equal(rebuilt, np.transpose(whole, axes))


@pytest.mark.parametrize(
    "shape, stride",
    [
        ((5, 3), (6, 2)),  # every other column: gaps
        ((5,), (6,)),  # one column
        ((3, 4), (0, 1)),  # broadcast rows
        ((3, 4), (1, 1)),  # overlapping
        ((2, 2), (2, 2)),  # equal strides
    ],
)
def test_views_that_permute_no_whole_array(shape, stride):
    assert permute.view_layout(shape, stride) is None
