"""Reading Keras files written by the real tf_keras and Keras 3: every tensor equals the
model's own weight, with Keras' own identity (layer, position, name, object path)."""

from __future__ import annotations

import json
import shutil
import zipfile

import h5py
import numpy as np
import pytest

import convert
from convert.core.graph import Node


def legacy_weights(layer):
    """The order Keras 2 files list a layer's weights in (Keras' `_legacy_weights`)."""
    return layer.trainable_weights + layer.non_trainable_weights


def by_layer(graph):
    found: dict[str, list] = {}
    for entry in graph.entries():
        if (
            entry.tensor.meta.get("keras_layer", "top_level_model_weights")
            != "top_level_model_weights"
        ):
            found.setdefault(entry.tensor.meta["keras_layer"], []).append(entry.tensor)
    for tensors in found.values():
        tensors.sort(key=lambda t: t.meta["keras_weight_index"])
    return found


def assert_legacy_identity(graph, model, weight_name=lambda w: w.name):
    """Layers with weights in model order, each weight at its position with its name/value."""
    found = by_layer(graph)
    layers = [layer for layer in model.layers if legacy_weights(layer)]
    order = sorted(found, key=lambda n: found[n][0].meta["keras_layer_index"])
    assert order == [layer.name for layer in layers]
    for i, layer in enumerate(layers):
        tensors = found[layer.name]
        weights = legacy_weights(layer)
        assert len(tensors) == len(weights)
        for j, (tensor, weight) in enumerate(zip(tensors, weights, strict=True)):
            assert tensor.meta["keras_layer_index"] == i
            assert tensor.meta["keras_weight_index"] == j
            assert tensor.meta["keras_weight_name"] == weight_name(weight)
            value = np.asarray(weight)
            array = tensor.read()
            assert array.dtype == value.dtype and array.shape == value.shape
            np.testing.assert_array_equal(array, value)


@pytest.mark.parametrize("name", ["tk_seq", "tk_all", "tk_sub"])
def test_legacy_weights_file(goldens, name):
    gold = goldens[name]
    graph = convert.load(gold.files["h5"])
    assert graph.format == "keras-h5"
    assert graph.values["backend"] == "tensorflow"
    assert graph.values["keras_version"].startswith("2.")
    assert_legacy_identity(graph, gold.model)
    # Root edges: every layer of `layer_names`, weightless ones as empty Nodes, in order.
    top = ["top_level_model_weights"] if name == "tk_sub" else []
    assert list(graph.root.edges) == [layer.name for layer in gold.model.layers] + top
    assert graph.root.meta["keras_layer_names"] == [layer.name for layer in gold.model.layers]
    for layer in gold.model.layers:
        if not legacy_weights(layer):
            assert isinstance(graph.root.edges[layer.name], Node)
            assert not graph.root.edges[layer.name].edges
    if name == "tk_sub":  # its own weight, in the `top_level_model_weights` group
        top = graph.get(("top_level_model_weights", "scale"))
        assert top.meta["keras_layer"] == "top_level_model_weights"
        np.testing.assert_array_equal(top.read(), np.asarray(gold.model.scale))


def test_legacy_paths_are_short_weight_names(goldens):
    gold = goldens["tk_all"]
    graph = convert.load(gold.files["h5"])
    model = gold.model
    lstm = model.get_layer("lstm")
    np.testing.assert_array_equal(
        graph.get(("lstm", "lstm_cell", "recurrent_kernel")).read(),
        np.asarray(lstm.cell.recurrent_kernel),
    )
    np.testing.assert_array_equal(
        graph.get(("attention", "key", "bias")).read(),
        np.asarray(model.get_layer("attention")._key_dense.bias),
    )
    head = graph.get(("head", "kernel"))
    assert head.meta["key"] == "head/head/kernel:0"
    assert head.meta["keras_weight_name"] == "head/kernel:0"
    inner = model.get_layer("inner")
    np.testing.assert_array_equal(
        graph.get(("inner", "inner_bn", "moving_variance")).read(),
        np.asarray(inner.layers[1].moving_variance),
    )
    # Subclassed models scope weight names by the model: the layer's own name starts the path.
    sub = goldens["tk_sub"]
    graph = convert.load(sub.files["h5"])
    dense = sub.model.blocks[1]
    np.testing.assert_array_equal(
        graph.get((dense.name, "kernel")).read(), np.asarray(dense.kernel)
    )


