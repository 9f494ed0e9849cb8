"""One layer, the same function in Keras 3, PyTorch and Flax, with random weights.

Each framework's side builds a fresh model, randomises its weights (BatchNorm statistics
too, variances kept positive), saves them with the framework's own call, loads a file with
its own loader, and runs an input given in Keras' layout (channels last), answering in
that layout too, so that outputs compare directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.serialization  # noqa: E402
import jax  # noqa: E402
import keras  # noqa: E402
import torch  # noqa: E402
from flax import linen as nn  # noqa: E402

EXT = {"keras": ".weights.h5", "torch": ".pt", "flax": ".msgpack"}


@dataclass
class Case:
    """A layer in each framework that has it (None where one does not)."""

    name: str
    x_shape: tuple[int, ...]
    keras: Callable[[Any], Any] | None = None  # Keras inputs → outputs
    torch: Callable[[], Any] | None = None  # → a torch.nn.Module taking Keras' layout
    flax: Callable[[], Any] | None = None  # → a linen Module
    integer_input: int = 0  # > 0: indices below this (an Embedding)

    def input(self, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.integer_input:
            return rng.integers(0, self.integer_input, self.x_shape).astype("int32")
        return rng.normal(size=self.x_shape).astype("float32")


def _positive(name: str) -> bool:
    return "variance" in name or "running_var" in name or name.endswith("var")


def _random(rng: np.random.Generator, shape, name: str) -> np.ndarray:
    value = rng.normal(size=shape).astype("float32") * 0.5
    return np.abs(value) + 0.5 if _positive(name) else value


class Side:
    """One framework's model of a case: build, randomise, save, load, run."""

    def __init__(self, framework: str, case: Case):
        self.framework = framework
        self.case = case
        self.model: Any = None
        self.variables: Any = None  # Flax

    def build(self, seed: int | None = None) -> Side:
        x = self.case.input()
        if self.framework == "keras":
            inputs = keras.Input(self.case.x_shape[1:], dtype=x.dtype)
            self.model = keras.Model(inputs, self.case.keras(inputs))
        elif self.framework == "torch":
            self.model = self.case.torch().eval()
        else:
            self.model = self.case.flax()
            self.variables = jax.tree_util.tree_map(
                np.asarray, self.model.init(jax.random.PRNGKey(0), x)
            )
        if seed is not None:
            self._randomise(np.random.default_rng(seed))
        return self

    def _randomise(self, rng: np.random.Generator) -> None:
        if self.framework == "keras":
            for v in self.model.weights:
                v.assign(_random(rng, v.shape, v.path))
        elif self.framework == "torch":
            with torch.no_grad():
                for name, p in self.model.state_dict().items():
                    if p.is_floating_point():
                        p.copy_(torch.from_numpy(_random(rng, tuple(p.shape), name)))
        else:
            flat = flax.traverse_util.flatten_dict(self.variables, sep="/")
            self.variables = flax.traverse_util.unflatten_dict(
                {k: _random(rng, v.shape, k) for k, v in flat.items()}, sep="/"
            )

    def save(self, path: Path) -> Path:
        if self.framework == "keras":
            self.model.save_weights(path)
        elif self.framework == "torch":
            torch.save(self.model.state_dict(), path)
        else:
            path.write_bytes(flax.serialization.to_bytes(self.variables))
        return path

    def load(self, path: Path) -> None:
        if self.framework == "keras":
            self.model.load_weights(path)
        elif self.framework == "torch":
            self.model.load_state_dict(torch.load(path, weights_only=True), strict=True)
        else:
            self.variables = flax.serialization.from_bytes(self.variables, path.read_bytes())

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.framework == "keras":
            return np.asarray(self.model(x, training=False))
        if self.framework == "torch":
            with torch.no_grad():
                return self.model(torch.from_numpy(x)).numpy()
        return np.asarray(self.model.apply(self.variables, x))


# -- torch modules that take and give Keras' layout ------------------------------------------


class ChannelsLast(torch.nn.Module):
    """A convolution-like module run on channels-last input, answering channels-last."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        rank = x.dim()
        first = (0, rank - 1, *range(1, rank - 1))
        last = (0, *range(2, rank), 1)
        return self.inner(x.permute(*first)).permute(*last)


class LastStep(torch.nn.Module):
    """A recurrent layer's output at the last step (Keras' return_sequences=False)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.rnn = inner

    def forward(self, x):
        return self.rnn(x)[0][:, -1]


class BothEnds(torch.nn.Module):
    """A bidirectional recurrent layer's answer as Keras' Bidirectional gives it (no
    sequences): the forward direction's last step, then the backward direction's, which
    has read the sequence from its end to its start: torch's output at step 0."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.rnn = inner

    def forward(self, x):
        out = self.rnn(x)[0]
        half = out.shape[-1] // 2
        return torch.cat([out[:, -1, :half], out[:, 0, half:]], dim=-1)


class SelfAttention(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class Embedding(torch.nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)

    def forward(self, x):
        return self.embed(x.long())


def _flax(make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A Flax model holding one unnamed sub-module (named `Class_0`, as Linen names it)."""

    class One(nn.Module):
        @nn.compact
        def __call__(self, x):
            return make()(x)

    return One


