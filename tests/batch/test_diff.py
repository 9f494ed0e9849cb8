"""`ckpt diff`: tensor by tensor through the graph's paths, exit 0/1/2, JSON rows, rules,
bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli

from .conftest import read_safetensors


@pytest.fixture(scope="session")
def torch_pair(sources, tmp_path_factory):
    """A torch file and its safetensors conversion."""
    out = tmp_path_factory.mktemp("diff") / "model.safetensors"
    assert run_cli("convert", sources["torch"].path, out, "-q").code == 0
    return sources["torch"].path, out


def _changed(original, tmp_path, key, delta, name="changed.safetensors"):
    """The file with one element of `key` moved by `delta`, written by safetensors itself."""
    from safetensors.numpy import save_file

    values = read_safetensors(original)
    values[key] = values[key].copy()
    values[key].flat[0] += delta
    save_file(values, str(tmp_path / name))
    return tmp_path / name


def test_torch_file_equals_its_safetensors_conversion(torch_pair):
    result = run_cli("diff", *torch_pair)
    assert result.code == 0, result.err
    assert result.out == ""
    assert "equal" in result.err and "bit for bit" in result.err


def test_one_changed_element_is_named(torch_pair, tmp_path):
    changed = _changed(torch_pair[1], tmp_path, "2.weight", np.float32(0.25))
    result = run_cli("diff", torch_pair[0], changed)
    assert result.code == 1, result.err
    rows = result.out.strip().splitlines()
    assert len(rows) == 1 and rows[0].startswith("2.weight  differs"), result.out
    assert "1 of 18 elements" in rows[0]
    # within a tolerance above the change: equal
    assert run_cli("diff", torch_pair[0], changed, "--atol", "0.3").code == 0
    assert run_cli("diff", torch_pair[0], changed, "--atol", "0.2").code == 1


def test_tf_checkpoint_equals_its_safetensors_conversion(sources, tmp_path):
    out = tmp_path / "tf.safetensors"
    assert run_cli("convert", sources["tf"].path, out, "-q").code == 0
    assert run_cli("diff", sources["tf"].path, out).code == 0
    assert run_cli("diff", out, sources["tf"].path).code == 0
    # and the numbers are TensorFlow's own
    got = read_safetensors(out)
    for key, value in sources["tf"].values.items():
        assert np.array_equal(got[key], value), key


def test_json_rows_name_every_status(torch_pair, tmp_path):
    from safetensors.numpy import save_file

    values = read_safetensors(torch_pair[1])
    values["0.weight"] = values["0.weight"].copy()
    values["0.weight"][1, 2] = -values["0.weight"][1, 2] * 3
    values["0.bias"] = values["0.bias"].astype(np.float64)  # dtype
    values["2.bias"] = np.zeros((4,), np.float32)  # shape
    del values["2.weight"]  # only in A
    values["extra"] = np.ones(2, np.float32)  # only in B
    save_file(values, str(tmp_path / "b.safetensors"))
    result = run_cli("diff", torch_pair[0], tmp_path / "b.safetensors", "--json")
    assert result.code == 1, result.err
    rows = {row["key"]: row for row in json.loads(result.out)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "0.weight": "differs",
        "0.bias": "dtype",
        "2.weight": "only_a",
        "2.bias": "shape",
        "extra": "only_b",
    }
    original = read_safetensors(torch_pair[1])["0.weight"][1, 2]
    assert rows["0.weight"]["max_abs"] == pytest.approx(abs(4 * float(original)))
    assert rows["0.weight"]["max_rel"] == pytest.approx(4 / 3)
    assert rows["0.weight"]["mismatched"] == 1
    assert rows["0.bias"]["max_abs"] == 0.0  # float32 -> float64 is exact
    assert rows["2.bias"]["shape_a"] == [3] and rows["2.bias"]["shape_b"] == [4]
    for row in rows.values():
        assert {"key", "status", "max_abs", "max_rel"} <= set(row)


def test_same_rows_are_in_the_json(torch_pair):
    result = run_cli("diff", *torch_pair, "--json")
    assert result.code == 0
    rows = json.loads(result.out)
    assert [r["key"] for r in rows] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert {r["status"] for r in rows} == {"same"} and {r["max_abs"] for r in rows} == {0.0}


def test_user_errors_exit_2(torch_pair, tmp_path):
    assert_one_line_error(run_cli("diff", torch_pair[0], tmp_path / "missing.pt"), "missing.pt")
    assert_one_line_error(run_cli("diff", *torch_pair, "--rules", "no-such-rules"), "no-such-rules")


def test_python_api(torch_pair, tmp_path):
    import convert

    report = convert.diff(*torch_pair)
    assert isinstance(report, convert.DiffReport) and report.equal
    changed = _changed(torch_pair[1], tmp_path, "0.bias", np.float32(1e-3))
    report = convert.diff(torch_pair[0], changed, rtol=1e-9)
    assert not report.equal
    assert [r.key for r in report.differences] == ["0.bias"]
    assert convert.diff(torch_pair[0], changed, atol=2e-3).equal


def test_rules_map_a_keras_model_onto_its_torch_twin(tmp_path):
    """A Keras 3 model and a torch model given the same weights by the frameworks
    themselves (kernel = weight.T): equal through keras-torch; a changed bias is not."""
    import keras
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)]
    )
    for layer, linear in zip(model.layers, (net[0], net[2]), strict=True):
        layer.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    model.save_weights(tmp_path / "model.weights.h5")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert np.allclose(
        model.predict(x, verbose=0), net(torch.from_numpy(x)).detach().numpy(), atol=1e-6
    )
    result = run_cli(
        "diff", tmp_path / "model.weights.h5", tmp_path / "net.pt", "--rules", "keras-torch"
    )
    assert result.code == 0, (result.out, result.err)
    with torch.no_grad():
        net[2].bias[1] += 1
    torch.save(net.state_dict(), tmp_path / "net2.pt")
    result = run_cli(
        "diff",
        tmp_path / "model.weights.h5",
        tmp_path / "net2.pt",
        "--rules",
        "keras-torch",
        "--json",
    )
    assert result.code == 1
    rows = [r for r in json.loads(result.out) if r["status"] != "same"]
    assert [(r["key"], r["status"]) for r in rows] == [("2.bias", "differs")]
    assert rows[0]["max_abs"] == pytest.approx(1.0)
    # the other way round (the rules' direction comes from A's side)
    result = run_cli(
        "diff", tmp_path / "net.pt", tmp_path / "model.weights.h5", "--rules", "keras-torch"
    )
    assert result.code == 0, (result.out, result.err)


MEASURE = """
import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "convert", "diff", *sys.argv[1:]]).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def test_diff_streams_in_bounded_memory(tmp_path):
    """Two files of 8 x 32 MiB tensors: the peak is far below one file's size."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    values = {f"t{i}": rng.standard_normal((2048, 4096), dtype=np.float32) for i in range(8)}
    save_file(values, str(tmp_path / "a.safetensors"))
    values["t7"][5, 5] += 1
    save_file(values, str(tmp_path / "b.safetensors"))
    del values
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE,
            str(tmp_path / "a.safetensors"),
            str(tmp_path / "b.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    *rows, last = result.stdout.strip().splitlines()
    code, peak_mib = map(int, last.split())
    assert code == 1, result.stderr
    assert len(rows) == 1 and rows[0].startswith("t7  differs"), result.stdout
    assert peak_mib < 200, peak_mib  # one file is 256 MiB, both 512 MiB
