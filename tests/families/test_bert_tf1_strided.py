"""Google's TF1 BERT into Hugging Face torch with `strided`: every kernel is stored as
TensorFlow holds it, with swapped strides, and both of transformers' ways to load a
`pytorch_model.bin` give the model that the default output gives."""

from __future__ import annotations

import pytest

from convert import api

from .test_bert_tf1 import _inputs, bert  # noqa: F401  (the module-scoped checkpoint)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_strided_bert_loads_with_from_pretrained_and_load_state_dict(bert, tmp_path):  # noqa: F811
    model, config, prefix, google, _ = bert
    folder = tmp_path / "hf"
    folder.mkdir()
    config.save_pretrained(folder)
    api.convert(prefix, folder / "pytorch_model.bin", rules="bert-tf1-hf", strided=True)
    plain = tmp_path / "plain.bin"
    api.convert(prefix, plain, rules="bert-tf1-hf")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    default = torch.load(plain, weights_only=True)
    assert list(state) == list(default)
    query = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert not query.is_contiguous() and query.stride() == (1, config.hidden_size)
    kernel = google["bert/encoder/layer_0/attention/self/query/kernel"]
    assert bytes(query.untyped_storage()) == kernel.tobytes()  # TF's bytes, untouched
    assert all(t.is_contiguous() for t in default.values())
    for key, tensor in state.items():
        assert torch.equal(tensor, default[key]), key
    fresh = transformers.BertForPreTraining(config).eval()
    fresh.load_state_dict(state, strict=True)
    fresh.tie_weights()
    loaded = transformers.BertForPreTraining.from_pretrained(folder).eval()
    with torch.no_grad():
        want = model(**_inputs())
        for got in (fresh(**_inputs()), loaded(**_inputs())):
            torch.testing.assert_close(got.prediction_logits, want.prediction_logits)
            torch.testing.assert_close(got.seq_relationship_logits, want.seq_relationship_logits)
