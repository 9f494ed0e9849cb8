"""The opcode machine's instruction set: one function per pickle opcode `torch.save` (or an
older pickler) may write, each taking the running `Unpickler`, and the table `OPS` the
loop dispatches through. Opcodes that import or instantiate (INST, OBJ, EXT) are absent,
so the loop refuses them; GLOBAL, REDUCE, NEWOBJ and BUILD reach only the allowlist's
markers and handlers.

Apart from `unpickler.py` because these are the general, fully checked path, read one
opcode at a time; the loop there inlines the few torch writes most and falls back here
for everything, including every error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from convert.core.errors import FormatError, UnsafeInputError
from convert.formats.torch.allowlist import setitem
from convert.formats.torch.records import (
    Global,
    PickledOrderedDict,
    PickledRecord,
    TensorRef,
    short,
)


class Unpickler(Protocol):
    """What an opcode sees of the machine running it (`unpickler.Unpickler`): declared
    here, so that the instruction set does not import the loop that dispatches to it."""

    stack: list[Any]
    memo: dict[int, Any]
    where: str
    persistent_load: Callable[[Any], Any] | None

    def read(self, n: int) -> bytes: ...
    def readline(self) -> bytes: ...
    def error(self, message: str) -> FormatError: ...
    def pop_mark(self) -> list[Any]: ...
    def pop(self) -> Any: ...
    def top(self) -> Any: ...
    def push_global(self, module: str, name: str) -> None: ...
    def text(self, data: bytes) -> str: ...


class _Mark:
    """Stack marker left by MARK (never visible to handlers)."""


MARK = _Mark()


# Opcode implementations: each takes the machine. Kept flat for speed and clarity.


def stop(m: Unpickler) -> None:  # handled in the loop
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
        setitem(result, items[i], items[i + 1])
    m.stack.append(result)


def _append(m: Unpickler) -> None:
    value = m.pop()
    target = m.top()
    if type(target) is not list:
        raise m.error(f"APPEND to {short(target)}")
    target.append(value)


def _appends(m: Unpickler) -> None:
    items = m.pop_mark()
    target = m.top()
    if type(target) is not list:
        raise m.error(f"APPENDS to {short(target)}")
    target.extend(items)


def _dict_target(m: Unpickler) -> dict:
    target = m.top()
    if type(target) not in (dict, PickledOrderedDict):
        raise m.error(f"SETITEM on {short(target)}")
    return target


def _setitem_op(m: Unpickler) -> None:
    value, key = m.pop(), m.pop()
    setitem(_dict_target(m), key, value)


def _setitems(m: Unpickler) -> None:
    items = m.pop_mark()
    target = _dict_target(m)
    if len(items) % 2:
        raise m.error("SETITEMS has an odd number of items")
    try:  # (a state dict is 1000 items a SETITEMS)
        target.update(zip(items[::2], items[1::2], strict=True))
    except TypeError:  # an unhashable key: set again one by one (the same state) to name it
        for i in range(0, len(items), 2):
            setitem(target, items[i], items[i + 1])


def _additems(m: Unpickler) -> None:
    items = m.pop_mark()
    target = m.top()
    if type(target) is not set:
        raise m.error(f"ADDITEMS to {short(target)}")
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


def _callable(m: Unpickler, value: Any, use: str) -> tuple[Global, Callable[[tuple], Any]]:
    """`value`, an allowlisted Global, with its `use` handler ("call" or "new")."""
    handler = getattr(value, use) if isinstance(value, Global) else None
    if handler is None:
        raise UnsafeInputError(
            f"{m.where}: refuses to call {short(value)} (only the "
            "allowlisted rebuild functions and containers may be called); "
            "nothing was run"
        )
    return value, handler


def _reduce(m: Unpickler) -> None:
    args = m.pop()
    func, call = _callable(m, m.pop(), "call")
    if not isinstance(args, tuple):
        raise m.error(f"calls {func.name} with {short(args)} instead of a tuple")
    m.stack.append(call(args))


def _newobj(m: Unpickler) -> None:
    args = m.pop()
    cls, new = _callable(m, m.pop(), "new")
    if not isinstance(args, tuple):
        raise m.error(f"creates {cls.name} with {short(args)} instead of a tuple")
    m.stack.append(new(args))


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
    elif type(target) is PickledRecord and target.state is None and not target.fields:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # ((dict, slots): a slotted class)
        if isinstance(state, dict) and all(isinstance(k, str) for k in state):
            target.fields.update(state)
        elif isinstance(state, tuple):
            target.state = state
        else:
            raise m.error(f"BUILD gives a {target.kind} the state {short(state)}")
    else:
        raise UnsafeInputError(
            f"{m.where}: refuses to set the state of {short(target)} "
            "(BUILD is only allowed on an OrderedDict or an allowlisted record); "
            "nothing was run"
        )


def _binpersid(m: Unpickler) -> None:
    pid = m.pop()
    if m.persistent_load is None:
        raise m.error("refers to a persistent object where none is expected")
    m.stack.append(m.persistent_load(pid))


OPS: dict[int, Callable[[Unpickler], None]] = {
    0x80: _proto,
    0x95: _frame,
    ord("."): stop,
    ord("N"): _push(None),
    0x88: _push(True),
    0x89: _push(False),
    ord("J"): _binint,
    ord("K"): _binint1,
    ord("M"): _binint2,
    0x8A: _long("<B", 1),
    0x8B: _long("<i", 4),
    ord("G"): _binfloat,
    ord("X"): _sized("<I", 4, "str"),
    0x8C: _sized("<B", 1, "str"),
    0x8D: _sized("<Q", 8, "str"),
    ord("B"): _sized("<I", 4, "bytes"),
    ord("C"): _sized("<B", 1, "bytes"),
    0x8E: _sized("<Q", 8, "bytes"),
    0x96: _sized("<Q", 8, "bytearray"),
    ord("T"): _sized("<i", 4, "py2str"),
    ord("U"): _sized("<B", 1, "py2str"),
    ord("("): _mark,
    ord("0"): _pop,
    ord("1"): _pop_mark,
    ord("2"): _dup,
    ord(")"): _push(tuple),
    ord("t"): _tuple,
    0x85: _tuple_n(1),
    0x86: _tuple_n(2),
    0x87: _tuple_n(3),
    ord("]"): _push(list),
    ord("l"): _list,
    ord("a"): _append,
    ord("e"): _appends,
    ord("}"): _push(dict),
    ord("d"): _dict,
    ord("s"): _setitem_op,
    ord("u"): _setitems,
    0x8F: _push(set),
    0x90: _additems,
    0x91: _frozenset,
    ord("h"): _get("<B", 1),
    ord("j"): _get("<I", 4),
    ord("q"): _put("<B", 1),
    ord("r"): _put("<I", 4),
    0x94: _memoize,
    ord("c"): _global,
    0x93: _stack_global,
    ord("R"): _reduce,
    0x81: _newobj,
    ord("b"): _build,
    ord("Q"): _binpersid,
}
