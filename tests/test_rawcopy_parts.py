"""A tensor stored in parts (row blocks of several ranks' files, a parameter's pieces of
several partitions) copied file to file as its parts' bytes one after another, through
the kernel and through the buffer, with the checksum an output needs of the whole, and
each part's own checksum verified."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from convert.core.errors import ChecksumError
from convert.core.tensor import Check, Stored, stored_in_parts
from convert.io import rawcopy
from convert.io.checksums import crc32c
from convert.io.reads import SourceFile

# a part above rawcopy.KERNEL_FROM (a kernel copy), a small one, one between
REGIONS = [(5, (1 << 20) + 3), (2 << 20, 300), (100, 600_000)]
BYTES = np.dtype(np.uint8)


def parts_of(path: Path, check: Check | None = None) -> Stored:
    source = SourceFile(path)
    parts = [
        Stored(source, o, n, BYTES, (n,), check if i == 0 else None)
        for i, (o, n) in enumerate(REGIONS)
    ]
    return stored_in_parts(parts, BYTES, (sum(n for _, n in REGIONS),))


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    data = np.random.default_rng(0).integers(0, 255, 3 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "source").write_bytes(data)
    return tmp_path / "source", data


@pytest.mark.parametrize("want", [None, "crc32", "crc32c"])
@pytest.mark.parametrize("kernel", [True, False])
def test_parts_are_copied_one_after_another(source, tmp_path, monkeypatch, want, kernel) -> None:
    path, data = source
    monkeypatch.setattr(rawcopy, "KERNEL", kernel)
    with rawcopy.Output(tmp_path / "out") as out:
        out.write(b"head")
        value = out.copy(parts_of(path), want)
        assert out.position == 4 + sum(n for _, n in REGIONS)
    expected = b"".join(data[o : o + n] for o, n in REGIONS)
    assert (tmp_path / "out").read_bytes() == b"head" + expected
    assert value == {None: None, "crc32": zlib.crc32(expected), "crc32c": crc32c(expected)}[want]


def test_a_part_that_fails_its_checksum_is_refused(source, tmp_path) -> None:
    path, data = source
    offset, size = REGIONS[0]
    wrong = zlib.crc32(data[offset : offset + size]) ^ 1
    check = Check(
        "crc32", offset, size, wrong, "{} does not match its CRC-32", "the part", str(path)
    )
    with (
        pytest.raises(ChecksumError, match="the part does not match"),
        rawcopy.Output(tmp_path / "out") as out,
    ):
        out.copy(parts_of(path, check), "crc32")
