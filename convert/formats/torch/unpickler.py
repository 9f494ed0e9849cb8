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
opcodes that builds each tensor with one regex match (`tensorrun.py`), then makes the same
memo writes and handler calls those opcodes would; a run it cannot take whole (anything
unusual in it) is left to the loop, opcode by opcode.

The parts: `records.py` (what it builds), `allowlist.py` (what a file may name, and the
handlers), `opcodes.py` (one checked function per opcode), `tensorrun.py` (the fast path);
this module is the machine itself: the bounded input, the loop, and the stack checks the
opcodes share.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from convert.core.errors import FormatError, UnsafeInputError, UnsupportedError
from convert.formats.torch.allowlist import ALLOWED, UNSUPPORTED, python3_name
from convert.formats.torch.opcodes import MARK, OPS, stop
from convert.formats.torch.records import Global
from convert.formats.torch.tensorrun import TensorRuns

PersistentLoad = Callable[[tuple], Any]
_U32 = struct.Struct("<I")


class Unpickler(TensorRuns):
    """Run one pickle from `source` (bytes, or a file positioned at the pickle), reading at
    most `limit` bytes; `consumed` tells where it ended. See the module doc."""

    MAX_CHUNK = 1 << 20  # read-ahead from files starts at 4 KiB and doubles up to this

    def __init__(
        self,
        source: bytes | BinaryIO,
        limit: int,
        persistent_load: PersistentLoad | None,
        where: str = "pickle",
        allowed: dict[str, Any] | None = None,
    ):
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
        # (another table for pickles that are not torch.save's: DCP's `.metadata`)
        self.allowed = ALLOWED if allowed is None else allowed
        self.tuples: dict[bytes, tuple[int, ...] | None] = {}  # see run_tuple

    # -- input ---------------------------------------------------------------------
    @property
    def consumed(self) -> int:
        return self.base + self.pos

    def _fill(self, n: int) -> None:
        """Make `n` bytes available at `pos`, or fail as truncated."""
        kept = self.buffer[self.pos :]
        self.base += self.pos
        self.pos = 0
        left = self.limit - self.base - len(kept)
        if n - len(kept) > left:
            raise self.error(
                f"needs {n} bytes but only {len(kept) + left} remain (truncated or corrupted)"
            )
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
        data = self.buffer[self.pos : end]
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
        line = self.buffer[self.pos : end]
        self.pos = end + 1
        return line

    def error(self, message: str) -> FormatError:
        return FormatError(f"{self.where}: {message} (at byte {self.consumed})")

    # -- the loop ------------------------------------------------------------------
    def load(self) -> Any:
        stack: list[Any] = []
        memo: dict[int, Any] = {}
        self.stack, self.memo = stack, memo
        ops = OPS
        append = stack.append
        unpack_u32 = _U32.unpack_from
        missing = MARK  # (never a memo value: MARK cannot be memoized)
        persistent_load = self.persistent_load
        tensor_run = self.TENSOR_RUN.match
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
                    if buf.startswith(b"((", pos + 2):  # maybe a tensor: see TENSOR_RUN
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
                                append(buf[pos + 5 : end].decode("utf-8", "surrogatepass"))
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
                        if type(args) is tuple and type(func) is Global and func.call is not None:
                            del stack[-2:]
                            append(func.call(args))
                            pos += 1
                            continue
                elif code == 0x74:  # TUPLE
                    for i in range(len(stack) - 1, -1, -1):
                        if stack[i] is MARK:
                            items = tuple(stack[i + 1 :])
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
            if op is stop:
                if len(stack) != 1 or stack[0] is MARK:
                    raise self.error("leaves a malformed stack at STOP")
                return stack.pop()
            try:
                op(self)
            except IndexError:
                raise self.error(
                    f"opcode {chr(code)!r} finds too few values on the stack"
                ) from None
            buf, pos = self.buffer, self.pos
            size = len(buf)

    def refused_opcode(self, code: int) -> Exception:
        if code in (ord("i"), ord("o")):  # INST / OBJ: protocol-0 class instantiation
            if code == ord("i"):
                module, name = self.readline(), self.readline()
                return self.refuse(
                    module.decode("utf-8", "replace"), name.decode("utf-8", "replace")
                )
            return UnsafeInputError(
                f"{self.where}: refuses the OBJ opcode (instantiates an "
                "arbitrary class); nothing was run"
            )
        if code in (0x82, 0x83, 0x84):
            return UnsafeInputError(
                f"{self.where}: refuses the EXT opcodes (copyreg "
                "extension registry); nothing was run"
            )
        return self.error(f"uses pickle opcode 0x{code:02x}, which torch.save never writes")

    def refuse(self, module: str, name: str) -> UnsafeInputError:
        return UnsafeInputError(
            f"{self.where}: refuses global {module}.{name}: only tensors, storages, dtypes and "
            "plain containers are allowed (the file would run code under "
            "torch.load(weights_only=False)); nothing was run"
        )

    # -- helpers for the opcodes ---------------------------------------------------
    def pop_mark(self) -> list[Any]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is MARK:
                items = stack[i + 1 :]
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
        module, name = python3_name(module, name)
        full = f"{module}.{name}"
        if full in self.allowed:
            self.stack.append(self.allowed[full])
        elif full in UNSUPPORTED:
            raise UnsupportedError(
                f"{self.where}: holds {UNSUPPORTED[full]} ({full}), which "
                "this tool does not convert"
            )
        else:
            raise self.refuse(module, name)

    def text(self, data: bytes) -> str:
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.error("holds a string that is not UTF-8") from None
