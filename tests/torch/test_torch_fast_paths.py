"""The reader's fast paths do exactly what the slow ones do: whole tensor runs of opcodes
against the opcode loop (same objects, same memo, same errors), the struct-parsed central
directory against zipfile's, and key splitting against split_keys."""

from __future__ import annotations

import io
import random
import re
import zipfile
from collections import OrderedDict
from typing import Any

import pytest
import torch

import convert
from convert.core.errors import ConvertError, FormatError
from convert.core.graph import Node
from convert.core.tensor import Tensor
from convert.formats.torch import records, unpickler
from convert.formats.torch.opcodes import MARK
from convert.frameworks import flatkeys as keys_module

from .torch_golden import assert_same_tensor


def many_tensors() -> OrderedDict:
    """Enough tensors that memo slots pass 255 (LONG_BINPUT), of every shape form."""
    gen = torch.Generator().manual_seed(3)
    state: OrderedDict = OrderedDict()
    for i in range(40):
        state[f"layer.{i}.weight"] = torch.randn(3, 4, generator=gen)
        state[f"layer.{i}.bias"] = torch.randn(4, generator=gen)
    state["scalar"] = torch.tensor(2.5)
    state["conv"] = torch.randn(2, 3, 2, 2, 1, generator=gen)  # 5 dims: MARK ... TUPLE
    state["long"] = torch.arange(300, dtype=torch.int64)  # BININT2 sizes
    state["big"] = torch.zeros(70000, dtype=torch.bool)  # BININT numel
    state["tied"] = state["layer.0.weight"]  # the same tensor again: a BINGET of its slot
    state["view"] = state["long"][5:].view(5, 59)  # a view: same storage, an offset
    state["param"] = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    state["grad"] = torch.ones(2, requires_grad=True)
    return state


@pytest.fixture(scope="module")
def pickles(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("runs")
    out = {}
    for name, obj in (
        ("many", many_tensors()),
        (
            "checkpoint",
            {"model": many_tensors(), "epoch": 1, "opt": {"state": {0: {"m": torch.ones(2)}}}},
        ),
    ):
        torch.save(obj, d / f"{name}.pt")
        with zipfile.ZipFile(d / f"{name}.pt") as zf:
            out[name] = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    return out


def canonical(value: Any, seen: dict[int, int]) -> Any:
    """A comparable image of what the machine built; objects met twice become their first
    number, so that shared objects must be shared in both."""
    if isinstance(
        value,
        (
            str,
            bytes,
            int,
            float,
            bool,
            type(None),
            records.Global,
            records.TorchDtype,
            records.StorageType,
        ),
    ):
        return value
    if type(value) is tuple:  # (immutable: shared or not, the same value)
        return ("tuple", [canonical(v, seen) for v in value])
    if id(value) in seen:
        return ("seen", seen[id(value)])
    seen[id(value)] = len(seen)
    if isinstance(value, records.StorageRef):
        return ("storage", value.key, value.type.name, value.location, value.numel, value.view)
    if isinstance(value, records.TensorRef):
        return (
            "tensor",
            canonical(value.storage, seen),
            value.dtype.name,
            value.offset,
            value.shape,
            value.stride,
            value.requires_grad,
            value.parameter,
        )
    if isinstance(value, dict):
        return (
            type(value).__name__,
            [(canonical(k, seen), canonical(v, seen)) for k, v in value.items()],
            canonical(getattr(value, "attributes", None), seen),
        )
    if isinstance(value, list):
        return ("list", [canonical(v, seen) for v in value])
    return ("other", repr(value))


def outcome(data: bytes, fast: bool, monkeypatch) -> Any:
    """What unpickling `data` gives: the object and the memo, or the error."""
    if not fast:
        monkeypatch.setattr(unpickler.Unpickler, "TENSOR_RUN", re.compile(b"(?!)"))
    storages: dict[str, Any] = {}

    def persistent_load(pid: Any) -> Any:
        ref = records.storage_from_pid(pid, "test")
        if storages.setdefault(ref.key, ref).nbytes != ref.nbytes:
            raise FormatError("two sizes")
        return ref

    machine = unpickler.Unpickler(data, len(data), persistent_load, "test")
    try:
        obj = machine.load()
        seen: dict[int, int] = {}
        result = (
            "ok",
            canonical(obj, seen),
            sorted((k, canonical(v, seen)) for k, v in machine.memo.items()),
        )
    except ConvertError as exc:
        result = ("error", type(exc).__name__, str(exc))
    monkeypatch.undo()
    return result


def count_runs(data: bytes, monkeypatch) -> int:
    runs = []
    real = unpickler.Unpickler.run_tensor

    def counting(self, run):
        value = real(self, run)
        runs.append(value is not MARK)
        return value

    monkeypatch.setattr(unpickler.Unpickler, "run_tensor", counting)
    outcome(data, True, monkeypatch)
    return sum(runs)


@pytest.mark.parametrize("name", ["many", "checkpoint"])
def test_tensor_runs_build_what_the_opcode_loop_builds(pickles, name, monkeypatch):
    data = pickles[name]
    assert count_runs(data, monkeypatch) >= 80  # the fast path is taken...
    fast, slow = outcome(data, True, monkeypatch), outcome(data, False, monkeypatch)
    assert fast[0] == "ok" and fast == slow  # ...and gives the same objects and memo


def test_damaged_runs_behave_as_the_opcode_loop(pickles, monkeypatch):
    """Byte flips and cuts inside tensor runs: the same objects, memo or error either way."""
    data = pickles["many"]
    rng = random.Random(5)
    starts = [m.start() for m in re.finditer(rb"h.\(\(h", data, re.DOTALL)]
    for trial in range(300):
        at = rng.choice(starts) + rng.randrange(70)
        damaged = bytearray(data)
        if trial % 3:
            damaged[at] = rng.randrange(256)
        else:  # point a memo GET or PUT at a slot the same run writes
            damaged[at] = damaged[at + 1] if at + 1 < len(damaged) else 0
        damaged = bytes(damaged)
        assert outcome(damaged, True, monkeypatch) == outcome(damaged, False, monkeypatch), at


def test_runs_reading_their_own_slots_take_the_loop(monkeypatch):
    """A run whose location GET reads the slot its key was just PUT to (torch never writes
    that) is left to the loop, which gives the location the key's value."""
    state = OrderedDict(a=torch.ones(2), b=torch.zeros(3))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    run = re.search(rb"h(.)\(\(h.h.X\x01\x00\x00\x001q(.)h(.)", data, re.DOTALL)
    damaged = data[: run.start(3)] + run.group(2) + data[run.end(3) :]  # GET location = key
    fast, slow = outcome(damaged, True, monkeypatch), outcome(damaged, False, monkeypatch)
    assert fast == slow and fast[0] == "ok"
    obj = unpickler.Unpickler(
        damaged, len(damaged), lambda pid: records.storage_from_pid(pid, "test")
    ).load()
    assert obj["b"].storage.location == "1"  # its key, as the loop reads that slot


def test_zip64_archive_with_comment(golden, tmp_path, monkeypatch):
    """Sizes and offsets from zip64 extra fields, a zip64 end record, an archive comment."""
    target = tmp_path / "zip64.pt"
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 64)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 4)
    with zipfile.ZipFile(golden["dtypes"]) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.comment = b"an archive comment"
    monkeypatch.undo()
    with zipfile.ZipFile(target) as zf:  # (zipfile reads it as zip64)
        assert any(i.extra[:2] == b"\x01\x00" for i in zf.infolist())
    graph = convert.load(target)
    for entry in graph.entries():
        key = entry.tensor.meta["key"]
        assert_same_tensor(entry.tensor.read(), golden.objects["dtypes"][key], key)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda data, at, name: data[:at] + b"PK\x03\x05" + data[at + 4 :], "local header"),
        (
            lambda data, at, name: data[: at + 30] + name[:-1] + b"9" + data[at + 30 + len(name) :],
            "another record",
        ),
    ],
)
def test_local_header_is_checked_when_the_tensor_is_read(golden, tmp_path, damage, fragment):
    data = golden["model"].read_bytes()
    with zipfile.ZipFile(golden["model"]) as zf:
        info = zf.getinfo("model/data/0")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage(data, info.header_offset, info.filename.encode()))
    graph = convert.load(bad)  # listing reads no local header
    with pytest.raises(FormatError, match=fragment):
        graph.get(("conv", "weight")).read()


