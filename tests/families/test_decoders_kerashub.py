"""Hugging Face decoder LLMs <-> KerasHub backbones (`--rules <arch>-hf-kerashub`): Llama 3,
Mistral, Mixtral and Qwen 3 MoE (4 experts each), Qwen 2, Qwen 3, Gemma, Gemma 3 (text)
and GPT-2.

Small random models built by the suite's transformers, saved with `save_pretrained`
(single, sharded and `.bin`). KerasHub's own loader (`Backbone.from_preset` of the folder,
offline) is the reference for the KerasHub side; transformers' `from_pretrained` of the
folder written back, with its `config.json`, for the other."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
keras_hub = pytest.importorskip("keras_hub")
from safetensors.torch import load_file  # noqa: E402

import convert  # noqa: E402
from convert import api  # noqa: E402
from tests.conftest import assert_one_line_error  # noqa: E402

SMALL = dict(
    vocab_size=40,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32,
)
GPT2 = dict(vocab_size=40, n_embd=16, n_layer=2, n_head=4, n_positions=32)
# name: (rules, config class, model class, the config)
MODELS = {
    "llama": ("llama", "LlamaConfig", "LlamaForCausalLM", {**SMALL, "tie_word_embeddings": False}),
    "llama-tied": (
        "llama",
        "LlamaConfig",
        "LlamaForCausalLM",
        {**SMALL, "tie_word_embeddings": True},
    ),
    "mistral": (
        "mistral",
        "MistralConfig",
        "MistralForCausalLM",
        {**SMALL, "tie_word_embeddings": False},
    ),
    "qwen2": ("qwen2", "Qwen2Config", "Qwen2ForCausalLM", {**SMALL, "tie_word_embeddings": False}),
    "qwen3": ("qwen3", "Qwen3Config", "Qwen3ForCausalLM", {**SMALL, "head_dim": 4}),
    "gemma": ("gemma", "GemmaConfig", "GemmaForCausalLM", {**SMALL, "head_dim": 4}),
    # (query_pre_attn_scalar = head_dim, as in the released Gemma 3: KerasHub's config
    # reads any other value as the model dimension over the heads)
    "gemma3": (
        "gemma3",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {**SMALL, "head_dim": 4, "sliding_window": 8, "query_pre_attn_scalar": 4},
    ),
    "gpt2": ("gpt2", "GPT2Config", "GPT2LMHeadModel", GPT2),
    "mixtral": (
        "mixtral",
        "MixtralConfig",
        "MixtralForCausalLM",
        {**SMALL, "num_local_experts": 4, "num_experts_per_tok": 2, "tie_word_embeddings": False},
    ),
    "qwen3-moe": (
        "qwen3-moe",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {
            **SMALL,
            "head_dim": 4,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 8,
            "tie_word_embeddings": False,
        },
    ),
}
# KerasHub's Mistral loader rounds every weight through float16 (its hook casts each one);
# the port keeps the float32 bits, so the reference is compared after that rounding.
ROUNDED_BY_KERASHUB = {"mistral": np.float16}


def _build(name: str):
    _, config_class, model_class, values = MODELS[name]
    config = getattr(transformers, config_class)(**values)
    torch.manual_seed(3)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # (random norms too: a scale of ones hides a mix-up)
            p.copy_(torch.randn_like(p) * 0.3)
    return model


@pytest.fixture(scope="module", params=list(MODELS))
def decoder(request, tmp_path_factory):
    """A model's folder, KerasHub's own load of it, and a fresh backbone's weights file."""
    name = request.param
    model = _build(name)
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    if name == "qwen3-moe":  # (KerasHub 0.32 reads transformers 4's key for the count)
        config = json.loads((folder / "config.json").read_text())
        config["num_experts"] = config["num_local_experts"]
        (folder / "config.json").write_text(json.dumps(config))
    reference = keras_hub.models.Backbone.from_preset(str(folder))
    skeleton = folder.parent / f"{name}-skeleton.weights.h5"
    _fresh(reference).save_weights(skeleton)
    return name, model, folder, reference, skeleton


