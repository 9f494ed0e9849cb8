"""Tensors torch saves as permuted views of their storage (`w.t()`, channels_last conv
weights, `permute`): read and converted, they are torch's own `.contiguous()` values, bit
for bit, through the banded transposes too (large enough to take them)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import convert
from convert.io import permute

from .torch_golden import assert_same_tensor


def permuted_views() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    conv = torch.randn(2, 256, 32, 32, generator=gen)  # 1 MiB per output channel
    return {
        "kernel_t": torch.randn(1024, 600, generator=gen).t(),
        "bf16_t": torch.randn(1100, 1024, generator=gen).to(torch.bfloat16).t(),
        "channels_last": conv.to(memory_format=torch.channels_last),
        "small_channels_last": torch.randn(8, 16, 3, 3, generator=gen).to(
            memory_format=torch.channels_last
        ),
        "permuted": torch.randn(3, 400, 700, generator=gen).permute(2, 0, 1),
        "unit_axis": torch.randn(600, 1, 900, generator=gen).transpose(0, 2),
        "gaps": torch.randn(700, 800, generator=gen)[:, ::2],  # no whole array: as_strided
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    views = permuted_views()
    assert not any(v.is_contiguous() for v in views.values())
    path = tmp_path_factory.mktemp("permuted") / "views.pt"
    torch.save(views, path)
    return path, views


def test_read_views_are_torchs_contiguous_values(saved, monkeypatch):
    path, views = saved
    calls = []
    banded = permute.banded_transpose
    monkeypatch.setattr(
        permute, "banded_transpose", lambda a, out=None: calls.append(a.shape) or banded(a, out)
    )
    graph = convert.load(path)
    for key, theirs in views.items():
        ours = graph.get((key,)).read()
        assert ours.flags.c_contiguous
        assert_same_tensor(ours, theirs.contiguous(), key)
    # The stored matrices: kernel_t, bf16_t, channels_last (H*W by channels, one per output
    # channel), permuted (3*400 by 700), unit_axis.
    assert calls == [(1024, 600), (1100, 1024), (1024, 256), (1024, 256), (1200, 700), (600, 900)]


def test_converted_views_load_in_safetensors(saved, tmp_path, ckpt):
    path, views = saved
    out = tmp_path / "views.safetensors"
    result = ckpt("convert", path, out)
    assert result.code == 0, result.err
    loaded = load_file(out)
    assert set(loaded) == set(views)
    for key, theirs in views.items():
        assert torch.equal(loaded[key], theirs.contiguous()), key
        assert loaded[key].dtype == theirs.dtype
