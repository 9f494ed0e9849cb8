"""A restricted pickle reader for `torch.save` files that imports and calls nothing.

Why hand-written: `pickle.Unpickler` with a `find_class` allowlist still hands *real*
callables to its C virtual machine, which then calls them (REDUCE), calls `__setstate__`
and `__new__` (BUILD, NEWOBJ) and trusts whatever they return; its safety rests on every
allowed callable being harmless for every argument. Here the machine is ours: a GLOBAL
opcode resolves a name to an inert marker from a fixed table (`ALLOWED`), REDUCE and
NEWOBJ run our own handlers for those markers (building plain records such as
`TensorRef`), and anything outside the table is refused at the GLOBAL itself, naming the
global, before anything is built. No module is imported, no function of the file's
choosing is called. The table covers the same ground as `torch.load(weights_only=True)`:
OrderedDict, tensor rebuild functions, storage classes, Parameter, torch.Size, dtypes,
and plain containers and scalars.

Every length is checked against the bytes that remain before it is read, memo and stack
misuse is a FormatError, and the machine consumes at least one byte per step, so a
hostile pickle can neither run code, nor loop, nor allocate beyond a small multiple of its
own size (one Python object per opcode at most).

Speed: the loop runs the opcodes torch writes most inline, and recognises the run of ~30
opcodes that builds each tensor with one regex match (`_TENSOR_RUN`), then makes the same
memo writes and handler calls those opcodes would; a run it cannot take whole (anything
unusual in it) is left to the loop, opcode by opcode.
"""

from __future__ import annotations

import _compat_pickle
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO

import numpy as np

from ...dtypes import from_name
from ...errors import FormatError, UnsafeInputError, UnsupportedError

# --------------------------------------------------------------------------------------
# What the machine builds


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
            raise UnsupportedError(f"torch.{self.name} holds {self.dtype!r}, which numpy "
                                   "cannot represent")
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


class PickledOrderedDict(OrderedDict):
    """An OrderedDict plus the attributes BUILD gave it (a state dict's `_metadata`)."""

    @property
    def attributes(self) -> dict[str, Any]:
        # (made when first asked for: every tensor's backward hooks are an OrderedDict)
        return self.__dict__.setdefault("_attributes", {})


# --------------------------------------------------------------------------------------
# The allowlist: names the pickle may ask for, each mapped to an inert marker


@dataclass(frozen=True, eq=False)
class Global:
    """A name from the allowlist; `call` is our handler for REDUCE (None: not callable)."""

    name: str
    call: Callable[[tuple], Any] | None = None
    new: Callable[[tuple], Any] | None = None  # handler for NEWOBJ

    def __repr__(self) -> str:
        return self.name


# torch dtype name -> numpy dtype name (None: no numpy equivalent)
TORCH_DTYPES: dict[str, str | None] = {
    "float32": "float32", "float64": "float64", "float16": "float16", "bfloat16": "bfloat16",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "bool": "bool", "complex64": "complex64", "complex128": "complex128",
    "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
    "complex32": None, "qint8": None, "quint8": None, "qint32": None, "quint4x2": None,
    "quint2x4": None, "float4_e2m1fn_x2": None, "bits1x8": None, "bits2x4": None,
    "bits4x2": None, "bits8": None, "bits16": None,
    **{f"uint{n}": None for n in range(1, 8)}, **{f"int{n}": None for n in range(1, 8)},
}

# legacy typed storage class -> torch dtype name
STORAGE_CLASSES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "CharStorage": "int8", "ShortStorage": "int16",
    "IntStorage": "int32", "LongStorage": "int64", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}


def torch_dtype(name: str) -> TorchDtype:
    return TorchDtype(name, TORCH_DTYPES[name])


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
        table[name] = Global(name, handler,
                             new=handler if name.startswith(("collections", "builtins")) else None)
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



def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The name pickle (and torch) resolve a Python 2 name to (protocol <= 2 writes them)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


# --------------------------------------------------------------------------------------
# Handlers (pure functions over already-built values; they import and call nothing)


def _args(args: tuple, lo: int, hi: int, what: str) -> tuple:
    if type(args) is not tuple or not lo <= len(args) <= hi:
        raise FormatError(f"{what} called with {len(args) if isinstance(args, tuple) else '?'} "
                          "arguments")
    return args


_INT_ONLY = frozenset((int,))


