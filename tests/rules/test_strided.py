"""`strided` torch output: a kernel transposed into a torch weight is written as torch
writes `w.t()` (the kernel's bytes untouched, with swapped strides), and loads into the
same function as the default output, whose tensors are all contiguous."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from convert import api
from convert.core.errors import ConvertError

from .frameworks import CASES, EXT, Side

PORTS = [
    pytest.param(c, source, id=f"{c.name}-{source}")
    for c in CASES
    if c.torch
    for source in ("keras", "flax")
    if getattr(c, source) is not None
]


def _port(case, source: str, tmp_path, strided: bool):
    src = Side(source, case).build(7)
    src_file = src.save(tmp_path / f"src{EXT[source]}")
    skeleton = Side("torch", case).build()
    skel_file = skeleton.save(tmp_path / "skeleton.pt")
    out = tmp_path / ("strided.pt" if strided else "plain.pt")
    api.convert(src_file, out, like=skel_file, strided=strided)
    skeleton.load(out)  # load_state_dict(strict=True) of torch.load(weights_only=True)
    return src, skeleton, torch.load(out, weights_only=True)


@pytest.mark.parametrize(("case", "source"), PORTS)
def test_strided_output_loads_into_the_same_function(case, source, tmp_path):
    src, strided, state = _port(case, source, tmp_path, strided=True)
    _, plain, plain_state = _port(case, source, tmp_path, strided=False)
    x = case.input()
    expected = src.run(x)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(strided.run(x), expected, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(strided.run(x), plain.run(x))
    assert all(t.is_contiguous() for t in plain_state.values())
    assert list(state) == list(plain_state)
    for key, tensor in state.items():
        assert torch.equal(tensor, plain_state[key]), key


def test_a_dense_kernel_is_stored_untouched_with_swapped_strides(tmp_path):
    case = next(c for c in CASES if c.name == "dense")
    src, _, state = _port(case, "keras", tmp_path, strided=True)
    kernel = src.model.layers[-1].kernel.numpy()  # Keras: (in, out)
    weight = state["0.weight"]  # torch: (out, in)
    assert weight.shape == (kernel.shape[1], kernel.shape[0])
    assert weight.stride() == (1, kernel.shape[1])  # what torch.save writes for kernel.t()
    assert not weight.is_contiguous() and state["0.bias"].is_contiguous()
    assert weight.untyped_storage().nbytes() == kernel.nbytes
    assert bytes(weight.untyped_storage()) == kernel.tobytes()  # the bytes as Keras has them


def test_a_conv_kernel_is_a_permuted_view(tmp_path):
    case = next(c for c in CASES if c.name == "conv2d")
    src, _, state = _port(case, "keras", tmp_path, strided=True)
    kernel = src.model.layers[-1].kernel.numpy()  # (h, w, in, out) -> torch (out, in, h, w)
    weight = next(t for t in state.values() if t.ndim == 4)
    assert not weight.is_contiguous()
    assert bytes(weight.untyped_storage()) == kernel.tobytes()
    np.testing.assert_array_equal(weight.numpy(), kernel.transpose(3, 2, 0, 1))


def test_strided_shards_load(tmp_path):
    case = next(c for c in CASES if c.name == "dense")
    src = Side("keras", case).build(7)
    src_file = src.save(tmp_path / "src.weights.h5")
    skel = Side("torch", case).build()
    skel_file = skel.save(tmp_path / "skeleton.pt")
    api.convert(
        src_file,
        tmp_path / "out" / "pytorch_model.bin",
        like=skel_file,
        strided=True,
        max_shard_size=64,
    )
    index = tmp_path / "out" / "pytorch_model.bin.index.json"

    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) == 2  # (the 80-byte weight and the bias apart)
    state = {}
    for shard in shards:
        state.update(torch.load(index.parent / shard, weights_only=True))
    assert not state["0.weight"].is_contiguous()
    skel.model.load_state_dict(state, strict=True)
    np.testing.assert_allclose(skel.run(case.input()), src.run(case.input()), rtol=1e-5, atol=1e-6)


def test_strided_is_a_torch_option_only(tmp_path):
    case = next(c for c in CASES if c.name == "dense")
    src_file = Side("torch", case).build(7).save(tmp_path / "src.pt")
    skel_file = Side("keras", case).build().save(tmp_path / "skeleton.weights.h5")
    with pytest.raises(ConvertError, match="strided"):
        api.convert(src_file, tmp_path / "out.weights.h5", like=skel_file, strided=True)
