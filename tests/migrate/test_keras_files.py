"""A compiled and fitted tf_keras functional model's files, migrated and restored by
tf_keras: save_weights under a Checkpoint edge, a Checkpoint re-rooted at its model, a
legacy .h5 in tf_keras' object layout, and TF-format weights into a Keras 3 model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import assert_one_line_error, listing, run_cli

from .conftest import functional, predict
from .helpers import assert_listed_like_tf, migrate


def _optimizer_values(optimizer) -> list[np.ndarray]:
    return [np.asarray(v) for v in optimizer.variables]


def test_save_weights_under_a_checkpoint_edge(trained, tmp_path):
    """`--under model`: Checkpoint(model=fresh) restores the weights and, once the fresh
    optimizer is built over the same variables, every slot and the iteration count."""
    out = tmp_path / "out"
    migrate(trained.files["save_weights"], out, "--under", "model")
    fresh = functional()
    fresh.compile(tf_keras.optimizers.Adam(), "mse")
    status = tf.train.Checkpoint(model=fresh).restore(str(out))
    status.assert_existing_objects_matched()
    np.testing.assert_array_equal(predict(fresh, trained.x), trained.y)
    fresh.optimizer.build(fresh.trainable_variables)
    want = _optimizer_values(trained.model.optimizer)
    got = _optimizer_values(fresh.optimizer)
    assert len(got) == len(want) == 13
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert_listed_like_tf(out)


def test_no_optimizer_is_consumed_whole(trained, tmp_path):
    out = tmp_path / "out"
    migrate(trained.files["save_weights"], out, "--under", "model", "--no-optimizer")
    fresh = functional()
    tf.train.Checkpoint(model=fresh).restore(str(out)).assert_consumed()
    np.testing.assert_array_equal(predict(fresh, trained.x), trained.y)
    assert not [k for k, _ in tf.train.list_variables(str(out)) if "optimizer" in k]
    assert_listed_like_tf(out)


def test_checkpoint_rerooted_at_its_model(trained, tmp_path):
    """`tf.train.Checkpoint(model=m).save()` → `--root model` → `load_weights`."""
    out = tmp_path / "out"
    migrate(trained.files["checkpoint"], out, "--root", "model")
    fresh = functional()
    fresh.compile(tf_keras.optimizers.Adam(), "mse")
    fresh.load_weights(str(out)).assert_existing_objects_matched()
    np.testing.assert_array_equal(predict(fresh, trained.x), trained.y)
    names = [k for k, _ in tf.train.list_variables(str(out))]
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" not in names
    assert_listed_like_tf(out)


@pytest.mark.parametrize("under", [None, "model"])
@pytest.mark.parametrize("h5", ["h5", "full_h5"])
def test_legacy_h5_to_object_checkpoint(trained, tmp_path, under, h5):
    """A `save_weights("w.h5")` or full-model `.h5` in tf_keras' own object layout:
    load_weights restores it, and with `--under model` so does Checkpoint(model=)."""
    out = tmp_path / "out"
    migrate(trained.files[h5], out, *(("--under", under) if under else ()))
    fresh = functional()
    if under:
        tf.train.Checkpoint(model=fresh).restore(str(out)).assert_consumed()
    else:
        fresh.load_weights(str(out)).assert_existing_objects_matched()
    np.testing.assert_array_equal(predict(fresh, trained.x), trained.y)
    assert_listed_like_tf(out)


def test_python_api_takes_a_name_without_extension_as_a_tf_prefix(trained, tmp_path):
    """`convert.migrate` of a `.h5` into `out` writes the TF checkpoint `ckpt migrate` does
    (byte for byte), not a `.h5` named `out`."""
    import convert

    report = convert.migrate(trained.files["h5"], tmp_path / "api" / "out")
    assert report.target_format == "tf"
    migrate(trained.files["h5"], tmp_path / "cli" / "out")
    for name in ("out.index", "out.data-00000-of-00001"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    fresh = functional()
    fresh.load_weights(str(tmp_path / "api" / "out")).assert_existing_objects_matched()
    np.testing.assert_array_equal(predict(fresh, trained.x), trained.y)


def test_save_weights_into_keras3(trained, tmp_path):
    """TF-format save_weights → a Keras 3 `.weights.h5` with `--like`: Keras 3 loads it and
    predicts what tf_keras did."""
    import keras

    skeleton = tmp_path / "fresh.weights.h5"
    functional(keras).save_weights(skeleton)
    out = tmp_path / "out.weights.h5"
    migrate(trained.files["save_weights"], out, "--like", skeleton, "--no-optimizer")
    target = functional(keras)
    target.load_weights(out)
    np.testing.assert_allclose(predict(target, trained.x), trained.y, rtol=1e-5, atol=1e-5)


def test_keras_optimizer_state_follows_a_picked_layer(trained, tmp_path):
    """`--pick model/layer_with_weights-2=zy --pick model/optimizer=opt` of a tf_keras
    optimizer (`_variables/N` lists): the Dense layer's Adam state alone, renumbered, which
    an optimizer built over that layer's variables restores."""
    out = tmp_path / "out"
    migrate(
        trained.files["checkpoint"],
        out,
        "--pick",
        "model/layer_with_weights-2=zy",
        "--pick",
        "model/optimizer=opt",
    )
    dense = tf_keras.layers.Dense(3)
    dense.build((None, 32))
    opt = tf_keras.optimizers.Adam()
    status = tf.train.Checkpoint(zy=dense, opt=opt).restore(str(out))
    opt.build(dense.trainable_variables)
    status.assert_consumed()
    want = _optimizer_values(trained.model.optimizer)
    got = _optimizer_values(opt)
    assert len(got) == 5
    for g, w in zip(got, [want[0], *want[9:]], strict=True):  # iterations, then the Dense's
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(
        np.asarray(dense.kernel), np.asarray(trained.model.layers[-1].kernel)
    )
    assert_listed_like_tf(out)


