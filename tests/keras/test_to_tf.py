"""tf_keras `.h5` files into TensorFlow checkpoints, loaded back by a fresh tf_keras model.

- `--tf-names` (name-based): each value under the variable's own name, as the `.h5` records
  it (`dense_2/kernel`, not the layer group's `block/dense_2/kernel`).
- object-based: tf_keras' own layout (`layer_with_weights-N/kernel`, `layer-N`), the graph
  its `save_weights(prefix)` writes for the same model; refused where a `.h5` does not say it.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.matrix import models

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def h5_files(tmp_path_factory):
    import tf_keras

    root = tmp_path_factory.mktemp("h5_to_tf")
    out = {}
    for kind in ("sequential", "nested", "subclassed"):
        model = models.keras_model(tf_keras, kind, seed=3)
        model.save_weights(str(root / f"{kind}.h5"))
        out[kind] = (root / f"{kind}.h5", [np.asarray(w) for w in model.weights])
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _assert_restored(kind, out, weights, load):
    import tf_keras

    fresh = models.keras_model(tf_keras, kind, seed=99)
    load(fresh, str(out)).assert_existing_objects_matched()
    assert len(fresh.weights) == len(weights)
    for got, want in zip(fresh.weights, weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=got.name)


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
def test_h5_to_name_based_checkpoint_keeps_variable_names(h5_files, kind, tmp_path, ckpt):
    path, weights = h5_files[kind]
    out = tmp_path / "ckpt"
    assert ckpt("convert", path, out, "--to", "tf", "--tf-names").code == 0
    names = {name for name, _ in tf.train.list_variables(str(out))}
    import h5py

    with h5py.File(path) as f:
        recorded = {
            _text(w).rsplit(":", 1)[0]
            for layer in f.attrs["layer_names"]
            for w in f[_text(layer)].attrs["weight_names"]
        }
    assert names == recorded
    _assert_restored(kind, out, weights, lambda m, p: m.load_weights(p))


def _object_graph(prefix):
    """Each node by its first breadth-first path: child names (without tf_keras' empty
    `axis` list wrappers) and attributes (name, full name, checkpoint key)."""
    from convert.formats.tf import protos

    reader = tf.train.load_checkpoint(str(prefix))
    proto = protos.TrackableObjectGraph()
    proto.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    paths, queue, out = {0: ()}, [0], {}
    while queue:
        node_id = queue.pop(0)
        node = proto.nodes[node_id]
        for ref in node.children:
            if ref.node_id not in paths:
                paths[ref.node_id] = paths[node_id] + (ref.local_name,)
                queue.append(ref.node_id)
        empty = {
            ref.local_name
            for ref in node.children
            if not proto.nodes[ref.node_id].children and not proto.nodes[ref.node_id].attributes
        }
        out[paths[node_id]] = (
            sorted(
                (ref.local_name, paths.get(ref.node_id))
                for ref in node.children
                if ref.local_name not in empty or ref.local_name.startswith("layer")
            ),
            sorted((a.name, a.full_name, a.checkpoint_key) for a in node.attributes),
        )
    return {path: value for path, value in out.items() if path[-1:] != ("axis",)}


@pytest.mark.parametrize(
    ("kind", "full"), [("sequential", False), ("sequential", True), ("nested", True)]
)
def test_h5_to_object_checkpoint_is_tf_keras_layout(kind, full, tmp_path, ckpt):
    """The object graph tf_keras' own save_weights(prefix) writes for the same model, and
    a fresh model's load_weights restores every weight."""
    import tf_keras

    model = models.keras_model(tf_keras, kind, seed=4)
    source = tmp_path / "m.h5"
    (model.save if full else model.save_weights)(str(source))
    model.save_weights(str(tmp_path / "theirs" / "w"))
    assert ckpt("convert", source, tmp_path / "ours" / "w", "--to", "tf").code == 0
    assert _object_graph(tmp_path / "ours" / "w") == _object_graph(tmp_path / "theirs" / "w")
    _assert_restored(
        kind,
        tmp_path / "ours" / "w",
        [np.asarray(w) for w in model.weights],
        lambda m, p: m.load_weights(p),
    )


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("nested", "layer 'block' is a nested model"),
        ("subclassed", "subclassed model"),
    ],
)
def test_h5_to_object_checkpoint_refuses_unknown_layouts(h5_files, kind, fragment, tmp_path, ckpt):
    from tests.conftest import assert_one_line_error

    result = ckpt("convert", h5_files[kind][0], tmp_path / "out", "--to", "tf")
    assert_one_line_error(result, fragment)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["sequential"])
def test_h5_written_from_a_tf_keras_checkpoint_goes_back_to_tf(tmp_path, ckpt, kind):
    """TF checkpoint -> .h5 (in Keras' order, under the variables' own names) -> TF again:
    tf_keras' own layout, which a fresh model's load_weights restores."""
    import tf_keras

    model = models.keras_model(tf_keras, kind, seed=6)
    model.save_weights(str(tmp_path / "w"))
    assert ckpt("convert", tmp_path / "w", tmp_path / "x.h5").code == 0
    assert ckpt("convert", tmp_path / "x.h5", tmp_path / "back" / "w", "--to", "tf").code == 0
    _assert_restored(
        kind,
        tmp_path / "back" / "w",
        [np.asarray(w) for w in model.weights],
        lambda m, p: m.load_weights(p),
    )


def test_a_nested_model_checkpoint_is_refused_for_h5(tmp_path, ckpt):
    """Its .h5 order depends on trainable flags the checkpoint does not record."""
    import tf_keras

    models.keras_model(tf_keras, "nested", seed=6).save_weights(str(tmp_path / "w"))
    result = ckpt("convert", tmp_path / "w", tmp_path / "x.h5")
    assert result.code == 2 and not (tmp_path / "x.h5").exists()
