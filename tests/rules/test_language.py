"""The rule language without frameworks: patterns, ops and their inverses, rule files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convert import rules
from convert.rules import ops
from convert.rules.language import RuleError
from convert.rules.patterns import Pattern, PatternError

# -- patterns ---------------------------------------------------------------------------------


def test_patterns_match_whole_paths_only():
    p = Pattern("encoder/layer_{i}/kernel")
    assert p.match(("encoder", "layer_3", "kernel")) == {"i": "3"}
    assert p.match(("x", "encoder", "layer_3", "kernel")) is None  # anchored at the start
    assert p.match(("encoder", "layer_3", "kernel", "m")) is None  # and at the end
    assert p.match(("encoder", "layer_", "kernel")) is None  # a placeholder is not empty


def test_many_segments_and_fill_round_trip():
    p = Pattern("{prefix*}/attention/{part}/kernel")
    values = p.match(("bert", "encoder", "attention", "query", "kernel"))
    assert values == {"prefix": ("bert", "encoder"), "part": "query"}
    assert p.fill(values) == ("bert", "encoder", "attention", "query", "kernel")
    assert Pattern("{p*}/w").match(("w",)) == {"p": ()}
    assert Pattern("/").match(()) == {}


def test_a_placeholder_keeps_one_value():
    p = Pattern("{a}/{a}")
    assert p.match(("x", "x")) == {"a": "x"}
    assert p.match(("x", "y")) is None


@pytest.mark.parametrize("text", ["a//b", "a/{b", "{x}{x}", "a/{i+1:counter}", "x{i:counter}y"])
def test_malformed_patterns(text):
    with pytest.raises(PatternError):
        Pattern(text)


def test_a_placeholder_beside_text_matches_one_name_part():
    p = Pattern("conv{n}/kernel")
    assert p.match(("conv4", "kernel")) == {"n": "4"}
    assert p.match(("conv4_1", "kernel")) is None  # not across `_`
    assert p.match(("conv1-BN", "kernel")) is None  # nor `-`
    assert Pattern("{name}/kernel").match(("conv4_1", "kernel")) == {"name": "conv4_1"}
    wide = Pattern("emb/{table*}_embeddings")
    assert wide.match(("emb", "token_type_embeddings")) == {"table": "token_type"}
    assert wide.fill({"table": "token_type"}) == ("emb", "token_type_embeddings")


def test_index_arithmetic_runs_both_ways():
    keras, torch = Pattern("layers/p_re_lu{i:counter}"), Pattern("prelu{i+1}")
    assert keras.match(("layers", "p_re_lu")) == {"i": "0"}
    assert torch.fill({"i": "0"}) == ("prelu1",)
    assert torch.match(("prelu3",)) == {"i": "2"}
    assert keras.fill(torch.match(("prelu3",))) == ("layers", "p_re_lu_2")
    assert torch.match(("prelu0",)) is None  # i would be -1
    seq = Pattern("features/{2*i}/weight")
    assert seq.match(("features", "4", "weight")) == {"i": "2"}
    assert seq.match(("features", "3", "weight")) is None  # no whole i
    assert seq.fill({"i": "3"}) == ("features", "6", "weight")
    assert Pattern("b{2*i+1}").match(("b5",)) == {"i": "2"}
    assert Pattern("b{i-1}").fill({"i": "1"}) == ("b0",)


def test_a_skipped_level_keeps_no_value_and_is_found_in_a_skeleton():
    p = Pattern("conv1/{_}/kernel")
    assert p.match(("conv1", "conv1_3", "kernel")) == {}
    assert p.names == frozenset()
    with pytest.raises(PatternError, match="--like"):
        p.fill({})
    known = [("conv1", "conv1_3", "kernel"), ("conv2", "x", "kernel")]
    assert p.resolve({}, known) == ("conv1", "conv1_3", "kernel")
    assert Pattern("{n}/{_}/w").resolve({"n": "b"}, [("a", "1", "w"), ("b", "2", "w")]) == (
        "b",
        "2",
        "w",
    )


# -- ops: forward then inverse is the identity ------------------------------------------------


def _array(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _round_trip(chain: ops.Chain, arrays: list[np.ndarray]) -> None:
    specs = [(a.dtype, a.shape) for a in arrays]
    out_specs = chain.specs(specs)
    out = chain.apply(arrays)
    assert [(o.dtype, o.shape) for o in out] == out_specs  # inference agrees with the data
    back = chain.inverse(specs).apply(out)
    assert len(back) == len(arrays)
    for a, b in zip(arrays, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


dims = st.integers(1, 4)
shapes = st.lists(dims, min_size=1, max_size=4).map(tuple)


@settings(max_examples=40, deadline=None)
@given(shapes, st.randoms())
def test_transpose_inverts(shape, random):
    axes = list(range(len(shape)))
    random.shuffle(axes)
    _round_trip(ops.Chain([ops.Transpose(tuple(axes))]), [_array(shape)])


@settings(max_examples=40, deadline=None)
@given(st.lists(dims, min_size=2, max_size=4).map(tuple), st.data())
def test_merge_reshape_expand_flip_invert(shape, data):
    first = data.draw(st.integers(0, len(shape) - 2))
    last = data.draw(st.integers(first + 1, len(shape) - 1))
    axis = data.draw(st.integers(0, len(shape)))
    chain = ops.Chain(
        [ops.Flip((0,)), ops.Merge(first, last), ops.Expand(axis % 2), ops.Reshape((-1,))]
    )
    _round_trip(chain, [_array(shape)])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(2, 4), st.randoms())
def test_gates_concat_split_stack_invert(rows, cols, parts, random):
    order = list(range(parts))
    random.shuffle(order)
    arrays = [_array((rows * parts, cols), seed) for seed in range(3)]
    _round_trip(ops.Chain([ops.Gates(tuple(order), 0), ops.Concat(0)]), arrays)
    _round_trip(ops.Chain([ops.Stack(1), ops.Unstack(1)]), arrays)
    _round_trip(ops.Chain([ops.Split(0, parts=parts)]), arrays[:1])


@settings(max_examples=40, deadline=None)
@given(st.lists(dims, min_size=2, max_size=3).map(tuple), st.integers(1, 3))
def test_channels_first_inverts(feature_map, out):
    shape = (math.prod(feature_map), out)
    _round_trip(ops.Chain([ops.ChannelsFirst(0, feature_map)]), [_array(shape)])


def test_channels_first_is_torchs_flatten_order():
    x = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)  # (h, w, c)
    kernel = x.reshape(-1, 1)  # rows in h, w, c order
    (moved,) = ops.Chain([ops.ChannelsFirst(0, (2, 3, 4))]).apply([kernel])
    np.testing.assert_array_equal(moved[:, 0], x.transpose(2, 0, 1).reshape(-1))


def test_inexact_ops_say_so():
    assert not ops.Chain([ops.Sum()]).exact
    assert not ops.Chain([ops.Drop()]).exact
    assert ops.Chain([ops.Zeros(1)]).exact
    f32, f64 = (np.dtype("float32"), (2,)), (np.dtype("float64"), (2,))
    assert ops.Cast("float64").lossless([f32])  # widening: the inverse gives it back
    assert not ops.Cast("float32").lossless([f64])  # narrowing: it may not
    assert ops.Cast("float32").inverse1(f64) == ops.Cast("float64")


def test_zeros_then_sum_gives_the_bias_back():
    bias = _array((8,))
    pair = ops.Chain([ops.Zeros(1)]).apply([bias])
    assert pair[1].tobytes() == np.zeros(8, "float32").tobytes()
    (back,) = ops.Chain([ops.Sum()]).apply(pair)
    assert back.tobytes() == bias.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(shapes, min_size=1, max_size=4), st.data())
def test_zeros_like_reorder_then_back(shape_list, data):
    """Zero tensors like some of the list, the list reordered: the inverse (reorder back,
    add the zeros into their partners) gives the inputs back bit for bit."""
    arrays = [_array(s, i) for i, s in enumerate(shape_list)]
    like = tuple(data.draw(st.lists(st.integers(0, len(arrays) - 1), min_size=1, max_size=3)))
    order = list(range(len(arrays) + len(like)))
    data.draw(st.randoms()).shuffle(order)
    _round_trip(ops.Chain([ops.Zeros(like=like), ops.Reorder(tuple(order))]), arrays)


def test_sum_into_adds_the_last_into_the_named():
    a, b, c, x, y = (_array((3,), i) for i in range(5))
    out = ops.Chain([ops.Sum((2, 0))]).apply([a, b, c, x, y])
    np.testing.assert_array_equal(out[0], a + y)
    np.testing.assert_array_equal(out[2], c + x)
    assert out[1] is b  # untouched: passed through
    with pytest.raises(ops.OpError):  # a partner of another shape
        ops.Sum((0,)).specs([(np.dtype("float32"), (3,)), (np.dtype("float32"), (4,))])


def test_only_what_went_through_a_sum_is_inexact():
    """Per tensor: what passed beside a sum, or was made by zeros, keeps its exactness."""
    f32 = [(np.dtype("float32"), (2,))] * 4
    chain = ops.Chain([ops.Reorder((3, 0, 1, 2)), ops.Sum((1,))])
    assert chain.inexact(f32, [False] * 4) == [False, True, False]
    assert chain.inexact(f32, [False, True, False, False]) == [False, True, True]
    made = ops.Chain([ops.Zeros(like=(0,)), ops.Cast("float16")])
    assert made.inexact(f32[:2], [False, False]) == [True, True, True]  # narrowing: all
    assert ops.Chain([ops.Zeros(like=(1,))]).inexact(f32[:2], [True, False]) == [True, False, False]
    assert ops.Chain([ops.Concat(0), ops.Split(0, parts=2)]).inexact(f32[:2], [True, False]) == [
        True,
        True,
    ]  # joined: no longer told apart


# -- every built-in layer rule: forward then reverse is the identity --------------------------


def _first_side_shapes(kind: str, var: str, n: int, d: int, k: int) -> tuple[int, ...]:
    """A plausible shape of `var` of `kind` on a rule file's first side (Keras or Flax)."""
    name = var.rsplit("/", 1)[-1]
    if kind in (
        "lstm",
        "gru",
        "simple_rnn",
        "bidirectional_lstm",
        "bidirectional_gru",
    ) and var.startswith("params/"):  # Flax: a Dense per gate (`hi`, `forward_rnn/cell/hi`)
        hidden = var.rsplit("/", 2)[-2].startswith("h")
        return ((d if hidden else n), d) if name == "kernel" else (d,)
    lstm = {"kernel": (n, 4 * d), "recurrent_kernel": (d, 4 * d), "bias": (4 * d,)}
    gru = {"kernel": (n, 3 * d), "recurrent_kernel": (d, 3 * d), "bias": (2, 3 * d)}
    table = {
        "dense": {"kernel": (n, d), "bias": (d,)},
        "flatten_dense": {"kernel": (2 * 3 * n, d), "bias": (d,)},
        "conv1d": {"kernel": (k, n, d), "bias": (d,)},
        "conv2d": {"kernel": (k, k + 1, n, d), "bias": (d,)},
        "conv3d": {"kernel": (k, k, k + 1, n, d), "bias": (d,)},
        "conv1d_transpose": {"kernel": (k, d, n), "bias": (d,)},
        "conv2d_transpose": {"kernel": (k, k + 1, d, n), "bias": (d,)},
        "conv3d_transpose": {"kernel": (k, k, k + 1, d, n), "bias": (d,)},
        "depthwise_conv2d": {"kernel": (k, k + 1, n, 2), "bias": (2 * n,)},
        "prelu": {"alpha": (1, 1, n)},
        "simple_rnn": {"kernel": (n, d), "recurrent_kernel": (d, d), "bias": (d,)},
        "lstm": lstm,
        "gru": gru,
        "bidirectional_lstm": lstm,
        "bidirectional_gru": gru,
        "attention": {
            "kernel": (n * 2, 2, n) if "output" not in var and "out/" not in var else (2, n, n * 2),
            "bias": (2, n) if "output" not in var and "out/" not in var else (n * 2,),
        },
    }
    return table.get(kind, {}).get(name, (n,))