def _ints(value: Any, what: str) -> tuple[int, ...]:
    # (element types compared as a set: checked in C, twice for every tensor)
    if not isinstance(value, (tuple, list)) or not _INT_ONLY.issuperset(map(type, value)):
        raise FormatError(f"{what} is not a tuple of integers: {_short(value)}")
    return tuple(value)


def _make_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                 dtype: TorchDtype | None) -> TensorRef:
    if type(storage) is not StorageRef:
        raise FormatError(f"tensor rebuilt from {_short(storage)}, not a storage")
    if type(offset) is not int or offset < 0:
        raise FormatError(f"tensor has a bad storage offset {_short(offset)}")
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
    return TensorRef(storage, dtype, offset, size, stride,
                     requires_grad if type(requires_grad) is bool else bool(requires_grad))


def _rebuild_tensor(args: tuple) -> TensorRef:
    storage, offset, size, stride = _args(args, 4, 4, "_rebuild_tensor")
    return _make_tensor(storage, offset, size, stride, False, None)


def _rebuild_tensor_v2(args: tuple) -> TensorRef:
    if len(args) != 6:  # (torch's own call: storage, offset, size, stride, grad, hooks)
        _args(args, 6, 7, "_rebuild_tensor_v2")
    return _make_tensor(args[0], args[1], args[2], args[3], args[4], None)


def _rebuild_tensor_v3(args: tuple) -> TensorRef:
    storage, offset, size, stride, requires_grad, _hooks, dtype, *_ = _args(
        args, 7, 8, "_rebuild_tensor_v3")
    if not isinstance(dtype, TorchDtype):
        raise FormatError(f"_rebuild_tensor_v3 given {_short(dtype)} as dtype")
    return _make_tensor(storage, offset, size, stride, requires_grad, dtype)


def _as_parameter(data: Any, requires_grad: Any) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise FormatError(f"Parameter of {_short(data)}, not a tensor")
    return TensorRef(data.storage, data.dtype, data.offset, data.shape, data.stride,
                     bool(requires_grad), parameter=True)


def _rebuild_parameter(args: tuple) -> TensorRef:
    data, requires_grad, *_ = _args(args, 3, 4, "_rebuild_parameter")
    return _as_parameter(data, requires_grad)


def _parameter(args: tuple) -> TensorRef:
    data, *rest = _args(args, 1, 2, "Parameter")
    return _as_parameter(data, rest[0] if rest else True)


def _rebuild_from_type_v2(args: tuple) -> Any:
    func, new_type, func_args, _state = _args(args, 4, 4, "_rebuild_from_type_v2")
    if not (isinstance(func, Global) and func.call and isinstance(func_args, tuple)):
        raise FormatError(f"_rebuild_from_type_v2 of {_short(func)}")
    if not isinstance(new_type, Global) or new_type.name not in (
            "torch.Tensor", "torch.nn.parameter.Parameter"):
        raise UnsupportedError(f"tensor subclass {_short(new_type)}")
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
        _setitem(result, pair[0], pair[1])
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
        raise FormatError(f"torch.device{_short(args)}")
    return ":".join(str(a) for a in args)


def _encode(args: tuple) -> bytes:
    text, *encoding = _args(args, 1, 2, "_codecs.encode")
    codec = (encoding[0] if encoding else "utf-8")
    if not isinstance(text, str) or codec not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafeInputError(f"_codecs.encode with codec {_short(codec)} is not allowed")
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise FormatError(f"_codecs.encode: {exc}") from None


def _bytearray(args: tuple) -> bytearray:
    _args(args, 0, 1, "bytearray")
    # Never bytearray(n): an integer argument would allocate n bytes the file does not hold.
    if args and not isinstance(args[0], (bytes, bytearray, list)):
        raise FormatError(f"bytearray of {_short(args[0])}")
    try:
        return bytearray(args[0]) if args else bytearray()
    except (TypeError, ValueError) as exc:
        raise FormatError(f"bytearray: {exc}") from None


def _set(args: tuple) -> set:
    _args(args, 0, 1, "set")
    if args and not isinstance(args[0], (list, tuple)):
        raise FormatError(f"set of {_short(args[0])}")
    try:
        return set(args[0]) if args else set()
    except TypeError as exc:
        raise FormatError(f"set: {exc}") from None


def _complex(args: tuple) -> complex:
    _args(args, 1, 2, "complex")
    if not all(type(a) in (int, float) for a in args):
        raise FormatError(f"complex{_short(args)}")
    return complex(*args)