def test_legacy_full_model_file(goldens):
    gold = goldens["tk_full"]
    graph = convert.load(gold.files["full"])
    assert graph.format == "keras-h5"
    assert_legacy_identity(graph, gold.model)
    assert json.loads(graph.values["model_config"])["class_name"] == "Functional"
    assert json.loads(graph.values["training_config"])["loss"] == "mse"
    assert graph.root.meta["keras_h5_full_model"] is True
    # Optimizer state: every optimizer variable in its file order; slots where the
    # variable is named, attached to that variable.
    variables = gold.model.optimizer.variables
    optimizer_tensors = sorted(
        (e for e in graph.entries() if e.tensor.meta.get("keras_optimizer")),
        key=lambda e: e.tensor.meta["keras_weight_index"],
    )
    assert len(optimizer_tensors) == len(variables)
    for entry, variable in zip(optimizer_tensors, variables, strict=True):
        assert entry.tensor.meta["keras_weight_name"] == variable.name
        np.testing.assert_array_equal(entry.tensor.read(), np.asarray(variable))
    trainable = gold.model.trainable_weights
    assert len(graph.slots) == 2 * len(trainable)
    names = {id(t): t.meta["keras_weight_name"] for _, t in graph.tensors()}
    for slot in graph.slots:
        assert slot.name in ("m", "v")
        assert slot.value.meta["keras_weight_name"] == (
            f"Adam/{slot.name}/{names[id(slot.variable)]}"
        )
    assert graph.get(("optimizer", "iteration")).read() == 1


def test_legacy_full_model_maps_to_keras3_paths(goldens):
    """The config gives each legacy weight its Keras 3 object path and index."""
    gold = goldens["tk_full"]
    graph = convert.load(gold.files["full"])
    keys = {
        (t.meta["keras_layer"], t.meta["keras_weight_index"]): t.meta["keras3_key"]
        for _, t in graph.tensors()
        if "keras_layer" in t.meta
    }
    assert keys[("lstm", 2)] == "layers/lstm/cell/vars/2"
    assert keys[("attention", 2)] == "layers/multi_head_attention/key_dense/vars/0"
    assert keys[("head", 0)] == "layers/dense/vars/0"
    # The nested model lists trainable weights first: its BN moving mean is 7th of 8.
    assert keys[("inner", 6)] == "layers/sequential/layers/batch_normalization/vars/2"
    assert keys[("inner", 4)] == "layers/sequential/layers/dense_1/vars/0"
    assert keys[("norm", 3)] == "layers/batch_normalization/vars/3"


def model_values(model) -> list[np.ndarray]:
    values = [np.asarray(w) for w in model.weights]
    if getattr(model, "optimizer", None) is not None:
        values += [np.asarray(v) for v in model.optimizer.variables]
    return values


def assert_same_values(graph, values: list[np.ndarray]) -> None:
    """The graph holds exactly these arrays (matched one to one by dtype, shape, bytes)."""

    def key(a):
        return (str(a.dtype), a.shape, np.ascontiguousarray(a).tobytes())

    got = sorted(key(t.read()) for _, t in graph.tensors())
    assert got == sorted(key(v) for v in values)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("k3_seq", "weights"),
        ("k3_sub", "weights"),
        ("k3_bf16", "weights"),
        ("k3_all", "weights"),
        ("k3_all", "keras"),
        ("k3_all", "sharded"),
        ("k3_seq", "keras"),
    ],
)
def test_keras3_files(goldens, name, kind):
    gold = goldens[name]
    graph = convert.load(gold.files[kind])
    assert graph.format == "keras"
    assert_same_values(graph, model_values(gold.model))
    for _, tensor in graph.tensors():
        assert tensor.meta["key"].split("/")[-2] == "vars"


