"""dtypes: numpy dtypes everywhere, with ml_dtypes for bfloat16, float8 and int4.

Names are numpy's (`float32`, `bfloat16`, `float8_e4m3fn`); strings are the one
non-numeric dtype and are held as numpy object arrays of `bytes`, named `string`.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

STRING = np.dtype(object)

_EXTRA = {
    name: np.dtype(getattr(ml_dtypes, name))
    for name in (
        "bfloat16",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e4m3b11fnuz",
        "float8_e5m2fnuz",
        "float8_e4m3",
        "float8_e3m4",
        "float8_e8m0fnu",
        "float4_e2m1fn",
        "int4",
        "uint4",
        "int2",
        "uint2",
    )
    if hasattr(ml_dtypes, name)
}


@functools.lru_cache(maxsize=256)
def _name(dtype: np.dtype) -> str:
    return "string" if dtype == STRING else dtype.name


def dtype_name(dtype: np.dtype) -> str:
    """The name a user sees: numpy's, `bfloat16` for ml_dtypes, `string` for strings."""
    return _name(np.dtype(dtype))


def from_name(name: str) -> np.dtype:
    """Inverse of dtype_name; raises KeyError for unknown names."""
    if name == "string":
        return STRING
    if name in _EXTRA:
        return _EXTRA[name]
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError) as exc:
        raise KeyError(name) from exc
    if dtype.kind not in "biufc":
        raise KeyError(name)
    return dtype


def itemsize(dtype: np.dtype) -> int:
    """Bytes per element as stored (strings have no fixed size: 0)."""
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    return 0 if dtype.kind == "O" else dtype.itemsize  # (STRING is the one object dtype)