def _setitem(target: Any, key: Any, value: Any) -> None:
    try:
        target[key] = value
    except TypeError:
        raise FormatError(f"unhashable dictionary key {_short(key)}") from None


def _short(value: Any) -> str:
    if isinstance(value, (str, bytes)):
        text = repr(value[:60])
    elif isinstance(value, (int, float, bool, type(None), Global, TorchDtype, StorageType)):
        text = repr(value)
    else:
        text = f"a {type(value).__name__}"
    return text


ALLOWED = _allowed()

# --------------------------------------------------------------------------------------
# The machine

PersistentLoad = Callable[[tuple], Any]


class _Mark:
    """Stack marker left by MARK (never visible to handlers)."""


MARK = _Mark()


# torch writes every tensor with one run of opcodes, its globals and constant strings
# fetched from the memo once they are there (a BINGET of the rebuild function starts it):
#
#   GET rebuild ( ( GET 'storage' GET type BINUNICODE key PUT GET location INT numel [N] t
#   PUT Q INT offset TUPLE size PUT TUPLE stride PUT NEWFALSE|NEWTRUE GET OrderedDict ) R
#   PUT t PUT R PUT
#
# The loop recognises such a run with one regex match (run_tensor then does what its
# opcodes do), since running 30 opcodes one by one costs most of the time of listing a
# checkpoint of small tensors. Storage keys are decimal (the length check makes the match
# exact); anything else (other ints, strings, first uses of a global) takes the loop.
_GET = rb"(h.|j....)"
_PUT = rb"(q.|r....)"
_INT = rb"(K.|M..|J....)"
_TUPLE = rb"(\)|(?:K.|M..|J....){1,3}[\x85-\x87]|\((?:K.|M..|J....)*t)"
_TENSOR_RUN = re.compile(
    rb"(h.)\(\(" + _GET + _GET + rb"X([\x01-\x14])\x00\x00\x00([0-9]+)" + _PUT + _GET + _INT
    + rb"(N?)t" + _PUT + rb"Q" + _INT + _TUPLE + _PUT + rb"?" + _TUPLE + _PUT + rb"?"
    + rb"([\x88\x89])" + _GET + rb"\)R" + _PUT + rb"t" + _PUT + rb"R" + _PUT, re.DOTALL)
_U32, _I32 = struct.Struct("<I"), struct.Struct("<i")
_INT_WIDTH = {0x4B: 2, 0x4D: 3, 0x4A: 5}  # BININT1, BININT2, BININT: opcode and value


def _slots(*raws: bytes) -> Sequence[int]:
    """The memo slots of `_GET` and `_PUT` matches (decoded together: one call a run)."""
    joined = b"".join(raws)
    if len(joined) == 2 * len(raws):  # (every one short: the slots are every other byte)
        return joined[1::2]
    if len(joined) == 5 * len(raws):
        return struct.unpack_from("<" + "xI" * len(raws), joined)
    return [_slot(raw) for raw in raws]


def _slot(raw: bytes) -> int:
    """The memo slot of one `_GET` or `_PUT` match."""
    return raw[1] if len(raw) == 2 else _U32.unpack_from(raw, 1)[0]


def _run_int(raw: bytes) -> int:
    """The value of an `_INT` match."""
    if len(raw) == 2:
        return raw[1]
    return raw[1] | raw[2] << 8 if len(raw) == 3 else _I32.unpack_from(raw, 1)[0]


def _run_tuple(raw: bytes) -> tuple[int, ...] | None:
    """The ints of a `_TUPLE` match; None when TUPLE1/2/3 holds another count."""
    if raw == b")":
        return ()
    body, count = (raw[1:-1], None) if raw[0] == 0x28 else (raw[:-1], raw[-1] - 0x84)
    items, at = [], 0
    while at < len(body):
        width = _INT_WIDTH[body[at]]
        items.append(_run_int(body[at:at + width]))
        at += width
    return tuple(items) if count in (None, len(items)) else None


