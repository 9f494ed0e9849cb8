"""Sources for `ckpt diff` and `ckpt batch`, written once per session by the real frameworks
(torch.save, Flax to_bytes, tf.train.Checkpoint), with each one's values as that framework
reads them back, keyed as a flat safetensors file of it is keyed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass
class Source:
    path: Path
    values: dict[str, np.ndarray]  # the framework's own reading, by safetensors key


def torch_source(path: Path, seed: int = 0, width: int = 6) -> Source:
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 3)
    )
    torch.save(model.state_dict(), path)
    loaded = torch.load(path, weights_only=True)
    return Source(path, {k: v.numpy() for k, v in loaded.items()})


def flax_source(path: Path) -> Source:
    import jax
    from flax import linen as nn
    from flax import serialization
    from flax.traverse_util import flatten_dict

    model = nn.Sequential([nn.Dense(5), nn.Dense(2)])
    variables = model.init(jax.random.PRNGKey(1), np.ones((1, 3), np.float32))
    path.write_bytes(serialization.to_bytes(variables))
    restored = serialization.msgpack_restore(path.read_bytes())
    return Source(path, {".".join(k): np.asarray(v) for k, v in flatten_dict(restored).items()})


def tf_source(prefix: Path) -> Source:
    import tensorflow as tf

    layer = tf.keras.layers.Dense(3)
    layer.build((None, 4))
    layer.kernel.assign(np.arange(12, dtype=np.float32).reshape(4, 3) / 7)
    written = tf.train.Checkpoint(dense=layer).write(str(prefix))
    reader = tf.train.load_checkpoint(written)
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    values = {
        k[: -len(suffix)].replace("/", "."): reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if k.endswith(suffix)
    }
    return Source(Path(written), values)


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> dict[str, Source]:
    base = tmp_path_factory.mktemp("batch-sources")
    (base / "tf").mkdir()
    made = {
        "torch": torch_source(base / "model.pt"),
        "flax": flax_source(base / "params.msgpack"),
        "tf": tf_source(base / "tf" / "ckpt-1"),
    }
    broken = base / "broken.pt"
    broken.write_bytes((base / "model.pt").read_bytes()[:200])  # truncated
    made["broken"] = Source(broken, {})
    return made


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def assert_same_values(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
