"""The reference side of the Hugging Face TF/Flax tests: runs in `.venv-hf4` (transformers
4.57, the last release with TF and Flax classes), never in the suite's own environment.

    oracle.py make OUT NAME...      small random models, saved as transformers 4.57 saves them
    oracle.py load-tf DIR NAME OUT  4.57's TF class loads DIR (a folder ckpt wrote)
    oracle.py load-flax DIR NAME OUT
    oracle.py load-many KIND:DIR:NAME:OUT...

`make` writes, for each model NAME (a row of `models.MODELS`), under OUT/NAME:
- `tf/`, `flax/`: `save_pretrained` of the TF and the Flax class (the classes it has), each
  with random weights (biases and norms too, so a swapped pair shows);
- `tf-sharded/`, `flax-sharded/`: the same weights saved with a small `max_shard_size`;
- `tf-safetensors/` (and `tf-safetensors-sharded/` where sharded too): the TF model saved
  with `safe_serialization=True`;
- `flax-f32/`: for a model whose Flax weights are bfloat16, a float32 one (a skeleton);
- `pt/`: `save_pretrained` of 4.57's PyTorch class with random weights (the reverse's source);
- `from_tf/`, `from_flax/`: the PyTorch model 4.57's own converters build from the TF and
  the Flax model (`load_tf2_model_in_pytorch_model`, `load_flax_weights_in_pytorch_model`),
  saved, with its output on `inputs.npz` (`out.npy`);
- `tf_out.npy`, `flax_out.npy`: the models' first output on `inputs.npz`;
- `from_pt_tf.npz`, `from_pt_flax.npz`: the TF and Flax weights 4.57's `from_pt=True` builds
  from `pt/`, by weight name.
`load-tf` / `load-flax` write the loaded model's weights by name and what loading reported.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import BF16, MODELS, SHARDED, TF_SAFETENSORS, inputs  # noqa: E402


def _transformers():
    import jax.numpy as jnp

    clip = jnp.clip
    if "a_max" not in inspect.signature(clip).parameters:
        # (jax 0.8 dropped clip's a_min/a_max, which 4.57's Flax T5 still passes)
        def old_clip(x, a_min=None, a_max=None, **kw):
            return clip(x, kw.pop("min", a_min), kw.pop("max", a_max), **kw)

        jnp.clip = old_clip
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _randomize_tf(model, rng) -> None:
    for w in model.weights:
        value = rng.normal(size=w.shape).astype(w.dtype.as_numpy_dtype) * 0.2
        if "moving_variance" in w.name:
            value = np.abs(value) + 0.5
        w.assign(value)


def _randomize_flax(params, rng, dtype=None):
    from flax.traverse_util import flatten_dict, unflatten_dict

    flat = flatten_dict(params)
    out = {}
    for key, value in flat.items():
        new = rng.normal(size=value.shape).astype(np.float32) * 0.2
        if key[-1] == "var":
            new = np.abs(new) + 0.5
        out[key] = new.astype(dtype or value.dtype)
    return unflatten_dict(out)


def _first_output(out) -> np.ndarray:
    value = out[0] if isinstance(out, tuple | list) else next(iter(out.values()))
    return np.asarray(value, dtype=np.float32)


def _reference(model, feed: dict[str, np.ndarray], folder: Path) -> None:
    """What 4.57's converter built: its parameters (the buffers it leaves as a fresh model
    has them are listed apart) and its first output."""
    import torch

    model.float().save_pretrained(folder)
    buffers = sorted(name for name, _ in model.named_buffers())
    (folder / "buffers.json").write_text(json.dumps(buffers))
    x = {
        k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind == "i" else v)
        for k, v in feed.items()
    }
    with torch.no_grad():
        np.save(folder / "out.npy", _first_output(model(**x)))


def make(out: Path, names: list[str]) -> None:
    import torch

    t = _transformers()
    for name in names:
        spec = MODELS[name]
        here = out / name
        here.mkdir(parents=True, exist_ok=True)
        config = getattr(t, spec["config"])(**spec["kwargs"])
        feed = inputs(spec)
        np.savez(here / "inputs.npz", **feed)
        torch_class = getattr(t, spec["torch"])
        if spec.get("tf"):
            tf_model = getattr(t, "TF" + spec["torch"])(config)
            tf_model(tf_model.dummy_inputs, training=False)
            _randomize_tf(tf_model, np.random.default_rng(1))
            np.save(here / "tf_out.npy", _first_output(tf_model(**feed, training=False)))
            tf_model.save_pretrained(here / "tf")
            if name in SHARDED:
                tf_model.save_pretrained(here / "tf-sharded", max_shard_size="20kB")
            if name in TF_SAFETENSORS:
                tf_model.save_pretrained(here / "tf-safetensors", safe_serialization=True)
            if name in TF_SAFETENSORS and name in SHARDED:
                tf_model.save_pretrained(
                    here / "tf-safetensors-sharded", safe_serialization=True, max_shard_size="20kB"
                )
            from transformers.modeling_tf_pytorch_utils import load_tf2_model_in_pytorch_model

            pt = load_tf2_model_in_pytorch_model(torch_class(config).eval(), tf_model)
            _reference(pt, feed, here / "from_tf")
        if spec.get("flax"):
            flax_class = getattr(t, "Flax" + spec["torch"])
            # (_do_init=False: the random weights are made here, from the shape tree, with
            # no compiled init to throw away)
            flax_model = flax_class(config, seed=0, _do_init=False)
            shapes = flax_model.params_shape_tree
            dtype = None
            if name in BF16:
                import ml_dtypes

                dtype = np.dtype(ml_dtypes.bfloat16)
                f32 = _randomize_flax(shapes, np.random.default_rng(2))
                flax_model.save_pretrained(here / "flax-f32", params=f32)  # (a skeleton)
            params = _randomize_flax(shapes, np.random.default_rng(2), dtype)
            np.save(here / "flax_out.npy", _first_output(flax_model(**feed, params=params)))
            flax_model.save_pretrained(here / "flax", params=params)
            if name in SHARDED:
                flax_model.save_pretrained(
                    here / "flax-sharded", params=params, max_shard_size="20kB"
                )
            from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

            pt = load_flax_weights_in_pytorch_model(torch_class(config).eval(), params)
            _reference(pt, feed, here / "from_flax")
        torch.manual_seed(3)
        pt_model = torch_class(config).eval()
        with torch.no_grad():
            for p in pt_model.parameters():
                p.normal_(0, 0.2)
        pt_model.save_pretrained(here / "pt")
        if spec.get("tf"):
            tf_from_pt = getattr(t, "TF" + spec["torch"]).from_pretrained(here / "pt", from_pt=True)
            np.savez(here / "from_pt_tf.npz", **_tf_weights(tf_from_pt))
        if spec.get("flax"):
            from flax.traverse_util import flatten_dict
            from transformers.modeling_flax_pytorch_utils import (
                load_pytorch_checkpoint_in_flax_state_dict,
            )

            # (what from_pretrained(from_pt=True) runs, given the model's shape tree for the
            # random weights it would make first: a compiled init per model saved. Weights
            # it cannot place are absent here, where from_pretrained keeps random ones.)
            stand_in = SimpleNamespace(
                params=shapes, base_model_prefix=flax_class.base_model_prefix
            )
            from_pt = load_pytorch_checkpoint_in_flax_state_dict(
                stand_in, str(here / "pt" / "model.safetensors"), is_sharded=False
            )
            flat = flatten_dict(from_pt, sep="/")
            np.savez(here / "from_pt_flax.npz", **{k: np.asarray(v) for k, v in flat.items()})
        (here / "done").write_text("ok")


def _tf_weights(model) -> dict[str, np.ndarray]:
    """A TF model's weights by name without the model's own scope (a second model of a
    class in one process is `tf_bert_model_1`)."""
    return {w.name.partition("/")[2] or w.name: w.numpy() for w in model.weights}


def load(kind: str, folder: Path, name: str, out: Path) -> None:
    """4.57's TF or Flax class loads `folder`: its weights by name, and what loading said
    was missing or unexpected (Flax's `from_pretrained` only logs it: the file's keys are
    compared with a fresh model's)."""
    t = _transformers()
    spec = MODELS[name]
    if kind == "tf":
        model, info = getattr(t, "TF" + spec["torch"]).from_pretrained(
            folder, output_loading_info=True
        )
        weights = _tf_weights(model)
    else:
        from flax.serialization import msgpack_restore
        from flax.traverse_util import flatten_dict

        flax_class = getattr(t, "Flax" + spec["torch"])
        # (_do_init=False: no random weights made and thrown away; the model's expected
        # weights are its shape tree, traced without running)
        model, params = flax_class.from_pretrained(folder, _do_init=False)
        weights = {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}
        fresh = set(flatten_dict(model.params_shape_tree, sep="/"))
        saved = set(
            flatten_dict(msgpack_restore((folder / "flax_model.msgpack").read_bytes()), sep="/")
        )
        info = {"missing_keys": fresh - saved, "unexpected_keys": saved - fresh}
    np.savez(out / "weights.npz", **weights)
    (out / "info.json").write_text(json.dumps({k: sorted(map(str, v)) for k, v in info.items()}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "make":
        make(Path(args[0]), args[1:])
    elif command in ("load-tf", "load-flax"):
        load(command[5:], Path(args[0]), args[1], Path(args[2]))
    elif command == "load-many":  # KIND:DIR:NAME:OUT ...
        for job in args:
            kind, folder, name, out = job.split(":")
            load(kind, Path(folder), name, Path(out))
    else:
        raise SystemExit(f"unknown command {command}")
