"""What a conversion through rules reports and refuses: round trips, skeletons that want
more than the source has, --check, ambiguous alignments, shapes that disagree, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import convert
from convert import api
from convert.rules import RuleError

from ..conftest import assert_one_line_error, listing
from .frameworks import CASES, EXT, Case, ChannelsLast, Side, keras, values
from .test_layers import port

EXACT = [c for c in CASES]  # every built-in op chain here is exact keras/flax -> torch


@pytest.mark.parametrize("case", [c for c in EXACT if c.keras], ids=lambda c: c.name)
def test_keras_torch_keras_is_bit_for_bit(case, tmp_path):
    src = Side("keras", case).build(3).save(tmp_path / "src.weights.h5")
    skeleton = Side("torch", case).build().save(tmp_path / "skeleton.pt")
    api.convert(src, tmp_path / "mid.pt", like=skeleton)
    back = api.convert(tmp_path / "mid.pt", tmp_path / "back.weights.h5", like=src)
    assert values(tmp_path / "back.weights.h5") == values(src)
    # torch's two biases summed into Keras' one: said, not hidden
    summed = {
        "lstm": ["layers/lstm/cell/vars/2"],
        "simple_rnn": ["layers/simple_rnn/cell/vars/2"],
        "bidirectional_lstm": [
            "layers/bidirectional/backward_layer/cell/vars/2",
            "layers/bidirectional/forward_layer/cell/vars/2",
        ],
    }
    assert sorted(i["key"] for i in back.rules["inexact"]) == summed.get(case.name, [])


@pytest.mark.parametrize("case", [c for c in EXACT if c.flax], ids=lambda c: c.name)
def test_flax_torch_flax_is_bit_for_bit(case, tmp_path):
    src = Side("flax", case).build(3).save(tmp_path / "src.msgpack")
    skeleton = Side("torch", case).build().save(tmp_path / "skeleton.pt")
    api.convert(src, tmp_path / "mid.pt", like=skeleton)
    api.convert(tmp_path / "mid.pt", tmp_path / "back.msgpack", like=src)
    assert values(tmp_path / "back.msgpack") == values(src)


def test_torch_lstm_biases_are_summed_and_reported(tmp_path):
    lstm = next(c for c in CASES if c.name == "lstm")
    _, _, report = port(lstm, "torch", "keras", tmp_path)
    assert [i["key"] for i in report.rules["inexact"]] == ["layers/lstm/cell/vars/2"]
    assert any("without an exact inverse" in n for n in report.notes)


@pytest.mark.parametrize("source", ["torch", "keras"])
def test_gru_recurrent_biases_fold_into_flax_input_ones(source, tmp_path):
    """torch's (and Keras') recurrent r and z biases add into Flax's ir and iz biases: those
    two are named inexact, and only those (in and hn are copies)."""
    gru = next(c for c in CASES if c.name == "gru")
    _, _, report = port(gru, source, "flax", tmp_path)
    assert sorted(i["key"] for i in report.rules["inexact"]) == [
        "params/GRUCell_0/ir/bias",
        "params/GRUCell_0/iz/bias",
    ]


def test_flax_gru_into_torch_is_exact(tmp_path):
    """Flax's input biases are torch's bias_ih; bias_hh holds zeros for r and z, and hn's."""
    gru = next(c for c in CASES if c.name == "gru")
    src, _, report = port(gru, "flax", "torch", tmp_path)
    assert report.rules["inexact"] == []
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    cell = src.variables["params"]["GRUCell_0"]
    np.testing.assert_array_equal(
        state["rnn.bias_ih_l0"].numpy(),
        np.concatenate([cell[g]["bias"] for g in ("ir", "iz", "in")]),
    )
    np.testing.assert_array_equal(
        state["rnn.bias_hh_l0"].numpy(),
        np.concatenate([np.zeros(8, "float32"), cell["hn"]["bias"]]),
    )


# -- skeletons that do not fit -----------------------------------------------------------------

TWO = Case(
    "two",
    (2, 4),
    lambda x: keras.layers.Dense(3)(keras.layers.Dense(5)(x)),
    lambda: torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 3)),
)
THREE = Case(
    "three",
    (2, 4),
    lambda x: keras.layers.Dense(3)(keras.layers.Dense(5)(x)),
    lambda: torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Linear(5, 3), torch.nn.Linear(3, 2)
    ),
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    return {
        "src": Side("keras", TWO).build(5).save(d / "two.weights.h5"),
        "skeleton": Side("torch", TWO).build().save(d / "two.pt"),
        "bigger": Side("torch", THREE).build().save(d / "three.pt"),
        "wrong": Side(
            "torch",
            Case(
                "w",
                (2, 4),
                None,
                lambda: torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)),
            ),
        )
        .build()
        .save(d / "wrong.pt"),
    }


