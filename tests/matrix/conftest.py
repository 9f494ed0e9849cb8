"""The matrix's sources, saved once per session by the real frameworks."""

from __future__ import annotations

import pytest

from . import sources


@pytest.fixture(scope="session")
def matrix_sources(tmp_path_factory) -> dict[str, sources.Source]:
    pytest.importorskip("tensorflow")
    return sources.build(tmp_path_factory.mktemp("matrix_sources"))
