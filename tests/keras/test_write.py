"""Files written here load into FRESH real Keras models (differently initialised) and give
exactly the original model's predictions; same-format copies keep Keras' own layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import convert
from convert.core.errors import UnsupportedError
from convert.core.graph import Graph
from convert.core.tensor import Tensor

from ..conftest import assert_one_line_error, listing
from .conftest import h5_structure, predict


def fresh(gold):
    model = gold.build()
    assert not np.array_equal(predict(model, gold.x), gold.y), "fresh model is not fresh"
    return model


def assert_loads(gold, path, **kwargs):
    model = fresh(gold)
    model.load_weights(path, **kwargs)
    np.testing.assert_array_equal(predict(model, gold.x), gold.y)
    return model


# -- Keras 2 legacy → Keras 2 legacy -----------------------------------------------------------


@pytest.mark.parametrize("name", ["tk_seq", "tk_all", "tk_sub"])
def test_legacy_to_legacy(goldens, tmp_path, name):
    gold = goldens[name]
    out = tmp_path / "out.h5"
    report = convert.convert(gold.files["h5"], out)
    assert report.files == [str(out)] and report.tensors == len(gold.model.weights)
    assert h5_structure(out) == h5_structure(gold.files["h5"])
    assert_loads(gold, out)
    if name != "tk_sub":  # a fresh subclassed model's layers get new names
        assert_loads(gold, out, by_name=True)


def test_legacy_full_model_to_legacy(goldens, tk, tmp_path, ckpt):
    gold = goldens["tk_full"]
    out = tmp_path / "full.h5"
    result = ckpt("convert", gold.files["full"], out)
    assert result.code == 0, result.err
    assert h5_structure(out) == h5_structure(gold.files["full"])
    model = tk.models.load_model(out)
    np.testing.assert_array_equal(predict(model, gold.x), gold.y)
    for mine, theirs in zip(model.optimizer.variables, gold.model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    assert_loads(gold, out)


def test_keras3_legacy_full_model_to_legacy(goldens, k3, tmp_path):
    gold = goldens["k3_all"]
    out = tmp_path / "full.h5"
    convert.convert(gold.files["full"], out)
    assert h5_structure(out) == h5_structure(gold.files["full"])
    model = k3.models.load_model(out, compile=False)
    np.testing.assert_array_equal(predict(model, gold.x), gold.y)


def test_legacy_loads_into_keras3(goldens, k3_reference_of_tk_full, tmp_path):
    """Keras 3 reads the legacy files we write the way it reads tf_keras' own."""
    out = tmp_path / "weights.h5"
    convert.convert(goldens["tk_full"].files["full"], out)
    assert_loads(k3_reference_of_tk_full, out)


# -- Keras 3 → Keras 3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["k3_seq", "k3_sub", "k3_bf16", "k3_all"])
def test_weights_h5_to_weights_h5(goldens, tmp_path, name):
    gold = goldens[name]
    out = tmp_path / "out.weights.h5"
    convert.convert(gold.files["weights"], out)
    assert h5_structure(out) == h5_structure(gold.files["weights"])
    assert_loads(gold, out)


