"""Golden torch.save files written at test time by torch 2.13, and comparison helpers."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
# dtypes whose bits numpy compares after a view (NaN != NaN, no numpy bfloat16 in torch)
# (complex as pairs of ints, matching numpy's view of a complex array)
BIT_VIEWS = {
    torch.bfloat16: torch.int16,
    torch.float8_e4m3fn: torch.int8,
    torch.float8_e5m2: torch.int8,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.complex64: torch.int32,
    torch.complex128: torch.int64,
}


class Net(nn.Module):
    """Conv2d + BatchNorm + Linear on images; Embedding + LSTM + Linear on tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.emb = nn.Embedding(10, 6)
        self.lstm = nn.LSTM(6, 7, batch_first=True)
        self.head = nn.Linear(7, 10)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor):
        y = self.fc(torch.relu(self.bn(self.conv(image))).flatten(1))
        h, _ = self.lstm(self.emb(tokens))
        return y, self.head(h[:, -1])


class TiedNet(nn.Module):
    """A language-model head tied to its embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.proj = nn.Linear(4, 4)
        self.lm_head = nn.Linear(4, 11, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.proj(self.embed(tokens))))


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 10, (2, 5), generator=gen)


def trained_net() -> tuple[Net, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    image, tokens = inputs()
    for _ in range(2):  # BatchNorm statistics and Adam state become non-trivial
        y, z = net(image, tokens)
        (y.sum() + z.sum()).backward()
        opt.step()
        opt.zero_grad()
    return net.eval(), opt


def every_dtype() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(3, 5, generator=gen) * 100
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-8])
    base[0] = specials
    out: dict[str, torch.Tensor] = {}
    for dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, *FLOAT8):
        out[str(dtype)[6:]] = base.to(dtype)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        info = torch.iinfo(dtype)
        out[str(dtype)[6:]] = torch.randint(
            info.min, info.max, (3, 5), generator=gen, dtype=torch.int64
        ).to(dtype)
    out["bool"] = torch.rand(3, 5, generator=gen) > 0.5
    out["complex64"] = torch.complex(base, -base).to(torch.complex64)
    out["complex128"] = torch.complex(base.double(), base.double() * 3)
    for bits in (16, 32, 64):  # no legacy storage class: UntypedStorage + _rebuild_tensor_v3
        out[f"uint{bits}"] = torch.randint(0, 2**15, (3, 5), generator=gen).to(
            getattr(torch, f"uint{bits}")
        )
    return out


def views() -> dict[str, torch.Tensor]:
    base = torch.arange(24, dtype=torch.float32)
    grid = torch.arange(30, dtype=torch.float64).reshape(5, 6)
    bf = torch.randn(4, 6).to(torch.bfloat16)
    return {
        "base": base,
        "same": base,  # the same tensor object twice: tied
        "offset": base[5:],
        "slice": base[2:7],
        "reshaped": base.view(2, 3, 4),
        "transposed": grid.t(),
        "strided": grid[:, ::2],
        "column": grid[:, 3],
        "permuted": base.view(2, 3, 4).permute(2, 0, 1),
        "bf16_transposed": bf.t(),
        "expanded": torch.tensor([7.0]).expand(3, 4),
        "scalar": torch.tensor(3.5),
        "int_scalar": torch.tensor(-4, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "empty_inner": torch.zeros(2, 0, dtype=torch.int32),
        "empty_view": base[24:],
    }


def weird_keys() -> dict[str, torch.Tensor]:
    keys = ["a", "a.b", "a.b.c", "x..y", ".lead", "trail.", "", "ünï.cødé", "n.0.weight"]
    return OrderedDict((k, torch.full((2,), float(i))) for i, k in enumerate(keys))


@dataclass
class Golden:
    dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)  # what was saved, in memory

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


def make_golden(directory: Path) -> Golden:
    g = Golden(directory)
    net, opt = trained_net()
    tied = TiedNet()
    checkpoint = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "best_loss": 0.25,
        "name": "run-1",
        "history": [1.5, 0.5],
        "flags": {"amp": False, "tag": None},
    }
    big = {"big": torch.randn(1024, 1024), "small": torch.ones(3)}
    objects = {
        "model": net.state_dict(),
        "dtypes": every_dtype(),
        "views": views(),
        "tied": tied.state_dict(),
        "checkpoint": checkpoint,
        "weird": weird_keys(),
        "big": big,
    }
    for name, obj in objects.items():
        g.files[name] = g.dir / f"{name}.pt"
        torch.save(obj, g.files[name])
    for name in ("model", "views", "checkpoint", "big"):
        g.files[f"{name}_legacy"] = g.dir / f"{name}_legacy.pt"
        torch.save(objects[name], g.files[f"{name}_legacy"], _use_new_zipfile_serialization=False)
        objects[f"{name}_legacy"] = objects[name]
    # torch 2.13 cannot load its own legacy files holding UntypedStorage dtypes (it asks the
    # storage class for .dtype); the file is still valid and is compared to memory instead.
    g.files["dtypes_legacy"] = g.dir / "dtypes_legacy.pt"
    torch.save(objects["dtypes"], g.files["dtypes_legacy"], _use_new_zipfile_serialization=False)
    objects["dtypes_legacy"] = objects["dtypes"]
    g.objects = objects
    g.objects["net"], g.objects["tied_net"] = net, tied
    return g


def bits(value: torch.Tensor | np.ndarray) -> np.ndarray:
    """A numpy array whose equality is bit equality (NaNs, -0.0, bfloat16, float8)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().contiguous()
        if value.dtype in BIT_VIEWS:
            return value.view(BIT_VIEWS[value.dtype]).numpy()
        if value.dtype in (torch.uint16, torch.uint32, torch.uint64):
            return value.view(
                {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}[
                    value.dtype
                ]
            ).numpy()
        return value.numpy()
    value = np.ascontiguousarray(value)
    if value.dtype.kind in "fcV" or value.dtype.name.startswith(("bfloat", "float8")):
        size = value.dtype.itemsize // (2 if value.dtype.kind == "c" else 1)
        return value.view(f"int{size * 8}")
    if value.dtype.kind == "u" and value.dtype.itemsize > 1:
        return value.view(f"int{value.dtype.itemsize * 8}")
    return value


