"""Golden Flax msgpack files, written once per session by real Flax (`to_bytes`).

Each model fixture returns what a test needs to prove that a file written by this project
restores into the model (`from_bytes` with a fresh template) and gives the same outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import msgpack
import numpy as np
import pytest

jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")

import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import nnx, serialization  # noqa: E402


@dataclass
class Golden:
    path: Path
    template: Any = None  # a fresh tree of the same structure, for from_bytes
    apply: Callable[[Any], np.ndarray] | None = None  # restored tree -> model output
    expected: np.ndarray | None = None  # the output of the saved model


# -- models -------------------------------------------------------------------------------


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(3)(x)


class LinenBlock(nn.Module):
    """A pre-norm transformer block: attention + MLP, each with a residual."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(param_dtype=self.dtype, dtype=self.dtype)(x)
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=2, qkv_features=8, param_dtype=self.dtype, dtype=self.dtype
        )(h)
        h = nn.LayerNorm(param_dtype=self.dtype, dtype=self.dtype)(x)
        h = nn.Dense(16, param_dtype=self.dtype, dtype=self.dtype)(h)
        return x + nn.Dense(8, param_dtype=self.dtype, dtype=self.dtype)(nn.gelu(h))


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x))).mean(axis=(1, 2))
        for layer in self.layers:
            x = layer(x)
        return x


def _save(path: Path, tree: Any) -> Path:
    path.write_bytes(serialization.to_bytes(tree))
    return path


@pytest.fixture(scope="session")
def flax_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("flax_golden")


@pytest.fixture(scope="session")
def linen_cnn(flax_dir) -> Golden:
    model = LinenCNN()
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
    init, apply = jax.jit(model.init), jax.jit(model.apply)  # compiling beats eager dispatch
    variables = init(jax.random.key(1), x)
    # one training step so that batch_stats are not the initial zeros and ones
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    template = init(jax.random.key(2), x)
    return Golden(
        _save(flax_dir / "cnn.msgpack", variables),
        template,
        lambda v: np.asarray(apply(v, x)),
        np.asarray(apply(variables, x)),
    )


def _linen_block(flax_dir: Path, name: str, dtype: Any) -> Golden:
    model = LinenBlock(dtype=dtype)
    x = jax.random.normal(jax.random.key(3), (1, 5, 8)).astype(dtype)
    init, apply = jax.jit(model.init), jax.jit(model.apply)
    variables = init(jax.random.key(4), x)
    template = init(jax.random.key(5), x)
    return Golden(
        _save(flax_dir / name, variables),
        template,
        lambda v: np.asarray(apply(v, x)),
        np.asarray(apply(variables, x)),
    )


@pytest.fixture(scope="session")
def linen_block(flax_dir) -> Golden:
    return _linen_block(flax_dir, "block.msgpack", jnp.float32)


@pytest.fixture(scope="session")
def linen_bf16(flax_dir) -> Golden:
    return _linen_block(flax_dir, "block_bf16.msgpack", jnp.bfloat16)


@pytest.fixture(scope="session")
def nnx_net(flax_dir) -> Golden:
    x = jax.random.normal(jax.random.key(6), (2, 5, 5, 1))
    model = NnxNet(nnx.Rngs(0))
    model(x)  # train mode: moves BatchNorm's running statistics away from 0 and 1
    model.eval()
    expected = np.asarray(model(x))
    pure = nnx.to_pure_dict(nnx.state(model))

    def apply(restored):
        fresh = NnxNet(nnx.Rngs(1))
        state = nnx.state(fresh)
        nnx.replace_by_pure_dict(state, restored)
        nnx.update(fresh, state)
        fresh.eval()
        return np.asarray(fresh(x))

    template = nnx.to_pure_dict(nnx.state(NnxNet(nnx.Rngs(1))))
    return Golden(_save(flax_dir / "nnx.msgpack", pure), template, apply, expected)


def misc_tree() -> dict:
    """Every leaf kind Flax writes: numpy scalars (ext 3), a complex (ext 2), ints, strings,
    floats, None, bytes, special floats, ml_dtypes, lists (maps keyed "0", "1")."""
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 1e-40], np.float32)
    return {
        "params": {
            "w": np.arange(12, dtype=np.float32).reshape(3, 4),
            "special": special,
            "f8": np.arange(-4, 4).astype(ml_dtypes.float8_e4m3fn),
            "bf": np.linspace(-2, 2, 6).astype(ml_dtypes.bfloat16).reshape(2, 3),
            "i8": np.arange(-3, 3, dtype=np.int8),
            "u16": np.arange(4, dtype=np.uint16),
            "mask": np.array([[True, False]]),
            "z": np.array([1 + 2j, -3j], np.complex64),
            "empty": np.zeros((0, 3)),
        },
        "scalar": np.float32(1.5),
        "count": np.int64(-7),
        "step": 7,
        "lr": 0.125,
        "name": "run-1",
        "none": None,
        "blob": b"\x00\xff",
        "c": complex(1.5, -2.0),
        "layers": [np.ones(2), {"k": np.zeros(3, np.int32)}],
        "nothing": {},
    }


@pytest.fixture(scope="session")
def misc(flax_dir) -> Golden:
    return Golden(_save(flax_dir / "misc.msgpack", misc_tree()), misc_tree())


@pytest.fixture(scope="session")
def raw_lists(flax_dir) -> Golden:
    """msgpack_serialize (not to_bytes) keeps Python lists as raw msgpack arrays."""
    tree = {"layers": [np.arange(3.0), np.ones((2, 2), np.float16), 4], "n": 3}
    path = flax_dir / "raw.msgpack"
    path.write_bytes(serialization.msgpack_serialize(tree))
    return Golden(path, tree)


CHUNK_LIMIT = 256  # bytes; a tiny MAX_CHUNK_SIZE makes a cheap chunked golden file


@pytest.fixture(scope="session")
def chunked(flax_dir) -> Golden:
    rng = np.random.default_rng(0)
    tree = {
        "params": {
            "embedding": rng.standard_normal((40, 8)).astype(np.float32),
            "odd": np.arange(101, dtype=np.float64),
            "bf": np.arange(300).astype(ml_dtypes.bfloat16).reshape(3, 100),
            "bias": np.ones(3, np.float32),
        }
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(serialization, "MAX_CHUNK_SIZE", CHUNK_LIMIT)
        path = _save(flax_dir / "chunked.msgpack", tree)
    raw = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
    assert raw["params"]["embedding"]["__msgpack_chunked_array__"] is True  # really chunked
    return Golden(path, tree)


@pytest.fixture(scope="session")
def goldens(linen_cnn, linen_block, linen_bf16, nnx_net, misc, raw_lists, chunked):
    return {
        "cnn": linen_cnn,
        "block": linen_block,
        "bf16": linen_bf16,
        "nnx": nnx_net,
        "misc": misc,
        "raw": raw_lists,
        "chunked": chunked,
    }
