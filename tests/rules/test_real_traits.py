"""Traits of real pretrained models that independent authors ported between frameworks,
each built here small with the real frameworks: every port computes what the source
computes (within 1e-5), or is refused with one line that says how to choose; none exits
0 with a wrong file.

- a Permute (any layer that moves axes) between the last convolution and the Flatten;
- a full-model tf_keras `.h5` with named layers, and its weights-only `.h5`;
- a Keras 2 `.h5` from the fourth model built in one Keras session (`conv1/conv1_3/...`);
- a Keras 3 subclassed model: attribute layers and a nested `Sequential`;
- two heads of one kind named the other way round on the two sides;
- Flax modules at the root of a tree.
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pytest
import torch
from flax import linen as nn

from convert import api

from ..conftest import assert_one_line_error
from .frameworks import keras

tf_keras = pytest.importorskip("tf_keras")


def close(got, expected) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def randomise_keras(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(size=v.shape).astype("float32") * 0.5
        v.assign(np.abs(value) + 0.5 if "variance" in v.name else value)


def torch_run(module: torch.nn.Module, path: Path, x: np.ndarray) -> np.ndarray:
    module.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def rule_file(path: Path, sides: tuple[str, str], include: str, *rules: dict) -> Path:
    lines = [f"sides = {json.dumps(list(sides))}", f"include = [{json.dumps(include)}]"]
    for rule in rules:
        lines += ["", "[[path]]"] + [f"{k} = {json.dumps(v)}" for k, v in rule.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- a Permute before the Flatten ---------------------------------------------------------

X_MAP = np.random.default_rng(3).normal(size=(2, 6, 5, 3)).astype("float32")


class PermutedTorch(torch.nn.Module):
    """Keras' Conv2D → Permute((3, 1, 2)) → Flatten → Dense, ported to torch one of two
    ways: `native` flattens its own (c, h, w) map, which is the order Keras' permuted map
    has; otherwise it applies the same permute to its channels-first map, as a literal
    port would, and reads (w, c, h)."""

    def __init__(self, native: bool):
        super().__init__()
        self.native = native
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 4 * 3, 2)

    def forward(self, x):
        y = self.conv(x.permute(0, 3, 1, 2))
        return self.fc((y if self.native else y.permute(0, 3, 1, 2)).flatten(1))


class PermutedFlax(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Conv(4, (3, 3), padding="VALID")(x).transpose(0, 3, 1, 2)
        return nn.Dense(2)(y.reshape((y.shape[0], -1)))


@pytest.fixture(scope="module")
def permuted(tmp_path_factory):
    base = tmp_path_factory.mktemp("permuted")
    inputs = keras.Input((6, 5, 3))
    y = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    randomise_keras(model, 5)
    model.save(base / "src.keras")
    torch.save(PermutedTorch(True).state_dict(), base / "fresh.pt")
    return base, np.asarray(model(X_MAP))


def test_a_permute_before_flatten_is_refused_without_a_choice(permuted, ckpt, tmp_path):
    base, _ = permuted
    result = ckpt("convert", base / "src.keras", tmp_path / "out.pt", "--like", base / "fresh.pt")
    assert_one_line_error(
        result,
        "layers/dense",
        "permute (Permute)",
        'kind = "dense"',
        "flatten = [h, w, c]",
        "[4, 4, 3]",
    )
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("native", [True, False])
def test_a_rule_chooses_how_the_port_flattens(permuted, ckpt, tmp_path, native):
    base, expected = permuted
    choice = {"kind": "dense"} if native else {"kind": "flatten_dense", "flatten": [4, 4, 3]}
    rules = rule_file(
        tmp_path / "r.toml",
        ("keras", "torch"),
        "keras-torch",
        {"keras": "layers/dense", "torch": "fc", **choice},
    )
    out = tmp_path / "out.pt"
    result = ckpt(
        "convert", base / "src.keras", out, "--like", base / "fresh.pt", "--rules", rules, "--json"
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)["rules"]
    assert bool(report["reordered"]) is not native
    close(torch_run(PermutedTorch(native), out, X_MAP), expected)
    # `ckpt diff --rules` maps A into B's layout with the same rules: B is the skeleton.
    assert ckpt("diff", base / "src.keras", out, "--rules", rules).code == 0
    assert_one_line_error(
        ckpt("diff", base / "src.keras", out, "--rules", "keras-torch"),
        "layers/dense",
        "row order is open",
    )


def test_emitted_template_completed_converts_with_and_without_the_skeleton(
    permuted, ckpt, tmp_path
):
    base, expected = permuted
    emitted = tmp_path / "emitted.toml"
    result = ckpt(
        "convert",
        base / "src.keras",
        tmp_path / "x.pt",
        "--like",
        base / "fresh.pt",
        "--emit-rules",
        emitted,
    )
    assert result.code == 2 and "--emit-rules wrote" in result.err
    text = emitted.read_text()
    assert 'keras = "layers/conv2d"' in text and '# keras = "layers/dense"' in text
    done = "\n".join(
        line[2:]
        if line.startswith(("# [[path]]", "# keras =", "# torch ="))
        else 'kind = "dense"'
        if line.startswith("# kind")
        else line
        for line in text.splitlines()
    )
    emitted.write_text(done + "\n")
    for extra in ((), ("--like", base / "fresh.pt")):
        out = tmp_path / f"out{len(extra)}.pt"
        result = ckpt("convert", base / "src.keras", out, "--rules", emitted, *extra)
        assert result.code == 0, result.err
        close(torch_run(PermutedTorch(True), out, X_MAP), expected)


def test_keras_to_flax_needs_no_choice(permuted, tmp_path):
    """Both flatten a channels-last map: the rows stay as they are, and nothing is said."""
    base, expected = permuted
    module = PermutedFlax()
    variables = jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), X_MAP))
    skeleton = tmp_path / "fresh.msgpack"
    skeleton.write_bytes(flax.serialization.to_bytes(variables))
    report = api.convert(base / "src.keras", tmp_path / "out.msgpack", like=skeleton)
    assert not report.rules["reordered"]
    assert not any("flatten" in note for note in report.notes), report.notes
    restored = flax.serialization.from_bytes(variables, (tmp_path / "out.msgpack").read_bytes())
    close(module.apply(restored, X_MAP), expected)


def test_a_reorder_is_said_in_text_and_json(tmp_path, ckpt):
    inputs = keras.Input((7, 6, 3))
    y = keras.layers.ReLU()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(y)))
    model.save(tmp_path / "cnn.keras")

    class Cnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.head = torch.nn.Linear(80, 3)

    torch.save(Cnn().state_dict(), tmp_path / "fresh.pt")
    args = ("convert", tmp_path / "cnn.keras", tmp_path / "o.pt", "--like", tmp_path / "fresh.pt")
    text = ckpt(*args)
    assert text.code == 0 and "reordered the rows of dense layer layers/dense -> head" in text.err
    as_json = json.loads(ckpt(*args, "--overwrite", "--json").out)
    assert as_json["rules"]["reordered"] == [
        {"source": "layers/dense", "target": "head", "map": [5, 4, 4], "by": "config"}
    ]
    assert any("reordered the rows" in note for note in as_json["notes"])


# -- tf_keras files with named layers -----------------------------------------------------

X_SMALL = np.random.default_rng(4).normal(size=(2, 6, 5, 3)).astype("float32")


def named_cnn(head: str = "flatten"):
    inputs = tf_keras.Input((6, 5, 3))
    y = tf_keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    y = tf_keras.layers.BatchNormalization(epsilon=1e-5, name="bn1")(y)
    y = tf_keras.layers.ReLU()(y)
    y = (
        tf_keras.layers.Flatten()(y)
        if head == "flatten"
        else tf_keras.layers.GlobalAveragePooling2D()(y)
    )
    return tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="fc")(y))


class NamedCnnTorch(torch.nn.Module):
    def __init__(self, head: str = "flatten"):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3)
        self.bn1 = torch.nn.BatchNorm2d(4, eps=1e-5)
        self.head = head
        self.fc = torch.nn.Linear(48 if head == "flatten" else 4, 2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x.permute(0, 3, 1, 2))))
        return self.fc(y.flatten(1) if self.head == "flatten" else y.mean((2, 3)))


def test_a_full_model_h5_ports_by_its_config(tmp_path):
    """Its config names Conv2D (no Conv2DTranspose doubt) and shows the Flatten reading
    the convolution's map; tf_keras records no shapes there, the channels do."""
    model = named_cnn()
    randomise_keras(model, 8)
    model.save(tmp_path / "full.h5")
    torch.save(NamedCnnTorch().state_dict(), tmp_path / "fresh.pt")
    report = api.convert(tmp_path / "full.h5", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    assert report.rules["reordered"][0]["map"] == [12, 4]  # (h * w, c): the same reorder
    close(torch_run(NamedCnnTorch(), tmp_path / "out.pt", X_SMALL), model(X_SMALL))


def test_a_weights_h5_with_named_convolutions_ports(tmp_path):
    """No class recorded: a named 4-D kernel may be a Conv2D or a Conv2DTranspose, which
    keras-torch maps alike, so the choice cannot change the result."""
    model = named_cnn("pool")
    randomise_keras(model, 9)
    model.save_weights(tmp_path / "w.h5")
    torch.save(NamedCnnTorch("pool").state_dict(), tmp_path / "fresh.pt")
    api.convert(tmp_path / "w.h5", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    close(torch_run(NamedCnnTorch("pool"), tmp_path / "out.pt", X_SMALL), model(X_SMALL))


def test_a_layer_scope_numbered_by_the_session_is_the_layers_own(tmp_path):
    """The fourth model built with a layer `conv1` in one (graph-mode) session names its
    weights `conv1_3/kernel:0`; Keras loads them by position, and so does the port."""
    import tensorflow as tf

    with tf.Graph().as_default():
        for _ in range(4):
            model = named_cnn("pool")
        rng = np.random.default_rng(10)
        model.set_weights(
            [np.abs(rng.normal(size=w.shape)).astype("float32") + 0.5 for w in model.get_weights()]
        )
        model.save_weights(tmp_path / "w.h5")
        expected = model.predict(X_SMALL, verbose=0)
    graph = api.load(tmp_path / "w.h5")
    names = [e.tensor.meta["keras_weight_name"] for e in graph.entries()]
    assert "conv1_3/kernel:0" in names, names
    assert ("conv1", "kernel") in [e.path for e in graph.entries()]
    torch.save(NamedCnnTorch("pool").state_dict(), tmp_path / "fresh.pt")
    api.convert(tmp_path / "w.h5", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    close(torch_run(NamedCnnTorch("pool"), tmp_path / "out.pt", X_SMALL), expected)


# -- a Keras 3 subclassed model -----------------------------------------------------------


class SubclassedKeras(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv1 = keras.layers.Conv2D(4, 3)
        self.prelu1 = keras.layers.PReLU(shared_axes=[1, 2])
        self.block1 = keras.Sequential(
            [
                keras.layers.Conv2D(6, 3),
                keras.layers.BatchNormalization(epsilon=1e-5),
                keras.layers.Conv2D(5, 1),
            ]
        )
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(keras.ops.mean(self.block1(self.prelu1(self.conv1(x))), (1, 2)))


class SubclassedTorch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3)
        self.prelu1 = torch.nn.PReLU(4)
        self.block1 = torch.nn.Sequential(
            torch.nn.Conv2d(4, 6, 3), torch.nn.BatchNorm2d(6, eps=1e-5), torch.nn.Conv2d(6, 5, 1)
        )
        self.head = torch.nn.Linear(5, 3)

    def forward(self, x):
        y = self.block1(self.prelu1(self.conv1(x.permute(0, 3, 1, 2))))
        return self.head(y.mean((2, 3)))


X_SUB = np.random.default_rng(6).normal(size=(2, 9, 9, 3)).astype("float32")


def test_a_subclassed_keras_model_ports_both_ways(tmp_path):
    """Attribute layers (`conv1/vars/0`) get kinds from their variables; the nested
    Sequential orders its convolutions; names and shapes pair the rest; the PReLU's
    (1, 1, c) slopes are torch's (c,)."""
    source = SubclassedKeras()
    source(X_SUB)
    randomise_keras(source, 12)
    source.save_weights(tmp_path / "src.weights.h5")
    torch.save(SubclassedTorch().state_dict(), tmp_path / "fresh.pt")
    report = api.convert(
        tmp_path / "src.weights.h5", tmp_path / "out.pt", like=tmp_path / "fresh.pt"
    )
    assert not report.rules["missing"] and not report.rules["unused"]
    close(torch_run(SubclassedTorch(), tmp_path / "out.pt", X_SUB), source(X_SUB))

    back = SubclassedKeras()
    back(X_SUB)
    back.save_weights(tmp_path / "fresh.weights.h5")
    api.convert(
        tmp_path / "out.pt", tmp_path / "back.weights.h5", like=tmp_path / "fresh.weights.h5"
    )
    back.load_weights(tmp_path / "back.weights.h5")
    close(back(X_SUB), source(X_SUB))


def test_a_nested_sequential_in_a_keras_archive_is_ordered_by_its_config(tmp_path):
    inputs = keras.Input((9, 9, 3))
    block = keras.Sequential(
        [
            keras.layers.Conv2D(6, 3),
            keras.layers.BatchNormalization(epsilon=1e-5),
            keras.layers.Conv2D(5, 1),
        ]
    )
    y = block(keras.layers.PReLU(shared_axes=[1, 2])(keras.layers.Conv2D(4, 3)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(y)))
    randomise_keras(model, 17)
    model.save(tmp_path / "src.keras")
    torch.save(SubclassedTorch().state_dict(), tmp_path / "fresh.pt")
    api.convert(tmp_path / "src.keras", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    close(torch_run(SubclassedTorch(), tmp_path / "out.pt", X_SUB), model(X_SUB))


# -- heads named the other way round ------------------------------------------------------


def heads_keras():
    inputs = keras.Input((5, 5, 3))
    y = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    box = keras.layers.Conv2D(4, 1)(y)  # `conv4-1` in the original: the box head
    score = keras.layers.Conv2D(2, 1)(y)
    return keras.Model(inputs, [box, score])


class HeadsTorch(torch.nn.Module):
    """The port defines the score head first (`conv4_1`), then the box head."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 6, 3)
        self.conv4_1 = torch.nn.Conv2d(6, 2, 1)
        self.conv4_2 = torch.nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = torch.relu(self.body(x.permute(0, 3, 1, 2)))
        return (self.conv4_2(y).permute(0, 2, 3, 1), self.conv4_1(y).permute(0, 2, 3, 1))


def test_heads_named_the_other_way_round_pair_by_shape(tmp_path):
    model = heads_keras()
    randomise_keras(model, 13)
    model.save(tmp_path / "src.keras")
    torch.save(HeadsTorch().state_dict(), tmp_path / "fresh.pt")
    report = api.convert(tmp_path / "src.keras", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    assert any("by shape" in note for note in report.notes), report.notes
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 3)).astype("float32")
    module = HeadsTorch()
    module.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True))
    with torch.no_grad():
        got = [t.numpy() for t in module(torch.from_numpy(x))]
    for g, e in zip(got, model(x), strict=True):
        close(g, e)


# -- Flax modules at the root, and counters against torch indices -------------------------


def test_a_flax_batchnorm_at_the_root_is_found_by_its_variables(tmp_path):
    module = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
    x = np.random.default_rng(2).normal(size=(3, 5)).astype("float32")
    variables = jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), x))
    rng = np.random.default_rng(3)
    variables = jax.tree_util.tree_map(
        lambda v: np.abs(rng.normal(size=v.shape)).astype("float32") + 0.5, variables
    )
    (tmp_path / "bn.msgpack").write_bytes(flax.serialization.to_bytes(variables))
    torch.save(torch.nn.BatchNorm1d(5, eps=1e-5).state_dict(), tmp_path / "fresh.pt")
    api.convert(tmp_path / "bn.msgpack", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    close(
        torch_run(torch.nn.BatchNorm1d(5, eps=1e-5), tmp_path / "out.pt", x),
        module.apply(variables, x),
    )


def test_counters_and_indices_map_through_arithmetic(tmp_path, ckpt):
    """Keras' `dense`, `dense_1` are a torch Sequential's modules 0 and 2 (a ReLU between):
    `dense{i:counter}` ↔ `net/{2*i}`, without a skeleton, both ways."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(3, "relu")(inputs)))
    randomise_keras(model, 14)
    model.save_weights(tmp_path / "src.weights.h5")
    rules = rule_file(
        tmp_path / "r.toml",
        ("keras", "torch"),
        "keras-torch",
        {"keras": "layers/dense{i:counter}", "torch": "net/{2*i}", "kind": "dense"},
    )

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
            )

        def forward(self, x):
            return self.net(x)

    result = ckpt("convert", tmp_path / "src.weights.h5", tmp_path / "out.pt", "--rules", rules)
    assert result.code == 0, result.err
    x = np.random.default_rng(5).normal(size=(2, 4)).astype("float32")
    close(torch_run(Net(), tmp_path / "out.pt", x), model(x))
    back = tmp_path / "back.weights.h5"
    result = ckpt(
        "convert",
        tmp_path / "out.pt",
        back,
        "--rules",
        rules,
        "--like",
        tmp_path / "src.weights.h5",
    )
    assert result.code == 0, result.err
    assert ckpt("diff", tmp_path / "src.weights.h5", back).code == 0


def test_a_norm_built_without_center_is_read_by_its_config(tmp_path):
    """A Keras 3 file numbers the variables a LayerNormalization(center=False) has: only a
    .keras config says the one it holds is gamma."""
    inputs = keras.Input((4,))
    y = keras.layers.Dense(3)(inputs)
    model = keras.Model(inputs, keras.layers.LayerNormalization(center=False, epsilon=1e-5)(y))
    randomise_keras(model, 15)
    model.save(tmp_path / "src.keras")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.norm = torch.nn.LayerNorm(3, eps=1e-5, bias=False)

        def forward(self, x):
            return self.norm(self.fc(x))

    torch.save(Net().state_dict(), tmp_path / "fresh.pt")
    api.convert(tmp_path / "src.keras", tmp_path / "out.pt", like=tmp_path / "fresh.pt")
    x = np.random.default_rng(7).normal(size=(2, 4)).astype("float32")
    close(torch_run(Net(), tmp_path / "out.pt", x), model(x))


@keras.saving.register_keras_serializable("traits")
class Scale(keras.layers.Layer):
    """A custom layer no built-in kind describes: one weight per feature."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


class ScaleTorch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.scale = torch.nn.Module()
        self.scale.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.fc(x) * self.scale.weight


KIND_RULES = """sides = ["keras", "torch"]
include = ["keras-torch"]

[[kind]]
name = "scale"
keras = { classes = ["Scale"], vars = ["w"], ranks = { w = 1 } }
torch = { vars = ["weight"], ranks = { weight = 1 } }

[[layer]]
kind = "scale"
vars = [{ keras = "w", torch = "weight" }]
"""


def test_a_rule_file_declares_a_layer_kind(tmp_path, ckpt):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, Scale()(keras.layers.Dense(3)(inputs)))
    randomise_keras(model, 16)
    model.save_weights(tmp_path / "src.weights.h5")
    torch.save(ScaleTorch().state_dict(), tmp_path / "fresh.pt")
    plain = ckpt(
        "convert",
        tmp_path / "src.weights.h5",
        tmp_path / "plain.pt",
        "--like",
        tmp_path / "fresh.pt",
    )
    assert_one_line_error(plain, "target entries missing", "scale.weight")
    rules = tmp_path / "scale.toml"
    rules.write_text(KIND_RULES)
    result = ckpt(
        "convert",
        tmp_path / "src.weights.h5",
        tmp_path / "out.pt",
        "--like",
        tmp_path / "fresh.pt",
        "--rules",
        rules,
    )
    assert result.code == 0, result.err
    x = np.random.default_rng(8).normal(size=(2, 4)).astype("float32")
    close(torch_run(ScaleTorch(), tmp_path / "out.pt", x), model(x))
    bad = tmp_path / "bad.toml"
    bad.write_text(KIND_RULES.replace('vars = ["w"]', 'vars = "w"'))
    assert_one_line_error(
        ckpt("convert", tmp_path / "src.weights.h5", tmp_path / "b.pt", "--rules", bad),
        "kind 1",
        "keras.vars",
    )


def test_a_rule_kind_the_layer_cannot_take_is_an_error(permuted, ckpt, tmp_path):
    base, _ = permuted
    rules = rule_file(
        tmp_path / "r.toml",
        ("keras", "torch"),
        "keras-torch",
        {"keras": "layers/dense", "torch": "fc", "kind": "lstm"},
    )
    result = ckpt(
        "convert",
        base / "src.keras",
        tmp_path / "out.pt",
        "--like",
        base / "fresh.pt",
        "--rules",
        rules,
    )
    assert_one_line_error(
        result,
        "layers/dense -> fc",
        "'lstm' is not one this layer can take",
        "dense or flatten_dense",
    )


def test_reverse_where_the_file_gives_the_direction_says_to_drop_it(permuted, ckpt, tmp_path):
    base, _ = permuted
    for src, dst in ((base / "src.keras", "o.pt"), (base / "fresh.pt", "o.weights.h5")):
        result = ckpt("convert", src, tmp_path / dst, "--rules", "keras-torch", "--reverse")
        assert_one_line_error(result, "drop --reverse")