def test_python_api(trained, tmp_path):
    import convert

    report = convert.migrate(
        trained.files["checkpoint"], tmp_path / "out", root="model", no_optimizer=True
    )
    assert isinstance(report, convert.Report) and report.target_format == "tf"
    done = report.migration
    assert {
        "from": "model/layer_with_weights-0/kernel",
        "to": "layer_with_weights-0/kernel",
    } in done["moved"]
    assert {"path": "save_counter", "why": "outside --root"} in done["dropped"]
    assert any(d["why"] == "optimizer state (--no-optimizer)" for d in done["dropped"])
    fresh = functional()
    fresh.load_weights(str(tmp_path / "out")).assert_consumed()
    np.testing.assert_array_equal(predict(fresh, trained.x), trained.y)


def test_report_dry_run_and_json(trained, tmp_path):
    import json

    out = tmp_path / "out"
    dry = run_cli(
        "migrate",
        trained.files["checkpoint"],
        out,
        "--pick",
        "model/layer_with_weights-2=zy",
        "--dry-run",
    )
    assert dry.code == 0, dry.err
    assert listing(tmp_path) == set()
    assert "move   model/layer_with_weights-2/kernel -> zy/kernel" in dry.out
    assert "drop   model/layer_with_weights-0/kernel  (not picked)" in dry.out
    assert "add    save_counter" not in dry.out  # the source's own counter is kept
    result = run_cli("migrate", trained.files["save_weights"], out, "--under", "model", "--json")
    assert result.code == 0, result.err
    done = json.loads(result.out)["migration"]
    assert {
        "from": "layer_with_weights-0/kernel",
        "to": "model/layer_with_weights-0/kernel",
    } in done["moved"]
    assert {"path": "model/layer-1", "of": "model/layer_with_weights-0"} in done["aliased"]
    assert done["added"] == ["save_counter"] and done["dropped"] == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--pick", "model/nothing"], "model has no 'nothing'"),
        (["--root", "model/layer_with_weights-0/kernel"], "is a variable, not an object"),
        (
            ["--pick", "model/layer_with_weights-0=a", "--pick", "model/layer_with_weights-1=a"],
            "two picks go to 'a'",
        ),
        (
            ["--pick", "model/layer_with_weights-0=a", "--pick", "model/layer_with_weights-1=a/b"],
            "pick 'a/b' lands inside pick 'a'",
        ),
        (["--pick", "model="], "gives no NEWPATH"),
    ],
)
def test_bad_requests(trained, tmp_path, args, fragment):
    result = run_cli("migrate", trained.files["checkpoint"], tmp_path / "out", *args)
    assert_one_line_error(result, fragment)
    assert listing(tmp_path) == set()


