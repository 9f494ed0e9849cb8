"""Hugging Face TF and Flax model folders <-> PyTorch folders, with `--rules hf-tf` and
`--rules hf-flax`, for the architectures of `models.MODELS`.

The references come from transformers 4.57, the last release with TF and Flax classes
(`.venv-hf4`, see conftest.py): its TF and Flax models, saved; the PyTorch models its own
converters built from them; the TF and Flax models its `from_pt=True` built. Here the
suite's transformers 5 loads what ckpt wrote: with no key missing or unexpected, equal
bit for bit to 4.57's conversion, computing what the TF or Flax model computes. Back,
4.57's TF and Flax classes load what ckpt wrote from a PyTorch folder, every weight used,
equal to their `from_pt=True`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from convert import api
from convert.compare import diff
from tests.hf.conftest import hf4
from tests.hf.models import MODELS, SHARDED, TF_SAFETENSORS, inputs

# (transformers runs here; TF and Flax run in .venv-hf4, in a subprocess)
pytestmark = pytest.mark.frameworks
RULES = {"tf": "hf-tf", "flax": "hf-flax"}
CASES = [(name, kind) for name, spec in MODELS.items() for kind in RULES if spec.get(kind)]
# Where the PyTorch model of transformers 5 computes otherwise than 4.57's TF or Flax one
# from the same weights (4.57's own PyTorch model, from 4.57's own conversion, differs as
# much): the output is compared with that model's instead.
COMPUTES_OTHERWISE = {
    ("electra", "flax"): "Flax ELECTRA's discriminator head takes another GELU",
    ("swin", "tf"): "TF Swin's windows add in another order (5e-5 after two stages)",
}

# Where 4.57's own conversion puts other values than the TF or Flax model computes with
# (it warned, or said nothing, and went on): those weights are not compared with it; the
# output, with the TF or Flax model's, proves them.
V4_DIFFERS = {
    # 4.57 looks for Flax's `layer/layer_0` blocks at `layer.layer_0`: fresh values.
    ("resnet", "flax"): re.compile(r"\.layer\.\d+\."),
    # TF ALBERT computes with `predictions/decoder/bias`; 4.57 takes `predictions/bias`.
    ("albert", "tf"): re.compile(r"^predictions\.bias$"),
}
# The same the other way: 4.57's from_pt leaves Flax ResNet's `layer_0` blocks fresh (it
# puts torch's `layer.0` at `layer/0`, which the model has not), and TF ALBERT's
# `predictions/decoder/bias` (torch saves it tied to `predictions.bias`).
V4_DIFFERS_BACK = {
    ("resnet", "flax"): re.compile(r"/layer/layer_\d+/"),
    ("albert", "tf"): re.compile(r"^predictions/decoder/bias:0$"),
}


def _torch_model(folder: Path, name: str):
    import transformers

    transformers.logging.set_verbosity_error()
    cls = getattr(transformers, MODELS[name]["torch"])
    return cls.from_pretrained(folder, output_loading_info=True)


def _run(model, name: str) -> np.ndarray:
    import torch

    feed = {
        k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind == "i" else v)
        for k, v in inputs(MODELS[name]).items()
    }
    with torch.no_grad():
        return model.eval().float()(**feed)[0].numpy()


def _check_torch(out: Path, oracle: Path, name: str, kind: str) -> None:
    model, info = _torch_model(out, name)
    assert not any(info.values()), info
    reference, _ = _torch_model(oracle / name / f"from_{kind}", name)
    want = dict(reference.named_parameters())
    left = V4_DIFFERS.get((name, kind))
    for key, value in model.named_parameters():
        if left is not None and left.search(key):
            continue
        assert np.array_equal(value.float().detach().numpy(), want[key].float().detach().numpy()), (
            key
        )
    got = _run(model, name)
    if (name, kind) in COMPUTES_OTHERWISE:
        want = oracle / name / f"from_{kind}" / "out.npy"
    else:
        # (not 4.57's own PyTorch model: its from_tf loads parameters only, so its batch
        # norms and BART's final_logits_bias keep a fresh model's values)
        want = oracle / name / f"{kind}_out.npy"
    np.testing.assert_allclose(got, np.load(want), atol=1e-5)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_folder_to_torch(oracle: Path, tmp_path: Path, name: str, kind: str) -> None:
    source = oracle / name / kind
    out = tmp_path / "out"
    report = api.convert(source, out, rules=RULES[kind])
    others = sorted(p.name for p in source.iterdir() if p.suffix == ".json")
    assert sorted(p.name for p in out.iterdir()) == sorted([*others, "model.safetensors"])
    for other in others:  # config.json, generation_config.json: unchanged
        assert (out / other).read_bytes() == (source / other).read_bytes()
    rules = report.rules or {}
    assert not rules["unused"] and not rules["missing"], rules
    _check_torch(out, oracle, name, kind)


@pytest.mark.parametrize("name", SHARDED)
@pytest.mark.parametrize("kind", sorted(RULES))
def test_sharded_folders(oracle: Path, tmp_path: Path, name: str, kind: str) -> None:
    """A sharded TF or Flax set in, a sharded safetensors set out."""
    api.convert(
        oracle / name / f"{kind}-sharded",
        tmp_path / "out",
        rules=RULES[kind],
        max_shard_size=20_000,
    )
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _check_torch(tmp_path / "out", oracle, name, kind)
    # The sharded torch set back: the file transformers 4.57 wrote, bit for bit.
    api.convert(tmp_path / "out", tmp_path / "back", rules=RULES[kind], like=oracle / name / kind)
    written = {"tf": "tf_model.h5", "flax": "flax_model.msgpack"}[kind]
    same = diff(tmp_path / "back" / written, oracle / name / kind / written)
    assert same.equal, same.differences


@pytest.mark.parametrize(
    "source",
    [*(f"{n}/tf-safetensors" for n in TF_SAFETENSORS)]
    + [f"{n}/tf-safetensors-sharded" for n in TF_SAFETENSORS if n in SHARDED],
)
def test_tf_safetensors_folders(oracle: Path, tmp_path: Path, source: str) -> None:
    """The TF classes' `model.safetensors` (`format: tf`): read as TF, it gives what 4.57's
    conversion of the TF model gives."""
    report = api.convert(oracle / source, tmp_path / "out", rules="hf-tf")
    rules = report.rules or {}
    assert not rules["unused"] and not rules["missing"], rules
    _check_torch(tmp_path / "out", oracle, source.split("/")[0], "tf")


@pytest.fixture(scope="session")
def from_torch(oracle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every PyTorch folder converted to TF and Flax (`--like` the 4.57 model's file), then
    loaded by 4.57's classes in one run of the oracle: case → (weights, loading info)."""
    out = tmp_path_factory.mktemp("from-torch")
    jobs = []
    for name, kind in CASES:
        folder = out / f"{name}-{kind}"
        like = oracle / name / kind
        if (oracle / name / f"{kind}-f32").is_dir():  # (the torch model is float32)
            like = oracle / name / f"{kind}-f32"
        api.convert(oracle / name / "pt", folder, rules=RULES[kind], like=like)
        loaded = out / f"{name}-{kind}-loaded"
        loaded.mkdir()
        jobs.append(f"{kind}:{folder}:{name}:{loaded}")
    hf4("load-many", *jobs)
    return {
        (name, kind): (
            np.load(out / f"{name}-{kind}-loaded" / "weights.npz"),
            json.loads((out / f"{name}-{kind}-loaded" / "info.json").read_text()),
        )
        for name, kind in CASES
    }


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_torch_to_folder(oracle: Path, from_torch: dict, name: str, kind: str) -> None:
    weights, info = from_torch[(name, kind)]
    # (a TF file names layers without weights, dropout_37, by a count of the process that
    # saved it: loading the 4.57 file itself reports them as missing and unexpected too)
    for key in ("missing_keys", "unexpected_keys"):
        assert all(k.startswith("dropout_") for k in info[key]), info
    want = np.load(oracle / name / f"from_pt_{kind}.npz")
    left = V4_DIFFERS_BACK.get((name, kind))
    for key in weights.files:  # (every weight of the model: the loading info above)
        if left is None or not left.search(key):
            assert np.array_equal(weights[key], want[key]), key


def test_tied_weights_are_named_in_the_report(oracle: Path, tmp_path: Path, ckpt) -> None:
    """A masked-LM decoder tied to the word embeddings: with a skeleton listed by `ckpt ls
    --json` from a fresh model's state dict, the tie is named, the output holds the value
    once, and transformers 5 ties it back on loading."""
    import torch
    import transformers

    config = transformers.BertConfig(**MODELS["bert-mlm"]["kwargs"])
    torch.save(transformers.BertForMaskedLM(config).state_dict(), tmp_path / "fresh.pt")
    listed = ckpt("ls", "--json", tmp_path / "fresh.pt")
    assert listed.code == 0, listed.err
    (tmp_path / "fresh.json").write_text(listed.out)
    source = oracle / "bert-mlm" / "tf"
    report = api.convert(source, tmp_path / "out", rules="hf-tf", like=tmp_path / "fresh.json")
    tied = (report.rules or {})["tied"]
    assert "cls.predictions.decoder.weight = bert.embeddings.word_embeddings.weight" in tied
    assert not report.rules["missing"], report.rules
    _check_torch(tmp_path / "out", oracle, "bert-mlm", "tf")