BUILTIN = [
    (name, rule) for name in ("keras-torch", "flax-torch") for rule in rules.load(name).layers
]


@pytest.mark.parametrize(
    ("name", "rule"), BUILTIN, ids=[f"{n}-{r.kinds[rules.load(n).sides[0]]}" for n, r in BUILTIN]
)
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), d=st.integers(1, 4), k=st.integers(1, 3))
def test_builtin_rules_run_both_ways(name, rule, n, d, k):
    first, second = rules.load(name).sides
    kind = rule.kinds[first]
    if kind == "bidirectional":  # Keras' one wrapper: what it wraps is the other side's kind
        kind = rule.kinds[second]
    for var in rule.vars:
        if not var.names[first]:
            continue  # made from nothing (a constant): its reverse drops it
        arrays = [
            _array(_first_side_shapes(kind, v, n, d, k), i) for i, v in enumerate(var.names[first])
        ]
        _round_trip(var.chain.bind({"flatten": [2, 3, n]}), arrays)


# -- rule files -------------------------------------------------------------------------------


def _write(tmp_path, text: str, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('sides = ["a"]', "`sides` must name the two sides"),
        ('sides = ["a", "b"]\n[[tensor]]\na = "x/{i}"\nb = "y"', "same placeholders"),
        ('sides = ["a", "b"]\n[[tensor]]\na = "x"\nb = "y"\nops = [{op = "twist"}]', "unknown op"),
        (
            'sides = ["a", "b"]\n[[tensor]]\na = "x"\nb = "y"\nops = [{op = "transpose", x = 1}]',
            "transpose takes",
        ),
        ('sides = ["a", "b"]\nbogus = 1', "unknown table"),
        ('sides = ["a", "b"]\ninclude = ["nope"]', "unknown rule set 'nope'"),
        ("sides = [", "not valid TOML"),
    ],
)
def test_malformed_rule_files_are_one_line_errors(tmp_path, text, fragment):
    with pytest.raises(RuleError) as err:
        rules.load(_write(tmp_path, text))
    assert fragment in str(err.value) and "\n" not in str(err.value)


