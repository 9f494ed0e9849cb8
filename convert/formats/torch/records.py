"""What the restricted torch unpickler builds: inert records, never torch objects.

A `torch.save` pickle becomes plain values and the records here: `TorchDtype`,
`StorageType`, `StorageRef` (a persistent storage, its bytes not read), `TensorRef` (a
strided view of one), `PickledOrderedDict` (a state dict with its BUILD attributes), and
`Global`, the inert marker a GLOBAL opcode pushes for an allowlisted name. With them live
torch's dtype and storage-class names, the check of a persistent id, and the extent of a
strided view.

Separate from the machine (`unpickler.py`) because the rest of the torch format (the
tree, the storage reader, the writer) works on these records and tables alone and has no
business with opcodes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from convert.core.dtypes import from_name
from convert.core.errors import FormatError, UnsafeInputError, UnsupportedError


@dataclass(frozen=True)
class TorchDtype:
    """A `torch.<name>` dtype object; `numpy` is None when numpy cannot hold it."""

    name: str
    numpy_name: str | None

    @cached_property  # (made when a tensor of it is met: ml_dtypes only for its types)
    def numpy(self) -> np.dtype | None:
        try:
            return from_name(self.numpy_name) if self.numpy_name else None
        except KeyError:  # an ml_dtypes too old for this type
            return None

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass(frozen=True)
class StorageType:
    """A storage class (`torch.FloatStorage`, `torch.storage.UntypedStorage`, ...)."""

    name: str
    dtype: TorchDtype | None  # None: untyped (bytes)

    @cached_property  # (read for every storage)
    def itemsize(self) -> int:
        if self.dtype is None:
            return 1
        if self.dtype.numpy is None:
            raise UnsupportedError(
                f"torch.{self.name} holds {self.dtype!r}, which numpy cannot represent"
            )
        return self.dtype.numpy.itemsize


# (slots, not frozen: a frozen dataclass's __init__ costs a microsecond per tensor)
@dataclass(slots=True, unsafe_hash=True)
class StorageRef:
    """A persistent storage: the file's key, its element type and count. `nbytes` is set
    on creation, which raises for element types numpy cannot hold."""

    key: str
    type: StorageType
    location: str
    numel: int
    view: tuple[str, int, int] | None = None  # legacy views: (view key, offset, numel)
    nbytes: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self.nbytes = self.numel * self.type.itemsize


@dataclass(eq=False, slots=True)
class TensorRef:
    """A tensor as the pickle describes it: a strided view of a storage."""

    storage: StorageRef
    dtype: TorchDtype
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False
    parameter: bool = False


@dataclass(eq=False)
class PickledRecord:
    """An instance of an allowlisted record class (DCP's metadata dataclasses): its class
    name and the state BUILD gave it, a dict of fields or (a class with `__getstate__`)
    a tuple. Never an instance of the class itself: nothing of it is imported or run."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    state: tuple | None = None
    module: str = ""  # (where the class lives: set on the records a writer pickles)


@dataclass(frozen=True)
class PickledCall:
    """What a writer pickles as a call of an importable function on plain arguments
    (GLOBAL, the arguments, REDUCE): `torch.Size((7, 6))`, an enum member by its value."""

    module: str
    name: str
    args: tuple


class PickledOrderedDict(OrderedDict):
    """An OrderedDict plus the attributes BUILD gave it (a state dict's `_metadata`)."""

    @property
    def attributes(self) -> dict[str, Any]:
        # (made when first asked for: every tensor's backward hooks are an OrderedDict)
        return self.__dict__.setdefault("_attributes", {})


# An allowlisted name, as a GLOBAL opcode pushes it
@dataclass(frozen=True, eq=False)
class Global:
    """A name from the allowlist; `call` is our handler for REDUCE (None: not callable)."""

    name: str
    call: Callable[[tuple], Any] | None = None
    new: Callable[[tuple], Any] | None = None  # handler for NEWOBJ

    def __repr__(self) -> str:
        return self.name


def record_class(kind: str) -> Global:
    """The marker of an allowlisted record class (DCP's metadata dataclasses, DeepSpeed's
    loss scaler): NEWOBJ with no arguments makes a `PickledRecord`, BUILD gives it its state."""

    def new(args: tuple) -> PickledRecord:
        if args != ():
            raise FormatError(f"{kind} created with arguments {short(args)}")
        return PickledRecord(kind)

    return Global(kind, None, new)


# torch dtype name -> numpy dtype name (None: no numpy equivalent)
TORCH_DTYPES: dict[str, str | None] = {
    "float32": "float32",
    "float64": "float64",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "complex64": "complex64",
    "complex128": "complex128",
    "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
    "complex32": None,
    "qint8": None,
    "quint8": None,
    "qint32": None,
    "quint4x2": None,
    "quint2x4": None,
    "float4_e2m1fn_x2": None,
    "bits1x8": None,
    "bits2x4": None,
    "bits4x2": None,
    "bits8": None,
    "bits16": None,
    **{f"uint{n}": None for n in range(1, 8)},
    **{f"int{n}": None for n in range(1, 8)},
}

# legacy typed storage class -> torch dtype name
STORAGE_CLASSES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}


