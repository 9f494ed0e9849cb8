"""Every truncation and many bit flips of small files: a ConvertError or a clean read,
never another exception, a hang or a huge allocation."""

from __future__ import annotations

import random

import pytest
import safetensors.torch
import torch

import convert
from convert.core.errors import ConvertError


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    state = {
        "w": torch.arange(6.0).reshape(2, 3),
        "t": torch.arange(4.0).reshape(2, 2).t(),
        "n": {"b": torch.tensor([True, False]), "e": 3},
    }
    torch.save(state, d / "zip.pt")
    torch.save(state, d / "legacy.pt", _use_new_zipfile_serialization=False)
    safetensors.torch.save_file({"w": state["w"], "b": state["n"]["b"]}, d / "x.safetensors")
    convert.convert(d / "zip.pt", d / "ours.pt")
    return d


def read_everything(path) -> None:
    graph = convert.load(path)
    for entry in graph.entries():
        entry.tensor.read()


def variants(data: bytes, seed: int):
    """All truncations, then single-bit flips at a spread of positions."""
    for n in range(len(data)):
        yield f"cut at {n}", data[:n]
    rng = random.Random(seed)
    positions = sorted(rng.sample(range(len(data)), min(len(data), 400)))
    for at in positions:
        flipped = bytearray(data)
        flipped[at] ^= 1 << rng.randrange(8)
        yield f"bit flip at {at}", bytes(flipped)


@pytest.mark.parametrize("name", ["zip.pt", "legacy.pt", "x.safetensors", "ours.pt"])
def test_damage_gives_convert_errors_only(small_files, tmp_path, name):
    data = (small_files / name).read_bytes()
    bad = tmp_path / name
    outcomes = {"error": 0, "read": 0}
    for what, variant in variants(data, seed=len(name)):
        bad.write_bytes(variant)
        try:
            read_everything(bad)
            outcomes["read"] += 1
        except ConvertError as exc:
            assert "\n" not in str(exc), (what, str(exc))
            outcomes["error"] += 1
        except Exception as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{name}, {what}: {type(exc).__name__}: {exc}")
    assert outcomes["error"] > len(data) // 2  # most damage is caught, not read as data
