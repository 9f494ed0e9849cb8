"""Every file a conversion through rules writes is read back: for each writer format, the
output of `[[path]]` rules alone (no `--like`) and of `--like` a skeleton of the target
framework is listed by `ckpt ls`, compared by `ckpt diff`, and loaded by the framework that
reads that format, computing what the source model computes. Where a format's reader needs
what path rules cannot give (tf_keras: a TF checkpoint's object graph, a `.h5`'s layer
order), the conversion is refused in one line, naming the output, and writes nothing.

One model in every framework: a Conv1D, a global average pooling, a Dense."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from flax import linen as nn
from safetensors.torch import load_file, save_file

from ..conftest import assert_one_line_error, listing
from .frameworks import Case, Side, keras

tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 4, 3)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):  # channels-last input, as Keras takes it
        return self.head(self.conv(x.permute(0, 2, 1)).mean(-1))


class FlaxNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3,), padding="VALID")(x)
        return nn.Dense(3)(x.mean(axis=1))


def keras_net(x):
    x = keras.layers.Conv1D(4, 3)(x)
    return keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x))


class KerasAttributes(keras.Model):
    """A subclassed model: Keras 3 saves its layers at their attribute names (`conv/vars`,
    `head/vars`: both sort before `layers`, so no `layers` group is written)."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv1D(4, 3)
        self.head = keras.layers.Dense(3)

    def call(self, x):  # (a pooling layer would be saved under `layers`: it sorts after)
        return self.head(keras.ops.mean(self.conv(x), axis=1))


def tf_keras_net():
    return tf_keras.Sequential(
        [
            tf_keras.Input((8, 3)),
            tf_keras.layers.Conv1D(4, 3),
            tf_keras.layers.GlobalAveragePooling1D(),
            tf_keras.layers.Dense(3),
        ]
    )


CASE = Case("conv_pool_dense", (2, 8, 3), keras_net, TorchNet, FlaxNet)
X = CASE.input(3)


def rule_file(sides: str, layers: list[tuple[str, str, str]], formats: str = "") -> str:
    """A rule file of [[path]] rules: (first side's path, torch path, kind) per layer."""
    first = sides.split("-")[0]
    text = f'sides = ["{first}", "torch"]\ninclude = ["{sides}"]\n{formats}'
    for path, module, kind in layers:
        text += f'\n[[path]]\n{first} = "{path}"\ntorch = "{module}"\nkind = "{kind}"\n'
    return text


KERAS_TORCH = [("layers/conv1d", "conv", "conv1d"), ("layers/dense", "head", "dense")]
RULES = {
    "keras": rule_file("keras-torch", KERAS_TORCH),
    # npz is no framework's own format: a rule file may let the torch side write it
    "npz": rule_file(
        "keras-torch", KERAS_TORCH, 'formats = { keras = ["keras"], torch = ["torch", "npz"] }\n'
    ),
    "attributes": rule_file("keras-torch", [("conv", "conv", "conv1d"), ("head", "head", "dense")]),
    "flax": rule_file("flax-torch", [("Conv_0", "conv", "conv1d"), ("Dense_0", "head", "dense")]),
}

