"""Hugging Face sharded Flax sets (`flax_model.msgpack.index.json` +
`flax_model-0000k-of-0000n.msgpack`) read as one checkpoint: the graph of the unsharded
`flax_model.msgpack` of the same params.

Written by Flax (`to_bytes`) as transformers 4.57's `FlaxPreTrainedModel.save_pretrained`
wrote them: `flax_shard_checkpoint` splits the `/`-flattened params in order, each shard is
`to_bytes` of its part unflattened again. (Checked against a set transformers 4.57 wrote:
the same bytes, index and shards.) The TF sets: tests/hf/test_tf_shards.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from flax.serialization import msgpack_restore, to_bytes
from flax.traverse_util import flatten_dict, unflatten_dict

import convert
from convert.core.errors import FormatError
from convert.core.graph import Graph
from convert.core.meta import SOURCE_KEY


def write_flax_sharded(folder: Path, params: dict, max_shard_size: int) -> Path:
    """`save_pretrained(folder, max_shard_size=…)` of a Flax model with `params`."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = flatten_dict(params, sep="/")
    blocks: list[dict] = []
    block: dict = {}
    size = total = 0
    for name, value in weights.items():
        nbytes = value.size * value.dtype.itemsize
        if size + nbytes > max_shard_size:
            blocks.append(block)
            block, size = {}, 0
        block[name] = value
        size += nbytes
        total += nbytes
    blocks.append(block)
    assert len(blocks) > 1, "one shard: transformers writes flax_model.msgpack instead"
    shards = {
        f"flax_model-{i:05d}-of-{len(blocks):05d}.msgpack": b for i, b in enumerate(blocks, 1)
    }
    weight_map = {name: file for file, shard in shards.items() for name in shard}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "flax_model.msgpack.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    for file, shard in shards.items():
        (folder / file).write_bytes(to_bytes(unflatten_dict(shard, sep="/")))
    return folder / "flax_model.msgpack.index.json"


def bert_params(hidden: int = 8) -> dict:
    rng = np.random.default_rng(5)

    def dense(n_in: int, n_out: int) -> dict:
        return {
            "kernel": rng.standard_normal((n_in, n_out)).astype(np.float32),
            "bias": rng.standard_normal(n_out).astype(np.float32),
        }

    def norm() -> dict:
        return {"scale": np.ones(hidden, np.float32), "bias": rng.random(hidden, np.float32)}

    layer = {
        str(i): {
            "attention": {
                "self": {k: dense(hidden, hidden) for k in ("query", "key", "value")},
                "output": {"dense": dense(hidden, hidden), "LayerNorm": norm()},
            },
            "intermediate": {"dense": dense(hidden, 2 * hidden)},
            "output": {"dense": dense(2 * hidden, hidden), "LayerNorm": norm()},
        }
        for i in range(2)
    }
    embeddings = {
        "word_embeddings": {"embedding": rng.standard_normal((30, hidden)).astype(np.float32)},
        "position_embeddings": {
            "embedding": rng.standard_normal((16, hidden)).astype(ml_dtypes.bfloat16)
        },
        "token_type_embeddings": {"embedding": np.zeros((2, hidden), np.float16)},
        "LayerNorm": norm(),
    }
    return {
        "bert": {
            "embeddings": embeddings,
            "encoder": {"layer": layer},
            "pooler": {"dense": dense(hidden, hidden)},
        },
        "classifier": dense(hidden, 3),
    }


@pytest.fixture
def flax_set(tmp_path) -> tuple[Path, Path, dict]:
    """(flax_model.msgpack, the sharded set's index, the params) of the same model."""
    params = bert_params()
    unsharded = tmp_path / "flax_model.msgpack"
    unsharded.write_bytes(to_bytes(params))
    return unsharded, write_flax_sharded(tmp_path / "sharded", params, 2400), params


def tensors(graph: Graph) -> dict[tuple[str, ...], np.ndarray]:
    return {entry.path: entry.tensor.read() for entry in graph.entries()}


def assert_one_line(exc: pytest.ExceptionInfo, file: Path, *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and file.name in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_a_sharded_flax_set_reads_as_its_unsharded_file(flax_set):
    unsharded, index, params = flax_set
    shards = sorted(index.parent.glob("flax_model-*.msgpack"))
    assert len(shards) > 2
    whole, sharded = convert.load(unsharded), convert.load(index)
    assert whole.format == sharded.format == "flax"
    got, want = tensors(sharded), tensors(whole)
    assert list(got) == list(want)  # (the same order too: shards split it in order)
    for path, value in want.items():
        assert got[path].dtype == value.dtype and got[path].shape == value.shape, path
        assert got[path].tobytes() == value.tobytes(), path
    flat = flatten_dict(params, sep="/")
    assert {e.tensor.meta[SOURCE_KEY] for e in sharded.entries()} == set(flat)
    assert sharded.files == [str(index), *map(str, shards)]


def test_a_missing_shard_is_named(flax_set):
    _, index, _ = flax_set
    (index.parent / "flax_model-00002-of-00003.msgpack").unlink()
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, "shard flax_model-00002-of-00003.msgpack", "missing")


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1])
def test_a_truncated_shard_is_named(flax_set, keep):
    _, index, _ = flax_set
    shard = index.parent / "flax_model-00002-of-00003.msgpack"
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, shard)


def test_a_param_the_index_puts_in_the_wrong_shard(flax_set):
    _, index, _ = flax_set
    data = json.loads(index.read_text())
    name = "classifier/bias"
    assert data["weight_map"][name] == "flax_model-00003-of-00003.msgpack"
    data["weight_map"][name] = "flax_model-00001-of-00003.msgpack"
    index.write_text(json.dumps(data))
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, repr(name), "does not hold it")


def test_a_param_in_two_shards(flax_set):
    _, index, params = flax_set
    first = index.parent / "flax_model-00001-of-00003.msgpack"
    with_extra = dict(flatten_dict(msgpack_restore(first.read_bytes()), sep="/"))
    with_extra["classifier/bias"] = params["classifier"]["bias"]
    first.write_bytes(to_bytes(unflatten_dict(with_extra, sep="/")))
    with pytest.raises(FormatError) as exc:
        convert.load(index)
    assert_one_line(exc, index, "'classifier/bias'", "in two shards")