class Unpickler:
    """Run one pickle from `source` (bytes, or a file positioned at the pickle), reading at
    most `limit` bytes; `consumed` tells where it ended. See the module doc."""

    MAX_CHUNK = 1 << 20  # read-ahead from files starts at 4 KiB and doubles up to this

    def __init__(self, source: bytes | BinaryIO, limit: int,
                 persistent_load: PersistentLoad | None, where: str = "pickle"):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.buffer, self.stream = bytes(source[:limit]), None
        else:  # read ahead in chunks: a per-opcode file read would dominate the run time
            self.buffer, self.stream = b"", source
        self.limit = limit
        self.base = 0  # input bytes dropped from the front of `buffer`
        self.chunk = 4096  # small at first: storage bytes may follow a short pickle
        self.pos = 0
        self.persistent_load = persistent_load
        self.where = where
        self.tuples: dict[bytes, tuple[int, ...] | None] = {}  # see run_tuple

    # -- input ---------------------------------------------------------------------
    @property
    def consumed(self) -> int:
        return self.base + self.pos

    def _fill(self, n: int) -> None:
        """Make `n` bytes available at `pos`, or fail as truncated."""
        kept = self.buffer[self.pos:]
        self.base += self.pos
        self.pos = 0
        left = self.limit - self.base - len(kept)
        if n - len(kept) > left:
            raise self.error(f"needs {n} bytes but only {len(kept) + left} remain (truncated "
                             "or corrupted)")
        parts = [kept]
        if self.stream is not None:
            want = min(max(n - len(kept), self.chunk), left)
            self.chunk = min(self.chunk * 2, self.MAX_CHUNK)
            while want > 0:  # (a raw file may return less than asked)
                piece = self.stream.read(want)
                if not piece:
                    break
                parts.append(piece)
                want -= len(piece)
        self.buffer = b"".join(parts)
        if len(self.buffer) < n:
            raise self.error("ends early (truncated)")

    def read(self, n: int) -> bytes:
        if n < 0:
            raise self.error("has a negative length")
        end = self.pos + n
        if end > len(self.buffer):
            self._fill(n)
            end = n
        data = self.buffer[self.pos:end]
        self.pos = end
        return data

    def readline(self) -> bytes:
        """A text argument (GLOBAL, INST): at most 4096 bytes up to a newline."""
        end = self.buffer.find(b"\n", self.pos, self.pos + 4096)
        if end < 0 and self.stream is not None:
            self._fill(min(4096, self.limit - self.consumed))
            end = self.buffer.find(b"\n", self.pos, self.pos + 4096)
        if end < 0:
            raise self.error("has an unterminated text argument")
        line = self.buffer[self.pos:end]
        self.pos = end + 1
        return line

    def error(self, message: str) -> FormatError:
        return FormatError(f"{self.where}: {message} (at byte {self.consumed})")

    # -- the loop ------------------------------------------------------------------
    def load(self) -> Any:
        stack: list[Any] = []
        memo: dict[int, Any] = {}
        self.stack, self.memo = stack, memo
        ops = _OPS
        append = stack.append
        unpack_u32 = _U32.unpack_from
        missing = MARK  # (never a memo value: MARK cannot be memoized)
        persistent_load = self.persistent_load
        tensor_run = _TENSOR_RUN.match
        buf, pos = self.buffer, self.pos
        size = len(buf)
        # The opcodes torch writes for every tensor are run inline (a call per opcode
        # would dominate the run time). Each inline case runs only when its bytes are
        # buffered and its operands are plainly valid; anything else takes the general
        # path below, which raises the precise error.
        while True:
            if pos < size:
                code = buf[pos]
                if code == 0x72:  # LONG_BINPUT
                    if pos + 5 <= size and stack and stack[-1] is not MARK:
                        memo[unpack_u32(buf, pos + 1)[0]] = stack[-1]
                        pos += 5
                        continue
                elif code == 0x68:  # BINGET
                    if buf.startswith(b"((", pos + 2):  # maybe a tensor: see _TENSOR_RUN
                        run = tensor_run(buf, pos)
                        if run is not None and (value := self.run_tensor(run)) is not missing:
                            append(value)
                            pos = run.end()
                            continue
                    if pos + 2 <= size:
                        value = memo.get(buf[pos + 1], missing)
                        if value is not missing:
                            append(value)
                            pos += 2
                            continue
                elif code == 0x58:  # BINUNICODE
                    if pos + 5 <= size:
                        end = pos + 5 + unpack_u32(buf, pos + 1)[0]
                        if end <= size:
                            try:
                                append(buf[pos + 5:end].decode("utf-8", "surrogatepass"))
                                pos = end
                                continue
                            except UnicodeDecodeError:
                                pass
                elif code == 0x4B:  # BININT1
                    if pos + 2 <= size:
                        append(buf[pos + 1])
                        pos += 2
                        continue
                elif code == 0x28:  # MARK
                    append(MARK)
                    pos += 1
                    continue
                elif code == 0x86:  # TUPLE2
                    if len(stack) >= 2 and stack[-1] is not MARK and stack[-2] is not MARK:
                        pair = (stack[-2], stack[-1])
                        del stack[-2:]
                        append(pair)
                        pos += 1
                        continue
                elif code == 0x89:  # NEWFALSE
                    append(False)
                    pos += 1
                    continue
                elif code == 0x29:  # EMPTY_TUPLE
                    append(())
                    pos += 1
                    continue
                elif code == 0x52:  # REDUCE
                    if len(stack) >= 2:
                        args, func = stack[-1], stack[-2]
                        if (type(args) is tuple and type(func) is Global
                                and func.call is not None):
                            del stack[-2:]
                            append(func.call(args))
                            pos += 1
                            continue
                elif code == 0x74:  # TUPLE
                    for i in range(len(stack) - 1, -1, -1):
                        if stack[i] is MARK:
                            items = tuple(stack[i + 1:])
                            del stack[i:]
                            append(items)
                            pos += 1
                            break
                    else:
                        i = -1
                    if i >= 0:
                        continue
                elif code == 0x51:  # BINPERSID
                    if stack and stack[-1] is not MARK and persistent_load is not None:
                        append(persistent_load(stack.pop()))
                        pos += 1
                        continue
                elif code == 0x71 and pos + 2 <= size and stack and stack[-1] is not MARK:
                    memo[buf[pos + 1]] = stack[-1]  # BINPUT
                    pos += 2
                    continue
            # The general path: every opcode, with all its checks.
            self.pos = pos
            if pos >= len(buf):
                self._fill(1)
            code = self.buffer[self.pos]
            self.pos += 1
            op = ops.get(code)
            if op is None:
                raise self.refused_opcode(code)
            if op is _stop:
                if len(stack) != 1 or stack[0] is MARK:
                    raise self.error("leaves a malformed stack at STOP")
                return stack.pop()
            try:
                op(self)
            except IndexError:
                raise self.error(f"opcode {chr(code)!r} finds too few values on the "
                                 "stack") from None
            buf, pos = self.buffer, self.pos
            size = len(buf)

    def run_tensor(self, run: re.Match) -> Any:
        """The tensor a `_TENSOR_RUN` match builds, with the memo writes and handler calls
        its opcodes make; MARK (nothing changed) when its operands are not the plain ones,
        so that the loop runs the opcodes one by one (and says what is wrong)."""
        (func, word, kind, key_len, key, key_put, location, numel, none, pid_put, offset,
         size, size_put, stride, stride_put, grad, hooks, hooks_put, args_put, put
         ) = run.groups()
        memo, tuples = self.memo, self.tuples
        size = tuples.get(size) or self.run_tuple(size)  # (a scalar's () is looked up again)
        stride = tuples.get(stride) or self.run_tuple(stride)
        func, word, kind, location, hooks = _slots(func, word, kind, location, hooks)
        puts = _slots(key_put, pid_put, hooks_put, args_put, put)
        size_put = _slot(size_put) if size_put else None
        stride_put = _slot(stride_put) if stride_put else None
        if (len(key) != key_len[0] or size is None or stride is None
                or self.persistent_load is None or location == puts[0]
                or hooks in (puts[0], puts[1], size_put, stride_put)):  # (gets see the old memo)
            return MARK
        func, word, kind, location, hooks = (memo.get(func, MARK), memo.get(word, MARK),
                                             memo.get(kind, MARK), memo.get(location, MARK),
                                             memo.get(hooks, MARK))
        if not (type(func) is Global and func.call is not None and type(hooks) is Global
                and hooks.call is not None) or MARK is word or MARK is kind or MARK is location:
            return MARK
        key = key.decode("ascii")
        pid = (word, kind, key, location, _run_int(numel)) + ((None,) if none else ())
        storage = self.persistent_load(pid)
        hooks = hooks.call(())
        args = (storage, _run_int(offset), size, stride, grad == b"\x88", hooks)
        tensor = func.call(args)
        # (in the opcodes' order: a slot put twice keeps the later value)
        memo[puts[0]] = key
        memo[puts[1]] = pid
        if size_put is not None:
            memo[size_put] = size
        if stride_put is not None:
            memo[stride_put] = stride
        memo[puts[2]] = hooks
        memo[puts[3]] = args
        memo[puts[4]] = tensor
        return tensor

    def run_tuple(self, raw: bytes) -> tuple[int, ...] | None:
        """The ints of a `_TUPLE` match, remembered (shapes repeat); None when its opcode
        takes another count than it holds."""
        value = self.tuples[raw] = _run_tuple(raw)
        return value

    def refused_opcode(self, code: int) -> Exception:
        if code in (ord("i"), ord("o")):  # INST / OBJ: protocol-0 class instantiation
            if code == ord("i"):
                module, name = self.readline(), self.readline()
                return self.refuse(module.decode("utf-8", "replace"),
                                   name.decode("utf-8", "replace"))
            return UnsafeInputError(f"{self.where}: refuses the OBJ opcode (instantiates an "
                                    "arbitrary class); nothing was run")
        if code in (0x82, 0x83, 0x84):
            return UnsafeInputError(f"{self.where}: refuses the EXT opcodes (copyreg "
                                    "extension registry); nothing was run")
        return self.error(f"uses pickle opcode 0x{code:02x}, which torch.save never writes")

    def refuse(self, module: str, name: str) -> UnsafeInputError:
        return UnsafeInputError(
            f"{self.where}: refuses global {module}.{name}: only tensors, storages, dtypes and "
            "plain containers are allowed (the file would run code under "
            "torch.load(weights_only=False)); nothing was run")

    # -- helpers for the opcodes ---------------------------------------------------
    def pop_mark(self) -> list[Any]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is MARK:
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise self.error("has no MARK for a collection opcode")

    def pop(self) -> Any:
        value = self.stack.pop()
        if value is MARK:
            raise self.error("pops a MARK as a value")
        return value

    def top(self) -> Any:
        value = self.stack[-1]
        if value is MARK:
            raise self.error("uses a MARK as a value")
        return value

    def push_global(self, module: str, name: str) -> None:
        module, name = _python3_name(module, name)
        full = f"{module}.{name}"
        if full in ALLOWED:
            self.stack.append(ALLOWED[full])
        elif full in UNSUPPORTED:
            raise UnsupportedError(f"{self.where}: holds {UNSUPPORTED[full]} ({full}), which "
                                   "this tool does not convert")
        else:
            raise self.refuse(module, name)

    def text(self, data: bytes) -> str:
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.error("holds a string that is not UTF-8") from None