def test_optimizer_state_survives(goldens, k3, tmp_path):
    gold = goldens["k3_all"]
    out = tmp_path / "out.weights.h5"
    convert.convert(gold.files["keras"], out)
    model = fresh(gold)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.load_weights(out)
    np.testing.assert_array_equal(predict(model, gold.x), gold.y)
    for mine, theirs in zip(model.optimizer.variables, gold.model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_keras_archive_to_weights_h5(goldens, tmp_path, ckpt):
    gold = goldens["k3_all"]
    out = tmp_path / "model.weights.h5"
    result = ckpt("convert", gold.files["keras"], out)
    assert result.code == 0, result.err
    # The same file Keras itself writes with save_weights.
    assert h5_structure(out) == h5_structure(gold.files["weights"])
    assert_loads(gold, out)


def test_keras_archive_to_keras_archive(goldens, k3, tmp_path):
    gold = goldens["k3_all"]
    out = tmp_path / "copy.keras"
    convert.convert(gold.files["keras"], out)
    model = k3.models.load_model(out)
    np.testing.assert_array_equal(predict(model, gold.x), gold.y)


def test_bfloat16_keeps_its_tag(goldens, tmp_path):
    gold = goldens["k3_bf16"]
    out = tmp_path / "bf16.weights.h5"
    convert.convert(gold.files["keras"], out)
    with h5py.File(out) as f:
        ds = f["layers/dense/vars/0"]
        assert ds.dtype.itemsize == 2 and ds.attrs["dtype"] == "bfloat16"
    assert_loads(gold, out)


def test_sharded_read_and_write(goldens, tmp_path, ckpt):
    gold = goldens["k3_all"]
    single = tmp_path / "from_shards.weights.h5"
    convert.convert(gold.files["sharded"], single)
    assert h5_structure(single) == h5_structure(gold.files["weights"])
    assert_loads(gold, single)

    sharded = tmp_path / "ours.weights.json"
    # Keras' max_shard_size=1e-6 (GiB) is 1073.7 bytes.
    report = convert.save(convert.load(gold.files["weights"]), sharded, max_shard_size=1073)
    theirs = json.loads(gold.files["sharded"].read_text())
    ours = json.loads(sharded.read_text())
    assert set(ours) == {"metadata", "weight_map"}
    assert ours["metadata"]["total_size"] == theirs["metadata"]["total_size"]
    assert set(ours["weight_map"]) == set(theirs["weight_map"])
    shards = sorted(p.name for p in tmp_path.glob("ours_*.weights.h5"))
    assert len(shards) > 2 and shards[0] == "ours_00000.weights.h5"
    assert sorted(report.files) == sorted([str(sharded)] + [str(tmp_path / s) for s in shards])
    assert_loads(gold, sharded)

    cli = tmp_path / "cli" / "model.weights.json"
    result = ckpt("convert", gold.files["keras"], cli, "--max-shard-size", "2KiB")
    assert result.code == 0, result.err
    assert len(list(cli.parent.glob("model_*.weights.h5"))) > 1
    assert_loads(gold, cli)


# -- between the two Keras formats --------------------------------------------------------------


def test_full_model_h5_to_weights_h5(goldens, k3_reference_of_tk_full, tmp_path, ckpt):
    """tf_keras full model → Keras 3 .weights.h5: the config says where each weight goes."""
    out = tmp_path / "converted.weights.h5"
    result = ckpt("convert", goldens["tk_full"].files["full"], out)
    assert result.code == 0, result.err
    assert "optimizer" in result.err  # the dropped optimizer state is reported
    assert_loads(k3_reference_of_tk_full, out)


def test_keras3_full_model_h5_to_weights_h5(goldens, tmp_path):
    gold = goldens["k3_all"]
    out = tmp_path / "converted.weights.h5"
    convert.convert(gold.files["full"], out)
    assert_loads(gold, out)


def test_sequential_archive_to_legacy(goldens, tmp_path):
    gold = goldens["k3_seq"]
    out = tmp_path / "legacy.h5"
    convert.convert(gold.files["keras"], out)
    with h5py.File(out) as f:  # a Sequential's InputLayer is not one of its layers
        assert list(f.attrs["layer_names"]) == [layer.name for layer in gold.model.layers]
    assert_loads(gold, out)
    assert_loads(gold, out, by_name=True)


def test_bfloat16_to_legacy_is_noted(goldens, tmp_path):
    report = convert.convert(goldens["k3_bf16"].files["keras"], tmp_path / "bf16.h5")
    assert any("bfloat16" in note for note in report.notes)
    again = convert.load(tmp_path / "bf16.h5")
    original = convert.load(goldens["k3_bf16"].files["full"])
    for (_, mine), (_, theirs) in zip(again.tensors(), original.tensors(), strict=True):
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine.read(), theirs.read())


def test_keras_archive_to_legacy(goldens, tk, tmp_path):
    gold = goldens["k3_all"]
    out = tmp_path / "legacy.h5"
    convert.convert(gold.files["keras"], out)
    assert_loads(gold, out)
    assert_loads(gold, out, by_name=True)
    # Layer for layer, the weight lists Keras 3 itself writes to a legacy file.
    with h5py.File(out) as mine, h5py.File(gold.files["full"]) as theirs:
        for name in theirs["model_weights"].attrs["layer_names"]:
            assert list(mine[name].attrs["weight_names"]) == list(
                theirs["model_weights"][name].attrs["weight_names"]
            )
    # tf_keras loads it like Keras 3's own legacy file.
    reference = goldens["tk_all"].build()
    reference.load_weights(gold.files["full"])
    model = goldens["tk_all"].build()
    model.load_weights(out)
    np.testing.assert_array_equal(predict(model, gold.x), predict(reference, gold.x))


