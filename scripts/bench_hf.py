#!/usr/bin/env python3
"""A Hugging Face TF folder into a PyTorch folder, side by side with what transformers 4.57
(the last release that could) does, and with copying the same bytes.

Builds (once, in the work directory) a BERT-large-sized TF model folder: `config.json` and
a 1.34 GB `tf_model.h5` laid out as transformers 4.57's `TFBertModel.save_pretrained`
writes it (with h5py: tests/hf/tf_files.py). Then, taking turns, times as fresh processes:
- the floor: copying `tf_model.h5`;
- `ckpt convert FOLDER OUT --rules hf-tf`;
- transformers 4.57 in `.venv-hf4` (scripts/test makes it): `TFBertModel.from_pretrained`,
  `load_tf2_model_in_pytorch_model` into a `BertModel`, `save_pretrained` (its
  `from_pretrained(from_tf=True)` leaves the parameters on the meta device).
Checks that both outputs hold the same tensors, bit for bit, and prints wall time, ratios
and peak RSS (with the bound the issue sets: three times the largest tensor + 150 MiB).

    scripts/bench_hf.py [--work DIR] [--repeat N] [--layers 24]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench import COPY, Run, ckpt, measure_side_by_side, python  # noqa: E402

from tests.hf.tf_files import write_tf_h5  # noqa: E402

HF4 = ROOT / ".venv-hf4" / "bin" / "python"
MODEL = "tf_bert_model"
VOCAB, POSITIONS, WIDTH, INNER = 30522, 512, 1024, 4096
TRANSFORMERS_457 = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from transformers import BertConfig, BertModel, TFBertModel
from transformers.modeling_tf_pytorch_utils import load_tf2_model_in_pytorch_model
tf_model = TFBertModel.from_pretrained(sys.argv[1])
pt = load_tf2_model_in_pytorch_model(BertModel(BertConfig.from_pretrained(sys.argv[1])), tf_model)
pt.save_pretrained(sys.argv[2])
"""


def bert_weights(layers: int) -> dict[str, tuple[int, ...]]:
    """TFBertModel's weight names (below the model's scope) and shapes."""
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings/word_embeddings/weight": (VOCAB, WIDTH),
        "embeddings/token_type_embeddings/embeddings": (2, WIDTH),
        "embeddings/position_embeddings/embeddings": (POSITIONS, WIDTH),
        "embeddings/LayerNorm/gamma": (WIDTH,),
        "embeddings/LayerNorm/beta": (WIDTH,),
    }
    for i in range(layers):
        at = f"encoder/layer_._{i}"
        for part in ("self/query", "self/key", "self/value", "output/dense"):
            shapes[f"{at}/attention/{part}/kernel"] = (WIDTH, WIDTH)
            shapes[f"{at}/attention/{part}/bias"] = (WIDTH,)
        shapes[f"{at}/intermediate/dense/kernel"] = (WIDTH, INNER)
        shapes[f"{at}/intermediate/dense/bias"] = (INNER,)
        shapes[f"{at}/output/dense/kernel"] = (INNER, WIDTH)
        shapes[f"{at}/output/dense/bias"] = (WIDTH,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{at}/{norm}/gamma"] = shapes[f"{at}/{norm}/beta"] = (WIDTH,)
    shapes["pooler/dense/kernel"], shapes["pooler/dense/bias"] = (WIDTH, WIDTH), (WIDTH,)
    return shapes


def build(folder: Path, layers: int) -> None:
    if (folder / "tf_model.h5").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    weights = {
        f"{MODEL}/bert/{name}:0": rng.standard_normal(shape, dtype=np.float32) * 0.02
        for name, shape in bert_weights(layers).items()
    }
    write_tf_h5(folder / "tf_model.h5", {"bert": weights})
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOCAB,
        "hidden_size": WIDTH,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "intermediate_size": INNER,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def same_tensors(a: Path, b: Path) -> None:
    """Both folders' model.safetensors hold the same tensors (transformers 4.57 names the
    base model's keys without `bert.`; ckpt keeps TF's main layer, which 5.x loads too)."""
    from convert import api

    def tensors(folder: Path) -> dict[str, np.ndarray]:
        graph = api.load(folder / "model.safetensors")
        return {".".join(e.path).removeprefix("bert."): e.tensor.read() for e in graph.entries()}

    ours, theirs = tensors(a), tensors(b)
    assert sorted(ours) == sorted(theirs), sorted(set(ours) ^ set(theirs))[:5]
    for key, value in theirs.items():
        assert np.array_equal(ours[key], value), key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "hf")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=24)
    args = parser.parse_args()
    if not HF4.exists():
        raise SystemExit(f"{HF4} is missing: scripts/test makes it")
    folder = args.work / f"bert-{args.layers}-tf"
    if not (folder / "tf_model.h5").is_file():
        # (in a child: a child's peak RSS starts at its parent's, and the build holds 1.3 GB)
        command = f"import bench_hf, pathlib; bench_hf.build(pathlib.Path({str(folder)!r}), "
        command += f"{args.layers})"
        subprocess.run([sys.executable, "-c", command], check=True, cwd=ROOT / "scripts")
    size = (folder / "tf_model.h5").stat().st_size
    largest = VOCAB * WIDTH * 4
    ours_out, theirs_out = args.work / "ckpt-out", args.work / "hf457-out"
    floor, ours, theirs = measure_side_by_side(
        [
            (python(COPY, folder / "tf_model.h5", args.work / "copy.h5"), args.work / "copy.h5"),
            (ckpt("convert", folder, ours_out, "--rules", "hf-tf"), ours_out),
            ([str(HF4), "-c", TRANSFORMERS_457, str(folder), str(theirs_out)], theirs_out),
        ],
        args.repeat,
    )
    same_tensors(ours_out, theirs_out)
    bound = 3 * largest / 2**20 + 150
    print(f"BERT ({args.layers} layers), tf_model.h5 of {size / 1e9:.2f} GB, best of {args.repeat}")
    print(f"{'task':<40} {'wall s':>8} {'x floor':>8} {'peak MiB':>9}")
    rows: list[tuple[str, Run]] = [
        ("copy tf_model.h5 (the floor)", floor),
        ("ckpt convert --rules hf-tf", ours),
        ("transformers 4.57 from TF + save", theirs),
    ]
    for name, run in rows:
        ratio = run.seconds / floor.seconds
        print(f"{name:<40} {run.seconds:>8.2f} {ratio:>8.2f} {run.peak_mib:>9.0f}")
    print(f"ckpt is {theirs.seconds / ours.seconds:.1f}x faster than transformers 4.57")
    print(f"ckpt's peak RSS {ours.peak_mib:.0f} MiB; the bound (3x largest + 150) {bound:.0f} MiB")
    shutil.rmtree(ours_out, ignore_errors=True)
    shutil.rmtree(theirs_out, ignore_errors=True)


if __name__ == "__main__":
    main()
