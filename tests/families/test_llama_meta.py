"""Meta's original Llama folders (`consolidated.NN.pth` + `params.json`) <-> Hugging Face
Llama (`--rules llama-meta-hf`).

A small random Llama built by the suite's transformers is laid out as Meta releases it:
its query and key rows put back into Meta's interleaved rotary order (the documented
inverse of the Hugging Face conversion's permutation), and each tensor cut among the
model-parallel ranks as fairscale cuts it (column-parallel by rows, row-parallel by
columns, the embedding by columns in Llama 2 and by rows in Llama 3, norms copied).
A forward pass written here after Meta's reference model (rotary embeddings on complex
pairs) proves the folder is Meta's layout: its logits equal transformers'.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from convert import api  # noqa: E402
from tests.conftest import assert_one_line_error, listing  # noqa: E402

HEADS, KV_HEADS, DIM, HIDDEN, LAYERS, VOCAB = 4, 2, 32, 48, 2, 40
THETA, EPS = 10000.0, 1e-5
# Meta's names of one layer's tensors: HF name, and the axis fairscale splits (None: copied)
LAYER = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rms_norm_eps=EPS,
        rope_theta=THETA,
        tie_word_embeddings=False,
    )
    torch.manual_seed(5)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # (random norms too: a scale of ones hides a mix-up)
            p.copy_(torch.randn_like(p) * 0.3)
    folder = tmp_path_factory.mktemp("llama") / "hf"
    model.save_pretrained(folder)
    return model, folder


def _interleaved(w, heads: int):
    """Hugging Face's query/key rows (each head's two halves) in Meta's order (pairs)."""
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _meta_tensors(model, version: int) -> dict[str, tuple]:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors = {
        "tok_embeddings.weight": (sd["model.embed_tokens.weight"], 0 if version == 3 else 1),
        "norm.weight": (sd["model.norm.weight"], None),
        "output.weight": (sd["lm_head.weight"], 0),
    }
    for i in range(LAYERS):
        for meta, (name, axis) in LAYER.items():
            w = sd[f"model.layers.{i}.{name}"]
            if meta == "attention.wq.weight":
                w = _interleaved(w, HEADS)
            elif meta == "attention.wk.weight":
                w = _interleaved(w, KV_HEADS)
            tensors[f"layers.{i}.{meta}"] = (w, axis)
    return tensors


