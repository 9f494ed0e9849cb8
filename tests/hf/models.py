"""The small models of the Hugging Face TF/Flax tests, shared by both environments (the
suite's, with transformers 5, and `.venv-hf4`, with 4.57): plain data and numpy only.

Each row names the PyTorch class (the TF and Flax ones are it with `TF`/`Flax` in front),
its config, which of TF and Flax 4.57 has it in, and the inputs it takes."""

from __future__ import annotations

from typing import Any

import numpy as np

_TEXT = dict(vocab_size=99, max_position_embeddings=64)
_BERT = dict(
    _TEXT, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)
_BART = dict(
    _TEXT,
    d_model=16,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
)
_VIT = dict(
    image_size=32,
    patch_size=8,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    num_labels=3,
)


_IMAGE = dict(image_size=32, num_channels=3, num_labels=3)
_CONV = dict(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)


def _row(torch: str, config: str, kwargs: dict[str, Any], feed: str, **more: Any) -> dict:
    return dict(torch=torch, config=config, kwargs=kwargs, feed=feed, tf=True, flax=True) | more


MODELS: dict[str, dict[str, Any]] = {
    "bert": _row("BertModel", "BertConfig", _BERT, "text"),
    "bert-cls": _row(
        "BertForSequenceClassification", "BertConfig", _BERT | {"num_labels": 3}, "text"
    ),
    "bert-mlm": _row("BertForMaskedLM", "BertConfig", _BERT, "text"),
    "roberta": _row("RobertaForMaskedLM", "RobertaConfig", _BERT | {"pad_token_id": 1}, "text"),
    "distilbert": _row(
        "DistilBertForSequenceClassification",
        "DistilBertConfig",
        dict(_TEXT, dim=16, n_layers=2, n_heads=2, hidden_dim=32, num_labels=3),
        "text",
    ),
    "albert": _row("AlbertForMaskedLM", "AlbertConfig", _BERT | {"embedding_size": 8}, "text"),
    "electra": _row(
        "ElectraForPreTraining", "ElectraConfig", _BERT | {"embedding_size": 8}, "text"
    ),
    "gpt2": _row(
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(vocab_size=99, n_positions=64, n_embd=16, n_layer=2, n_head=2),
        "text",
    ),
    "t5": _row(
        "T5ForConditionalGeneration",
        "T5Config",
        dict(vocab_size=99, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2),
        "seq2seq",
    ),
    "bart": _row("BartForConditionalGeneration", "BartConfig", _BART, "seq2seq"),
    "vit": _row("ViTForImageClassification", "ViTConfig", _VIT, "image"),
    "vit-base": _row("ViTModel", "ViTConfig", _VIT, "image"),
    "clip": _row(
        "CLIPModel",
        "CLIPConfig",
        dict(
            text_config=dict(
                vocab_size=99,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=16,
            ),
            vision_config=dict(
                image_size=32,
                patch_size=8,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
            ),
            projection_dim=8,
        ),
        "clip",
    ),
    "whisper": _row(
        "WhisperForConditionalGeneration",
        "WhisperConfig",
        dict(
            _BART,
            num_mel_bins=8,
            max_source_positions=16,
            max_target_positions=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        ),
        "speech",
    ),
    "wav2vec2": _row(
        "Wav2Vec2ForCTC",
        "Wav2Vec2Config",
        dict(
            vocab_size=20,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            conv_dim=(8, 8),
            conv_stride=(4, 2),
            conv_kernel=(8, 4),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            do_stable_layer_norm=True,  # (4.57's Flax class has no other)
            feat_extract_norm="layer",
        ),
        "audio",
    ),
    "resnet": _row(
        "ResNetForImageClassification",
        "ResNetConfig",
        _CONV | {"embedding_size": 8, "layer_type": "basic"},
        "image",
    ),
    "convnext": _row(
        "ConvNextForImageClassification",
        "ConvNextConfig",
        _CONV | {"num_stages": 2},
        "image",
        flax=False,
    ),
    "swin": _row(
        "SwinForImageClassification",
        "SwinConfig",
        _IMAGE | dict(patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4),
        "image",
        flax=False,
    ),
}
# What each model is saved as beyond the plain folders: sharded (a small max_shard_size),
# and Flax in bfloat16.
SHARDED = ("bert-cls", "resnet")
# Also saved by the TF class as `model.safetensors` (`safe_serialization=True`): names
# without the model's scope, BART's `model.shared` and T5's `shared` kept otherwise.
TF_SAFETENSORS = ("bert-cls", "bart", "t5")
BF16 = ("gpt2",)


def inputs(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """The model's inputs, the same arrays in both environments."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 99, size=(2, 7)).astype(np.int32)
    if spec["feed"] == "text":
        return {"input_ids": ids}
    if spec["feed"] == "seq2seq":
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    pixels = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    if spec["feed"] == "image":
        return {"pixel_values": pixels}
    if spec["feed"] == "clip":
        return {"input_ids": ids, "pixel_values": pixels}
    if spec["feed"] == "speech":
        features = rng.normal(size=(2, 8, 32)).astype(np.float32)
        return {"input_features": features, "decoder_input_ids": ids[:, :5]}
    if spec["feed"] == "audio":
        return {"input_values": rng.normal(size=(2, 400)).astype(np.float32)}
    raise ValueError(spec["feed"])