def test_keras3_object_paths(goldens):
    gold = goldens["k3_all"]
    model = gold.model
    graph = convert.load(gold.files["weights"])

    def value(*path):
        return graph.get(path).read()

    np.testing.assert_array_equal(
        value("layers", "dense", "vars", "0"), np.asarray(model.get_layer("head").kernel)
    )
    np.testing.assert_array_equal(
        value("layers", "lstm", "cell", "vars", "1"),
        np.asarray(model.get_layer("lstm").cell.recurrent_kernel),
    )
    mha = model.get_layer("attention")
    np.testing.assert_array_equal(
        value("layers", "multi_head_attention", "value_dense", "vars", "1"),
        np.asarray(mha.value_dense.bias),
    )
    inner = model.get_layer("inner")
    np.testing.assert_array_equal(
        value("layers", "sequential", "layers", "batch_normalization", "vars", "3"),
        np.asarray(inner.layers[1].moving_variance),
    )
    assert value("optimizer", "vars", "0") == int(model.optimizer.iterations)
    # Variables in index order (not HDF5's name order: 10 after 9), and the vars names.
    assert list(graph.get(("optimizer", "vars")).edges)[:12] == [str(i) for i in range(12)]
    assert graph.get(("layers", "sequential", "vars")).meta["name"] == "inner"
    assert graph.get(("layers", "input_layer", "vars")).edges == {}

    sub = goldens["k3_sub"]
    graph = convert.load(sub.files["weights"])
    m = sub.model
    for path, variable in [
        (("a", "vars", "0"), m.a.kernel),
        (("blocks", "dense", "vars", "0"), m.blocks[0].kernel),
        (("blocks", "container", "dense", "vars", "1"), m.blocks[1][0].bias),
        (("blocks", "container_1", "dense", "vars", "0"), m.blocks[2]["x"].kernel),
        # `layers` (all tracked layers) sorts before `norm`: it claims it.
        (("layers", "batch_normalization", "vars", "2"), m.norm.moving_mean),
    ]:
        np.testing.assert_array_equal(graph.get(path).read(), np.asarray(variable))


def test_bfloat16(goldens):
    gold = goldens["k3_bf16"]
    graph = convert.load(gold.files["weights"])
    tensor = graph.get(("layers", "dense", "vars", "0"))
    assert tensor.dtype_name == "bfloat16"
    kernel = gold.model.layers[0].kernel
    np.testing.assert_array_equal(tensor.read(), np.asarray(kernel))
    assert np.asarray(kernel).dtype == tensor.dtype


def test_bfloat16_in_keras3_legacy_h5(goldens):
    """Keras 3's legacy writer stores bfloat16 as an untagged 2-byte opaque type."""
    gold = goldens["k3_bf16"]
    graph = convert.load(gold.files["full"])
    assert_legacy_identity(graph, gold.model, weight_name=lambda w: w.path)
    assert {t.dtype_name for _, t in graph.tensors() if "keras_layer" in t.meta} == {"bfloat16"}


def test_keras_archive_knows_both_identities(goldens):
    """A .keras config gives each Keras 3 variable its Keras 2 layer, position and name."""
    gold = goldens["k3_all"]
    graph = convert.load(gold.files["keras"])
    assert json.loads(graph.values["keras_config"])["class_name"] == "Functional"
    assert graph.values["keras_version"].startswith("3.")
    assert_legacy_identity(graph, gold.model, weight_name=lambda w: w.path)
    assert graph.root.meta["keras_layer_names"] == [layer.name for layer in gold.model.layers]