@pytest.mark.parametrize(
    "source,target,fragment",
    [("tk_seq:h5", "x.weights.h5", "structure"), ("k3_seq:weights", "x.h5", "layer order")],
)
def test_refuses_to_guess_the_other_layout(goldens, tmp_path, ckpt, source, target, fragment):
    name, kind = source.split(":")
    result = ckpt("convert", goldens[name].files[kind], tmp_path / target)
    assert_one_line_error(result, str(goldens[name].files[kind]), fragment, ".keras")
    assert "coming" not in result.err
    assert listing(tmp_path) == set()


# -- through flat graphs and back ----------------------------------------------------------------


def flat_copy(graph: Graph) -> Graph:
    """What a flat format keeps: paths and values, no Keras meta, no metadata."""
    return Graph.from_flat(
        {
            e.path: Tensor.from_array(np.array(e.tensor.read()))
            for e in graph.entries()
            if e.slot is None
        }
    )


@pytest.mark.parametrize("name", ["tk_seq", "tk_all"])
def test_legacy_through_a_flat_graph_is_refused(goldens, tmp_path, name):
    """A flat graph keeps paths, not Keras' layer and weight order: a .h5 is never written
    in path (or sorted) order."""
    out = tmp_path / "back.h5"
    with pytest.raises(UnsupportedError, match="does not record that order"):
        convert.save(flat_copy(convert.load(goldens[name].files["h5"])), out)
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("name", ["k3_sub", "k3_bf16", "k3_all"])
def test_keras3_through_a_flat_graph(goldens, tmp_path, name):
    gold = goldens[name]
    out = tmp_path / "back.weights.h5"
    convert.save(flat_copy(convert.load(gold.files["weights"])), out)
    mine = {k: v for k, v in h5_structure(out).items() if v[0] == "dataset"}
    theirs = {k: v for k, v in h5_structure(gold.files["weights"]).items() if v[0] == "dataset"}
    assert mine == theirs
    assert_loads(gold, out)


def _writable(fmt: str) -> bool:
    known = convert.core.registry.formats()
    return fmt in known and known[fmt].write is not None and known[fmt].read is not None


@pytest.mark.parametrize("flat", ["safetensors", "npz"])
def test_through_flat_formats_with_the_cli(goldens, tmp_path, ckpt, flat):
    if not _writable(flat):
        pytest.skip(f"{flat} is not available yet")
    gold = goldens["k3_all"]
    middle = tmp_path / f"k3_all.{flat}"
    back = tmp_path / "back.weights.h5"
    for src, dst in [(gold.files["weights"], middle), (middle, back)]:
        result = ckpt("convert", src, dst)
        assert result.code == 0, result.err
    original = convert.load(gold.files["weights"])
    again = convert.load(back)
    assert len(again) == len(original)
    values = {"/".join(p): t.read() for p, t in original.tensors()}
    for path, tensor in again.tensors():
        np.testing.assert_array_equal(tensor.read(), values["/".join(path)])
    assert_loads(gold, back)
    # A Keras 2 file through the same format has lost its order: refused, nothing written.
    middle = tmp_path / f"tk_seq.{flat}"
    assert ckpt("convert", goldens["tk_seq"].files["h5"], middle).code == 0
    before = listing(tmp_path)
    assert_one_line_error(
        ckpt("convert", middle, tmp_path / "tk_seq-back.h5"),
        str(middle),
        f"a {flat} file does not record that order",
    )
    assert listing(tmp_path) == before


# -- the writers' own rules ----------------------------------------------------------------------