# Opcode implementations: each takes the machine. Kept flat for speed and clarity.


def _stop(m: Unpickler) -> None:  # handled in the loop
    raise AssertionError


def _proto(m: Unpickler) -> None:
    if m.read(1)[0] > 5:
        raise m.error("uses an unknown pickle protocol")


def _frame(m: Unpickler) -> None:
    m.read(8)


def _push(value: Any) -> Callable[[Unpickler], None]:
    return lambda m: m.stack.append(value() if callable(value) else value)


def _binint(m: Unpickler) -> None:
    m.stack.append(struct.unpack("<i", m.read(4))[0])


def _binint1(m: Unpickler) -> None:
    m.stack.append(m.read(1)[0])


def _binint2(m: Unpickler) -> None:
    m.stack.append(struct.unpack("<H", m.read(2))[0])


MAX_LONG_BYTES = 256  # far beyond any real value; keeps every int printable in messages


def _long(size_format: str, size_len: int) -> Callable[[Unpickler], None]:
    def op(m: Unpickler) -> None:
        n = struct.unpack(size_format, m.read(size_len))[0]
        if n > MAX_LONG_BYTES:
            raise m.error(f"holds a {n}-byte integer")
        m.stack.append(int.from_bytes(m.read(n), "little", signed=True))
    return op


