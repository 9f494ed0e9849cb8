"""The unpickler's allowlist: every global a `torch.save` pickle may name, mapped to an
inert `Global` marker (or a dtype or storage-type record), and the handlers REDUCE and
NEWOBJ run for those markers.

The handlers are pure functions over values the machine already built: they check their
arguments and make records (`TensorRef`, `PickledOrderedDict`, plain containers), and
import and call nothing. Kept apart from the opcode machine because this table is the
whole of what a file may ask for: the one place to read when judging what the reader
accepts, and the one place to change when torch adds a rebuild function.
"""

from __future__ import annotations

import _compat_pickle
from typing import Any

from convert.core.errors import FormatError, UnsafeInputError, UnsupportedError
from convert.formats.torch.records import (
    STORAGE_CLASSES,
    TORCH_DTYPES,
    Global,
    PickledOrderedDict,
    StorageRef,
    StorageType,
    TensorRef,
    TorchDtype,
    short,
    torch_dtype,
)


def _allowed() -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in TORCH_DTYPES:
        table[f"torch.{name}"] = torch_dtype(name)
    for cls, dtype in STORAGE_CLASSES.items():
        for module in ("torch", "torch.cuda"):
            table[f"{module}.{cls}"] = StorageType(cls, torch_dtype(dtype))
    for module in ("torch", "torch.storage"):
        table[f"{module}.UntypedStorage"] = StorageType("UntypedStorage", None)
    for name, handler in (
        ("collections.OrderedDict", _ordered_dict),
        ("collections.Counter", _plain_dict),
        ("torch._utils._rebuild_tensor", _rebuild_tensor),
        ("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
        ("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3),
        ("torch._utils._rebuild_parameter", _rebuild_parameter),
        ("torch._utils._rebuild_parameter_with_state", _rebuild_parameter),
        ("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2),
        ("torch.nn.parameter.Parameter", _parameter),
        ("torch.Size", _size),
        ("torch.device", _device),
        ("_codecs.encode", _encode),
        ("builtins.bytearray", _bytearray),
        ("builtins.set", _set),
        ("builtins.complex", _complex),
    ):
        table[name] = Global(
            name, handler, new=handler if name.startswith(("collections", "builtins")) else None
        )
    table["torch.Tensor"] = Global("torch.Tensor")
    return table


# Names torch allows but this reader cannot turn into dense numpy tensors.
UNSUPPORTED = {
    "torch._utils._rebuild_qtensor": "quantized tensors",
    "torch._utils._rebuild_sparse_tensor": "sparse tensors",
    "torch._utils._rebuild_nested_tensor": "nested tensors",
    "torch._utils._rebuild_meta_tensor_no_storage": "meta tensors",
    "torch._utils._rebuild_wrapper_subclass": "tensor subclasses",
    "torch._utils._rebuild_device_tensor_from_numpy": "device tensors from numpy",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "device tensors",
    "torch.serialization._get_layout": "sparse tensor layouts",
}


def python3_name(module: str, name: str) -> tuple[str, str]:
    """The name pickle (and torch) resolve a Python 2 name to (protocol <= 2 writes them)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


# --------------------------------------------------------------------------------------
# Handlers (pure functions over already-built values; they import and call nothing)


def _args(args: tuple, lo: int, hi: int, what: str) -> tuple:
    if type(args) is not tuple or not lo <= len(args) <= hi:
        raise FormatError(
            f"{what} called with {len(args) if isinstance(args, tuple) else '?'} arguments"
        )
    return args


_INT_ONLY = frozenset((int,))


def _ints(value: Any, what: str) -> tuple[int, ...]:
    # (element types compared as a set: checked in C, twice for every tensor)
    if not isinstance(value, (tuple, list)) or not _INT_ONLY.issuperset(map(type, value)):
        raise FormatError(f"{what} is not a tuple of integers: {short(value)}")
    return tuple(value)


def _make_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, dtype: TorchDtype | None
) -> TensorRef:
    if type(storage) is not StorageRef:
        raise FormatError(f"tensor rebuilt from {short(storage)}, not a storage")
    if type(offset) is not int or offset < 0:
        raise FormatError(f"tensor has a bad storage offset {short(offset)}")
    if type(size) is not tuple or type(stride) is not tuple:  # (tuples: checked below)
        size, stride = _ints(size, "tensor size"), _ints(stride, "tensor stride")
    dims = size + stride
    if not _INT_ONLY.issuperset(map(type, dims)):
        _ints(size, "tensor size"), _ints(stride, "tensor stride")  # (says which)
    if len(size) != len(stride) or (dims and min(dims) < 0):
        raise FormatError(f"tensor has size {list(size)} and stride {list(stride)}")
    if dtype is None:
        dtype = storage.type.dtype
        if dtype is None:
            raise FormatError("tensor on an untyped storage names no dtype")
    if dtype.numpy is None:
        raise UnsupportedError(f"tensor of {dtype!r}: numpy has no such dtype")
    return TensorRef(
        storage,
        dtype,
        offset,
        size,
        stride,
        requires_grad if type(requires_grad) is bool else bool(requires_grad),
    )


def _rebuild_tensor(args: tuple) -> TensorRef:
    storage, offset, size, stride = _args(args, 4, 4, "_rebuild_tensor")
    return _make_tensor(storage, offset, size, stride, False, None)


def _rebuild_tensor_v2(args: tuple) -> TensorRef:
    if len(args) != 6:  # (torch's own call: storage, offset, size, stride, grad, hooks)
        _args(args, 6, 7, "_rebuild_tensor_v2")
    return _make_tensor(args[0], args[1], args[2], args[3], args[4], None)


def _rebuild_tensor_v3(args: tuple) -> TensorRef:
    storage, offset, size, stride, requires_grad, _hooks, dtype, *_ = _args(
        args, 7, 8, "_rebuild_tensor_v3"
    )
    if not isinstance(dtype, TorchDtype):
        raise FormatError(f"_rebuild_tensor_v3 given {short(dtype)} as dtype")
    return _make_tensor(storage, offset, size, stride, requires_grad, dtype)


def _as_parameter(data: Any, requires_grad: Any) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise FormatError(f"Parameter of {short(data)}, not a tensor")
    return TensorRef(
        data.storage,
        data.dtype,
        data.offset,
        data.shape,
        data.stride,
        bool(requires_grad),
        parameter=True,
    )


def _rebuild_parameter(args: tuple) -> TensorRef:
    data, requires_grad, *_ = _args(args, 3, 4, "_rebuild_parameter")
    return _as_parameter(data, requires_grad)


def _parameter(args: tuple) -> TensorRef:
    data, *rest = _args(args, 1, 2, "Parameter")
    return _as_parameter(data, rest[0] if rest else True)


def _rebuild_from_type_v2(args: tuple) -> Any:
    func, new_type, func_args, _state = _args(args, 4, 4, "_rebuild_from_type_v2")
    if not (isinstance(func, Global) and func.call and isinstance(func_args, tuple)):
        raise FormatError(f"_rebuild_from_type_v2 of {short(func)}")
    if not isinstance(new_type, Global) or new_type.name not in (
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
    ):
        raise UnsupportedError(f"tensor subclass {short(new_type)}")
    result = func.call(func_args)
    if new_type.name == "torch.nn.parameter.Parameter":
        result = _as_parameter(result, True)
    return result


def _ordered_dict(args: tuple) -> PickledOrderedDict:
    result = PickledOrderedDict()
    if not args:  # every tensor's (empty) backward hooks: skip the checks below
        return result
    _args(args, 0, 1, "OrderedDict")
    for pair in args[0] if args else ():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise FormatError("OrderedDict built from something that is not (key, value) pairs")
        setitem(result, pair[0], pair[1])
    return result


def _plain_dict(args: tuple) -> dict:
    _args(args, 0, 1, "Counter")
    if args and not isinstance(args[0], dict):
        raise FormatError("Counter built from something that is not a dict")
    return dict(args[0]) if args else {}


def _size(args: tuple) -> tuple[int, ...]:
    (dims,) = _args(args, 1, 1, "torch.Size")
    return _ints(dims, "torch.Size")


def _device(args: tuple) -> str:
    _args(args, 1, 2, "torch.device")
    if not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in args):
        raise FormatError(f"torch.device{short(args)}")
    return ":".join(str(a) for a in args)


def _encode(args: tuple) -> bytes:
    text, *encoding = _args(args, 1, 2, "_codecs.encode")
    codec = encoding[0] if encoding else "utf-8"
    if not isinstance(text, str) or codec not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafeInputError(f"_codecs.encode with codec {short(codec)} is not allowed")
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise FormatError(f"_codecs.encode: {exc}") from None


def _bytearray(args: tuple) -> bytearray:
    _args(args, 0, 1, "bytearray")
    # Never bytearray(n): an integer argument would allocate n bytes the file does not hold.
    if args and not isinstance(args[0], (bytes, bytearray, list)):
        raise FormatError(f"bytearray of {short(args[0])}")
    try:
        return bytearray(args[0]) if args else bytearray()
    except (TypeError, ValueError) as exc:
        raise FormatError(f"bytearray: {exc}") from None


def _set(args: tuple) -> set:
    _args(args, 0, 1, "set")
    if args and not isinstance(args[0], (list, tuple)):
        raise FormatError(f"set of {short(args[0])}")
    try:
        return set(args[0]) if args else set()
    except TypeError as exc:
        raise FormatError(f"set: {exc}") from None


def _complex(args: tuple) -> complex:
    _args(args, 1, 2, "complex")
    if not all(type(a) in (int, float) for a in args):
        raise FormatError(f"complex{short(args)}")
    return complex(*args)


def setitem(target: Any, key: Any, value: Any) -> None:
    """`target[key] = value`, an unhashable key a FormatError (DICT, SETITEM(S), OrderedDict)."""
    try:
        target[key] = value
    except TypeError:
        raise FormatError(f"unhashable dictionary key {short(key)}") from None


ALLOWED = _allowed()