def _write_meta(model, folder: Path, ranks: int, version: int, rope_freqs: bool = False) -> Path:
    folder.mkdir(parents=True)
    tensors = _meta_tensors(model, version)
    for r in range(ranks):
        part = {
            k: (w.clone() if axis is None else w.chunk(ranks, axis)[r].clone())
            for k, (w, axis) in tensors.items()
        }
        if rope_freqs:  # (Llama 1 kept the rotary frequencies as a buffer)
            part["rope.freqs"] = 1.0 / THETA ** (torch.arange(0, DIM // HEADS, 2) / (DIM // HEADS))
        torch.save(part, folder / f"consolidated.{r:02d}.pth")
    params = {"dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": KV_HEADS}
    params |= {"vocab_size": VOCAB if version == 3 else -1, "norm_eps": EPS, "rope_theta": THETA}
    (folder / "params.json").write_text(json.dumps(params))
    return folder


def _meta_forward(folder: Path, tokens):
    """Logits as Meta's reference Llama computes them, from the folder's ranks joined."""
    ranks = [torch.load(f, weights_only=True) for f in sorted(folder.glob("consolidated.*.pth"))]
    params = json.loads((folder / "params.json").read_text())
    dim, heads = params["dim"], params["n_heads"]
    kv_heads, eps = params.get("n_kv_heads", heads), params["norm_eps"]
    head_dim = dim // heads

    def w(key: str):
        parts = [r[key] for r in ranks]
        if parts[0].ndim == 1:
            return parts[0]
        if key == "tok_embeddings.weight":
            return torch.cat(parts, dim=0 if parts[0].shape[1] == dim else 1)
        split_columns = key.endswith(("wo.weight", "w2.weight"))
        return torch.cat(parts, dim=1 if split_columns else 0)

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    seq = tokens.shape[1]
    freqs = 1.0 / (params["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    cis = torch.polar(torch.ones(seq, head_dim // 2), torch.outer(torch.arange(seq).float(), freqs))

    def rotary(x):  # consecutive pairs are the complex numbers rotated
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * cis[None, :, None, :]).flatten(3)

    h = w("tok_embeddings.weight")[tokens]
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        x = norm(h, w(p + "attention_norm.weight"))
        q = (x @ w(p + "attention.wq.weight").T).view(1, seq, heads, head_dim)
        k = (x @ w(p + "attention.wk.weight").T).view(1, seq, kv_heads, head_dim)
        v = (x @ w(p + "attention.wv.weight").T).view(1, seq, kv_heads, head_dim)
        q, k = rotary(q), rotary(k)
        k = k.repeat_interleave(heads // kv_heads, dim=2)
        v = v.repeat_interleave(heads // kv_heads, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(2, 3)) / head_dim**0.5 + mask
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, seq, dim)
        h = h + attended @ w(p + "attention.wo.weight").T
        x = norm(h, w(p + "ffn_norm.weight"))
        gate = torch.nn.functional.silu(x @ w(p + "feed_forward.w1.weight").T)
        h = h + (gate * (x @ w(p + "feed_forward.w3.weight").T)) @ w(p + "feed_forward.w2.weight").T
    return norm(h, w("norm.weight")) @ w("output.weight").T


TOKENS = [[3, 17, 5, 39, 0, 22, 8, 11]]


@pytest.mark.parametrize(
    ("version", "ranks"),
    [(3, 2), (2, 2), (3, 1), (1, 2)],
    ids=["llama3-2ranks", "llama2-2ranks", "1rank", "llama1-rope-freqs"],
)
def test_meta_folder_to_hugging_face_bit_for_bit_and_same_logits(
    hf, tmp_path, ckpt, version, ranks
):
    model, folder = hf
    meta = _write_meta(model, tmp_path / "meta", ranks, version, rope_freqs=version == 1)
    tokens = torch.tensor(TOKENS)
    with torch.no_grad():
        theirs = model(tokens).logits
        assert torch.allclose(_meta_forward(meta, tokens), theirs, atol=1e-4), "not Meta's layout"
    out = tmp_path / "model.safetensors"
    result = ckpt("convert", meta, out, "--rules", "llama-meta-hf")
    assert result.code == 0, result.err
    mine, original = load_file(out), load_file(folder / "model.safetensors")
    assert set(mine) == set(original)
    for key, value in original.items():
        assert torch.equal(mine[key], value), key
    ported = transformers.LlamaForCausalLM(model.config).eval()
    ported.load_state_dict(mine, strict=True)
    with torch.no_grad():
        assert torch.equal(ported(tokens).logits, theirs)
    if version == 1:
        assert "left out by the rules: 0.rope.freqs, 1.rope.freqs" in result.err


def test_hugging_face_back_into_meta_folder_with_like(hf, tmp_path):
    """HF → Meta `--like` a Meta folder of the model: each rank's file, bit for bit."""
    model, folder = hf
    meta = _write_meta(model, tmp_path / "meta", 2, 2)
    out = tmp_path / "back"
    report = api.convert(folder / "model.safetensors", out, rules="llama-meta-hf", like=meta)
    assert not report.rules["unused"] and not report.rules["missing"], report.rules
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in meta.iterdir())
    assert (out / "params.json").read_text() == (meta / "params.json").read_text()
    for rank in ("consolidated.00.pth", "consolidated.01.pth"):
        mine = torch.load(out / rank, weights_only=True)
        theirs = torch.load(meta / rank, weights_only=True)
        assert list(mine) == list(theirs)
        for key, value in theirs.items():
            assert torch.equal(mine[key], value), (rank, key)


def test_back_into_meta_needs_a_meta_folder(hf, tmp_path, ckpt):
    _, folder = hf
    out = tmp_path / "back"
    result = ckpt(
        "convert",
        folder / "model.safetensors",
        out,
        "--rules",
        "llama-meta-hf",
        "--to",
        "consolidated",
    )
    assert_one_line_error(result, "--like", "model-parallel ranks")
    assert not out.exists()


def test_a_missing_rank_is_refused(hf, tmp_path, ckpt):
    model, _ = hf
    meta = _write_meta(model, tmp_path / "meta", 3, 3)
    (meta / "checklist.chk").write_text(
        "".join(
            f"0123abcd  {n}\n"
            for n in (
                "consolidated.00.pth",
                "consolidated.01.pth",
                "consolidated.02.pth",
                "params.json",
            )
        )
    )
    (meta / "consolidated.02.pth").unlink()
    before = listing(tmp_path)
    result = ckpt("convert", meta, tmp_path / "out.safetensors", "--rules", "llama-meta-hf")
    assert_one_line_error(result, "checklist.chk", "consolidated.02.pth", "missing")
    (meta / "checklist.chk").unlink()
    shutil.move(meta / "consolidated.01.pth", meta / "consolidated.02.pth")
    result = ckpt("convert", meta, tmp_path / "out.safetensors", "--rules", "llama-meta-hf")
    assert_one_line_error(result, "no consolidated.01.pth", "a rank is missing")
    assert listing(tmp_path) == before - {"meta/checklist.chk", "meta/consolidated.01.pth"} | {
        "meta/consolidated.02.pth"
    }


def test_ranks_that_differ_are_refused(hf, tmp_path, ckpt):
    model, _ = hf
    meta = _write_meta(model, tmp_path / "meta", 2, 3)
    part = torch.load(meta / "consolidated.01.pth", weights_only=True)
    del part["layers.1.attention.wo.weight"]
    torch.save(part, meta / "consolidated.01.pth")
    result = ckpt("ls", meta)
    assert_one_line_error(result, "consolidated.01.pth", "rank 1 holds other tensors than rank 0")


def test_the_head_count_comes_from_params_json_and_must_agree(hf, tmp_path, ckpt):
    model, folder = hf
    meta = _write_meta(model, tmp_path / "meta", 2, 3)
    params = json.loads((meta / "params.json").read_text())
    out = tmp_path / "out.safetensors"
    del params["n_heads"], params["n_kv_heads"]
    (meta / "params.json").write_text(json.dumps(params))
    result = ckpt("convert", meta, out, "--rules", "llama-meta-hf")
    assert_one_line_error(result, "wq", "needs the model's heads", "params.json n_heads")
    (meta / "params.json").write_text(json.dumps({**params, "n_heads": 8, "n_kv_heads": 2}))
    result = ckpt(
        "convert", meta, out, "--rules", "llama-meta-hf", "--like", folder / "model.safetensors"
    )
    assert_one_line_error(result, "disagree on the model's heads", "says 8", "says 4")
    assert not out.exists()


def test_one_rank_file_is_refused_for_its_folder(hf, tmp_path, ckpt):
    """A rank is a torch file too: given alone, the rules would read it as Hugging Face's."""
    model, _ = hf
    meta = _write_meta(model, tmp_path / "meta", 2, 3)
    out = tmp_path / "out.safetensors"
    result = ckpt("convert", meta / "consolidated.00.pth", out, "--rules", "llama-meta-hf")
    assert_one_line_error(result, "is one file of the consolidated folder", "give the folder")
    assert not out.exists()


def test_a_meta_folder_rewrites_to_itself_and_only_ranks_write_one(hf, tmp_path, ckpt):
    model, folder = hf
    meta = _write_meta(model, tmp_path / "meta", 2, 3)
    again = tmp_path / "again"
    result = ckpt("convert", meta, again, "--to", "consolidated")
    assert result.code == 0, result.err
    assert (again / "params.json").read_bytes() == (meta / "params.json").read_bytes()
    assert ckpt("diff", meta, again).code == 0
    for rank in ("consolidated.00.pth", "consolidated.01.pth"):
        mine, theirs = (torch.load(d / rank, weights_only=True) for d in (again, meta))
        assert list(mine) == list(theirs)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    out = tmp_path / "flat"
    result = ckpt("convert", folder / "model.safetensors", out, "--to", "consolidated")
    assert_one_line_error(result, "written from ranks 0, 1, ... at the top level")
    assert not out.exists()