def _binfloat(m: Unpickler) -> None:
    m.stack.append(struct.unpack(">d", m.read(8))[0])


def _sized(size_format: str, size_len: int, kind: str) -> Callable[[Unpickler], None]:
    def op(m: Unpickler) -> None:
        n = struct.unpack(size_format, m.read(size_len))[0]
        data = m.read(n)
        if kind == "str":
            m.stack.append(m.text(data))
        elif kind == "bytes":
            m.stack.append(data)
        elif kind == "bytearray":
            m.stack.append(bytearray(data))
        else:  # py2 str: text if it decodes, bytes otherwise (as torch.load's utf-8 default)
            try:
                m.stack.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                m.stack.append(data)
    return op


def _mark(m: Unpickler) -> None:
    m.stack.append(MARK)


def _pop(m: Unpickler) -> None:
    m.stack.pop()


def _pop_mark(m: Unpickler) -> None:
    m.pop_mark()


def _dup(m: Unpickler) -> None:
    m.stack.append(m.top())


def _tuple(m: Unpickler) -> None:
    m.stack.append(tuple(m.pop_mark()))


def _tuple_n(n: int) -> Callable[[Unpickler], None]:
    def op(m: Unpickler) -> None:
        items = [m.pop() for _ in range(n)][::-1]
        m.stack.append(tuple(items))
    return op