EACH_RULES = """
sides = ["stacked", "listed"]
formats = { stacked = ["npz"], listed = ["npz"] }
[[tensor]]
stacked = "bank/{i}"
listed = "layer/{i}/experts/{e:each}/w"
ops = [{ op = "transpose", axes = [0, 2, 1] }, { op = "unstack", axis = 0 }]
"""


def test_an_each_pattern_names_a_list_in_its_numbers_order(tmp_path):
    from convert import api

    assert Pattern("x/{e:each}/w").each == "e"
    assert Pattern("x/{e:each}/w").match(("x", "12", "w")) == {"e": "12"}
    assert Pattern("x/{e:each}/w").match(("x", "a", "w")) is None
    rule_file = _write(tmp_path, EACH_RULES, "each.toml")
    bank = np.arange(2 * 3 * 12, dtype=np.float32).reshape(2, 3, 4, 3)
    np.savez(tmp_path / "stacked.npz", **{"bank/0": bank[0], "bank/1": bank[1]})
    api.convert(tmp_path / "stacked.npz", tmp_path / "listed.npz", rules=rule_file)
    with np.load(tmp_path / "listed.npz") as listed:
        assert sorted(listed.files) == sorted(
            f"layer/{i}/experts/{e}/w" for i in (0, 1) for e in (0, 1, 2)
        )
        for i in (0, 1):
            for e in range(3):
                np.testing.assert_array_equal(listed[f"layer/{i}/experts/{e}/w"], bank[i, e].T)
    report = api.convert(
        tmp_path / "listed.npz", tmp_path / "back.npz", rules=rule_file, reverse=True
    )
    assert not report.rules["unused"]
    with np.load(tmp_path / "back.npz") as back:
        for i in (0, 1):
            np.testing.assert_array_equal(back[f"bank/{i}"], bank[i])
    # (a gap in the numbers: that layer's experts are no list, and are left unused)
    with np.load(tmp_path / "listed.npz") as listed:
        kept = {k: listed[k] for k in listed.files if k != "layer/1/experts/0/w"}
    np.savez(tmp_path / "gap.npz", **kept)
    report = api.convert(
        tmp_path / "gap.npz", tmp_path / "part.npz", rules=rule_file, reverse=True, check="partial"
    )
    assert sorted(report.rules["unused"]) == ["layer/1/experts/1/w", "layer/1/experts/2/w"]


