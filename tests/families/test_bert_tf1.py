"""Google's TF1 BERT checkpoints <-> Hugging Face BERT, with `--rules bert-tf1-hf`.

The TF1 checkpoint is written by TensorFlow's own `Saver` from a random small Hugging Face
`BertForPreTraining`, through a mapping written here independently of the rule file (by
the names Google's `modeling.py` gives its variables), with Adam slots and `global_step`
as Google's pre-training checkpoints have them."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tf = pytest.importorskip("tensorflow")

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


def google_name(key: str) -> tuple[str, bool] | None:
    """The TF1 variable name of a Hugging Face key, and whether it is transposed."""
    if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        return None  # tied: Google's checkpoint holds them once
    special = {
        "cls.predictions.bias": "cls/predictions/output_bias",
        "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
        "cls.seq_relationship.bias": "cls/seq_relationship/output_bias",
    }
    if key in special:
        return special[key], False
    name = re.sub(r"layer\.(\d+)", r"layer_\1", key).replace(".", "/")
    if name.endswith("_embeddings/weight"):
        return name[: -len("/weight")], False
    if "LayerNorm" in name:
        return name.replace("/weight", "/gamma").replace("/bias", "/beta"), False
    if name.endswith("/weight"):
        return name[: -len("/weight")] + "/kernel", True
    return name, False


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(**CONFIG)
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():  # distinct values everywhere, LayerNorms and biases included
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    work = tmp_path_factory.mktemp("bert")
    google = {}
    for key, value in model.state_dict().items():
        named = google_name(key)
        if named is not None:
            google[named[0]] = value.numpy().T.copy() if named[1] else value.numpy().copy()
    prefix = str(work / "bert_model.ckpt")
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=k) for k, v in google.items()]
        slots = [
            tf.compat.v1.Variable(np.full_like(v, 0.5), name=f"{k}/adam_{s}")
            for k, v in google.items()
            for s in ("m", "v")
        ]
        step = tf.compat.v1.Variable(np.int64(1000), name="global_step")
        saver = tf.compat.v1.train.Saver([*variables, *slots, step])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix)
    return model, config, prefix, google, work


def _inputs():
    ids = torch.tensor([[1, 5, 7, 2, 9, 3], [4, 8, 6, 2, 0, 1]])
    return {
        "input_ids": ids,
        "token_type_ids": torch.tensor([[0, 0, 0, 1, 1, 1]] * 2),
        "attention_mask": torch.ones_like(ids),
    }


def test_google_checkpoint_into_bert_for_pretraining(bert, tmp_path):
    model, config, prefix, _, _ = bert
    out = tmp_path / "pytorch_model.bin"
    report = api.convert(prefix, out, rules="bert-tf1-hf")
    fresh = transformers.BertForPreTraining(config).eval()
    state = torch.load(out, weights_only=True)
    fresh.load_state_dict(state, strict=True)  # the tied decoder comes tied
    assert (
        state["cls.predictions.decoder.weight"].data_ptr()
        == state["bert.embeddings.word_embeddings.weight"].data_ptr()
    )
    fresh.tie_weights()
    with torch.no_grad():
        want, got = model(**_inputs()), fresh(**_inputs())
    torch.testing.assert_close(got.prediction_logits, want.prediction_logits)
    torch.testing.assert_close(got.seq_relationship_logits, want.seq_relationship_logits)
    skipped = set(report.rules["skipped"])
    assert "global_step" in skipped
    assert "bert/pooler/dense/kernel/adam_m" in skipped
    assert not report.rules["unused"]


def test_google_checkpoint_into_a_bert_model_skeleton(bert, tmp_path):
    model, config, prefix, _, _ = bert
    skeleton = tmp_path / "skeleton.bin"
    torch.save(transformers.BertModel(config).state_dict(), skeleton)
    out = tmp_path / "bert.bin"
    report = api.convert(prefix, out, rules="bert-tf1-hf", like=skeleton)
    fresh = transformers.BertModel(config).eval()
    state = torch.load(out, weights_only=True)
    assert list(state) == list(torch.load(skeleton, weights_only=True))
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        want = model.bert(**_inputs()).last_hidden_state
        got = fresh(**_inputs()).last_hidden_state
    torch.testing.assert_close(got, want)
    assert "cls/seq_relationship/output_weights" in report.rules["unused"]


def test_hugging_face_back_to_google_names(bert, tmp_path):
    model, _, _, google, work = bert
    source = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), source)
    prefix = tmp_path / "back" / "model.ckpt"
    api.convert(source, prefix, rules="bert-tf1-hf", to="tf")
    graph = tf.Graph()
    with graph.as_default():
        variables = {k: tf.compat.v1.Variable(np.zeros_like(v), name=k) for k, v in google.items()}
        saver = tf.compat.v1.train.Saver(list(variables.values()))
        with tf.compat.v1.Session() as session:
            saver.restore(session, str(prefix))
            for key, variable in variables.items():
                np.testing.assert_array_equal(session.run(variable), google[key])
    names = {name for name, _ in tf.train.list_variables(str(prefix))}
    assert names == set(google)