def test_a_skeleton_wanting_more_is_refused(files, tmp_path, ckpt):
    out = tmp_path / "out.pt"
    result = ckpt("convert", files["src"], out, "--like", files["bigger"])
    assert_one_line_error(result, "missing", "2.weight", "2.bias")
    assert listing(tmp_path) == set()


def test_check_partial_writes_what_matched(files, tmp_path, ckpt):
    out = tmp_path / "out.pt"
    result = ckpt(
        "convert", files["src"], out, "--like", files["bigger"], "--check", "partial", "--json"
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["rules"]["missing"] == ["2.weight", "2.bias"]
    state = torch.load(out, weights_only=True)
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 3))
    model.load_state_dict(state)
    source = convert.load(files["src"])
    kernel = next(
        e.tensor.read() for e in source.entries() if e.path == ("layers", "dense", "vars", "0")
    )
    np.testing.assert_array_equal(state["0.weight"].numpy(), kernel.T)


def test_a_shape_that_disagrees_names_the_tensor(files, tmp_path, ckpt):
    result = ckpt("convert", files["src"], tmp_path / "out.pt", "--like", files["wrong"])
    assert_one_line_error(
        result, "layers/dense -> 0: kernel", "makes float32[5, 4]", "holds float32[6, 4]"
    )
    assert listing(tmp_path) == set()


def test_check_consumed_refuses_unused_source_tensors(files, tmp_path, ckpt):
    small = (
        Side("torch", Case("s", (2, 4), None, lambda: torch.nn.Sequential(torch.nn.Linear(4, 5))))
        .build()
        .save(tmp_path / "small.pt")
    )
    result = ckpt(
        "convert", files["src"], tmp_path / "out.pt", "--like", small, "--check", "consumed"
    )
    assert_one_line_error(result, "unused", "layers/dense_1/vars/0")
    result = ckpt("convert", files["src"], tmp_path / "out.pt", "--like", small)
    assert result.code == 0, result.err  # existing: every target entry filled
    assert "2 source tensor(s) were not used: layers/dense_1/vars/0" in result.err


def test_an_order_the_file_lacks_is_settled_by_shapes(tmp_path, ckpt):
    """A .weights.h5 orders layers only within a class: Conv2D and DepthwiseConv2D both
    become torch Conv2d, and only one pairing fits every shape; it computes the same."""
    case = Case(
        "mixed",
        (2, 6, 6, 3),
        lambda x: keras.layers.Conv2D(3, 1)(keras.layers.DepthwiseConv2D(3)(x)),
        lambda: ChannelsLast(
            torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, groups=3), torch.nn.Conv2d(3, 3, 1))
        ),
    )
    src_side = Side("keras", case).build(2)
    src = src_side.save(tmp_path / "src.weights.h5")
    dst = Side("torch", case).build()
    skeleton = dst.save(tmp_path / "skel.pt")
    result = ckpt("convert", src, tmp_path / "out.pt", "--like", skeleton, "--json")
    assert result.code == 0, result.err
    layers = json.loads(result.out)["rules"]["layers"]
    assert {(x["source"], x["target"], x["paired_by"]) for x in layers} == {
        ("layers/depthwise_conv2d", "inner/0", "shapes"),
        ("layers/conv2d", "inner/1", "shapes"),
    }
    dst.load(tmp_path / "out.pt")
    x = case.input()
    np.testing.assert_allclose(dst.run(x), src_side.run(x), rtol=1e-5, atol=1e-5)


def test_an_ambiguous_alignment_is_refused(tmp_path, ckpt):
    """A Conv2D reading one channel and a DepthwiseConv2D of three channels give torch
    weights of one shape: either pairing fits, and which is which cannot be told."""
    case = Case(
        "mixed",
        (2, 6, 6, 1),
        lambda x: keras.layers.DepthwiseConv2D(3)(keras.layers.Conv2D(3, 3)(x)),
        lambda: ChannelsLast(
            torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Conv2d(3, 3, 3, groups=3))
        ),
    )
    src = Side("keras", case).build(2).save(tmp_path / "src.weights.h5")
    skeleton = Side("torch", case).build().save(tmp_path / "skel.pt")
    result = ckpt("convert", src, tmp_path / "out.pt", "--like", skeleton)
    assert_one_line_error(
        result, "orders its layers only within a class", ".keras", "could pair either way"
    )
    assert not (tmp_path / "out.pt").exists()


