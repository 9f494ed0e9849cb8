"""The `data.pkl` of a torch zip archive: pickle protocol 2 emitted opcode by opcode as
torch emits it (the standard pickler cannot name `torch._utils._rebuild_tensor_v2` without
importing torch). Each tensor is `_rebuild_tensor_v2(storage, 0, size, stride, False,
OrderedDict())` over a persistent storage `('storage', torch.FloatStorage, key, 'cpu',
numel)`; dtypes without a legacy storage class (float8, uint16/32/64) use
`UntypedStorage` + `_rebuild_tensor_v3`. The storages it names are collected in order,
for writer.py to write as records. (DCP's `.metadata`: records and calls, by name.)"""

from __future__ import annotations

import functools
import io
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from convert.core.errors import UnsupportedError
from convert.core.meta import TORCH_PARAMETER, TORCH_REQUIRES_GRAD, VIEW_OF
from convert.core.tensor import Tensor
from convert.formats.torch.opcode_bytes import (
    BINGET,
    BINPUT,
    LONG_MEMO,
    TUPLE_N,
    global_opcode,
    int_opcode,
    int_tuple_opcodes,
    str_opcode,
)
from convert.formats.torch.records import (
    STORAGE_CLASSES,
    TORCH_NAMES,
    PickledCall,
    PickledOrderedDict,
    PickledRecord,
    TorchDtype,
)

# numpy dtype name -> legacy storage class (None: UntypedStorage + _rebuild_tensor_v3)
_STORAGE_FOR = {dtype: cls for cls, dtype in STORAGE_CLASSES.items() if not dtype.startswith("q")}
MAX_DEPTH = 200


class _KindRefs(NamedTuple):
    """Memo references to what every tensor of one (dtype, parameter) kind names."""

    head: bytes  # [_rebuild_parameter] _rebuild_tensor_v2|v3 ( ( 'storage' StorageClass
    cpu: bytes
    hooks: bytes  # OrderedDict() for the backward hooks
    dtype: bytes  # the torch dtype global (_rebuild_tensor_v3 only)
    legacy: bool  # a typed storage class, sized in elements (else bytes)


