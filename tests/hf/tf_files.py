"""Hugging Face TF weight files laid out with h5py as transformers 4.57 wrote them (the
suite's transformers 5 has no TF classes): `write_tf_sharded` follows `tf_shard_checkpoint`
and the h5 branch of `TFPreTrainedModel.save_pretrained`, `write_tf_h5` the unsharded file
(tf_keras `save_weights`), both through transformers' `save_attributes_to_hdf5_group`.
(Checked against a set transformers 4.57 wrote: same index bytes, same HDF5 structure,
attributes and dataset bytes.) `write_tf_safetensors` is its `safe_serialization=True`
branch, in the safetensors layout (by hand: the fast tier has no safetensors package)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import h5py
import numpy as np

MODEL = "tf_bert_for_sequence_classification"
H5_LIMIT = 64512  # HDF5_OBJECT_HEADER_LIMIT of save_attributes_to_hdf5_group


# -- the files, as transformers 4.57 wrote them ------------------------------------------


def save_attributes(group: h5py.Group, name: str, data: list) -> None:
    """transformers' `save_attributes_to_hdf5_group`: past 64512 bytes, `name0`, `name1`, …"""
    array = np.asarray(data)
    chunks = 1
    parts = np.array_split(array, chunks)
    while any(part.nbytes > H5_LIMIT for part in parts):
        chunks += 1
        parts = np.array_split(array, chunks)
    if chunks > 1:
        for i, part in enumerate(parts):
            group.attrs[f"{name}{i}"] = part
    else:
        group.attrs[name] = data


def write_tf_h5(path: Path, layers: dict[str, dict[str, np.ndarray]]) -> Path:
    """`tf_model.h5`: tf_keras `save_weights`, layers (in model order) → weights by name."""
    with h5py.File(path, "w") as f:
        save_attributes(f, "layer_names", [name.encode("utf8") for name in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.21.0"
        for layer in sorted(layers):
            _write_subset(f.create_group(layer), layers[layer])
        _write_subset(f.create_group("top_level_model_weights"), {})
    return path


def _write_subset(group: h5py.Group, weights: dict[str, np.ndarray]) -> None:
    save_attributes(group, "weight_names", [name.encode("utf8") for name in weights])
    for name, value in weights.items():
        group.create_dataset(name, value.shape, dtype=value.dtype)[:] = value


def shard_name(weight_name: str) -> str:
    """Where `save_pretrained` stores a weight in a shard (transformers' own rule)."""
    if "model." in weight_name or len(weight_name.split("/")) == 1:
        return weight_name
    return "/".join(weight_name.split("/")[1:])


def write_tf_sharded(folder: Path, weights: dict[str, np.ndarray], max_shard_size: int) -> Path:
    """`save_pretrained(folder, max_shard_size=…)` of a TF model whose `model.weights` are
    `weights` (full names, in model order): `tf_shard_checkpoint`, the index, the shards."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks: list[list[str]] = []
    block: list[str] = []
    size = total = 0
    for name, value in weights.items():
        if size + value.nbytes > max_shard_size:
            blocks.append(block)
            block, size = [], 0
        block.append(name)
        size += value.nbytes
        total += value.nbytes
    blocks.append(block)
    assert len(blocks) > 1, "one shard: transformers writes tf_model.h5 instead"
    shards = {f"tf_model-{i:05d}-of-{len(blocks):05d}.h5": b for i, b in enumerate(blocks, 1)}
    weight_map = {name: file for file, names in shards.items() for name in names}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "tf_model.h5.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    for file, names in shards.items():
        with h5py.File(folder / file, mode="w") as f:
            stored = []
            for name in sorted(names):
                value = weights[name]
                f.create_dataset(shard_name(name), value.shape, dtype=value.dtype)[:] = value
                stored.append(shard_name(name).encode("utf8"))
            save_attributes(f, "layer_names", stored)
    return folder / "tf_model.h5.index.json"


def write_tf_safetensors(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """`model.safetensors` of a TF model whose `model.weights` are `weights` (full names):
    each under `strip_model_name_and_prefix` of its name, `format: tf`."""
    header: dict = {"__metadata__": {"format": "tf"}}
    data = b""
    for name, value in sorted(weights.items(), key=lambda item: shard_name(item[0])):
        raw = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes()
        code = {"f4": "F32", "i4": "I32", "i8": "I64"}[value.dtype.str[1:]]
        span = [len(data), len(data) + len(raw)]
        header[shard_name(name)] = {"dtype": code, "shape": list(value.shape), "data_offsets": span}
        data += raw
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


# -- a tiny BERT classifier's weights ------------------------------------------------------


def bert_layers(hidden: int = 8, layers: int = 2) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {"bert": {}, "dropout_37": {}, "classifier": {}}
    bert = shapes["bert"]
    for table, rows in (("word_embeddings/weight", 30), ("token_type_embeddings/embeddings", 2)):
        bert[f"embeddings/{table}"] = (rows, hidden)
    bert["embeddings/position_embeddings/embeddings"] = (16, hidden)
    bert["embeddings/LayerNorm/gamma"] = bert["embeddings/LayerNorm/beta"] = (hidden,)
    for i in range(layers):
        at = f"encoder/layer_._{i}"
        for part in ("attention/self/query", "attention/self/key", "attention/self/value"):
            bert[f"{at}/{part}/kernel"], bert[f"{at}/{part}/bias"] = (hidden, hidden), (hidden,)
        bert[f"{at}/attention/output/dense/kernel"] = (hidden, hidden)
        bert[f"{at}/attention/output/dense/bias"] = (hidden,)
        bert[f"{at}/intermediate/dense/kernel"] = (hidden, 2 * hidden)
        bert[f"{at}/intermediate/dense/bias"] = (2 * hidden,)
        bert[f"{at}/output/dense/kernel"] = (2 * hidden, hidden)
        bert[f"{at}/output/dense/bias"] = (hidden,)
    bert["pooler/dense/kernel"], bert["pooler/dense/bias"] = (hidden, hidden), (hidden,)
    shapes["classifier"] = {"kernel": (hidden, 3), "bias": (3,)}
    return {
        layer: {
            f"{MODEL}/{layer}/{name}:0": rng.standard_normal(shape).astype(np.float32)
            for name, shape in weights.items()
        }
        for layer, weights in shapes.items()
    }


def flat(layers: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: value for weights in layers.values() for name, value in weights.items()}
