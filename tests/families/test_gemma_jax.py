"""Gemma's JAX checkpoints <-> Hugging Face Gemma (`--rules gemma-jax-hf`).

A small random Gemma parameter tree in the documented layout of Google's JAX release
(`transformer/layer_N/attn/q_einsum/w` ...), saved by the real orbax-checkpoint. A forward
pass written here after Gemma's JAX model (einsums over those kernels, rotary halves,
`1 + scale` norms, the embedding scaled by sqrt(dim) and tied to the output) gives the
reference logits; transformers' `GemmaForCausalLM` with the converted weights must give
the same within 1e-4. Back to JAX, Orbax restores the original tree bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ocp = pytest.importorskip("orbax.checkpoint")
from safetensors.torch import load_file  # noqa: E402

from tests.conftest import assert_one_line_error  # noqa: E402

VOCAB, DIM, HEADS, HEAD_DIM, HIDDEN, LAYERS = 40, 32, 4, 8, 48, 2
TOKENS = np.array([[3, 17, 5, 39, 0, 22, 8, 11]])


def _tree(kv_heads: int) -> dict:
    rng = np.random.default_rng(kv_heads)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    tree: dict = {"embedder": {"input_embedding": w(VOCAB, DIM)}, "final_norm": {"scale": w(DIM)}}
    for i in range(LAYERS):
        if kv_heads == HEADS:
            attn = {"qkv_einsum": {"w": w(3, HEADS, DIM, HEAD_DIM)}}
        else:
            attn = {
                "q_einsum": {"w": w(HEADS, DIM, HEAD_DIM)},
                "kv_einsum": {"w": w(2, kv_heads, DIM, HEAD_DIM)},
            }
        attn["attn_vec_einsum"] = {"w": w(HEADS, HEAD_DIM, DIM)}
        tree[f"layer_{i}"] = {
            "pre_attention_norm": {"scale": w(DIM)},
            "pre_ffw_norm": {"scale": w(DIM)},
            "attn": attn,
            "mlp": {"gating_einsum": {"w": w(2, DIM, HIDDEN)}, "linear": {"w": w(HIDDEN, DIM)}},
        }
    return {"transformer": tree}


def _jax_logits(tree: dict, tokens: np.ndarray) -> np.ndarray:
    """Gemma's JAX forward pass over the documented kernels, in float64."""
    t = tree["transformer"]

    def get(*keys):
        node = t
        for k in keys:
            node = node[k]
        return np.asarray(node, np.float64)

    def norm(x, scale):
        return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * (1 + scale)

    def rope(x, positions):  # (batch, seq, heads, head_dim): the two halves rotate
        half = x.shape[-1] // 2
        timescale = 10000.0 ** (2 * np.arange(half) / x.shape[-1])
        angle = positions[None, :, None, None] / timescale
        first, second = x[..., :half], x[..., half:]
        sin, cos = np.sin(angle), np.cos(angle)
        return np.concatenate([first * cos - second * sin, second * cos + first * sin], -1)

    seq = tokens.shape[1]
    positions = np.arange(seq, dtype=np.float64)
    embed = get("embedder", "input_embedding")
    x = embed[tokens] * np.sqrt(DIM)
    for i in range(LAYERS):
        layer = f"layer_{i}"
        h = norm(x, get(layer, "pre_attention_norm", "scale"))
        attn = t[layer]["attn"]
        if "qkv_einsum" in attn:
            q, k, v = np.einsum("BTD,SNDH->SBTNH", h, get(layer, "attn", "qkv_einsum", "w"))
        else:
            q = np.einsum("BTD,NDH->BTNH", h, get(layer, "attn", "q_einsum", "w"))
            k, v = np.einsum("BSD,CKDH->CBSKH", h, get(layer, "attn", "kv_einsum", "w"))
        q, k = rope(q, positions) * HEAD_DIM**-0.5, rope(k, positions)
        repeat = HEADS // k.shape[2]
        k, v = np.repeat(k, repeat, axis=2), np.repeat(v, repeat, axis=2)
        scores = np.einsum("BTNH,BSNH->BTNS", q, k)
        scores = np.where(np.tril(np.ones((seq, seq), bool))[None, :, None, :], scores, -1e30)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        encoded = np.einsum("BTNS,BSNH->BTNH", probs, v)
        x = x + np.einsum("BTNH,NHD->BTD", encoded, get(layer, "attn", "attn_vec_einsum", "w"))
        h = norm(x, get(layer, "pre_ffw_norm", "scale"))
        gate, up = np.einsum("BTD,CDF->CBTF", h, get(layer, "mlp", "gating_einsum", "w"))
        gelu = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
        x = x + (gelu * up) @ get(layer, "mlp", "linear", "w")
    return norm(x, get("final_norm", "scale")) @ embed.T


def _config(kv_heads: int):
    return transformers.GemmaConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        head_dim=HEAD_DIM,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
    )


def _save(tree: dict, path) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path.absolute(), tree)
    checkpointer.wait_until_finished()


@pytest.mark.parametrize("kv_heads", [1, HEADS], ids=["q-and-kv-einsum", "qkv-einsum"])
def test_jax_gemma_to_hugging_face_computes_the_same_and_comes_back(tmp_path, ckpt, kv_heads):
    tree = _tree(kv_heads)
    jax_dir = tmp_path / "gemma-jax"
    _save(tree, jax_dir)
    out = tmp_path / "model.safetensors"
    result = ckpt("convert", jax_dir, out, "--rules", "gemma-jax-hf")
    assert result.code == 0, result.err
    model = transformers.GemmaForCausalLM(_config(kv_heads)).eval()
    model.load_state_dict(load_file(out), strict=False)  # (lm_head: tied to the embedding)
    missing = set(model.state_dict()) - set(load_file(out))
    assert missing <= {"lm_head.weight"}, missing
    with torch.no_grad():
        theirs = model(torch.from_numpy(TOKENS)).logits.double().numpy()
    np.testing.assert_allclose(theirs, _jax_logits(tree, TOKENS), atol=1e-4, rtol=0)
    back = tmp_path / "back"
    report = ckpt("convert", out, back, "--rules", "gemma-jax-hf", "--like", jax_dir)
    assert report.code == 0, report.err
    restored = ocp.StandardCheckpointer().restore(back.absolute())

    def flat(node, where=""):
        for key, value in node.items():
            path = f"{where}/{key}" if where else key
            yield from flat(value, path) if isinstance(value, dict) else [(path, value)]

    original = dict(flat(tree))
    again = dict(flat(restored))
    assert set(again) == set(original)
    for key, value in original.items():
        assert np.asarray(again[key]).tobytes() == value.tobytes(), key


def test_back_to_jax_needs_a_jax_checkpoint(tmp_path, ckpt):
    folder = tmp_path / "hf"
    transformers.GemmaForCausalLM(_config(1)).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["num_key_value_heads"] == 1
    out = tmp_path / "jax"
    result = ckpt("convert", folder, out, "--rules", "gemma-jax-hf", "--to", "orbax")
    assert_one_line_error(result, "--like", "(heads, dim, head_dim)")
    assert not out.exists()