def test_keras3_full_model_h5(goldens):
    """Keras 3's own legacy writer: weight names without `:0`, Keras 3 optimizer names."""
    gold = goldens["k3_all"]
    graph = convert.load(gold.files["full"])
    assert graph.format == "keras-h5"
    assert_legacy_identity(graph, gold.model, weight_name=lambda w: w.path)
    slots = {(s.name, s.variable.meta["keras_weight_name"]) for s in graph.slots}
    assert ("momentum", "head/kernel") in slots and ("velocity", "lstm/lstm_cell/bias") in slots
    assert ("momentum", "inner/inner_bn/beta") in slots


def test_content_sniffing_wins_over_names(goldens, tmp_path):
    legacy = tmp_path / "weights.dat"
    shutil.copy(goldens["tk_seq"].files["h5"], legacy)
    assert convert.load(legacy).format == "keras-h5"
    keras3 = tmp_path / "weights.h5"
    shutil.copy(goldens["k3_seq"].files["weights"], keras3)
    assert convert.load(keras3).format == "keras"
    archive = tmp_path / "model.zip"
    shutil.copy(goldens["k3_seq"].files["keras"], archive)
    assert convert.load(archive).format == "keras"


def test_deflated_archive_and_hdf5_user_block(goldens, tmp_path):
    """A .keras re-zipped with deflate is read through zipfile; an HDF5 superblock after a
    user block (offset 512, 1024, …) is still found."""
    source = goldens["k3_seq"].files["keras"]
    deflated = tmp_path / "deflated.keras"
    with (
        zipfile.ZipFile(source) as src,
        zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    shifted = tmp_path / "shifted.h5"
    with (
        h5py.File(goldens["tk_seq"].files["h5"]) as f,
        h5py.File(shifted, "w", userblock_size=1024) as g,
    ):
        for key, value in f.attrs.items():
            g.attrs[key] = value
        for key in f:
            f.copy(f[key], g, name=key)
    for copy, original in [(deflated, source), (shifted, goldens["tk_seq"].files["h5"])]:
        mine, theirs = convert.load(copy), convert.load(original)
        assert mine.format == theirs.format
        for (p, a), (q, b) in zip(mine.tensors(), theirs.tensors(), strict=True):
            assert p == q
            np.testing.assert_array_equal(a.read(), b.read())


def test_ls_json_keys_are_dataset_paths(goldens, ckpt):
    result = ckpt("ls", "--json", goldens["tk_seq"].files["h5"])
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    model = goldens["tk_seq"].model
    dense = model.layers[0]
    assert rows[0]["key"] == f"{dense.name}/{dense.kernel.name}"
    assert rows[0]["dtype"] == "float32" and rows[0]["shape"] == list(dense.kernel.shape)
    result = ckpt("ls", "--json", goldens["k3_all"].files["keras"])
    assert result.code == 0, result.err
    assert "layers/lstm/cell/vars/0" in {r["key"] for r in json.loads(result.out)}


def test_a_lone_tensor_written_as_its_own_layer_keeps_its_key(tmp_path, ckpt):
    """A tensor with no scope (`steps`) is a .h5 layer `steps` holding the weight `steps:0`;
    reading it gives `steps` again, not `steps/steps`. (Such files come from Keras 2
    writers; this tool writes a .h5 only from a source that records Keras' order.)"""
    import h5py
    from safetensors.numpy import load_file

    values = {"steps": np.array(7, dtype="int64"), "head/weight": np.ones((2, 3), "float32")}
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.attrs["layer_names"] = [b"steps", b"head"]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.15.0"
        for layer, weight in (("steps", "steps:0"), ("head", "head/weight:0")):
            group = f.create_group(layer)
            group.attrs["weight_names"] = [weight.encode()]
            group[weight] = values[weight[:-2]]
    assert ckpt("convert", tmp_path / "b.h5", tmp_path / "c.safetensors").code == 0
    back = load_file(str(tmp_path / "c.safetensors"))
    assert set(back) == {"steps", "head.weight"}
    np.testing.assert_array_equal(back["steps"], values["steps"])
    np.testing.assert_array_equal(back["head.weight"], values["head/weight"])
