"""Fixtures of the torch/safetensors tests: golden files made by torch 2.13 at test time."""

from __future__ import annotations

import pytest

from .torch_golden import Golden, make_golden


@pytest.fixture(scope="session")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Golden:
    return make_golden(tmp_path_factory.mktemp("golden"))
