"""Corpus cases for torch files (zip and legacy) and pickles in npz: payloads that would
run code, persistent-id tricks, pickle bombs, zip tricks, cuts and flips."""

from __future__ import annotations

import functools
import io
import os
import pickletools
import shutil
import struct
import subprocess
import zipfile

from .corpus_tools import (
    AttrOf,
    Payload,
    cut,
    flip,
    pk,
    pk_global,
    pk_int,
    pk_str,
    pk_tuple,
    rename_local,
    rezip,
    set_declared_size,
    zip_boundaries,
    zip_members,
)

PT, LEGACY = "model.pt", "legacy.pt"


def payloads(c) -> list[tuple[str, object]]:
    import torch

    marker, secret = str(c.marker), str(c.secret)
    touch = f"touch {marker}"
    code = f"open({marker!r}, 'w').close()"
    return [
        ("os.system", Payload(os.system, touch)),
        ("eval", Payload(eval, code)),
        ("exec", Payload(exec, code)),
        ("builtins.getattr chain to os.system", Payload(AttrOf("os", "system"), touch)),
        ("getattr chain to builtins.exec", Payload(AttrOf("builtins", "exec"), code)),
        ("__reduce__ to subprocess.Popen", Payload(subprocess.Popen, ["touch", marker])),
        (
            "os.system smuggled through _rebuild_from_type_v2",
            Payload(torch._tensor._rebuild_from_type_v2, os.system, torch.Tensor, (touch,), {}),
        ),
        ("functools.partial of os.system", Payload(functools.partial(os.system, touch))),
        ("builtins.open for writing", Payload(open, marker, "w")),
        ("shutil.copyfile of a file outside", Payload(shutil.copyfile, secret, marker)),
        ("torch.load of a file outside", Payload(torch.load, secret)),
    ]


def _tensor_pickle(
    storage=("torch", "FloatStorage"),
    key="0",
    numel=91,
    shape=(7, 13),
    stride=(13, 1),
    offset=0,
    persid: bytes | None = None,
    legacy: bool = False,
) -> bytes:
    if persid is None:
        fields = [
            pk_str("storage"),
            pk_global(*storage),
            pk_str(key),
            pk_str("cpu"),
            pk_int(numel),
        ] + ([b"N"] if legacy else [])
        persid = pk_tuple(*fields)
    rebuild = (
        pk_global("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + persid
        + b"Q"
        + pk_int(offset)
        + pk_tuple(*map(pk_int, shape))
        + pk_tuple(*map(pk_int, stride))
        + b"\x89"
        + pk_global("collections", "OrderedDict")
        + b")R"
        + b"tR"
    )
    return pk(b"}" + pk_str("dense/kernel") + rebuild + b"s")


def _tricks(legacy: bool) -> list[tuple[str, str, bytes]]:
    """(kind, what, pickle) for the tensor-rebuilding pickle, each with one lie."""
    t = functools.partial(_tensor_pickle, legacy=legacy)
    return [
        ("malicious", "storage type is posix.system", t(storage=("posix", "system"))),
        ("malicious", "storage type is builtins.eval", t(storage=("builtins", "eval"))),
        ("malicious", "persistent id is a string", t(persid=pk_str("touch x"))),
        (
            "malicious",
            "persistent id names a module",
            pk(pk_tuple(pk_str("module"), pk_global("os", "system")) + b"Q"),
        ),
        ("path escape", "storage key ../../x", t(key="../../x")),
        ("lying header", "storage of 2**62 elements", t(numel=1 << 62)),
        ("lying header", "storage larger than its bytes", t(numel=91 * 1000)),
        ("lying header", "view past the storage", t(offset=10000)),
        ("lying header", "strides reach past the storage", t(stride=(1000, 1))),
        ("lying header", "negative dimension", t(shape=(-7, 13))),
        ("lying header", "element count overflows", t(shape=(1 << 40, 1 << 40), stride=(1, 1))),
        ("nesting", "lists nested 100000 deep", pk(b"]" * 100000 + b"a" * 99999)),
        ("nesting", "100000 marks", pk(b"(" * 100000 + b"N")),
        (
            "nesting",
            "dicts nested 50000 deep",
            pk((b"}" + pk_str("a")) * 50000 + b"N" + b"s" * 50000),
        ),
        ("lying header", "a string declaring 4 GiB", b"\x80\x02X\xff\xff\xff\xff" + b"a" * 8),
        ("lying header", "bytes declaring 2**62", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62)),
        ("lying header", "a long declaring 2 GiB", b"\x80\x02\x8b\xff\xff\xff\x7f" + b"\x01" * 8),
        ("lying header", "a frame declaring 2**60", b"\x80\x04\x95" + struct.pack("<Q", 1 << 60)),
        ("lying header", "memo entry never stored", b"\x80\x02h\x05."),
    ]