def _list(m: Unpickler) -> None:
    m.stack.append(m.pop_mark())


def _dict(m: Unpickler) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        raise m.error("DICT has an odd number of items")
    result: dict = {}
    for i in range(0, len(items), 2):
        _setitem(result, items[i], items[i + 1])
    m.stack.append(result)


def _append(m: Unpickler) -> None:
    value = m.pop()
    target = m.top()
    if type(target) is not list:
        raise m.error(f"APPEND to {_short(target)}")
    target.append(value)


def _appends(m: Unpickler) -> None:
    items = m.pop_mark()
    target = m.top()
    if type(target) is not list:
        raise m.error(f"APPENDS to {_short(target)}")
    target.extend(items)


def _dict_target(m: Unpickler) -> dict:
    target = m.top()
    if type(target) not in (dict, PickledOrderedDict):
        raise m.error(f"SETITEM on {_short(target)}")
    return target


def _setitem_op(m: Unpickler) -> None:
    value, key = m.pop(), m.pop()
    _setitem(_dict_target(m), key, value)


def _setitems(m: Unpickler) -> None:
    items = m.pop_mark()
    target = _dict_target(m)
    if len(items) % 2:
        raise m.error("SETITEMS has an odd number of items")
    try:  # (a state dict is 1000 items a SETITEMS)
        target.update(zip(items[::2], items[1::2], strict=True))
    except TypeError:  # an unhashable key: set again one by one (the same state) to name it
        for i in range(0, len(items), 2):
            _setitem(target, items[i], items[i + 1])


def _additems(m: Unpickler) -> None:
    items = m.pop_mark()
    target = m.top()
    if type(target) is not set:
        raise m.error(f"ADDITEMS to {_short(target)}")
    try:
        target.update(items)
    except TypeError:
        raise m.error("ADDITEMS of an unhashable value") from None


def _frozenset(m: Unpickler) -> None:
    try:
        m.stack.append(frozenset(m.pop_mark()))
    except TypeError:
        raise m.error("FROZENSET of an unhashable value") from None


def _get(size_format: str, size_len: int) -> Callable[[Unpickler], None]:
    def op(m: Unpickler) -> None:
        index = struct.unpack(size_format, m.read(size_len))[0]
        if index not in m.memo:
            raise m.error(f"refers to memo slot {index}, which was never filled")
        m.stack.append(m.memo[index])
    return op


def _put(size_format: str, size_len: int) -> Callable[[Unpickler], None]:
    def op(m: Unpickler) -> None:
        index = struct.unpack(size_format, m.read(size_len))[0]
        m.memo[index] = m.top()
    return op


def _memoize(m: Unpickler) -> None:
    m.memo[len(m.memo)] = m.top()


def _global(m: Unpickler) -> None:
    module = m.readline().decode("utf-8", "replace")
    name = m.readline().decode("utf-8", "replace")
    m.push_global(module, name)


def _stack_global(m: Unpickler) -> None:
    name, module = m.pop(), m.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise m.error("STACK_GLOBAL of something that is not a name")
    m.push_global(module, name)


def _callable(m: Unpickler, value: Any, use: str) -> Global:
    if not isinstance(value, Global) or getattr(value, use) is None:
        raise UnsafeInputError(f"{m.where}: refuses to call {_short(value)} (only the "
                               "allowlisted rebuild functions and containers may be called); "
                               "nothing was run")
    return value


def _reduce(m: Unpickler) -> None:
    args = m.pop()
    func = _callable(m, m.pop(), "call")
    if not isinstance(args, tuple):
        raise m.error(f"calls {func.name} with {_short(args)} instead of a tuple")
    m.stack.append(func.call(args))