# target format → (source framework, output name, rule file, skeleton)
TARGETS = {
    "tf": ("torch", "out/", "keras", "tf_ckpt/ckpt"),
    "torch": ("keras", "out.pt", "keras", "skeleton.pt"),
    "safetensors": ("keras", "out.safetensors", "keras", "skeleton.safetensors"),
    "sharded": ("keras", "sharded/model.safetensors.index.json", "keras", "skeleton.safetensors"),
    "keras": ("torch", "out.weights.h5", "keras", "skeleton.weights.h5"),
    "keras-h5": ("torch", "out.h5", "keras", "skeleton.h5"),
    "flax": ("torch", "out.msgpack", "flax", "skeleton.msgpack"),
    "npz": ("keras", "out.npz", "npz", "skeleton.npz"),
    "dcp": ("keras", "out_dcp", "keras", "skeleton_dcp"),
}
TO = {"dcp": ["--to", "dcp"]}  # (a directory's name says no format but tf)
REFUSED = {"tf", "keras-h5"}  # by path rules alone: tf_keras reads these by the model's layout


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Sources with random weights, a fresh skeleton of each target, and the rule files."""
    root = tmp_path_factory.mktemp("round_trips")
    sources = {"keras": Side("keras", CASE).build(5), "torch": Side("torch", CASE).build(6)}
    sources["keras"].save(root / "src.weights.h5")
    sources["torch"].save(root / "src.pt")
    Side("keras", CASE).build().save(root / "skeleton.weights.h5")
    state = TorchNet().state_dict()
    torch.save(state, root / "skeleton.pt")
    save_file(state, root / "skeleton.safetensors")
    np.savez(root / "skeleton.npz", **{k.replace(".", "/"): v.numpy() for k, v in state.items()})
    dcp.save(state, checkpoint_id=root / "skeleton_dcp")
    Side("flax", CASE).build().save(root / "skeleton.msgpack")
    tf_keras_net().save_weights(str(root / "tf_ckpt" / "ckpt"))
    tf_keras_net().save_weights(str(root / "skeleton.h5"))
    for name, text in RULES.items():
        (root / f"{name}.toml").write_text(text)
    return {
        "root": root,
        "sources": sources,
        "src": {"keras": root / "src.weights.h5", "torch": root / "src.pt"},
    }


def dest(base, name: str) -> str:
    """`name` under `base`, keeping a trailing `/` (a TF checkpoint directory)."""
    return f"{base / name}{'/' if name.endswith('/') else ''}"


def expected(files, target: str) -> np.ndarray:
    return files["sources"][TARGETS[target][0]].run(X)


def computes(out, target: str) -> np.ndarray:
    """`out` loaded by the framework that reads its format, run on X."""
    out = Path(out)
    if target in ("torch", "safetensors", "sharded", "npz", "dcp"):
        if target == "torch":
            state = torch.load(out, weights_only=True)
        elif target == "dcp":  # (read by torch's own loader, into a fresh model's state)
            state = TorchNet().state_dict()
            dcp.load(state, checkpoint_id=out)
        elif target == "safetensors":
            state = load_file(out)
        elif target == "sharded":
            state = {
                k: v
                for shard in sorted(out.parent.glob("*.safetensors"))
                for k, v in load_file(shard).items()
            }
        else:  # npz: numpy's reader; the state dict's keys are joined with `/` there
            state = {k.replace("/", "."): torch.from_numpy(v) for k, v in np.load(out).items()}
        model = TorchNet().eval()
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            return model(torch.from_numpy(X)).numpy()
    if target in ("tf", "keras-h5"):
        model = tf_keras_net()
        if target == "tf":  # the object graph restored as tf.train.Checkpoint reads it
            tf.train.Checkpoint(model).read(tf.train.latest_checkpoint(str(out))).assert_consumed()
        else:
            model.load_weights(str(out))
        return model(X, training=False).numpy()
    side = Side("keras" if target == "keras" else "flax", CASE).build()
    side.load(out)
    return side.run(X)


def assert_computes(files, out, target: str) -> None:
    want = expected(files, target)
    np.testing.assert_allclose(
        computes(out, target), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max())
    )


def read_back(ckpt, out, other=None) -> None:
    """`ckpt ls` lists every tensor; `ckpt diff` finds the file equal to itself, or to
    `other` (the same weights by another route), bit for bit."""
    listed = ckpt("ls", out)
    assert listed.code == 0, listed.err
    assert len(listed.out.splitlines()) == 4 and "4 tensors" in listed.err, listed
    for b in {out, other or out}:
        compared = ckpt("diff", out, b)
        assert compared.code == 0, (compared.out, compared.err)
        assert "4 same" in compared.out + compared.err


def test_every_writer_format_is_covered(ckpt):
    result = ckpt("formats")
    rows = [line.split() for line in result.out.splitlines() if line.strip()]
    # (consolidated holds model-parallel ranks, not a model's layers: its reading and
    # writing are tested in tests/families/test_llama_meta.py; orbax in tests/orbax)
    written_elsewhere = {"consolidated", "orbax"}
    assert {row[0] for row in rows if row[1] == "rw"} == set(TARGETS) | written_elsewhere


@pytest.mark.parametrize("target", sorted(set(TARGETS) - REFUSED))
def test_path_rules_output_is_read_back(target, files, tmp_path, ckpt):
    source, name, rules, _ = TARGETS[target]
    out = dest(tmp_path, name)
    rules_file = files["root"] / f"{rules}.toml"
    result = ckpt("convert", files["src"][source], out, "--rules", rules_file, *TO.get(target, []))
    assert result.code == 0, result.err
    read_back(ckpt, out)
    assert_computes(files, out, target)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_skeleton_output_is_read_back(target, files, tmp_path, ckpt):
    """With --like, the same weights as the path rules give (diffed bit for bit) where the
    format takes path rules' output at all."""
    source, name, rules, skeleton = TARGETS[target]
    out = dest(tmp_path / "like", name)
    # (npz is no framework's: the rule file says the torch side writes it)
    named = ["--rules", files["root"] / "npz.toml"] if target == "npz" else []
    result = ckpt("convert", files["src"][source], out, "--like", files["root"] / skeleton, *named)
    assert result.code == 0, result.err
    other = None
    if target not in REFUSED:
        other = dest(tmp_path / "rules", name)
        rules_file = files["root"] / f"{rules}.toml"
        made = ckpt(
            "convert", files["src"][source], other, "--rules", rules_file, *TO.get(target, [])
        )
        assert made.code == 0, made.err
    read_back(ckpt, out, other)
    assert_computes(files, out, target)


def test_a_keras_h5_skeleton_gives_a_tf_checkpoint_tf_keras_restores(files, tmp_path, ckpt):
    out = dest(tmp_path, "out/")
    result = ckpt("convert", files["src"]["torch"], out, "--like", files["root"] / "skeleton.h5")
    assert result.code == 0, result.err
    read_back(ckpt, out)
    assert_computes(files, out, "tf")


