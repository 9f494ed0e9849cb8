"""Each layer kind, in every direction among Keras 3, PyTorch and Flax where both have it:
the source saved by its framework, a fresh skeleton saved by the target's, converted with
`--like`, loaded by the target's own loader, computing what the source computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convert import api
from convert.core.errors import ConvertError

from .frameworks import CASES, EXT, Case, Side, directions, keras, values

PAIRS = [
    pytest.param(case, a, b, id=f"{case.name}-{a}-{b}")
    for case in CASES
    for a, b in directions(case)
]


def port(case, source: str, target: str, tmp_path, seed: int = 7):
    """The source side, the loaded target side, and the conversion's report."""
    src = Side(source, case).build(seed)
    src_file = src.save(tmp_path / f"src{EXT[source]}")
    skeleton = Side(target, case).build()
    skel_file = skeleton.save(tmp_path / f"skeleton{EXT[target]}")
    out = tmp_path / f"out{EXT[target]}"
    report = api.convert(src_file, out, like=skel_file, emit_rules=tmp_path / "emitted.toml")
    skeleton.load(out)
    return src, skeleton, report


@pytest.mark.parametrize(("case", "source", "target"), PAIRS)
def test_port_computes_the_same(case, source, target, tmp_path):
    src, dst, report = port(case, source, target, tmp_path)
    # The alignment written back converts the same way, with the skeleton and without it.
    out, emitted = tmp_path / f"out{EXT[target]}", tmp_path / "emitted.toml"
    for like in (tmp_path / f"skeleton{EXT[target]}", None):
        again = tmp_path / f"again{EXT[target]}"
        api.convert(tmp_path / f"src{EXT[source]}", again, rules=emitted, like=like, overwrite=True)
        assert values(again) == values(out), like
    x = case.input()
    expected, got = src.run(x), dst.run(x)
    assert expected.shape == got.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    assert not report.rules["missing"] and not report.rules["unused"]


@pytest.mark.parametrize(
    ("source", "target", "rules"),
    [
        ("flax", "torch", "flax-torch"),
        ("torch", "flax", "flax-torch"),
        ("keras", "flax", "keras-flax"),
        ("flax", "keras", "keras-flax"),
    ],
)
def test_gru_through_the_cli_with_named_rules(source, target, rules, tmp_path, ckpt):
    """Flax's GRUCell against torch's nn.GRU, and against Keras' GRU through the composed
    keras-flax rules, named on the command line."""
    gru = next(c for c in CASES if c.name == "gru")
    src = Side(source, gru).build(11)
    src_file = src.save(tmp_path / f"src{EXT[source]}")
    dst = Side(target, gru).build()
    skeleton = dst.save(tmp_path / f"skeleton{EXT[target]}")
    out = tmp_path / f"out{EXT[target]}"
    result = ckpt("convert", src_file, out, "--rules", rules, "--like", skeleton)
    assert result.code == 0, result.err
    dst.load(out)
    x = gru.input(2)
    expected = src.run(x)
    np.testing.assert_allclose(
        dst.run(x), expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max())
    )


@pytest.mark.parametrize(("center", "scale"), [(False, True), (True, False)])
def test_keras_norm_holding_gamma_or_beta_alone_is_refused(center, scale, tmp_path):
    """Keras' LayerNormalization(center=False) holds gamma alone, (scale=False) beta alone:
    either is `vars/0` of a .weights.h5, which does not say which, so the port refuses it
    rather than take one for the other (torch's LayerNorm(bias=False) holds a weight)."""
    case = Case(
        "layer_norm_one",
        (2, 3, 5),
        lambda x: keras.layers.LayerNormalization(center=center, scale=scale)(x),
        lambda: torch.nn.Sequential(torch.nn.LayerNorm(5, bias=False)),
    )
    src = Side("keras", case).build(7).save(tmp_path / "src.weights.h5")
    skeleton = Side("torch", case).build().save(tmp_path / "skeleton.pt")
    with pytest.raises(ConvertError, match="layers/layer_normalization"):
        api.convert(src, tmp_path / "out.pt", like=skeleton)
    assert not (tmp_path / "out.pt").exists()