def assert_same_tensor(ours: np.ndarray, theirs: torch.Tensor, key: str = "") -> None:
    torch_name = str(theirs.dtype)[6:]
    assert ours.dtype.name == torch_name, (key, ours.dtype, theirs.dtype)
    assert ours.shape == tuple(theirs.shape), (key, ours.shape, theirs.shape)
    np.testing.assert_array_equal(bits(ours), bits(theirs), err_msg=key)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Tensors of a (nested) saved object by dotted key, as `ckpt` names them."""
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = (
        obj.items()
        if isinstance(obj, dict)
        else enumerate(obj)
        if isinstance(obj, (list, tuple))
        else ()
    )
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, torch.Tensor):
            out[name] = value
        else:
            out.update(flatten(value, name))
    return out


def assert_same_object(ours: Any, theirs: Any, where: str = "") -> None:
    """Recursive equality of loaded objects: containers, types, plain values, tensor bits."""
    assert type(ours) is type(theirs), (where, type(ours), type(theirs))
    if isinstance(theirs, torch.Tensor):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, where
        np.testing.assert_array_equal(bits(ours), bits(theirs), err_msg=where)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), (where, list(ours), list(theirs))
        for key in theirs:
            assert_same_object(ours[key], theirs[key], f"{where}.{key}")
        assert getattr(ours, "_metadata", None) == getattr(theirs, "_metadata", None), where
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_object(a, b, f"{where}.{i}")
    else:
        assert ours == theirs, (where, ours, theirs)