def test_keras3_optimizer_state_follows_a_picked_layer(tmp_path):
    """Keras 3's optimizer lists run beside `_trainable_variables` (aliases of the model's
    variables): picking one Dense and the optimizer keeps that Dense's Adam state and the
    optimizer's own (iterations, learning rate), which an optimizer built over the Dense
    restores."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(), "mse")
    rng = np.random.default_rng(4)
    model.fit(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)), epochs=2, verbose=0)
    source = tf.train.Checkpoint(model=model, opt=model.optimizer).write(str(tmp_path / "k3"))
    out = tmp_path / "out"
    migrate(source, out, "--pick", "model/_functional/_operations/2=zy", "--pick", "opt")
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    opt = keras.optimizers.Adam()
    status = tf.train.Checkpoint(zy=dense, opt=opt).restore(str(out))
    opt.build([dense.kernel, dense.bias])
    status.assert_consumed()
    want = _optimizer_values(model.optimizer)
    got = _optimizer_values(opt)
    assert len(got) == 6
    for g, w in zip(got, want[:2] + want[6:], strict=True):  # its own two, then the Dense's
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(np.asarray(dense.kernel), np.asarray(model.layers[1].kernel))
    assert_listed_like_tf(out)


@pytest.mark.parametrize("under", [None, "model"])
def test_subclassed_h5_takes_its_layout_from_like(tmp_path, under):
    """A subclassed model's `.h5` does not say its TF layout (attribute names): with the
    model's own fresh TF-format save_weights as `--like`, load_weights (or, `--under model`,
    Checkpoint(model=)) restores it."""
    from tests.matrix import models

    source = models.keras_model(tf_keras, "subclassed", seed=3)
    source.save_weights(str(tmp_path / "s.h5"))
    models.keras_model(tf_keras, "subclassed", seed=9).save_weights(str(tmp_path / "skel"))
    out = tmp_path / "out"
    migrate(
        tmp_path / "s.h5", out, "--like", tmp_path / "skel", *(("--under", under) if under else ())
    )
    target = models.keras_model(tf_keras, "subclassed", seed=11)
    if under:
        tf.train.Checkpoint(model=target).restore(str(out)).assert_consumed()
    else:
        target.load_weights(str(out)).assert_existing_objects_matched()
    for got, want in zip(target.weights, source.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert_listed_like_tf(out)


def test_root_picks_one_of_two_models_for_a_legacy_h5(tmp_path):
    """A checkpoint of two models is refused for a `.h5` (which holds one) with a message
    naming `--root PATH`; `--root disc` gives the one tf_keras' load_weights restores."""
    gen, disc = functional(), functional()
    prefix = tf.train.Checkpoint(gen=gen, disc=disc).write(str(tmp_path / "two"))
    assert_one_line_error(run_cli("migrate", prefix, tmp_path / "a.h5"), "--root PATH")
    migrate(prefix, tmp_path / "disc.h5", "--root", "disc")
    fresh = functional()
    fresh.load_weights(str(tmp_path / "disc.h5"))
    x = np.random.default_rng(5).normal(size=(2, 6, 6, 1)).astype("float32")
    np.testing.assert_array_equal(predict(fresh, x), predict(disc, x))
