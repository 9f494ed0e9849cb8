"""The dtype codes of safetensors headers and their numpy dtypes, shared by the reader and
the writer."""

from __future__ import annotations

from typing import Any

from convert.core.dtypes import from_name

DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}


CODES = {numpy: code for code, numpy in DTYPES.items()}  # by dtype name


_NUMPY: dict[str, Any] = {}  # code -> numpy dtype, as met (ml_dtypes only when needed)


def numpy_dtype(code: Any) -> Any:
    """The numpy dtype of a header's dtype code; None if unknown (or this ml_dtypes lacks
    it)."""
    dtype = _NUMPY.get(code) if type(code) is str else None
    if dtype is None and type(code) is str and code in DTYPES:
        try:
            dtype = _NUMPY[code] = from_name(DTYPES[code])
        except KeyError:  # an older ml_dtypes without this float8
            return None
    return dtype


SUBBYTE = {"F4", "F6_E2M3", "F6_E3M2", "I4", "U4"}  # packed below one byte: not converted