@pytest.mark.parametrize(
    ("target", "skeleton"), [("tf", None), ("keras-h5", None), ("tf", "skeleton.weights.h5")]
)
def test_keras3_paths_for_tf_keras_are_refused(target, skeleton, files, tmp_path, ckpt):
    """Keras 3 object paths (`layers/conv1d/vars/0`) say neither the model's kind nor its
    layers' order, which tf_keras finds a TF checkpoint's and a `.h5`'s weights by."""
    out = dest(tmp_path, TARGETS[target][1])
    like = ["--like", files["root"] / skeleton] if skeleton else []
    result = ckpt(
        "convert", files["src"]["torch"], out, "--rules", files["root"] / "keras.toml", *like
    )
    assert_one_line_error(result, out, "Keras 3 object paths", "--like")
    assert listing(tmp_path) == set()


def test_emitted_tf_keras_paths_convert_alone_and_with_like(files, tmp_path, ckpt):
    """Rules emitted against a tf_keras checkpoint name its layers (`layer_with_weights-0`):
    alone they place each variable by its name in that object graph (`kernel`), which
    tf_keras restores, and with the skeleton they give the same checkpoint."""
    emitted = tmp_path / "emitted.toml"
    like = ["--like", files["root"] / "tf_ckpt" / "ckpt"]
    first = ckpt(
        "convert", files["src"]["torch"], dest(tmp_path, "a/"), *like, "--emit-rules", emitted
    )
    assert first.code == 0, first.err
    assert 'keras = "layer_with_weights-0"' in emitted.read_text()
    for name, extra in (("b", []), ("c", like)):
        again = ckpt(
            "convert", files["src"]["torch"], dest(tmp_path, f"{name}/"), "--rules", emitted, *extra
        )
        assert again.code == 0, again.err
        read_back(ckpt, tmp_path / name, tmp_path / "a")
        assert_computes(files, tmp_path / name, "tf")


def _attribute_model() -> KerasAttributes:
    model = KerasAttributes()
    model(X)
    return model


def _run(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _assert_attribute_model_computes(files, path) -> None:
    model = _attribute_model()
    model.load_weights(path)
    want = expected(files, "keras")
    np.testing.assert_allclose(
        _run(model, X), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max())
    )


def test_keras_attribute_paths_are_read_back(files, tmp_path, ckpt):
    """A subclassed model's layers at their attribute names, placed by path rules: the
    file has Keras' root `vars` group, so ckpt reads it; Keras loads it."""
    own = tmp_path / "own.weights.h5"
    _attribute_model().save_weights(own)
    with h5py.File(own) as f:
        assert {"conv", "head", "vars"} <= set(f) and "layers" not in f
    out = tmp_path / "out.weights.h5"
    result = ckpt(
        "convert", files["src"]["torch"], out, "--rules", files["root"] / "attributes.toml"
    )
    assert result.code == 0, result.err
    with h5py.File(out) as f:
        assert "vars" in f and len(f["vars"]) == 0
    read_back(ckpt, out)
    _assert_attribute_model_computes(files, out)


def test_a_keras3_file_without_the_root_vars_group_is_read(files, tmp_path, ckpt):
    """Keras loads a file whose objects' `vars` groups lie below attribute names and that
    lacks the model's own (its loader takes a missing group as empty): so does ckpt."""
    out = tmp_path / "out.weights.h5"
    assert (
        ckpt(
            "convert", files["src"]["torch"], out, "--rules", files["root"] / "attributes.toml"
        ).code
        == 0
    )
    bare = tmp_path / "bare.weights.h5"
    shutil.copy(out, bare)
    with h5py.File(bare, "r+") as f:
        del f["vars"]
        assert set(f) == {"conv", "head"}
    read_back(ckpt, bare, out)
    _assert_attribute_model_computes(files, bare)


def test_nested_keras_objects_get_their_vars_groups(files, tmp_path, ckpt):
    """Path rules into a model nested in another: the nested model's own `vars` group
    and the root's are written, as Keras writes them, and Keras loads the file."""
    rules = tmp_path / "nested.toml"
    rules.write_text(
        rule_file(
            "keras-torch",
            [
                ("layers/functional/layers/conv1d", "conv", "conv1d"),
                ("layers/functional/layers/dense", "head", "dense"),
            ],
        )
    )
    out = tmp_path / "out.weights.h5"
    result = ckpt("convert", files["src"]["torch"], out, "--rules", rules)
    assert result.code == 0, result.err
    with h5py.File(out) as f:
        groups = set()
        f.visit(groups.add)
    assert {"vars", "layers/functional/vars", "layers/functional/layers/conv1d/vars"} <= groups
    read_back(ckpt, out)
    inner = Side("keras", CASE).build().model
    inputs = keras.Input((8, 3))
    outer = keras.Model(inputs, inner(inputs))
    outer.load_weights(out)
    want = expected(files, "keras")
    np.testing.assert_allclose(
        _run(outer, X), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max())
    )
