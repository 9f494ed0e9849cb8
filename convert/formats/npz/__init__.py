"""NumPy `.npz` checkpoints (JAX, big_vision and timm style): a zip of `.npy` members whose
names are the tensor paths joined with `/` (`params/Conv_0/kernel.npy`).

Reading is lazy: only each member's `.npy` header is parsed (numpy.lib.format) when the
file is opened; the array bytes are read (stored members: one positioned read; deflated
members: that member alone is decompressed) when a Tensor is loaded, and the zip CRC-32 is
checked then. Object arrays (pickles) are refused, as `np.load(allow_pickle=False)` does.

bfloat16 and the other ml_dtypes types: `np.savez` writes them as opaque voids (`<V2`,
`<V1`), which `np.load` returns as raw bytes. This writer stores them with their name as
the header's descr (`'descr': 'bfloat16'`), which `np.load` turns back into the right dtype
whenever ml_dtypes is imported (JAX and Flax import it); without ml_dtypes np.load refuses
the member ("descr is not a valid dtype descriptor"). On reading, a 2-byte void is taken as
bfloat16 (the only 2-byte ml_dtypes type, so what np.savez of a JAX bfloat16 tree gives);
1-, 4- and 8-byte voids are ambiguous and are read as raw unsigned bits (uint8, ...).
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy

from convert.core.dtypes import EXTRA_NAMES, STRING, from_name
from convert.core.errors import (
    ChecksumError,
    ConvertError,
    FormatError,
    UnsafeInputError,
    UnsupportedError,
)
from convert.core.graph import Graph
from convert.core.meta import SOURCE_KEY
from convert.core.notes import count, some
from convert.core.tensor import Check, Stored, Tensor, array_from_bytes
from convert.io.checksums import crc32
from convert.io.reads import SourceFile, read_region
from convert.io.zipcheck import lying_sizes, unsafe_name

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"
_MAX_TRAILING = 4096  # bytes a member may hold after its array (np.save writes none)
_READ_CHUNK = 1 << 20
_VOID_AS = {1: "uint8", 2: "bfloat16", 4: "uint32", 8: "uint64"}  # by itemsize
# Tensor.meta keys of npz's own (this reader writes them; listed in convert/core/meta.py):
NPZ_DESCR = "npz_descr"  # a void member's descr, as the header gives it
FORTRAN_ORDER = "fortran_order"  # True for a member stored in Fortran order


# -- reading ----------------------------------------------------------------------------


def sniff(path: Path) -> bool:
    """A zip whose first member is a `.npy` file."""
    try:
        with open(path, "rb") as f:
            head = f.read(_LOCAL_HEADER.size + 1024)
        fields = _LOCAL_HEADER.unpack_from(head)
        name = head[_LOCAL_HEADER.size : _LOCAL_HEADER.size + fields[9]]
        return fields[0] == _LOCAL_MAGIC and name.endswith(b".npy")
    except Exception:  # sniff never raises
        return False


def read(path: Path) -> Graph:
    path = Path(path)
    graph = Graph(format="npz", source=os.fspath(path), files=[os.fspath(path)])
    skipped: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names: set[str] = set()
            for info in archive.infolist():
                problem = unsafe_name(info.filename) or lying_sizes(
                    info.filename,
                    info.compress_type == zipfile.ZIP_STORED,
                    info.file_size,
                    info.compress_size,
                )
                if problem:  # (checked first: zipfile's is_dir() fails on an empty name)
                    raise FormatError(problem, path)
                if info.is_dir():
                    continue
                if info.filename in names:
                    raise FormatError(f"holds member {info.filename!r} twice", path)
                names.add(info.filename)
                if not info.filename.endswith(".npy"):
                    skipped[info.filename] = "not a .npy member"
                    continue
                key = info.filename[:-4]
                tensor = _member_tensor(path, archive, info, key, skipped)
                if tensor is not None:
                    _add(graph, key, tensor, path)
    except zipfile.BadZipFile as exc:
        raise FormatError(f"is not a readable zip archive ({exc}); truncated?", path) from None
    except (
        zipfile.LargeZipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
        UnicodeDecodeError,
    ) as exc:  # (a name flagged UTF-8 that is not)
        raise FormatError(f"damaged zip archive: {exc}", path) from None
    if skipped:  # said, not kept: no writer has a place for them
        graph.notes.append(
            f"left out {count(len(skipped), 'member')} with no numeric array: "
            f"{some(f'{k} ({why})' for k, why in skipped.items())}"
        )
    if not graph.root.edges:
        raise FormatError("holds no numeric .npy arrays", path)
    return graph


def _add(graph: Graph, key: str, tensor: Tensor, path: Path) -> None:
    where = tuple(key.split("/"))
    try:
        graph.get(where)
    except KeyError:
        pass
    else:  # graph.add would silently replace what is there ("a/b" met before "a")
        raise FormatError(f"member {key!r} clashes with members under {key + '/'!r}", path)
    try:
        graph.add(where, tensor)
    except ValueError:
        raise FormatError(
            f"member {key!r} nests under another member that is an array", path
        ) from None


def _member_tensor(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, skipped: dict[str, str]
) -> Tensor | None:
    if info.flag_bits & 0x1:
        raise UnsupportedError(f"member {info.filename!r} is encrypted", path)
    try:
        try:
            shape, fortran, stored, header = _read_npy_header(archive, info)
        except ValueError as exc:
            if not _import_named_extra(exc):
                raise
            shape, fortran, stored, header = _read_npy_header(archive, info)
    except ValueError as exc:
        raise FormatError(
            f"member {info.filename!r} is not a valid .npy array: {exc}", path
        ) from None
    except zipfile.BadZipFile as exc:  # a small member is read whole, and its CRC checked
        error = ChecksumError if "CRC" in str(exc) else FormatError
        raise error(f"member {info.filename!r}: {exc}", path) from None
    except (NotImplementedError, OSError, EOFError, zlib.error) as exc:
        raise _damaged(info, exc, path) from None
    if stored.hasobject:
        raise UnsafeInputError(
            f"member {info.filename!r} holds Python objects (a pickle); refusing to load it", path
        )
    if any(d < 0 for d in shape):  # (numpy's header parser lets them through)
        raise FormatError(
            f"member {info.filename!r} declares a negative dimension {list(shape)}", path
        )
    dtype = _tensor_dtype(stored)
    if dtype is None:
        skipped[info.filename] = _not_numeric(stored)
        return None
    nbytes = math.prod(shape) * stored.itemsize
    extra = info.file_size - header - nbytes
    if extra < 0 or extra > _MAX_TRAILING:
        raise FormatError(
            f"member {info.filename!r} declares {stored.str}{list(shape)} = "
            f"{nbytes} bytes but holds {info.file_size - header}",
            path,
        )
    meta: dict[str, Any] = {SOURCE_KEY: key}
    if stored.type is np.void:
        meta[NPZ_DESCR] = stored.str
    if fortran:
        meta[FORTRAN_ORDER] = True
    member = _Member(path, info, header, stored, tuple(shape), fortran, dtype)
    return Tensor(dtype, tuple(shape), member, meta)


def _read_npy_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    with archive.open(info) as f:
        version = npy.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f".npy format version {version} is unknown")
        # 3.0 differs from 2.0 only by UTF-8 field names, which are refused below
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        try:
            shape, fortran, stored = reader(f)
        except (SyntaxError, RecursionError) as exc:  # (numpy parses "f4,i4"-like descrs
            raise ValueError(f"its descr cannot be parsed ({exc})") from None  # with ast)
        return shape, fortran, stored, f.tell()


def _import_named_extra(exc: ValueError) -> bool:
    """numpy knows a descr like 'bfloat16' once ml_dtypes is imported, which is done only
    when a member names one (see dtypes): True if this error was such a descr."""
    if not isinstance(exc.__cause__, TypeError):
        return False
    names = [name for name in EXTRA_NAMES if f"{name!r}" in str(exc)]
    for name in names:
        with contextlib.suppress(KeyError):
            from_name(name)
    return bool(names)


def _damaged(info: zipfile.ZipInfo, exc: BaseException, path: Path) -> ConvertError:
    """zipfile's complaints about one member (an odd compression method, a bad offset)."""
    if isinstance(exc, NotImplementedError):
        return UnsupportedError(
            f"member {info.filename!r}: {exc} (compression method {info.compress_type})", path
        )
    return FormatError(f"member {info.filename!r} is damaged: {exc}", path)