def _replace_member(data: bytes, suffix: str, payload: bytes) -> bytes:
    return rezip([(n, payload if n.endswith(suffix) else b) for n, b in zip_members(data)])


def torch_zip(c) -> None:
    import torch

    data = c.seed_bytes("torch-zip")
    add = lambda kind, what, blob, **kw: c.add("torch-zip", kind, what, {PT: blob}, **kw)  # noqa: E731
    state = torch.load(c.seed_dir / PT)
    for what, obj in payloads(c):
        buf = io.BytesIO()
        torch.save({**state, "extra": obj}, buf)
        add("malicious", what, buf.getvalue())
    for kind, what, pickle in _tricks(legacy=False):
        add(kind, what, _replace_member(data, "/data.pkl", pickle))
    members = zip_members(data)
    pkl = next(n for n, _ in members if n.endswith("/data.pkl"))
    marks = zip_boundaries(data)
    for name, at in marks.items():
        if not name.startswith("mid") or name == "mid0":
            add("truncation", f"cut at {name} (byte {at})", cut(data, at))
    add("bit flip", "data.pkl byte", flip(data, marks["data0"] + 30, 2), ls="either")
    add("bit flip", "tensor data byte", flip(data, marks["data4"] + 5, 2), ls="either")
    add("bit flip", "central directory byte", flip(data, marks["cd"] + 20, 3), ls="either")
    add(
        "zip trick",
        "data.pkl held twice",
        rezip(members + [(pkl, _tensor_pickle(storage=("posix", "system")))]),
    )
    add("zip trick", "a member named model/../../x", rezip(members + [("model/../../x", b"x")]))
    add("zip trick", "a member named /abs/x", rezip(members + [("/tmp/x", b"x")]))
    add("zip trick", "local header names another member", rename_local(data, pkl, pkl[:-1] + "X"))
    add(
        "zip trick",
        "data.pkl deflated, declaring 4 GiB",
        set_declared_size(rezip(members, zipfile.ZIP_DEFLATED), pkl, (1 << 32) - 2),
    )
    add(
        "zip trick",
        "tensor data deflated",
        rezip(members, zipfile.ZIP_DEFLATED),
        ls="either",
        convert="either",
    )
    data0 = next(n for n, _ in members if n.endswith("/data/0"))
    add(
        "zip trick",
        "a data member declaring more than it holds",
        set_declared_size(data, data0, 1 << 20),
    )


def _pickle_ends(data: bytes) -> list[int]:
    """Where each of the legacy file's pickles ends (the magic, version, sys info, the
    object, the storage keys)."""
    ends, pos = [], 0
    for _ in range(5):
        for op, _arg, p in pickletools.genops(io.BytesIO(data[pos:])):
            if op.name == "STOP":
                pos += p + 1
                ends.append(pos)
                break
    return ends


def torch_legacy(c) -> None:
    import torch

    data = c.seed_bytes("torch-legacy")
    add = lambda kind, what, blob, **kw: c.add("torch-legacy", kind, what, {LEGACY: blob}, **kw)  # noqa: E731
    state = torch.load(c.seed_dir / LEGACY)
    for what, obj in payloads(c):
        buf = io.BytesIO()
        torch.save({**state, "extra": obj}, buf, _use_new_zipfile_serialization=False)
        add("malicious", what, buf.getvalue())
    ends = _pickle_ends(data)
    for i, at in enumerate(ends + [ends[2] + 40, ends[4] + 4, ends[4] + 8 + 100, len(data) - 1]):
        add("truncation", f"cut at boundary {i} (byte {at})", cut(data, at))
    add("bit flip", "object pickle byte", flip(data, ends[2] + 30, 1), ls="either")
    add("bit flip", "storage data byte", flip(data, len(data) - 3, 1), ls="either")
    add(
        "lying header",
        "storage size of 2**62",
        data[: ends[4]] + struct.pack("<q", 1 << 62) + data[ends[4] + 8 :],
    )
    add(
        "lying header",
        "negative storage size",
        data[: ends[4]] + struct.pack("<q", -5) + data[ends[4] + 8 :],
    )
    for kind, what, pickle in _tricks(legacy=True)[:6]:
        add(kind, what, data[: ends[2]] + pickle + data[ends[3] :])


def npz_pickles(c, members, header) -> None:
    import numpy as np

    from .corpus_formats import NPZ, _npy

    for what, obj in payloads(c)[:4]:
        buf = io.BytesIO()
        np.savez(buf, a=np.array([obj, 1], dtype=object))
        c.add("npz", "malicious", f"object array pickling {what}", {NPZ: buf.getvalue()})
    evil = pk(pk_global("posix", "system") + pk_tuple(pk_str(f"touch {c.marker}")) + b"R")
    npy = _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", evil)
    c.add(
        "npz",
        "malicious",
        "object .npy member holding posix.system",
        {NPZ: rezip([(members[0][0], npy)] + members[1:])},
    )
