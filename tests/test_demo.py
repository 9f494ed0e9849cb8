"""`scripts/demo`, run once per session with this environment's `python -m convert`, and its
outputs loaded by the real frameworks: the ported `.pt` into the torch model the example
describes (outputs equal the Keras model's, rebuilt from the committed `.keras` by Keras),
the migrated guide checkpoint through `tf.train.Checkpoint(model=net)`, and the batch's
safetensors through the safetensors library."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GUIDE = EXAMPLES / "guide" / "easy_checkpoint"


@pytest.fixture(scope="session")
def examples() -> ModuleType:
    """examples/make_examples.py: the model definitions the examples were written from."""
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The demo's own commands, into a folder of the session's."""
    out = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "DEMO_CKPT": f"{sys.executable} -m convert",
        "DEMO_OUT": str(out),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_port_loads_into_torch_and_computes_what_keras_computes(demo, examples):
    import keras
    import torch

    model = examples.torch_model()
    model.load_state_dict(torch.load(demo / "model.pt", weights_only=True), strict=True)
    model.eval()
    reference = keras.saving.load_model(EXAMPLES / "keras-torch" / "model.keras")
    x = np.random.default_rng(5).normal(size=(4, *examples.INPUT_SHAPE)).astype("float32")
    want = np.asarray(reference(x, training=False))
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(want).max() > 0.1  # outputs of a size an error would show in
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_the_skeleton_lists_the_torch_models_fresh_state_dict(examples):
    """The committed skeleton still describes the model the suite builds: torch's own
    `state_dict()`, key for key, in its order."""
    state = examples.torch_model().state_dict()
    committed = json.loads((EXAMPLES / "keras-torch" / "fresh.pt.json").read_text())
    assert [row["key"] for row in committed] == list(state)
    for row in committed:
        tensor = state[row["key"]]
        assert row["shape"] == list(tensor.shape), row
        assert row["dtype"] == str(tensor.dtype).removeprefix("torch."), row
        assert row["nbytes"] == tensor.numel() * tensor.element_size(), row


def test_the_migrated_guide_checkpoint_restores_through_tf_train_checkpoint(demo, examples):
    import tensorflow as tf

    net = examples.guide_net()
    x = np.arange(6, dtype="float32")[:, None]
    net(x)
    tf.train.Checkpoint(model=net).restore(str(demo / "migrated")).assert_consumed()
    original = examples.guide_net()
    original.load_weights(str(GUIDE))  # tf_keras' own reading of the example
    original(x)
    for got, want in zip(net.weights, original.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.abs(np.asarray(original.l1.kernel)).max() > 0
    np.testing.assert_array_equal(np.asarray(net(x)), np.asarray(original(x)))
    # Before the migration, the same restore binds nothing.
    fresh = examples.guide_net()
    fresh(x)
    with pytest.raises(AssertionError):
        tf.train.Checkpoint(model=fresh).restore(str(GUIDE)).assert_existing_objects_matched()


def _tf_values(prefix: Path) -> dict[str, np.ndarray]:
    """A TF object checkpoint's variables, keyed as the README says a safetensors output
    keys them: `net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE` -> `net.l1.kernel`, a slot under
    its optimizer: `optimizer.m.net.l1.kernel`."""
    import tensorflow as tf

    reader, out = tf.train.load_checkpoint(str(prefix)), {}
    for name, _ in tf.train.list_variables(str(prefix)):
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        path = name.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")
        variable, _, slot = path.partition("/.OPTIMIZER_SLOT/")
        key = f"{slot}/{variable}" if slot else variable
        out[key.replace("/", ".")] = reader.get_tensor(name)
    return out


def _keras_values(archive: Path) -> dict[str, np.ndarray]:
    """A `.keras` archive's weights, read by h5py from the archive's `model.weights.h5`
    (`layers/conv2d/vars/0` -> `layers.conv2d.vars.0`)."""
    import h5py

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(archive) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        f.visititems(
            lambda name, item: (
                out.__setitem__(name.replace("/", "."), item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return out


@pytest.mark.parametrize(
    "output, values",
    [
        ("regress.safetensors", lambda: _tf_values(EXAMPLES / "regress" / "ckpt-1")),
        ("easy_checkpoint.safetensors", lambda: _tf_values(GUIDE)),
        ("model.safetensors", lambda: _keras_values(EXAMPLES / "keras-torch" / "model.keras")),
    ],
)
def test_the_batch_outputs_load_with_the_sources_values(demo, output, values):
    from safetensors.numpy import load_file

    loaded, want = load_file(demo / "batch" / output), values()
    assert sorted(loaded) == sorted(want)
    for key, value in want.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_the_guide_files_self_edge_is_listed_as_an_alias_of_the_root():
    """tf_keras' `save_weights` gives the root an edge `root` to itself (node 0, as TF's
    object graph says); `ckpt ls --tree` names it an alias, not a folder."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(
        tf.train.load_checkpoint(str(GUIDE)).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    )
    assert {(c.local_name, c.node_id) for c in graph.nodes[0].children} >= {("root", 0)}
    tree = run_cli("ls", "--tree", GUIDE)
    assert tree.code == 0, tree.err
    assert "  root -> alias of (root)" in tree.out.splitlines()
    assert "root/" not in tree.out


def test_the_examples_are_small():
    sizes = {
        p.relative_to(EXAMPLES): p.stat().st_size
        for p in EXAMPLES.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sizes and max(sizes.values()) < 64 * 1024, sizes
    assert sum(sizes.values()) < 128 * 1024, sizes