def _tensor_dtype(stored: np.dtype) -> np.dtype | None:
    """The dtype a Tensor gets: native byte order, voids from np.savez of ml_dtypes."""
    if stored.names is not None or stored.subdtype is not None:
        return None
    if stored.type is np.void:  # np.savez of an ml_dtypes array (bfloat16 -> <V2)
        name = _VOID_AS.get(stored.itemsize)
        return from_name(name) if name else None
    try:
        dtype = from_name(stored.name)
    except KeyError:
        return None
    return None if dtype == STRING else dtype


def _not_numeric(stored: np.dtype) -> str:
    """Why a member's array is no tensor, in a few words."""
    if stored.names is not None:
        return "structured: " + ", ".join(stored.names)
    if stored.kind in "SU":
        return f"{stored.str} strings"
    return f"dtype {stored.str}"


class _Member:
    """Where one member's array lies; `load` reads it (and checks the zip CRC-32)."""

    def __init__(
        self,
        path: Path,
        info: zipfile.ZipInfo,
        header: int,
        stored: np.dtype,
        shape: tuple[int, ...],
        fortran: bool,
        dtype: np.dtype,
    ):
        self.path, self.info, self.header = path, info, header
        self.stored, self.shape, self.fortran, self.dtype = stored, shape, fortran, dtype
        self._source: SourceFile | None = None  # (opened when first copied from)

    def __call__(self) -> np.ndarray:
        return self.load()

    def load(self) -> np.ndarray:
        raw = self._member_bytes()
        data = memoryview(raw)[
            self.header : self.header + math.prod(self.shape) * self.stored.itemsize
        ]
        what = f"{self.info.filename}"
        if self.fortran:
            array = array_from_bytes(data, self.stored, self.shape[::-1], what).T
        else:
            array = array_from_bytes(data, self.stored, self.shape, what)
        if self.stored.type is np.void:
            array = array.view(self.dtype)
        if self.stored.byteorder == ">" or self.fortran:
            array = array.astype(self.dtype, order="C")  # a fresh C-order copy
        return array

    def where_stored(self) -> Stored | None:
        """Where the array's bytes lie, for a stored member in C order and little-endian;
        its check is the member's CRC-32 (which covers the .npy header too)."""
        info, stored = self.info, self.stored
        if (
            info.compress_type != zipfile.ZIP_STORED
            or self.fortran
            or stored.byteorder == ">"
            or math.prod(self.shape) == 0
        ):
            return None
        start = self._data_start()
        if self._source is None:
            self._source = SourceFile(self.path)
        check = Check(
            "crc32",
            start,
            info.file_size,
            info.CRC,
            "member {!r}: CRC-32 does not match its bytes",
            info.filename,
            str(self.path),
        )
        return Stored(
            self._source,
            start + self.header,
            math.prod(self.shape) * stored.itemsize,
            self.dtype,
            self.shape,
            check,
        )

    def _member_bytes(self) -> bytearray | memoryview:
        info = self.info
        if info.compress_type == zipfile.ZIP_STORED:
            raw = read_region(self.path, self._data_start(), info.file_size, info.filename)
            if crc32(raw) != info.CRC:
                raise ChecksumError(
                    f"member {info.filename!r}: CRC-32 does not match its bytes", self.path
                )
            return raw
        raw = bytearray(info.file_size)
        view, done = memoryview(raw), 0
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(info) as f:
                while done < len(raw):
                    chunk = f.read(min(_READ_CHUNK, len(raw) - done))
                    if not chunk:
                        break
                    view[done : done + len(chunk)] = chunk
                    done += len(chunk)
                if done < len(raw) or f.read(1):  # reading to the end checks the CRC
                    raise FormatError(
                        f"member {info.filename!r} does not hold its declared "
                        f"{info.file_size} bytes",
                        self.path,
                    )
        except zipfile.BadZipFile as exc:
            raise ChecksumError(f"member {info.filename!r}: {exc}", self.path) from None
        except (NotImplementedError, OSError, EOFError, zlib.error) as exc:
            raise _damaged(info, exc, self.path) from None
        return raw

    def _data_start(self) -> int:
        """The local header's name and extra lengths may differ from the central ones."""
        head = read_region(
            self.path,
            self.info.header_offset,
            _LOCAL_HEADER.size,
            f"{self.info.filename} zip header",
        )
        fields = _LOCAL_HEADER.unpack(head)
        if fields[0] != _LOCAL_MAGIC:
            raise FormatError(
                f"member {self.info.filename!r} has no zip local header at byte "
                f"{self.info.header_offset}",
                self.path,
            )
        return self.info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]


def write(graph: Graph, path: Path, **options: Any) -> None:
    """Write `graph` as an npz file (writer.py, imported when first used: listing and
    reading need none of it)."""
    from convert.formats.npz.writer import write as write_npz

    write_npz(graph, path, **options)
