"""The small models of the conversion matrix, in each framework, with named layers (so a
fresh model has the same variable names) and a `fresh` twin initialised differently.

Every weight is randomised (BatchNormalization statistics too) so that no two tensors hold
the same values and no value is a framework default."""

from __future__ import annotations

import numpy as np

WIDTH = 6  # every model takes [batch, 6] floats


def inputs() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((4, WIDTH)).astype("float32")


def randomize_keras(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        current = np.asarray(w)
        value = rng.standard_normal(current.shape)
        if "variance" in w.name or "variance" in getattr(w, "path", ""):
            value = np.abs(value) + 0.5
        values.append(value.astype(current.dtype))
    model.set_weights(values)


# -- tf_keras (Keras 2) and Keras 3: the same layers ----------------------------------------


def sequential(K):
    L = K.layers
    return K.Sequential(
        [
            K.Input((WIDTH,)),
            L.Dense(5, name="d1"),
            L.BatchNormalization(name="bn"),
            L.Dense(3, name="d2"),
        ],
        name="seq",
    )


def nested(K):
    """A functional model holding a Sequential sub-model (one `.h5` layer group)."""
    L = K.layers
    inp = K.Input((WIDTH,), name="x")
    block = K.Sequential(
        [K.Input((WIDTH,)), L.Dense(4, name="dense_2"), L.BatchNormalization(name="bn_in")],
        name="block",
    )
    out = L.Dense(3, name="head")(block(inp))
    return K.Model(inp, out, name="outer")


def subclassed(K):
    """A subclassed model: tf_keras puts its name scope into the `.h5` weight names."""

    class Sub(K.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.dense = L.Dense(4, name="dense")
            self.norm = L.BatchNormalization(name="batch_normalization_1")
            self.head = L.Dense(3, name="head")

        def call(self, x, training=False):
            return self.head(self.norm(self.dense(x), training=training))

    L = K.layers
    model = Sub()
    model(inputs())
    return model


KERAS_MODELS = {"sequential": sequential, "nested": nested, "subclassed": subclassed}


def fit(model, K, seed: int) -> None:
    """Compile with Adam and fit one epoch: optimizer state exists and differs from 0."""
    model.compile(optimizer=K.optimizers.Adam(0.01), loss="mse")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, WIDTH)).astype("float32")
    y = rng.standard_normal((16, 3)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)


def keras_model(K, kind: str, seed: int, trained: bool = False):
    model = KERAS_MODELS[kind](K)
    randomize_keras(model, seed)
    if trained:
        fit(model, K, seed)
    return model


def keras_predict(model) -> np.ndarray:
    return np.asarray(model(inputs(), training=False))


# -- torch ----------------------------------------------------------------------------------


def torch_modules():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(WIDTH, 5)
            self.bn = nn.BatchNorm1d(5)
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.fc(x))))

    class Tied(nn.Module):
        """A head tied to its input projection's transpose-free twin (same shape)."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(WIDTH, WIDTH, bias=False)
            self.mid = nn.Linear(WIDTH, WIDTH)
            self.lm_head = nn.Linear(WIDTH, WIDTH, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, x):
            return self.lm_head(torch.tanh(self.mid(self.embed(x))))

    return {"net": Net, "tied": Tied}


def torch_model(kind: str, seed: int, dtype=None):
    import torch

    torch.manual_seed(seed)
    module = torch_modules()[kind]()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in module.state_dict(keep_vars=True).items():
            if value.is_floating_point():
                fresh = torch.randn(value.shape, generator=gen)
                value.copy_(fresh.abs() + 0.5 if "running_var" in name else fresh)
            elif name.endswith("num_batches_tracked"):
                value.fill_(seed + 3)
    if dtype is not None:
        module = module.to(dtype)
    return module.eval()


def torch_predict(module) -> np.ndarray:
    import torch

    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        return module(torch.from_numpy(inputs()).to(dtype)).float().numpy()


# -- Flax -----------------------------------------------------------------------------------


def flax_model():
    from flax import linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(5)(x)
            x = nn.BatchNorm(use_running_average=True)(x)
            return nn.Dense(3)(nn.relu(x))

    return MLP()


def flax_variables(seed: int):
    import jax

    model = flax_model()
    variables = model.init(jax.random.PRNGKey(seed), inputs())
    rng = np.random.default_rng(seed)

    def scramble(path, leaf):
        value = rng.standard_normal(leaf.shape).astype(leaf.dtype)
        return np.abs(value) + 0.5 if path[-1].key == "var" else value

    return jax.tree_util.tree_map_with_path(scramble, jax.tree_util.tree_map(np.asarray, variables))


def flax_predict(variables) -> np.ndarray:
    return np.asarray(flax_model().apply(variables, inputs()))
