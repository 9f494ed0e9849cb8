"""How transformers 4.x's TF classes name a weight in the files `save_pretrained` wrote
beside the plain `tf_model.h5` (a sharded set's shards, a `format: tf` safetensors file):
by its TF variable name without the model's own first scope (`tf_bert_model/`), unless the
name holds `model.` (a variable made outside that scope, BART's `model.shared/...`) or has
one level (`final_logits_bias:0`): those are kept whole."""

from __future__ import annotations


def kept_whole(name: str) -> bool:
    """Whether such a file keeps the weight named `name` under its whole name."""
    return "model." in name or "/" not in name


def in_file(name: str) -> str:
    """The name such a file keeps the weight of TF variable name `name` under."""
    return name if kept_whole(name) else name.split("/", 1)[1]


SUFFIX = ":0"  # (a TF variable's first output: every name these files hold ends so)


def key(path: tuple[str, ...]) -> str:
    """The key a `format: tf` safetensors file keeps the weight at graph path `path` under."""
    return "/".join(path) + SUFFIX
