"""Google's JAX ViT `.npz` <-> timm's VisionTransformer, with `--rules vit-jax-timm`.

timm's own loader (`timm.models.vision_transformer._load_weights`) is the reference. timm
needs torchvision, whose builds here need another torch than the suite's (see
pyproject.toml), so timm runs in its own environment, `.venv-timm`, which `scripts/test`
makes; this process writes the `.npz` and converts, that one loads and compares."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from convert import api

ROOT = Path(__file__).resolve().parents[2]
TIMM_PYTHON = ROOT / ".venv-timm" / "bin" / "python"
# (timm and torch run in .venv-timm, in a subprocess: no import here shows it)
pytestmark = pytest.mark.frameworks
D, HEADS, MLP, CLASSES, PATCH, IMAGE, DEPTH = 8, 2, 16, 3, 8, 16, 2

TIMM = f"""
import sys, numpy as np, torch
from timm.models.vision_transformer import VisionTransformer, _load_weights
def model():
    torch.manual_seed(0)
    return VisionTransformer(img_size={IMAGE}, patch_size={PATCH}, num_classes={CLASSES},
                             embed_dim={D}, depth={DEPTH}, num_heads={HEADS},
                             mlp_ratio={MLP / D}).eval()
x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, {IMAGE}, {IMAGE}))
                     .astype('float32'))
"""
REFERENCE = (
    TIMM
    + """
npz, out = sys.argv[1], sys.argv[2]
torch.save(model().state_dict(), f'{out}/skeleton.pt')   # a fresh model: the skeleton
reference = model()
_load_weights(reference, npz)                            # timm's own converter
torch.save(reference.state_dict(), f'{out}/reference.pt')
with torch.no_grad():
    np.save(f'{out}/reference.npy', reference(x).numpy())
"""
)
CHECK_TORCH = (
    TIMM
    + """
ported, reference = sys.argv[1], sys.argv[2]
m = model()
m.load_state_dict(torch.load(ported, weights_only=True), strict=True)
want = torch.load(reference, weights_only=True)
for key, value in m.state_dict().items():
    assert torch.equal(value, want[key]), key
with torch.no_grad():
    np.testing.assert_array_equal(m(x).numpy(), np.load(sys.argv[3]))
print('ok')
"""
)
CHECK_NPZ = (
    TIMM
    + """
m = model()
_load_weights(m, sys.argv[1])
want = torch.load(sys.argv[2], weights_only=True)
for key, value in m.state_dict().items():
    assert torch.equal(value, want[key]), key
print('ok')
"""
)


def google_vit(path: Path) -> None:
    """A Google-layout ViT checkpoint with random arrays, as vision_transformer saves it."""
    rng = np.random.default_rng(3)
    arrays = {
        "cls": (1, 1, D),
        "embedding/kernel": (PATCH, PATCH, 3, D),
        "embedding/bias": (D,),
        "Transformer/posembed_input/pos_embedding": (1, 1 + (IMAGE // PATCH) ** 2, D),
        "Transformer/encoder_norm/scale": (D,),
        "Transformer/encoder_norm/bias": (D,),
        "head/kernel": (D, CLASSES),
        "head/bias": (CLASSES,),
    }
    for i in range(DEPTH):
        block = f"Transformer/encoderblock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            arrays[f"{block}/{norm}/scale"] = arrays[f"{block}/{norm}/bias"] = (D,)
        attn = f"{block}/MultiHeadDotProductAttention_1"
        for part in ("query", "key", "value"):
            arrays[f"{attn}/{part}/kernel"] = (D, HEADS, D // HEADS)
            arrays[f"{attn}/{part}/bias"] = (HEADS, D // HEADS)
        arrays[f"{attn}/out/kernel"] = (HEADS, D // HEADS, D)
        arrays[f"{attn}/out/bias"] = (D,)
        arrays[f"{block}/MlpBlock_3/Dense_0/kernel"] = (D, MLP)
        arrays[f"{block}/MlpBlock_3/Dense_0/bias"] = (MLP,)
        arrays[f"{block}/MlpBlock_3/Dense_1/kernel"] = (MLP, D)
        arrays[f"{block}/MlpBlock_3/Dense_1/bias"] = (D,)
    np.savez(path, **{k: rng.normal(size=s).astype("float32") for k, s in arrays.items()})


def timm(script: str, *args) -> str:
    assert TIMM_PYTHON.exists(), "scripts/test makes .venv-timm (timm and its torchvision)"
    result = subprocess.run(
        [str(TIMM_PYTHON), "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    work = tmp_path_factory.mktemp("vit")
    google_vit(work / "vit.npz")
    timm(REFERENCE, work / "vit.npz", work)
    return work


def test_google_vit_into_timm_equals_timms_own_loader(vit, tmp_path):
    out = tmp_path / "vit.pt"
    report = api.convert(vit / "vit.npz", out, rules="vit-jax-timm", like=vit / "skeleton.pt")
    assert timm(CHECK_TORCH, out, vit / "reference.pt", vit / "reference.npy").strip() == "ok"
    assert not report.rules["unused"] and not report.rules["missing"]


def test_timm_back_to_google_layout(vit, tmp_path):
    out = tmp_path / "back.npz"
    api.convert(vit / "reference.pt", out, rules="vit-jax-timm", like=vit / "vit.npz")
    assert timm(CHECK_NPZ, out, vit / "reference.pt").strip() == "ok"
    source, back = np.load(vit / "vit.npz"), np.load(out)
    assert sorted(back.files) == sorted(source.files)
    for key in source.files:
        np.testing.assert_array_equal(back[key], source[key])