def tf_shaped(layers: dict[str, dict[str, np.ndarray]]) -> Graph:
    """A graph shaped like a tf_keras model's TF object checkpoint (`save_weights`): one
    `layer_with_weights-N` object per layer, each variable with its TF full name."""
    graph = Graph(format="tf")
    graph.root.meta["tf_layout"] = "object"
    for i, (layer, weights) in enumerate(layers.items()):
        for name, value in weights.items():
            graph.add(
                (f"layer_with_weights-{i}", name),
                Tensor.from_array(value, {"tf_full_name": f"{layer}/{name}"}),
            )
    return graph


def test_always_writes_keras_version(tmp_path, tk):
    graph = tf_shaped({"dense": {"kernel": np.ones((2, 3), "f4"), "bias": np.zeros(3, "f4")}})
    out = tmp_path / "generic.h5"
    convert.save(graph, out)
    with h5py.File(out) as f:
        assert f.attrs["keras_version"] and f.attrs["backend"] == "tensorflow"
        assert list(f["dense"].attrs["weight_names"]) == ["dense/kernel:0", "dense/bias:0"]
    model = tk.Sequential([tk.Input((2,)), tk.layers.Dense(3, name="dense")])
    model.load_weights(out)
    np.testing.assert_array_equal(np.asarray(model.layers[0].kernel), np.ones((2, 3)))


def test_long_name_lists_are_split_like_keras(tmp_path, tk):
    from tf_keras.src.saving.legacy import hdf5_format

    names = [f"layer_{'x' * 200}_{i}" for i in range(400)]  # > 64 KiB of names
    graph = tf_shaped({n: {"w": np.full(1, i, "f4")} for i, n in enumerate(names)})
    out = tmp_path / "long.h5"
    convert.save(graph, out)
    with h5py.File(out) as f:
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
        assert hdf5_format.load_attributes_from_hdf5_group(f, "layer_names") == names
    again = convert.load(out)
    assert list(again.root.edges) == [*names]
    assert again.get((names[-1], "w")).read()[0] == len(names) - 1
    # Attribute for attribute what tf_keras writes for the same list.
    theirs = tmp_path / "theirs.h5"
    with h5py.File(theirs, "w") as f:
        hdf5_format.save_attributes_to_hdf5_group(
            f, "layer_names", [n.encode("utf8") for n in names]
        )
    assert h5_structure(theirs)[""][1]["layer_names0"] == h5_structure(out)[""][1]["layer_names0"]


def test_old_keras2_file(tmp_path, tk):
    """Keras 2.0-2.2 era files: fixed-length byte-string attributes, `dense_1` names."""
    rng = np.random.default_rng(11)
    kernel, bias = rng.standard_normal((4, 3)).astype("f4"), rng.standard_normal(3).astype("f4")
    old = tmp_path / "old.hdf5"
    with h5py.File(old, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"dense_1"], dtype="S7")
        f.attrs["backend"] = np.bytes_(b"tensorflow")
        f.attrs["keras_version"] = np.bytes_(b"2.1.6")
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        group = f.create_group("dense_1")
        group.attrs["weight_names"] = np.array([b"dense_1/kernel:0", b"dense_1/bias:0"])
        group["dense_1/kernel:0"] = kernel
        group["dense_1/bias:0"] = bias
    graph = convert.load(old)
    assert graph.format == "keras-h5" and graph.values["keras_version"] == "2.1.6"
    np.testing.assert_array_equal(graph.get(("dense_1", "kernel")).read(), kernel)
    out = tmp_path / "new.h5"
    convert.save(graph, out)
    for path in (old, out):
        inp = tk.Input((4,), name="input_1")
        model = tk.Model(inp, tk.layers.Dense(3, name="dense_1")(inp))
        model.load_weights(path)
        np.testing.assert_array_equal(np.asarray(model.layers[1].kernel), kernel)
        np.testing.assert_array_equal(np.asarray(model.layers[1].bias), bias)


def test_refuses_what_keras_cannot_store(tmp_path):
    graph = Graph.from_flat(
        {
            ("layers", "x", "vars", "0"): Tensor.from_array(
                np.zeros(2, dtype=convert.core.dtypes.from_name("float8_e4m3fn"))
            )
        }
    )
    with pytest.raises(UnsupportedError, match="float8_e4m3fn"):
        convert.save(graph, tmp_path / "x.weights.h5")
    assert listing(tmp_path) == set()
