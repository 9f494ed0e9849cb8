#!/usr/bin/env python3
"""A Hugging Face Llama folder into a KerasHub `Llama3Backbone` weights file and back,
side by side with what KerasHub itself does, and with copying the same bytes.

Builds (once, in the work directory) a Llama-shaped folder of about 1.3 GB of float32:
`config.json` and a `model.safetensors` written by the safetensors library (a
`LlamaForCausalLM`'s keys: 24 layers of width 1024, 16 query and 4 key/value heads, a
vocabulary of 32000, the head untied), and a fresh backbone's `save_weights` file (the
skeleton). Then, taking turns, times as fresh processes:
- the floor: copying `model.safetensors`;
- `ckpt convert FOLDER llama.weights.h5 --rules llama-hf-kerashub --like skeleton`;
- KerasHub: `Backbone.from_preset(FOLDER)` then `save_weights` (TensorFlow backend);
- back: `ckpt convert llama.weights.h5 back/model.safetensors --rules llama-hf-kerashub`;
- KerasHub's exporter: `load_weights` into a backbone, then `export_backbone`.
Checks that ckpt's file holds KerasHub's weights bit for bit and that the way back gives
the original tensors, and prints wall time, ratios and peak RSS (with the bound: three
times the largest tensor + 150 MiB).

    scripts/bench_llm.py [--work DIR] [--repeat N] [--layers 24]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench import COPY, Run, ckpt, measure_side_by_side, python  # noqa: E402

VOCAB, WIDTH, INNER, HEADS, KV_HEADS = 32000, 1024, 2816, 16, 4
RULES = "llama-hf-kerashub"

BUILD = """
import json, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import save_file
folder, layers = Path(sys.argv[1]), int(sys.argv[2])
vocab, width, inner, heads, kv = map(int, sys.argv[3:8])
head_dim = width // heads
rng = np.random.default_rng(0)
def w(*shape):
    return rng.standard_normal(shape, dtype=np.float32) * 0.02
tensors = {"model.embed_tokens.weight": w(vocab, width), "lm_head.weight": w(vocab, width),
           "model.norm.weight": 1 + w(width)}
for i in range(layers):
    at = f"model.layers.{i}"
    tensors[f"{at}.input_layernorm.weight"] = 1 + w(width)
    tensors[f"{at}.post_attention_layernorm.weight"] = 1 + w(width)
    tensors[f"{at}.self_attn.q_proj.weight"] = w(heads * head_dim, width)
    tensors[f"{at}.self_attn.k_proj.weight"] = w(kv * head_dim, width)
    tensors[f"{at}.self_attn.v_proj.weight"] = w(kv * head_dim, width)
    tensors[f"{at}.self_attn.o_proj.weight"] = w(width, heads * head_dim)
    tensors[f"{at}.mlp.gate_proj.weight"] = w(inner, width)
    tensors[f"{at}.mlp.up_proj.weight"] = w(inner, width)
    tensors[f"{at}.mlp.down_proj.weight"] = w(width, inner)
folder.mkdir(parents=True, exist_ok=True)
save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
(folder / "config.json").write_text(json.dumps({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
    "hidden_size": width, "intermediate_size": inner, "num_hidden_layers": layers,
    "num_attention_heads": heads, "num_key_value_heads": kv, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "float32",
}, indent=2))
"""
KERAS_HEAD = """
import os, sys
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras_hub
"""
SKELETON = (
    KERAS_HEAD
    + """
import json
config = json.load(open(os.path.join(sys.argv[1], "config.json")))
backbone = keras_hub.models.Llama3Backbone(
    vocabulary_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
    num_query_heads=config["num_attention_heads"], hidden_dim=config["hidden_size"],
    intermediate_dim=config["intermediate_size"],
    num_key_value_heads=config["num_key_value_heads"], tie_word_embeddings=False)
backbone.save_weights(sys.argv[2])
"""
)
KERASHUB_IN = (
    KERAS_HEAD
    + """
