"""Inputs the fuzzer found, kept as they were found (a random damage of a seed cannot be
made again from fresh seeds, whose bytes hold the time they were written)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..conftest import assert_one_line_error

DATA = Path(__file__).parent / "data"


def test_a_file_on_which_libhdf5_loops_forever_is_refused_in_seconds(ckpt, tmp_path):
    # A damaged tf_keras .h5 on which libhdf5 loops forever reading an attribute (found by
    # scripts/fuzz.py keras-h5): the probe's child is killed and the file refused.
    path = tmp_path / "loop.h5"
    shutil.copy(DATA / "hdf5_loop.h5", path)
    start = time.monotonic()
    result = ckpt("ls", path)
    assert time.monotonic() - start < 10
    assert_one_line_error(result, str(path), "libhdf5 did not finish")