# numpy dtype name -> torch dtype name, for the dtypes both have
TORCH_NAMES = {numpy: torch for torch, numpy in TORCH_DTYPES.items() if numpy}


def torch_dtype(name: str) -> TorchDtype:
    return TorchDtype(name, TORCH_DTYPES[name])


def short(value: Any) -> str:
    """A value as error messages name it (never the whole of a large one)."""
    if isinstance(value, (str, bytes)):
        text = repr(value[:60])
    elif isinstance(value, (int, float, bool, type(None), Global, TorchDtype, StorageType)):
        text = repr(value)
    else:
        text = f"a {type(value).__name__}"
    return text


def storage_from_pid(pid: Any, where: str) -> StorageRef:
    """Check a persistent id `('storage', type, key, location, numel[, view])`."""
    if (
        type(pid) is tuple
        and len(pid) == 5
        and pid[0] == "storage"
        and type(pid[1]) is StorageType
        and type(pid[2]) is str
        and type(pid[3]) is str
        and type(pid[4]) is int
        and pid[4] >= 0
    ):  # (torch's own: nothing else to check)
        return StorageRef(pid[2], pid[1], pid[3], pid[4])
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
        raise UnsafeInputError(
            f"{where}: refuses persistent id {short(pid)}: only storages "
            "are allowed; nothing was run"
        )
    if len(pid) not in (5, 6):
        raise FormatError(f"{where}: storage reference has {len(pid)} fields, 5 or 6 expected")
    _, storage_type, key, location, numel, *view = pid
    if not isinstance(storage_type, StorageType):
        raise FormatError(f"{where}: storage of type {short(storage_type)}")
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str) or not isinstance(location, str):
        raise FormatError(f"{where}: storage key {short(key)} or location {short(location)}")
    if type(numel) is not int or numel < 0:
        raise FormatError(f"{where}: storage {key!r} has a bad size {short(numel)}")
    view_meta = None
    if view and view[0] is not None:
        v = view[0]
        if (
            not isinstance(v, tuple)
            or len(v) != 3
            or not isinstance(v[0], str)
            or type(v[1]) is not int
            or type(v[2]) is not int
            or v[1] < 0
            or v[2] < 0
        ):
            raise FormatError(f"{where}: storage {key!r} has a malformed view {short(v)}")
        view_meta = (v[0], v[1], v[2])
    return StorageRef(key, storage_type, location, numel, view_meta)


def view_extent(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements from the first to one past the last element a strided view touches."""
    if 0 in shape:  # (sizes are checked non-negative)
        return 0
    extent = 1
    for d, s in zip(shape, stride, strict=True):
        extent += (d - 1) * s
    return extent