class LstmFlax(nn.Module):
    """Flax's LSTMCell over the sequence, answering its last step (as Keras' LSTM does)."""

    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.LSTMCell(4))(x)[:, -1]


class GruFlax(nn.Module):
    """Flax's GRUCell over the sequence, answering its last step (as Keras' GRU does)."""

    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.GRUCell(4))(x)[:, -1]


class SimpleRnnFlax(nn.Module):
    """Flax's SimpleCell over the sequence, answering its last step (as Keras' SimpleRNN)."""

    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.SimpleCell(4))(x)[:, -1]


class BidirectionalFlax(nn.Module):
    """nn.Bidirectional built in setup(), so that its RNNs are its own (`bi/forward_rnn`,
    `bi/backward_rnn`); answering as Keras' Bidirectional does: the forward RNN's last
    step, then the backward one's, which Flax keeps in time order (at step 0)."""

    lstm: bool = True

    def setup(self):
        cell = nn.LSTMCell if self.lstm else nn.GRUCell
        self.bi = nn.Bidirectional(nn.RNN(cell(4)), nn.RNN(cell(4)))

    def __call__(self, x):
        out = self.bi(x)
        return jax.numpy.concatenate([out[:, -1, :4], out[:, 0, 4:]], axis=-1)


class SeparableFlax(nn.Module):
    """A depthwise convolution (no bias), then a 1x1 one: Keras' SeparableConv2D."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), padding="VALID", feature_group_count=3, use_bias=False)(x)
        return nn.Conv(4, (1, 1))(x)


CASES = [
    Case(
        "dense",
        (2, 4),
        lambda x: keras.layers.Dense(5)(x),
        lambda: torch.nn.Sequential(torch.nn.Linear(4, 5)),
        _flax(lambda: nn.Dense(5)),
    ),
    Case(
        "conv1d",
        (2, 8, 3),
        lambda x: keras.layers.Conv1D(4, 3)(x),
        lambda: ChannelsLast(torch.nn.Conv1d(3, 4, 3)),
        _flax(lambda: nn.Conv(4, (3,), padding="VALID")),
    ),
    Case(
        "conv2d",
        (2, 6, 5, 3),
        lambda x: keras.layers.Conv2D(4, (3, 2))(x),
        lambda: ChannelsLast(torch.nn.Conv2d(3, 4, (3, 2))),
        _flax(lambda: nn.Conv(4, (3, 2), padding="VALID")),
    ),
    Case(
        "conv3d",
        (2, 4, 5, 4, 3),
        lambda x: keras.layers.Conv3D(2, 2)(x),
        lambda: ChannelsLast(torch.nn.Conv3d(3, 2, 2)),
        _flax(lambda: nn.Conv(2, (2, 2, 2), padding="VALID")),
    ),
    Case(
        "conv1d_transpose",
        (2, 5, 3),
        lambda x: keras.layers.Conv1DTranspose(4, 3, 2)(x),
        lambda: ChannelsLast(torch.nn.ConvTranspose1d(3, 4, 3, 2)),
        _flax(lambda: nn.ConvTranspose(4, (3,), (2,), padding="VALID")),
    ),
    Case(
        "conv2d_transpose",
        (2, 4, 3, 3),
        lambda x: keras.layers.Conv2DTranspose(4, 3, 2)(x),
        lambda: ChannelsLast(torch.nn.ConvTranspose2d(3, 4, 3, 2)),
        _flax(lambda: nn.ConvTranspose(4, (3, 3), (2, 2), padding="VALID")),
    ),
    Case(
        "conv3d_transpose",
        (2, 3, 2, 3, 2),
        lambda x: keras.layers.Conv3DTranspose(3, 2, 2)(x),
        lambda: ChannelsLast(torch.nn.ConvTranspose3d(2, 3, 2, 2)),
        _flax(lambda: nn.ConvTranspose(3, (2, 2, 2), (2, 2, 2), padding="VALID")),
    ),
    Case(
        "depthwise_conv2d",
        (2, 6, 5, 3),
        lambda x: keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x),
        lambda: ChannelsLast(torch.nn.Conv2d(3, 6, 3, groups=3)),
        _flax(lambda: nn.Conv(6, (3, 3), padding="VALID", feature_group_count=3)),
    ),
    Case(
        "separable_conv2d",
        (2, 6, 5, 3),
        lambda x: keras.layers.SeparableConv2D(4, 3, depth_multiplier=2)(x),
        lambda: ChannelsLast(
            torch.nn.Sequential(
                torch.nn.Conv2d(3, 6, 3, groups=3, bias=False), torch.nn.Conv2d(6, 4, 1)
            )
        ),
        SeparableFlax,
    ),
    Case(
        "batch_norm",
        (2, 5),
        lambda x: keras.layers.BatchNormalization(epsilon=1e-5)(x),
        lambda: torch.nn.Sequential(torch.nn.BatchNorm1d(5, eps=1e-5)),
        _flax(lambda: nn.BatchNorm(use_running_average=True, epsilon=1e-5)),
    ),
    # The statistics alone (affine=False): no scale, no shift.
    Case(
        "batch_norm_stats",
        (2, 5),
        lambda x: keras.layers.BatchNormalization(epsilon=1e-5, center=False, scale=False)(x),
        lambda: torch.nn.Sequential(torch.nn.BatchNorm1d(5, eps=1e-5, affine=False)),
        _flax(
            lambda: nn.BatchNorm(
                use_running_average=True, epsilon=1e-5, use_scale=False, use_bias=False
            )
        ),
    ),
    Case(
        "layer_norm",
        (2, 3, 5),
        lambda x: keras.layers.LayerNormalization(epsilon=1e-5)(x),
        lambda: torch.nn.Sequential(torch.nn.LayerNorm(5, eps=1e-5)),
        _flax(lambda: nn.LayerNorm(epsilon=1e-5)),
    ),
    # The scale alone. Keras' LayerNormalization(center=False) holds it too, but a Keras 3
    # file does not say whether its one variable is gamma or beta (see test_layers.py).
    Case(
        "layer_norm_scale",
        (2, 3, 5),
        None,
        lambda: torch.nn.Sequential(torch.nn.LayerNorm(5, eps=1e-5, bias=False)),
        _flax(lambda: nn.LayerNorm(epsilon=1e-5, use_bias=False)),
    ),
    Case(
        "group_norm",
        (2, 4, 3, 6),
        lambda x: keras.layers.GroupNormalization(3, epsilon=1e-5)(x),
        lambda: ChannelsLast(torch.nn.GroupNorm(3, 6, eps=1e-5)),
        _flax(lambda: nn.GroupNorm(num_groups=3, epsilon=1e-5)),
    ),
    # Keras has no InstanceNormalization: GroupNormalization with a group per channel is it.
    Case(
        "instance_norm",
        (2, 4, 3, 6),
        lambda x: keras.layers.GroupNormalization(-1, epsilon=1e-5)(x),
        lambda: ChannelsLast(torch.nn.InstanceNorm2d(6, eps=1e-5, affine=True)),
        _flax(lambda: nn.InstanceNorm(epsilon=1e-5)),
    ),
    # One slope per channel; Flax's PReLU has one slope in all.
    Case(
        "prelu",
        (2, 4, 3, 3),
        lambda x: keras.layers.PReLU(shared_axes=[1, 2])(x),
        lambda: ChannelsLast(torch.nn.PReLU(3)),
    ),
    Case(
        "embedding",
        (2, 3),
        lambda x: keras.layers.Embedding(10, 4)(x),
        lambda: Embedding(10, 4),
        _flax(lambda: nn.Embed(10, 4)),
        integer_input=10,
    ),
    Case(
        "lstm",
        (2, 5, 3),
        lambda x: keras.layers.LSTM(4)(x),
        lambda: LastStep(torch.nn.LSTM(3, 4, batch_first=True)),
        LstmFlax,
    ),
    Case(
        "simple_rnn",
        (2, 5, 3),
        lambda x: keras.layers.SimpleRNN(4)(x),
        lambda: LastStep(torch.nn.RNN(3, 4, batch_first=True)),
        SimpleRnnFlax,
    ),
    Case(
        "gru",
        (2, 5, 3),
        lambda x: keras.layers.GRU(4)(x),
        lambda: LastStep(torch.nn.GRU(3, 4, batch_first=True)),
        GruFlax,
    ),
    Case(
        "bidirectional_lstm",
        (2, 5, 3),
        lambda x: keras.layers.Bidirectional(keras.layers.LSTM(4))(x),
        lambda: BothEnds(torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)),
        lambda: BidirectionalFlax(lstm=True),
    ),
    Case(
        "bidirectional_gru",
        (2, 5, 3),
        lambda x: keras.layers.Bidirectional(keras.layers.GRU(4))(x),
        lambda: BothEnds(torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)),
        lambda: BidirectionalFlax(lstm=False),
    ),
    Case(
        "attention",
        (2, 4, 6),
        lambda x: keras.layers.MultiHeadAttention(2, 3)(x, x),
        lambda: SelfAttention(6, 2),
        _flax(lambda: nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6, out_features=6)),
    ),
]


def values(path) -> dict[str, bytes]:
    """Every tensor of a file as `ckpt` reads it, by path: what two outputs are compared by."""
    import convert

    return {"/".join(e.path): e.tensor.read().tobytes() for e in convert.load(path).entries()}


def directions(case: Case) -> list[tuple[str, str]]:
    have = [f for f in ("keras", "torch", "flax") if getattr(case, f) is not None]
    return [(a, b) for a in have for b in have if a != b]