def _fresh(reference):
    """A new backbone of the reference's configuration. (Llama's `get_config` leaves out
    `tie_word_embeddings`, so a tied backbone would come back untied.)"""
    config = reference.get_config()
    if hasattr(reference, "tie_word_embeddings"):
        config["tie_word_embeddings"] = reference.tie_word_embeddings
    return type(reference).from_config(config)


def _unnumbered(path: str) -> str:
    return re.sub(r"_\d+(?=/|$)", "", path)


def _ported(reference, weights: Path):
    backbone = _fresh(reference)
    backbone.load_weights(weights)
    return backbone


def test_into_kerashub_equals_kerashubs_own_loader_and_computes_the_same(decoder, tmp_path):
    name, model, folder, reference, skeleton = decoder
    rules = f"{MODELS[name][0]}-hf-kerashub"
    out = tmp_path / "backbone.weights.h5"
    report = api.convert(folder, out, rules=rules, like=skeleton)
    assert not report.rules["unused"] and not report.rules["missing"], report.rules
    ported = _ported(reference, out)
    assert len(ported.weights) == len(reference.weights)
    rounding = ROUNDED_BY_KERASHUB.get(name)
    for mine, theirs in zip(ported.weights, reference.weights, strict=True):
        # (Keras numbers some sublayers per process: `_moe_block_4` in a second backbone)
        assert _unnumbered(mine.path) == _unnumbered(theirs.path)
        value = np.asarray(mine)
        if rounding is not None:
            value = value.astype(rounding).astype(value.dtype)
        np.testing.assert_array_equal(value, np.asarray(theirs), err_msg=mine.path)

    ids = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (2, 7))
    with torch.no_grad():
        hidden = model.base_model(torch.from_numpy(ids)).last_hidden_state.numpy()
    keras_out = ported({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    np.testing.assert_allclose(np.asarray(keras_out), hidden, rtol=1e-4, atol=1e-4)


def test_back_into_a_folder_that_from_pretrained_loads_bit_for_bit(decoder, tmp_path):
    name, model, folder, _, skeleton = decoder
    rules = f"{MODELS[name][0]}-hf-kerashub"
    keras_file = tmp_path / "backbone.weights.h5"
    api.convert(folder, keras_file, rules=rules, like=skeleton)
    back = tmp_path / "back"  # (a folder like the original: its config.json copied)
    report = api.convert(keras_file, back, rules=rules, like=folder)
    assert not report.rules["unused"] and not report.rules["missing"], report.rules
    assert (back / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    model_class = getattr(transformers, MODELS[name][2])
    loaded, info = model_class.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    want = model.state_dict()
    got = loaded.state_dict()
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    on_disk = load_file(back / "model.safetensors")
    assert sorted(on_disk) == sorted(load_file(folder / "model.safetensors"))


# KerasHub's Gemma exporter writes each layer's key and value projections from the first
# key/value head alone (`key_dense.weights[0][0]`): right for one such head (Gemma 2B);
# with more, its file holds one head's rows, which transformers refuses to load.
EXPORTED_WRONG = {"gemma": ("self_attn.k_proj.weight", "self_attn.v_proj.weight")}


def test_back_equals_kerashubs_own_exporter(decoder, tmp_path):
    from keras_hub.src.utils.transformers.export import hf_exporter

    name, _, folder, reference, skeleton = decoder
    if type(reference).__name__ not in hf_exporter.MODEL_EXPORTERS:
        pytest.skip(f"KerasHub has no exporter for {type(reference).__name__}")
    rules = f"{MODELS[name][0]}-hf-kerashub"
    keras_file = tmp_path / "backbone.weights.h5"
    api.convert(folder, keras_file, rules=rules, like=skeleton)
    api.convert(keras_file, tmp_path / "mine.safetensors", rules=rules)
    hf_exporter.export_backbone(_ported(reference, keras_file), tmp_path / "theirs", True)
    mine = load_file(tmp_path / "mine.safetensors")
    theirs = load_file(tmp_path / "theirs" / "model.safetensors")
    # (the exporter also writes a tied head; transformers ties it from the config)
    assert set(mine) <= set(theirs) and set(theirs) - set(mine) <= {"lm_head.weight"}
    wrong = EXPORTED_WRONG.get(name, ())
    for key, value in mine.items():
        if key.endswith(wrong):
            assert theirs[key].shape != value.shape, key  # (see EXPORTED_WRONG)
        else:
            assert torch.equal(theirs[key], value), key


@pytest.mark.parametrize("layout", ["sharded", "bin"])
def test_every_hugging_face_layout_reads(tmp_path, layout):
    """A sharded safetensors folder and a `pytorch_model.bin` one give the same file."""
    model = _build("llama")
    single, other = tmp_path / "single", tmp_path / layout
    model.save_pretrained(single)
    if layout == "sharded":
        model.save_pretrained(other, max_shard_size="4KB")
        assert (other / "model.safetensors.index.json").exists()
    else:  # (transformers 5 saves only safetensors: a `.bin` folder as older ones did)
        other.mkdir()
        shutil.copy(single / "config.json", other)
        torch.save(model.state_dict(), other / "pytorch_model.bin")
    reference = keras_hub.models.Backbone.from_preset(str(single))
    skeleton = tmp_path / "skeleton.weights.h5"
    _fresh(reference).save_weights(skeleton)
    outputs = []
    for folder in (single, other):
        outputs.append(tmp_path / f"{folder.name}.weights.h5")
        api.convert(folder, outputs[-1], rules="llama-hf-kerashub", like=skeleton)
    assert convert.diff(*outputs).equal


# Each model's folder and skeleton given another architecture's rules.
OTHER_RULES = {
    "llama": "qwen3",
    "llama-tied": "mistral",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "qwen2",
    "gemma": "gemma3",
    "gemma3": "llama",
    "gpt2": "llama",
    "mixtral": "mistral",
    "qwen3-moe": "qwen3",
}


def test_another_architectures_rules_are_refused_naming_what_did_not_match(decoder, ckpt):
    name, _, folder, _, skeleton = decoder
    rules = f"{OTHER_RULES[name]}-hf-kerashub"
    out = folder.parent / f"{name}-other.weights.h5"
    result = ckpt("convert", folder, out, "--rules", rules, "--like", skeleton)
    assert result.code == 2, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    # (a decoder whose tensors the other rules name, but not its skeleton's layers; or, for
    # GPT-2's names, none at all)
    said = ("the --like file holds no layers/", f"rules {rules} matched nothing in the source")
    assert any(s in result.err for s in said), result.err
    assert not out.exists()


def test_a_missing_shard_is_refused_naming_it(tmp_path, ckpt):
    model = _build("llama")
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="4KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[1]
    (folder / gone).unlink()
    out = tmp_path / "out.weights.h5"
    result = ckpt("convert", folder, out, "--rules", "llama-hf-kerashub", "--to", "keras")
    assert_one_line_error(result, gone)
    assert not out.exists()


def test_a_skeleton_with_another_head_count_is_refused(decoder, tmp_path, ckpt):
    """Llama's folder, and a fresh backbone of 2 query heads (of 8) for its 4 (of 4)."""
    name, _, folder, reference, _ = decoder
    if name != "llama":
        pytest.skip("one architecture shows it")
    config = {**reference.get_config(), "num_query_heads": 2, "num_key_value_heads": 1}
    skeleton = tmp_path / "two-heads.weights.h5"
    type(reference).from_config(config).save_weights(skeleton)
    out = tmp_path / "out.weights.h5"
    result = ckpt("convert", folder, out, "--rules", "llama-hf-kerashub", "--like", skeleton)
    assert_one_line_error(result, "self_attn/", "where the model's settings make [-1, 2, -1]")
    assert not out.exists()
