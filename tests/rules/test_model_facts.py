"""Model facts (`[facts]`: numbers a JSON file beside the weights tells) and the ops that use
them: `regroup` (sub-axes of one axis reordered, Meta's rotary layout) and `same` (copies
of one tensor, kept once)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convert import api, rules
from convert.core.errors import ConvertError, RuleError
from convert.rules import ops


def _documented_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Meta's interleaved pairs → Hugging Face's halves, as its conversion documents it:
    view (heads, head_dim / 2, 2, cols), swap the middle axes, flatten back."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 1))
def test_regroup_is_the_rotary_permutation_and_inverts(heads, pairs, cols, axis):
    w = np.random.default_rng(heads * pairs).normal(size=(heads * pairs * 2, cols))
    w = w.astype("float32") if axis == 0 else w.T.astype("float32")
    chain = ops.Chain(
        [
            ops.parse(
                {"op": "regroup", "axis": axis, "shape": ["@heads", -1, 2], "axes": [0, 2, 1]}, "t"
            )
        ]
    )
    assert chain.needs == {"heads"}
    bound = chain.bind({"heads": heads})
    (out,) = bound.apply([w])
    expected = _documented_rotary(w if axis == 0 else w.T, heads)
    np.testing.assert_array_equal(out if axis == 0 else out.T, expected)
    assert bound.specs([(w.dtype, w.shape)]) == [(w.dtype, w.shape)]
    (back,) = bound.inverse([(w.dtype, w.shape)]).apply([out])
    assert back.tobytes() == w.tobytes()
    with pytest.raises(ops.OpError, match="the fact 'heads' is not known"):
        chain.apply([w])


def test_regroup_that_does_not_fit_says_so():
    with pytest.raises(ops.OpError, match="does not fit an axis of 10"):
        ops.Regroup(0, (3, -1, 2), (0, 2, 1)).specs([(np.dtype("float32"), (10, 4))])
    with pytest.raises(ops.OpError, match="is a list of integers"):
        ops.parse({"op": "regroup", "shape": [1.5, 2]}, "t")


def test_same_keeps_one_copy_and_refuses_copies_that_differ():
    a = np.arange(6, dtype="float32")
    same = ops.Same()
    (kept,) = same.apply([a, a.copy(), a.copy()])
    assert kept.tobytes() == a.tobytes()
    assert same.inverse([(a.dtype, a.shape)] * 3) == ops.Tie(3)
    assert ops.Chain([same]).exact  # (nothing is lost: the copies were checked equal)
    with pytest.raises(ops.OpError, match="copy 2 differs from copy 0"):
        same.apply([a, a, a + 1])
    with pytest.raises(ops.NeedShapes):
        same.back([(a.dtype, a.shape)])


RULES = """
sides = ["meta", "hf"]
formats = { meta = ["npz"], hf = ["safetensors"] }
[facts]
heads = { meta = "params.json:n_heads", hf = "config.json:text/heads" }
kv = { meta = ["params.json:n_kv", "params.json:n_heads"] }
dim = { meta = "params.json:dim" }

[[tensor]]
meta = "q"
hf = "q_proj"
ops = [{ op = "regroup", shape = ["@heads", -1, 2], axes = [0, 2, 1] }]

[[tensor]]
meta = "k"
hf = "k_proj"
ops = [{ op = "regroup", shape = ["@kv", -1, 2], axes = [0, 2, 1] }]

[[tensor]]
meta = "e"
hf = "by_rows"
shape = [-1, "@dim"]

[[tensor]]
meta = "e"
hf = "by_columns"
"""


@pytest.fixture
def model(tmp_path):
    rule_file = tmp_path / "r.toml"
    rule_file.write_text(RULES)
    (tmp_path / "meta").mkdir()
    rng = np.random.default_rng(0)
    tensors = {
        "q": rng.normal(size=(16, 3)),
        "k": rng.normal(size=(8, 3)),
        "e": rng.normal(size=(5, 6)),
    }
    tensors = {k: v.astype("float32") for k, v in tensors.items()}
    np.savez(tmp_path / "meta" / "w.npz", **tensors)
    return rule_file, tmp_path / "meta", tensors


def _params(folder, **values):
    (folder / "params.json").write_text(json.dumps(values))


def test_facts_come_from_the_json_beside_the_weights(model, tmp_path):
    from safetensors.numpy import load_file

    rule_file, folder, tensors = model
    _params(folder, n_heads=4, dim=6)  # (no n_kv: the list's next place, n_heads, tells)
    api.convert(folder / "w.npz", tmp_path / "out.safetensors", rules=rule_file)
    out = load_file(tmp_path / "out.safetensors")
    np.testing.assert_array_equal(out["q_proj"], _documented_rotary(tensors["q"], 4))
    np.testing.assert_array_equal(out["k_proj"], _documented_rotary(tensors["k"], 4))
    assert set(out) == {"q_proj", "k_proj", "by_rows"}  # ([-1, "@dim"]: 6 columns)
    _params(folder, n_heads=4, n_kv=2, dim=5)
    api.convert(folder / "w.npz", tmp_path / "out.safetensors", rules=rule_file, overwrite=True)
    out = load_file(tmp_path / "out.safetensors")
    np.testing.assert_array_equal(out["k_proj"], _documented_rotary(tensors["k"], 2))
    assert "by_columns" in out


def test_facts_on_both_sides_must_agree_and_nested_keys_reach_in(model, tmp_path):
    rule_file, folder, _ = model
    _params(folder, n_heads=4, dim=6)
    api.convert(folder / "w.npz", tmp_path / "hf" / "out.safetensors", rules=rule_file)
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"text": {"heads": 4}}))
    api.convert(
        folder / "w.npz",
        tmp_path / "again.safetensors",
        rules=rule_file,
        like=tmp_path / "hf" / "out.safetensors",
    )
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"text": {"heads": 2}}))
    with pytest.raises(
        RuleError, match="disagree on the model's heads: .*params.json says 4, .*config.json says 2"
    ):
        api.convert(
            folder / "w.npz",
            tmp_path / "again.safetensors",
            rules=rule_file,
            like=tmp_path / "hf" / "out.safetensors",
        )


def test_a_fact_no_file_tells_stops_the_rule_that_needs_it(model, tmp_path):
    rule_file, folder, _ = model
    with pytest.raises(
        RuleError,
        match=r"tensor q: needs the model's heads, .*"
        r"meta: params.json n_heads; hf: config.json text/heads",
    ):
        api.convert(folder / "w.npz", tmp_path / "out.safetensors", rules=rule_file)
    _params(folder, n_heads=True, dim=6)
    with pytest.raises(ConvertError, match="n_heads is True, not a positive whole number"):
        api.convert(folder / "w.npz", tmp_path / "out.safetensors", rules=rule_file)
    (folder / "params.json").write_text("{")
    with pytest.raises(ConvertError, match="params.json: is not valid JSON"):
        api.convert(folder / "w.npz", tmp_path / "out.safetensors", rules=rule_file)


@pytest.mark.parametrize(
    ("facts", "fragment"),
    [
        ('heads = "x"', "give its place on a side"),
        ('heads = { c = "p.json:n" }', "a side (a, b) gives a place"),
        ('heads = { a = "p.json" }', "a place `file:key`"),
        ('heads = { a = "../p.json:n" }', "a place `file:key`"),
    ],
)
def test_malformed_facts_are_one_line_errors(tmp_path, facts, fragment):
    path = tmp_path / "r.toml"
    path.write_text(f'sides = ["a", "b"]\n[facts]\n{facts}\n')
    with pytest.raises(RuleError) as err:
        rules.load(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)
