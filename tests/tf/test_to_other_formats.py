"""TF checkpoints into the other formats with no rules: a tensor keeps its object path,
joined by the target's separator (`model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE` becomes
`model.dense.kernel` in torch and safetensors), and the values are TF's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import tf_values
from .test_read import assert_bits_equal

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def expected_flat(golden_path, sep: str) -> dict[str, np.ndarray]:
    """TF's own values, keyed as DESIGN.md says: object path, slots under the optimizer."""
    out = {}
    for key, value in tf_values(golden_path).items():
        path = key[: -len(SUFFIX)]
        if "/.OPTIMIZER_SLOT/" in path:
            variable, rest = path.split("/.OPTIMIZER_SLOT/")
            optimizer, slot = rest.rsplit("/", 1)
            path = f"{optimizer}/{slot}/{variable}"
        out[path.replace("/", sep)] = value
    return out


@pytest.mark.parametrize("name", ["subclassed", "functional", "keras3"])
def test_tf_to_torch_keeps_object_paths(goldens, name, tmp_path, ckpt):
    torch = pytest.importorskip("torch")
    out = tmp_path / "model.pt"
    assert ckpt("convert", goldens[name].path, out).code == 0
    loaded = torch.load(out, weights_only=True)
    expected = expected_flat(goldens[name].path, ".")
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert_bits_equal(loaded[key].numpy(), value, key)


@pytest.mark.parametrize("name", ["subclassed", "tf1"])
def test_tf_to_safetensors_keeps_paths(goldens, name, tmp_path, ckpt):
    from safetensors.numpy import load_file

    out = tmp_path / "model.safetensors"
    assert ckpt("convert", goldens[name].path, out).code == 0
    loaded = load_file(out)
    if name == "tf1":  # names split on `/`; TF1 slots `var/Adam` go under the root optimizer
        expected = {}
        for key, value in tf_values(goldens[name].path).items():
            scope, _, last = key.rpartition("/")
            if last.startswith("Adam") and scope in tf_values(goldens[name].path):
                key = f"{last}/{scope}"
            expected[key.replace("/", ".")] = value
    else:
        expected = expected_flat(goldens[name].path, ".")
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert_bits_equal(loaded[key], value, key)