def test_unstack_takes_a_list_and_stack_its_runs_back():
    a, b = np.arange(24.0).reshape(2, 3, 4), -np.arange(24.0).reshape(2, 3, 4)
    unstack = ops.Unstack(0)
    parts = unstack.apply([a, b])
    assert len(parts) == 4 and np.array_equal(parts[2], b[0])
    specs = [(np.dtype("float64"), (2, 3, 4))] * 2
    assert unstack.specs(specs) == [(np.dtype("float64"), (3, 4))] * 4
    back = unstack.inverse(specs)
    assert back == ops.Stack(0, 2) and back.specs(unstack.specs(specs)) == specs
    again = back.apply(parts)
    assert np.array_equal(again[0], a) and np.array_equal(again[1], b)
    with pytest.raises(ops.OpError, match="cannot cut 3 tensors into 2 runs"):
        ops.Stack(0, 2).specs(specs[:1] * 3)


def test_an_each_pattern_is_on_one_side_in_all_its_patterns(tmp_path):
    bad = EACH_RULES.replace(
        'listed = "layer/{i}/experts/{e:each}/w"',
        'listed = ["layer/{i}/experts/{e:each}/w", "layer/{i}/x"]',
    )
    with pytest.raises(RuleError, match="in every pattern of that side"):
        rules.load(_write(tmp_path, bad, "bad.toml"))
    both = EACH_RULES.replace('stacked = "bank/{i}"', 'stacked = "bank/{i}/{e:each}"')
    with pytest.raises(RuleError, match="on one side only"):
        rules.load(_write(tmp_path, both, "both.toml"))


