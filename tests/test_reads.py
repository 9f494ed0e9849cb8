"""Bounded reads from input files (`io.reads.SourceFile`, `read_region`)."""

import os

import pytest

from convert.core.errors import FormatError
from convert.io.reads import _MAP_FROM, SourceFile, read_region


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * _MAP_FROM + 123))
    return path


def test_small_and_mapped_regions_hold_the_file_bytes(data_file):
    raw = data_file.read_bytes()
    source = SourceFile(data_file)
    small = source.read(7, 100)
    large = source.read(_MAP_FROM + 5, 2 * _MAP_FROM)  # mapped, at an unaligned offset
    assert bytes(small) == raw[7:107]
    assert bytes(large) == raw[_MAP_FROM + 5 : 3 * _MAP_FROM + 5]
    with pytest.raises(TypeError):  # read-only: the file cannot change through it
        large[0] ^= 0xFF
    assert data_file.read_bytes() == raw
    assert bytes(read_region(data_file, 0, 10)) == raw[:10]


def test_a_mapped_region_outlives_its_closed_file(data_file):
    raw = data_file.read_bytes()
    source = SourceFile(data_file)
    large = source.read(0, _MAP_FROM)
    source.close()
    assert bytes(large[-3:]) == raw[_MAP_FROM - 3 : _MAP_FROM]
    assert bytes(source.read(1, 2)) == raw[1:3]  # a read after close opens it again


@pytest.mark.parametrize("size", [10, _MAP_FROM])
def test_a_region_past_the_end_is_a_format_error(data_file, size):
    end = data_file.stat().st_size
    with pytest.raises(FormatError, match="past the end of the file"):
        SourceFile(data_file).read(end - 5, size, "tensor 'x'")
    with pytest.raises(FormatError, match="negative"):
        read_region(data_file, -1, 4)


def test_the_file_is_closed_when_the_last_reader_is_dropped(data_file):
    source = SourceFile(data_file)
    source.read(0, 4)
    fd = source._fd
    os.fstat(fd)  # open while the source lives
    del source
    with pytest.raises(OSError):
        os.fstat(fd)