keras_hub.models.Backbone.from_preset(sys.argv[1]).save_weights(sys.argv[2])
"""
)
KERASHUB_OUT = (
    KERAS_HEAD
    + """
from keras_hub.src.utils.transformers.export.hf_exporter import export_backbone
backbone = keras_hub.models.Backbone.from_preset(sys.argv[1], load_weights=False)
backbone.load_weights(sys.argv[2])
export_backbone(backbone, sys.argv[3], include_lm_head=True)
"""
)


def build(folder: Path, layers: int) -> Path:
    """The model folder and the skeleton beside it (each in a child: a child's peak RSS
    starts at its parent's, and the build holds the whole model)."""
    skeleton = folder.parent / f"{folder.name}-skeleton.weights.h5"
    if not (folder / "model.safetensors").is_file():
        sizes = [str(n) for n in (VOCAB, WIDTH, INNER, HEADS, KV_HEADS)]
        subprocess.run(python(BUILD, folder, str(layers), *sizes), check=True)
    if not skeleton.is_file():
        subprocess.run(python(SKELETON, folder, skeleton), check=True)
    return skeleton


def check(ours: Path, theirs: Path, back: Path, folder: Path) -> None:
    from convert import diff

    into = diff(ours, theirs)
    assert into.equal, into.summary()
    again = diff(back / "model.safetensors", folder / "model.safetensors")
    assert again.equal, again.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "llm")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=24)
    args = parser.parse_args()
    folder = args.work / f"llama-{args.layers}"
    skeleton = build(folder, args.layers)
    size = (folder / "model.safetensors").stat().st_size
    largest = VOCAB * WIDTH * 4
    ours, theirs = args.work / "ckpt.weights.h5", args.work / "kerashub.weights.h5"
    back, exported = args.work / "ckpt-back", args.work / "kerashub-back"
    back.mkdir(exist_ok=True)
    (back / "config.json").write_text((folder / "config.json").read_text())
    ckpt_back = ckpt("convert", ours, back / "model.safetensors", "--rules", RULES)
    copy = python(COPY, folder / "model.safetensors", args.work / "copy.safetensors")
    # (ckpt's own file first: the way back reads it)
    runs = measure_side_by_side(
        [
            (copy, args.work / "copy.safetensors"),
            (ckpt("convert", folder, ours, "--rules", RULES, "--like", skeleton), ours),
            (python(KERASHUB_IN, folder, theirs), theirs),
            (ckpt_back, back / "model.safetensors"),
            (python(KERASHUB_OUT, folder, ours, exported), exported),
        ],
        args.repeat,
    )
    check(ours, theirs, back, folder)
    floor, into, kh_into, out, kh_out = runs
    bound = 3 * largest / 2**20 + 150
    print(f"Llama ({args.layers} layers), model.safetensors of {size / 1e9:.2f} GB, "
          f"best of {args.repeat}")  # fmt: skip
    print(f"{'task':<44} {'wall s':>8} {'x floor':>8} {'peak MiB':>9}")
    rows: list[tuple[str, Run]] = [
        ("copy model.safetensors (the floor)", floor),
        ("ckpt convert HF -> KerasHub (--like)", into),
        ("KerasHub from_preset + save_weights", kh_into),
        ("ckpt convert KerasHub -> HF", out),
        ("KerasHub load_weights + export_backbone", kh_out),
    ]
    for name, run in rows:
        ratio = run.seconds / floor.seconds
        print(f"{name:<44} {run.seconds:>8.2f} {ratio:>8.2f} {run.peak_mib:>9.0f}")
    print(f"into KerasHub: ckpt is {kh_into.seconds / into.seconds:.1f}x faster than KerasHub")
    print(f"back to HF: ckpt is {kh_out.seconds / out.seconds:.1f}x faster than KerasHub")
    print(f"ckpt's peak RSS {max(into.peak_mib, out.peak_mib):.0f} MiB; the bound "
          f"(3x largest + 150) {bound:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