def test_includes_and_cycles(tmp_path):
    _write(tmp_path, 'sides = ["keras", "torch"]\ninclude = ["b.toml"]', "a.toml")
    _write(tmp_path, 'sides = ["keras", "torch"]\ninclude = ["a.toml"]', "b.toml")
    with pytest.raises(RuleError, match="include each other"):
        rules.load(tmp_path / "a.toml")
    _write(tmp_path, 'sides = ["keras", "torch"]\ninclude = ["keras-torch"]', "c.toml")
    assert len(rules.load(tmp_path / "c.toml").layers) == len(rules.load("keras-torch").layers)


def test_a_template_takes_its_names_from_the_including_files_define(tmp_path):
    template = 'sides = ["a", "b"]\n[[tensor]]\na = "layers/{{block}}{i:counter}/w"\nb = "h/{i}/w"'
    _write(tmp_path, template, "t.toml")
    _write(
        tmp_path, 'sides = ["a", "b"]\ninclude = ["t.toml"]\ndefine = { block = "mlp" }', "x.toml"
    )
    (rule,) = rules.load(tmp_path / "x.toml").tensors
    assert rule.patterns["a"][0].match(("layers", "mlp_1", "w")) == {"i": "1"}
    with pytest.raises(RuleError, match=r"has the slot \{\{block\}\}, which no including") as err:
        rules.load(tmp_path / "t.toml")  # (alone: nothing fills it)
    assert "t.toml" in str(err.value)
    _write(
        tmp_path, 'sides = ["a", "b"]\ninclude = ["t.toml"]\ndefine = { block = "a\\"" }', "y.toml"
    )
    with pytest.raises(RuleError, match="`define` gives the names"):
        rules.load(tmp_path / "y.toml")


def test_built_in_templates_are_not_listed_and_fill_each_architecture():
    assert not [n for n in rules.builtin_names() if "template" in n]
    llama, qwen2 = rules.load("llama-hf-kerashub"), rules.load("qwen2-hf-kerashub")
    assert len(qwen2.tensors) == len(llama.tensors) + 3  # (the projections' biases)
    assert llama.prefix == {"hf": ("model",)} and "kerashub" in llama.needs_like


@settings(max_examples=30, deadline=None)
@given(shapes, st.randoms())
def test_back_inference_agrees_with_forward(shape, random):
    """What an op says went in, from what came out, is what went in (where it can tell)."""
    axes = list(range(len(shape)))
    random.shuffle(axes)
    for op in (ops.Transpose(tuple(axes)), ops.Flip((0,)), ops.Expand(0), ops.Tie(2)):
        specs = [(np.dtype("float32"), shape)]
        assert op.back(op.specs(specs)) == specs
