"""Hugging Face BERT <-> KerasHub's BertBackbone, with `--rules bert-hf-kerashub`.

KerasHub's own loader (`BertBackbone.from_preset` of a Hugging Face directory, offline) is
the reference for the Keras side; transformers' `BertModel` for the other."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
keras_hub = pytest.importorskip("keras_hub")

from convert import api  # noqa: E402

CONFIG = dict(
    vocab_size=40,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=16,
    type_vocab_size=2,
)


def backbone():
    return keras_hub.models.BertBackbone(
        vocabulary_size=CONFIG["vocab_size"],
        num_layers=CONFIG["num_hidden_layers"],
        num_heads=CONFIG["num_attention_heads"],
        hidden_dim=CONFIG["hidden_size"],
        intermediate_dim=CONFIG["intermediate_size"],
        max_sequence_length=CONFIG["max_position_embeddings"],
    )


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    torch.manual_seed(1)
    model = transformers.BertModel(transformers.BertConfig(**CONFIG)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    directory = tmp_path_factory.mktemp("hf")
    model.save_pretrained(directory, safe_serialization=True)
    reference = keras_hub.models.BertBackbone.from_preset(str(directory))
    skeleton = directory.parent / "skeleton.weights.h5"
    backbone().save_weights(skeleton)
    return model, directory, reference, skeleton


def test_hugging_face_into_kerashub_equals_kerashubs_own_loader(hf, tmp_path):
    _, directory, reference, skeleton = hf
    out = tmp_path / "bert.weights.h5"
    report = api.convert(
        directory / "model.safetensors", out, rules="bert-hf-kerashub", like=skeleton
    )
    ported = backbone()
    ported.load_weights(out)
    assert len(ported.weights) == len(reference.weights)
    for mine, theirs in zip(ported.weights, reference.weights, strict=True):
        assert mine.path == theirs.path
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    assert not report.rules["unused"] and not report.rules["missing"]


def test_bert_prefix_is_optional_on_input(hf, tmp_path):
    model, _, reference, skeleton = hf
    prefixed = tmp_path / "pretraining.bin"
    torch.save({f"bert.{k}": v for k, v in model.state_dict().items()}, prefixed)
    out = tmp_path / "bert.weights.h5"
    api.convert(prefixed, out, rules="bert-hf-kerashub", like=skeleton)
    ported = backbone()
    ported.load_weights(out)
    for mine, theirs in zip(ported.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_kerashub_back_to_hugging_face(hf, tmp_path):
    model, directory, _, skeleton = hf
    keras_file = tmp_path / "bert.weights.h5"
    api.convert(
        directory / "model.safetensors", keras_file, rules="bert-hf-kerashub", like=skeleton
    )
    out = tmp_path / "back.safetensors"
    api.convert(keras_file, out, rules="bert-hf-kerashub")
    from safetensors.torch import load_file

    fresh = transformers.BertModel(transformers.BertConfig(**CONFIG)).eval()
    fresh.load_state_dict(load_file(str(out)), strict=True)
    for (name, mine), theirs in zip(
        fresh.state_dict().items(), model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0, msg=name)