def tree(node: Node) -> Any:
    return [
        (name, tree(item) if isinstance(item, Node) else id(item))
        for name, item in node.edges.items()
    ]


def test_key_splitting_matches_split_keys():
    rng = random.Random(7)
    parts = ["a", "b", "", "0", "1"]
    for _ in range(500):
        keys = list(
            dict.fromkeys(
                ".".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))
                for _ in range(rng.randint(1, 8))
            )
        )
        items = [(key, Tensor.from_array([i])) for i, key in enumerate(keys)]
        fast = Node()
        keys_module.add_keyed(fast, items)
        slow = Node()
        paths = keys_module.split_keys(keys)
        for key, item in items:
            keys_module.add_path(slow, paths[key], item)
        assert tree(fast) == tree(slow), keys


def test_small_records_read_in_any_order_give_their_own_bytes(tmp_path):
    """Small records' local headers are read through a window ahead of the reads: in file
    order, backwards, shuffled, or copied to another file, each tensor gets its own bytes,
    and a damaged header inside the window is still found."""
    gen = torch.Generator().manual_seed(5)
    state = OrderedDict((f"t{i}", torch.randn(i % 7 + 1, generator=gen)) for i in range(600))
    path = tmp_path / "many.pt"
    torch.save(state, path)
    keys = list(state)
    for order in (keys, keys[::-1], random.Random(2).sample(keys, len(keys))):
        graph = convert.load(path)
        for key in order:
            assert_same_tensor(graph.get((key,)).read(), state[key], key)
    out = tmp_path / "many.safetensors"
    convert.convert(path, out)  # (the stored bytes, copied file to file)
    from safetensors.torch import load_file

    copied = load_file(out)
    for key in keys:
        assert torch.equal(copied[key], state[key]), key
    with zipfile.ZipFile(path) as zf:
        at = zf.getinfo("many/data/300").header_offset
    bad = tmp_path / "bad.pt"
    data = path.read_bytes()
    bad.write_bytes(data[:at] + b"PK\x03\x05" + data[at + 4 :])
    graph = convert.load(bad)
    graph.get(("t299",)).read()  # (reads ahead, past record 300's header)
    with pytest.raises(FormatError, match="local header"):
        graph.get(("t300",)).read()
