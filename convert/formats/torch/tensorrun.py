"""The unpickler's tensor fast path: the run of ~30 opcodes `torch.save` writes for every
tensor, recognised with one regex match and carried out as those opcodes would (the same
memo writes, the same handler calls, the same objects).

Apart from the machine because it is an optimisation with its own proof obligation: the
suite checks it against the opcode loop (same objects, same memo, same errors, on real
and damaged pickles). A run it cannot take whole is left to the loop, opcode by opcode.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from typing import Any

from convert.formats.torch.opcodes import MARK
from convert.formats.torch.records import Global

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
    rb"(h.)\(\("
    + _GET
    + _GET
    + rb"X([\x01-\x14])\x00\x00\x00([0-9]+)"
    + _PUT
    + _GET
    + _INT
    + rb"(N?)t"
    + _PUT
    + rb"Q"
    + _INT
    + _TUPLE
    + _PUT
    + rb"?"
    + _TUPLE
    + _PUT
    + rb"?"
    + rb"([\x88\x89])"
    + _GET
    + rb"\)R"
    + _PUT
    + rb"t"
    + _PUT
    + rb"R"
    + _PUT,
    re.DOTALL,
)
_U32, _I32 = struct.Struct("<I"), struct.Struct("<i")
_INT_WIDTH = {0x4B: 2, 0x4D: 3, 0x4A: 5}  # BININT1, BININT2, BININT: opcode and value
_LONG_SLOTS: dict[int, struct.Struct] = {}  # (n long slots: the format made once, per n)


def _slots(*raws: bytes) -> Sequence[int]:
    """The memo slots of `_GET` and `_PUT` matches (decoded together: one call a run)."""
    joined = b"".join(raws)
    if len(joined) == 2 * len(raws):  # (every one short: the slots are every other byte)
        return joined[1::2]
    if len(joined) == 5 * len(raws):
        long = _LONG_SLOTS.get(len(raws))
        if long is None:
            long = _LONG_SLOTS[len(raws)] = struct.Struct("<" + "xI" * len(raws))
        return long.unpack_from(joined)
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
        items.append(_run_int(body[at : at + width]))
        at += width
    return tuple(items) if count in (None, len(items)) else None


class TensorRuns:
    """The fast path as methods of the machine (`Unpickler` derives from this): they read
    and write its memo and call its `persistent_load`, as the opcodes they stand for."""

    TENSOR_RUN = _TENSOR_RUN  # (the loop matches with this: a test swaps it to compare)
    memo: dict[int, Any]
    tuples: dict[bytes, tuple[int, ...] | None]
    persistent_load: Any

    def run_tensor(self, run: re.Match) -> Any:
        """The tensor a `TENSOR_RUN` match builds, with the memo writes and handler calls
        its opcodes make; MARK (nothing changed) when its operands are not the plain ones,
        so that the loop runs the opcodes one by one (and says what is wrong)."""
        (
            func,
            word,
            kind,
            key_len,
            key,
            key_put,
            location,
            numel,
            none,
            pid_put,
            offset,
            size,
            size_put,
            stride,
            stride_put,
            grad,
            hooks,
            hooks_put,
            args_put,
            put,
        ) = run.groups()
        memo, tuples = self.memo, self.tuples
        size = tuples.get(size) or self.run_tuple(size)  # (a scalar's () is looked up again)
        stride = tuples.get(stride) or self.run_tuple(stride)
        func, word, kind, location, hooks = _slots(func, word, kind, location, hooks)
        if size_put and stride_put:  # (torch's own: both tuples memoized; one decode)
            puts = _slots(key_put, pid_put, size_put, stride_put, hooks_put, args_put, put)
            size_put, stride_put, puts = puts[2], puts[3], (puts[0], puts[1], *puts[4:])
        else:
            puts = _slots(key_put, pid_put, hooks_put, args_put, put)
            size_put = _slot(size_put) if size_put else None
            stride_put = _slot(stride_put) if stride_put else None
        if (
            len(key) != key_len[0]
            or size is None
            or stride is None
            or self.persistent_load is None
            or location == puts[0]
            or hooks in (puts[0], puts[1], size_put, stride_put)
        ):  # (gets see the old memo)
            return MARK
        func, word, kind, location, hooks = (
            memo.get(func, MARK),
            memo.get(word, MARK),
            memo.get(kind, MARK),
            memo.get(location, MARK),
            memo.get(hooks, MARK),
        )
        if (
            not (
                type(func) is Global
                and func.call is not None
                and type(hooks) is Global
                and hooks.call is not None
            )
            or MARK is word
            or MARK is kind
            or MARK is location
        ):
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