def test_an_unknown_layer_kind_is_reported_unused(tmp_path, ckpt):
    case = Case(
        "prelu",
        (2, 4),
        lambda x: keras.layers.PReLU()(keras.layers.Dense(4)(x)),
        lambda: torch.nn.Sequential(torch.nn.Linear(4, 4)),
    )
    src = Side("keras", case).build(2).save(tmp_path / "src.weights.h5")
    skeleton = Side("torch", case).build().save(tmp_path / "skel.pt")
    result = ckpt("convert", src, tmp_path / "out.pt", "--like", skeleton, "--check", "consumed")
    assert_one_line_error(result, "unused", "layers/p_re_lu/vars/0")


def test_rules_without_like_or_paths_say_what_is_needed(files, tmp_path, ckpt):
    result = ckpt("convert", files["src"], tmp_path / "out.pt", "--rules", "keras-torch")
    assert_one_line_error(result, "--like TARGET", "[[path]]")


def test_wrong_direction_is_refused(files, tmp_path, ckpt):
    result = ckpt("convert", files["src"], tmp_path / "out.msgpack", "--rules", "flax-torch")
    assert_one_line_error(result, "flax-torch", "keras")


# -- the CLI: dry run, JSON, emitted rules, listings as skeletons ------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(files, tmp_path, ckpt):
    result = ckpt(
        "convert",
        files["src"],
        tmp_path / "out.pt",
        "--rules",
        "keras-torch",
        "--like",
        files["skeleton"],
        "--dry-run",
    )
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == ("0.weight  float32[5, 4]  <- layers/dense/vars/0  (transpose(axes=[1, 0]))")
    assert lines[1] == "0.bias  float32[5]  <- layers/dense/vars/1"
    assert "dry run, nothing written" in result.err
    assert listing(tmp_path) == set()


def test_emitted_rules_alone_give_the_same_output(files, tmp_path, ckpt):
    rules = tmp_path / "aligned.toml"
    first = ckpt(
        "convert",
        files["src"],
        tmp_path / "a.pt",
        "--like",
        files["skeleton"],
        "--emit-rules",
        rules,
    )
    assert first.code == 0, first.err
    second = ckpt("convert", files["src"], tmp_path / "b.pt", "--rules", rules)
    assert second.code == 0, second.err
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_listing_is_a_skeleton(files, tmp_path, ckpt):
    listed = ckpt("ls", files["skeleton"], "--json")
    (tmp_path / "skeleton.json").write_text(listed.out)
    result = ckpt(
        "convert", files["src"], tmp_path / "out.pt", "--like", tmp_path / "skeleton.json"
    )
    assert result.code == 0, result.err
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 3))
    model.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True), strict=True)


def test_rules_listing_and_show(ckpt):
    result = ckpt("rules")
    assert result.code == 0
    names = [line.split()[0] for line in result.out.splitlines() if not line.startswith(" ")]
    assert names == [
        "bert-hf-kerashub",
        "bert-tf1-hf",
        "flax-torch",
        "gemma-hf-kerashub",
        "gemma-jax-hf",
        "gemma3-hf-kerashub",
        "gpt2-hf-kerashub",
        "hf-flax",
        "hf-tf",
        "keras-flax",
        "keras-torch",
        "llama-hf-kerashub",
        "llama-meta-hf",
        "mistral-hf-kerashub",
        "mixtral-hf-kerashub",
        "qwen2-hf-kerashub",
        "qwen3-hf-kerashub",
        "qwen3-moe-hf-kerashub",
        "vit-jax-timm",
        "keras-keras",
    ]  # (the templates the decoder families include are not rule sets of their own)
    serves = [line for line in result.out.splitlines() if "serves:" in line]
    assert len(serves) == 19  # each built-in set says which models it serves
    shown = ckpt("rules", "show", "keras-torch")
    assert 'sides = ["keras", "torch"]' in shown.out
    assert_one_line_error(ckpt("rules", "show", "nope"), "unknown rule set 'nope'")


def test_api_errors_are_rule_errors(files, tmp_path):
    with pytest.raises(RuleError, match="missing"):
        api.convert(files["src"], tmp_path / "o.pt", like=files["bigger"])
    assert EXT  # (the module's shared names stay in use)


def test_made_and_dropped_tensors_are_reported(tmp_path):
    bn = next(c for c in CASES if c.name == "batch_norm")
    src = Side("keras", bn).build(3).save(tmp_path / "src.weights.h5")
    skeleton = Side("torch", bn).build().save(tmp_path / "skeleton.pt")
    there = api.convert(src, tmp_path / "mid.pt", like=skeleton)
    assert there.rules["made"] == ["0.num_batches_tracked"]
    back = api.convert(tmp_path / "mid.pt", tmp_path / "back.weights.h5", like=src)
    assert back.rules["dropped"] == ["0.num_batches_tracked"]
    assert back.rules["inexact"] == [] and back.rules["unused"] == []
