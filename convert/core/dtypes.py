"""dtypes: numpy dtypes everywhere, with ml_dtypes for bfloat16, float8 and int4.

Names are numpy's (`float32`, `bfloat16`, `float8_e4m3fn`); strings are the one
non-numeric dtype and are held as numpy object arrays of `bytes`, named `string`.

ml_dtypes is imported only when one of its types is met (`from_name` of one of
`EXTRA_NAMES`): its extension module takes up to 0.6 s to import, longer than listing a
checkpoint of float32 tensors does.
"""

from __future__ import annotations

import functools
import re

import numpy as np

STRING = np.dtype(object)

# The ml_dtypes types this package knows, by name (an older ml_dtypes lacks some).
EXTRA_NAMES = frozenset(
    (
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
)


@functools.cache
def _extra(name: str) -> np.dtype:
    import ml_dtypes  # (here, not at the top: see the module doc)

    kind: type | None = getattr(ml_dtypes, name, None)
    if kind is None:
        raise KeyError(name)
    return np.dtype(kind)


def is_extra(dtype: np.dtype) -> bool:
    """An ml_dtypes type (user-defined, kind "V", named as in EXTRA_NAMES)? Asks without
    importing ml_dtypes: a dtype of one exists only once ml_dtypes is imported."""
    return dtype.kind == "V" and dtype.name in EXTRA_NAMES


def is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.kind == "V" and dtype.name == "bfloat16"


@functools.lru_cache(maxsize=256)
def _name(dtype: np.dtype) -> str:
    return "string" if dtype == STRING else dtype.name


def dtype_name(dtype: np.dtype) -> str:
    """The name a user sees: numpy's, `bfloat16` for ml_dtypes, `string` for strings."""
    return _name(np.dtype(dtype))


# A plain dtype name or code (`float32`, `<f4`, `bool`): what a file may name. numpy also
# takes comma strings, shapes and brackets, parsed with `ast`, which a damaged file must
# never reach (it raised SyntaxError on a fuzzed name).
_PLAIN_NAME = re.compile(r"[<>=|]?[A-Za-z_]+[0-9]*\Z")


def from_name(name: str) -> np.dtype:
    """Inverse of dtype_name; raises KeyError for unknown names."""
    if name == "string":
        return STRING
    if name in EXTRA_NAMES:
        return _extra(name)
    if not _PLAIN_NAME.match(name):  # (numpy parses "f4,(2,)i4"-style strings with ast)
        raise KeyError(name)
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