class Pickler:
    """Protocol-2 opcodes for a tree of containers, plain values and graph Tensors."""

    def __init__(self, strided: bool = False) -> None:
        self.strided = strided  # permuted tensors as strided views (see _storage_of)
        self.out = io.BytesIO()
        self.memo: dict[Any, int] = {}
        self.puts = 0  # values memoized so far (the next memo index)
        self.alive: list[Any] = []
        self.storage_keys: dict[int, str] = {}
        self.storages: list[tuple[str, Tensor]] = []
        self.int_tuples: dict[tuple[int, ...], bytes] = {}  # shapes and strides repeat
        self.tensor_refs: dict[tuple, _KindRefs] = {}  # by (dtype, parameter)

    def dump(self, obj: Any) -> bytes:
        self.out.write(b"\x80\x02")
        self.save(obj, 0, "")
        self.out.write(b".")
        return self.out.getvalue()

    # -- memo ----------------------------------------------------------------------
    def _put(self, token: Any) -> None:
        index = self.puts
        self.memo[token] = index
        self._put_new()

    def _put_new(self) -> None:
        """Memoize the value just built, as Python's pickler does (only `_put` values are
        looked up again)."""
        index = self.puts
        self.puts = index + 1
        self.out.write(BINPUT[index] if index < 256 else LONG_MEMO.pack(b"r", index))

    def _get(self, token: Any) -> bool:
        index = self.memo.get(token)
        if index is None:
            return False
        self.out.write(BINGET[index] if index < 256 else LONG_MEMO.pack(b"j", index))
        return True

    def global_(self, module: str, name: str) -> None:
        token = ("global", module, name)
        if not self._get(token):
            self.out.write(b"c" + f"{module}\n{name}\n".encode())
            self._put(token)

    # The same opcodes as bytes, for save_tensor, which joins them into one write.
    def _memo_bytes(self, token: Any, first: Callable[..., bytes], *args: str) -> bytes:
        """A memo reference to `token`'s value, or `first(*args)` and its memo entry."""
        index = self.memo.get(token)
        if index is not None:
            return BINGET[index] if index < 256 else LONG_MEMO.pack(b"j", index)
        self.memo[token] = self.puts
        return first(*args) + self._next_put()

    def _next_put(self) -> bytes:
        index = self.puts
        self.puts = index + 1
        return BINPUT[index] if index < 256 else LONG_MEMO.pack(b"r", index)

    def _global_bytes(self, module: str, name: str) -> bytes:
        return self._memo_bytes(("global", module, name), global_opcode, module, name)

    def _str_bytes(self, value: str) -> bytes:
        return self._memo_bytes(("str", value), str_opcode, value)

    def _int_tuple_bytes(self, value: tuple[int, ...]) -> bytes:
        if not value:
            return b")"
        items = self.int_tuples.get(value)
        if items is None:
            items = self.int_tuples[value] = int_tuple_opcodes(value)
        return items + self._next_put()

    # -- values --------------------------------------------------------------------
    def save(self, obj: Any, depth: int, key: str) -> None:
        if depth > MAX_DEPTH:
            raise UnsupportedError(f"values nested more than {MAX_DEPTH} deep at {key!r}")
        write = self.out.write
        if obj is None:
            write(b"N")
        elif obj is True or obj is False:
            write(b"\x88" if obj else b"\x89")
        elif isinstance(obj, int):
            self.save_int(obj)
        elif isinstance(obj, float):
            write(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            self.save_str(obj)
        elif isinstance(obj, Tensor):
            self.save_tensor(obj, key)
        elif isinstance(obj, TorchDtype):
            self.global_("torch", obj.name)
        elif isinstance(obj, (bytes, bytearray)):
            self.save_bytes(obj, depth, key)
        elif isinstance(obj, complex):
            self.global_("builtins", "complex")
            self.save((obj.real, obj.imag), depth + 1, key)
            write(b"R")
            self._put_new()
        elif isinstance(obj, PickledRecord):
            self.save_record(obj, depth, key)
        elif isinstance(obj, PickledCall):  # (GLOBAL, the arguments, REDUCE)
            self.global_(obj.module, obj.name)
            self.save(obj.args, depth + 1, key)
            write(b"R")
            self._put_new()
        elif isinstance(obj, (set, frozenset)):
            self.global_("builtins", "set")
            self.save((list(obj),), depth + 1, key)
            write(b"R")
            self._put_new()
        elif isinstance(obj, tuple):
            self.save_tuple(obj, depth, key)
        elif isinstance(obj, list):
            self.save_list(obj, depth, key)
        elif isinstance(obj, dict):
            self.save_dict(obj, depth, key)
        else:
            raise UnsupportedError(f"cannot write a {type(obj).__name__} at {key!r}")

    def save_record(self, record: PickledRecord, depth: int, key: str) -> None:
        """`cls.__new__(cls)`, then its state (BUILD): a dataclass (DCP's metadata)."""
        self.global_(record.module, record.kind)
        self.out.write(b")\x81")  # (EMPTY_TUPLE, NEWOBJ)
        self._put_new()
        self.save(record.state if record.state is not None else record.fields, depth + 1, key)
        self.out.write(b"b")

    def save_str(self, value: str) -> None:
        if self._get(("str", value)):
            return
        data = value.encode("utf-8", "surrogatepass")
        self.out.write(b"X" + struct.pack("<I", len(data)) + data)
        self._put(("str", value))

    def save_int(self, value: int) -> None:
        self.out.write(int_opcode(value))

    def save_bytes(self, value: bytes | bytearray, depth: int, key: str) -> None:
        if isinstance(value, bytearray):
            self.global_("builtins", "bytearray")
            self.save((bytes(value),), depth + 1, key)
        else:  # how protocol 2 spells bytes: _codecs.encode(latin-1 text, 'latin1')
            self.global_("_codecs", "encode")
            self.save((value.decode("latin-1"), "latin1"), depth + 1, key)
        self.out.write(b"R")
        self._put_new()

    def save_tuple(self, value: tuple, depth: int, key: str) -> None:
        if not value:
            self.out.write(b")")
            return
        if all(type(item) is int for item in value):  # shapes and strides, written often
            self.out.write(
                b"".join(
                    [
                        b"(" if len(value) > 3 else b"",
                        *map(int_opcode, value),
                        b"t" if len(value) > 3 else TUPLE_N[len(value)],
                    ]
                )
            )
            self._put_new()
            return
        if len(value) > 3:
            self.out.write(b"(")
        for i, item in enumerate(value):
            self.save(item, depth + 1, f"{key}.{i}")
        self.out.write(b"t" if len(value) > 3 else bytes([0x84 + len(value)]))
        self._put_new()

    def save_list(self, value: list, depth: int, key: str) -> None:
        if self._get(id(value)):
            return
        self.out.write(b"]")
        self._put(id(value))
        self.alive.append(value)
        for start in range(0, len(value), 1000):  # batches as Python's pickler makes them
            batch = value[start : start + 1000]
            if len(batch) > 1:
                self.out.write(b"(")
            for i, item in enumerate(batch, start):
                self.save(item, depth + 1, f"{key}.{i}")
            self.out.write(b"e" if len(batch) > 1 else b"a")

    def save_dict(self, value: dict, depth: int, key: str) -> None:
        if self._get(id(value)):
            return
        self.alive.append(value)
        if isinstance(value, OrderedDict):
            self.global_("collections", "OrderedDict")
            self.out.write(b")R")
        else:
            self.out.write(b"}")
        self._put(id(value))
        items = list(value.items())
        for start in range(0, len(items), 1000):
            batch = items[start : start + 1000]
            if len(batch) > 1:
                self.out.write(b"(")
            for k, v in batch:
                child = f"{key}.{k}" if key else str(k)
                # (the common case, a state dict's str -> Tensor, without the dispatch)
                if type(k) is str and type(v) is Tensor:
                    self.save_str(k)
                    self.save_tensor(v, child)
                else:
                    self.save(k, depth + 1, key)
                    self.save(v, depth + 1, child)
            self.out.write(b"u" if len(batch) > 1 else b"s")
        attributes = value.attributes if isinstance(value, PickledOrderedDict) else None
        if attributes:
            self.out.write(b"}")
            self._put_new()
            for name, attribute in attributes.items():
                self.save(name, depth + 1, key)
                self.save(attribute, depth + 1, f"{key}.{name}")
                self.out.write(b"s")
            self.out.write(b"b")

    def save_tensor(self, tensor: Tensor, key: str) -> None:
        stored, stride = self._storage_of(tensor)
        storage_key = self.storage_keys.get(id(stored))
        if storage_key is None:
            storage_key = self.storage_keys[id(stored)] = str(len(self.storages))
            self.storages.append((storage_key, stored))
        parameter = tensor.meta.get(TORCH_PARAMETER, False)
        kind = (tensor.dtype, parameter)
        # The first tensor of its kind writes the globals and strings it names in full
        # (memoizing them in torch's order); later ones refer back with cached fragments.
        refs = self.tensor_refs.get(kind)
        legacy_class = self._storage_class(tensor, key) if refs is None else None
        glob, put = self._global_bytes, self._next_put
        hooks = refs.hooks if refs else None
        # Evaluated left to right: memo entries are numbered in the order torch's are.
        parts = [
            refs.head if refs else self._tensor_head(legacy_class, parameter),
            self._str_bytes(storage_key),
            refs.cpu if refs else self._str_bytes("cpu"),
            int_opcode(tensor.size if (refs.legacy if refs else legacy_class) else tensor.nbytes)
            + b"t",
            put(),
            b"QK\x00",  # the persistent id, then storage offset 0
            self._int_tuple_bytes(tensor.shape),
            self._int_tuple_bytes(stride),
            b"\x89",
            hooks or glob("collections", "OrderedDict") + b")R",  # no backward hooks
            put(),
            refs.dtype
            if refs
            else b""
            if legacy_class
            else glob("torch", TORCH_NAMES[tensor.dtype_name]),
            b"t",
            put(),
            b"R",
            put(),
        ]
        if parameter:
            requires_grad = b"\x88" if tensor.meta.get(TORCH_REQUIRES_GRAD, True) else b"\x89"
            parts += [
                requires_grad,
                hooks or glob("collections", "OrderedDict") + b")R",
                put(),
                b"\x87",
                put(),
                b"R",
                put(),
            ]
        self.out.write(b"".join(parts))
        if refs is None:
            self.tensor_refs[kind] = self._kind_refs(tensor, parameter, legacy_class)

    def _storage_of(self, tensor: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """The tensor whose bytes are `tensor`'s storage, and `tensor`'s strides in it: with
        `strided`, a permutation of another tensor's axes (`meta[VIEW_OF]`, set by the
        rules for a kernel transposed into a torch weight) is stored as torch stores
        `w.t()`, the other's bytes untouched with permuted strides."""
        view = tensor.meta.get(VIEW_OF) if self.strided else None
        if view is not None:
            source, axes = view
            if (
                source.dtype == tensor.dtype
                and len(axes) == len(source.shape)
                and tuple(source.shape[a] for a in axes) == tensor.shape
            ):
                whole = contiguous_strides(source.shape)
                return source, tuple(whole[a] for a in axes)
        return tensor, contiguous_strides(tensor.shape)

    @staticmethod
    def _storage_class(tensor: Tensor, key: str) -> str | None:
        """The legacy storage class of the tensor's dtype (None: UntypedStorage + v3)."""
        if tensor.dtype_name not in TORCH_NAMES:
            raise UnsupportedError(
                f"tensor {key!r} is {tensor.dtype_name}, which torch has no dtype for"
            )
        return _STORAGE_FOR.get(tensor.dtype_name)

    def _tensor_head(self, legacy_class: str | None, parameter: bool) -> bytes:
        """[_rebuild_parameter] _rebuild_tensor_v2|v3 ( ( 'storage' StorageClass."""
        glob = self._global_bytes
        return b"".join(
            [
                glob("torch._utils", "_rebuild_parameter") if parameter else b"",
                glob(
                    "torch._utils", "_rebuild_tensor_v2" if legacy_class else "_rebuild_tensor_v3"
                ),
                b"((",  # the arguments, then the persistent id
                self._str_bytes("storage"),
                glob("torch", legacy_class)
                if legacy_class
                else glob("torch.storage", "UntypedStorage"),
            ]
        )

    def _kind_refs(self, tensor: Tensor, parameter: bool, legacy_class: str | None) -> _KindRefs:
        """Once the first tensor of a kind has memoized them: references to its globals."""
        glob = self._global_bytes
        dtype = b"" if legacy_class else glob("torch", TORCH_NAMES[tensor.dtype_name])
        return _KindRefs(
            self._tensor_head(legacy_class, parameter),
            self._str_bytes("cpu"),
            glob("collections", "OrderedDict") + b")R",
            dtype,
            legacy_class is not None,
        )

    def empty_ordered_dict(self) -> None:
        """The empty backward-hooks OrderedDict every tensor carries."""
        self.global_("collections", "OrderedDict")
        self.out.write(b")R")
        self._put_new()


@functools.lru_cache(maxsize=4096)  # (models repeat a few shapes many times)
def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides in elements, as torch computes them (size-0 dims count as 1)."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))