def _newobj(m: Unpickler) -> None:
    args = m.pop()
    cls = _callable(m, m.pop(), "new")
    if not isinstance(args, tuple):
        raise m.error(f"creates {cls.name} with {_short(args)} instead of a tuple")
    m.stack.append(cls.new(args))


def _build(m: Unpickler) -> None:
    state = m.pop()
    target = m.top()
    if type(target) is PickledOrderedDict and isinstance(state, dict):
        for key in state:
            if not isinstance(key, str):
                raise m.error("BUILD gives an OrderedDict a non-string attribute")
        target.attributes.update(state)
    elif isinstance(target, TensorRef) and not state:
        pass  # an empty tensor state: nothing to set
    else:
        raise UnsafeInputError(f"{m.where}: refuses to set the state of {_short(target)} "
                               "(BUILD is only allowed on an OrderedDict); nothing was run")


def _binpersid(m: Unpickler) -> None:
    pid = m.pop()
    if m.persistent_load is None:
        raise m.error("refers to a persistent object where none is expected")
    m.stack.append(m.persistent_load(pid))


_OPS: dict[int, Callable[[Unpickler], None]] = {
    0x80: _proto, 0x95: _frame, ord("."): _stop,
    ord("N"): _push(None), 0x88: _push(True), 0x89: _push(False),
    ord("J"): _binint, ord("K"): _binint1, ord("M"): _binint2,
    0x8A: _long("<B", 1), 0x8B: _long("<i", 4), ord("G"): _binfloat,
    ord("X"): _sized("<I", 4, "str"), 0x8C: _sized("<B", 1, "str"),
    0x8D: _sized("<Q", 8, "str"),
    ord("B"): _sized("<I", 4, "bytes"), ord("C"): _sized("<B", 1, "bytes"),
    0x8E: _sized("<Q", 8, "bytes"), 0x96: _sized("<Q", 8, "bytearray"),
    ord("T"): _sized("<i", 4, "py2str"), ord("U"): _sized("<B", 1, "py2str"),
    ord("("): _mark, ord("0"): _pop, ord("1"): _pop_mark, ord("2"): _dup,
    ord(")"): _push(tuple), ord("t"): _tuple,
    0x85: _tuple_n(1), 0x86: _tuple_n(2), 0x87: _tuple_n(3),
    ord("]"): _push(list), ord("l"): _list, ord("a"): _append, ord("e"): _appends,
    ord("}"): _push(dict), ord("d"): _dict, ord("s"): _setitem_op, ord("u"): _setitems,
    0x8F: _push(set), 0x90: _additems, 0x91: _frozenset,
    ord("h"): _get("<B", 1), ord("j"): _get("<I", 4),
    ord("q"): _put("<B", 1), ord("r"): _put("<I", 4), 0x94: _memoize,
    ord("c"): _global, 0x93: _stack_global,
    ord("R"): _reduce, 0x81: _newobj, ord("b"): _build, ord("Q"): _binpersid,
}


def storage_from_pid(pid: Any, where: str) -> StorageRef:
    """Check a persistent id `('storage', type, key, location, numel[, view])`."""
    if (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"
            and type(pid[1]) is StorageType and type(pid[2]) is str and type(pid[3]) is str
            and type(pid[4]) is int and pid[4] >= 0):  # (torch's own: nothing else to check)
        return StorageRef(pid[2], pid[1], pid[3], pid[4])
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
        raise UnsafeInputError(f"{where}: refuses persistent id {_short(pid)}: only storages "
                               "are allowed; nothing was run")
    if len(pid) not in (5, 6):
        raise FormatError(f"{where}: storage reference has {len(pid)} fields, 5 or 6 expected")
    _, storage_type, key, location, numel, *view = pid
    if not isinstance(storage_type, StorageType):
        raise FormatError(f"{where}: storage of type {_short(storage_type)}")
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str) or not isinstance(location, str):
        raise FormatError(f"{where}: storage key {_short(key)} or location {_short(location)}")
    if type(numel) is not int or numel < 0:
        raise FormatError(f"{where}: storage {key!r} has a bad size {_short(numel)}")
    view_meta = None
    if view and view[0] is not None:
        v = view[0]
        if (not isinstance(v, tuple) or len(v) != 3 or not isinstance(v[0], str)
                or type(v[1]) is not int or type(v[2]) is not int or v[1] < 0 or v[2] < 0):
            raise FormatError(f"{where}: storage {key!r} has a malformed view {_short(v)}")
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
