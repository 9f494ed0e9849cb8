"""Corpus cases for HDF5 (Keras 2 .h5, Keras 3 .weights.h5) and the .keras archive:
superblock cuts and flips, external and soft links, virtual datasets and external storage
pointing outside the file, shapes that disagree with their storage, declared bombs."""

from __future__ import annotations

import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .corpus_tools import (
    cut,
    flip,
    random_cuts,
    rename_local,
    rezip,
    set_declared_size,
    zip_boundaries,
    zip_members,
)

KERNEL = {
    "keras-h5-weights": "dense/dense/kernel:0",
    "keras-h5-full": "model_weights/dense/dense/kernel:0",
    "keras-weights-h5": "layers/dense/vars/0",
}


def write_secret_h5(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f["kernel"] = np.zeros((7, 13), np.float32)


def _edited(source: bytes, edit) -> bytes:
    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.h5"
        path.write_bytes(source)
        with h5py.File(path, "r+") as f:
            edit(f)
        return path.read_bytes()


def _links(c, seed: str, rel: str, data: bytes, kernel: str) -> list[tuple[str, str, bytes]]:
    import h5py

    secret, secret_h5 = str(c.secret), str(c.secret_h5)

    def replace(make):
        def edit(f):
            del f[kernel]
            make(f)

        return edit

    def vds(f):
        layout = h5py.VirtualLayout((7, 13), np.float32)
        layout[:] = h5py.VirtualSource(secret_h5, "kernel", (7, 13))
        f.create_virtual_dataset(kernel, layout)

    def external(target, size):
        return lambda f: f.create_dataset(kernel, (7, 13), np.float32, external=[(target, 0, size)])

    def bomb(f):
        f.create_dataset(kernel, (1 << 20, 1 << 20), np.float32, chunks=(64, 64))

    edits = [
        (
            "hdf5 link",
            "external link to /etc/passwd",
            lambda f: f.__setitem__(kernel, h5py.ExternalLink("/etc/passwd", "/x")),
        ),
        (
            "hdf5 link",
            "external link to a file outside",
            lambda f: f.__setitem__(kernel, h5py.ExternalLink(secret_h5, "/kernel")),
        ),
        (
            "hdf5 link",
            "soft link to another dataset",
            lambda f: f.__setitem__(kernel, h5py.SoftLink("/" + kernel.rsplit("/", 1)[0])),
        ),
        (
            "hdf5 link",
            "soft link to itself",
            lambda f: f.__setitem__(kernel, h5py.SoftLink("/" + kernel)),
        ),
        ("hdf5 link", "virtual dataset over a file outside", vds),
        ("hdf5 link", "external storage in a file outside", external(secret, 364)),
        ("hdf5 link", "external storage in /etc/passwd", external("/etc/passwd", 364)),
        ("lying header", "chunked dataset declaring 4 TiB", bomb),
        (
            "lying header",
            "dataset of strings",
            lambda f: f.create_dataset(
                kernel, data=np.array([b"a", b"b"], dtype=object), dtype=h5py.string_dtype()
            ),
        ),
    ]
    return [(kind, what, _edited(data, replace(make))) for kind, what, make in edits]


def _hdf5_cases(c, seed: str) -> None:
    rel = c.seeds[seed][1]
    data = c.seed_bytes(seed)
    add = lambda kind, what, blob, **kw: c.add(seed, kind, what, {rel: blob}, **kw)  # noqa: E731
    for at in [0, 8, 24, 48, 96, 512, 2048, len(data) // 2, len(data) - 1] + random_cuts(
        data, c.rng, 2
    ):
        add("truncation", f"cut at byte {at}", cut(data, at))
    add("bit flip", "signature byte", flip(data, 1, 0))
    add("bit flip", "superblock version", flip(data, 8, 3), ls="either")
    add("bit flip", "superblock end-of-file address", flip(data, 40, 6), ls="either")
    add("bit flip", "object header byte", flip(data, 800, 2), ls="either")
    add("bit flip", "data byte", flip(data, len(data) - 20, 2), ls="either")
    dims = struct.pack("<QQ", 7, 13)
    assert dims in data, seed
    add(
        "lying header",
        "dataspace 7000 x 13000 over a 7 x 13 storage",
        data.replace(dims, struct.pack("<QQ", 7000, 13000)),
    )
    add(
        "lying header",
        "dataspace 2**40 x 2**40",
        data.replace(dims, struct.pack("<QQ", 1 << 40, 1 << 40)),
    )
    for kind, what, blob in _links(c, seed, rel, data, KERNEL[seed]):
        add(kind, what, blob)


def keras_h5(c) -> None:
    _hdf5_cases(c, "keras-h5-weights")
    _hdf5_cases(c, "keras-h5-full")
    data = c.seed_bytes("keras-h5-full")
    add = lambda what, blob, **kw: c.add(
        "keras-h5-full",
        "nesting",
        what,  # noqa: E731
        {"legacy_full.h5": blob},
        **kw,
    )
    # A config no JSON parser can hold is ignored: the weights are read by their names.
    deep = '{"a": ' * 100000 + "1" + "}" * 100000
    add(
        "model_config nested 100000 deep",
        ls="either",
        blob=_edited(data, lambda f: f.attrs.__setitem__("model_config", deep)),
    )
    add(
        "weight_names naming ../../x",
        blob=_edited(
            data, lambda f: f["model_weights/dense"].attrs.__setitem__("weight_names", [b"../../x"])
        ),
    )


def keras_v3(c) -> None:
    _hdf5_cases(c, "keras-weights-h5")


ARCHIVE = "model.keras"


def keras_archive(c) -> None:
    data = c.seed_bytes("keras-archive")
    add = lambda kind, what, blob, **kw: c.add("keras-archive", kind, what, {ARCHIVE: blob}, **kw)  # noqa: E731
    for name, at in zip_boundaries(data).items():
        add("truncation", f"cut at {name} (byte {at})", cut(data, at))
    members = dict(zip_members(data))
    weights = members["model.weights.h5"]
    order = list(members)

    def with_members(**changed):
        return rezip([(n, changed.get(n.replace(".", "_"), members[n])) for n in order])

    linked = _links(c, "keras-weights-h5", "model.weights.h5", weights, KERNEL["keras-weights-h5"])
    for kind, what, blob in linked[:2] + linked[4:7]:
        add(kind, f"inner weights: {what}", with_members(model_weights_h5=blob))
    add(
        "truncation",
        "inner weights cut in half",
        with_members(model_weights_h5=weights[: len(weights) // 2]),
    )
    add("bit flip", "inner weights signature", with_members(model_weights_h5=flip(weights, 1)))
    add("bit flip", "config byte", flip(data, zip_boundaries(data)["data1"] + 20, 1), ls="either")
    add(
        "nesting",
        "config.json nested 100000 deep (ignored, as in a .h5)",
        with_members(config_json=b'{"a": ' * 100000 + b"1" + b"}" * 100000),
        ls="either",
    )
    add("lying header", "config.json not UTF-8", with_members(config_json=b'{"\xff": 1}'))
    add(
        "zip trick",
        "model.weights.h5 held twice",
        rezip(list(members.items()) + [("model.weights.h5", linked[1][2])]),
    )
    add("zip trick", "a member named ../../x", rezip(list(members.items()) + [("../../x", b"x")]))
    add(
        "zip trick",
        "local header names another member",
        rename_local(data, "config.json", "config.jsoN"),
    )
    deflated = rezip(list(members.items()), zipfile.ZIP_DEFLATED)
    add(
        "zip trick",
        "config.json deflated, declaring 4 GiB",
        set_declared_size(deflated, "config.json", (1 << 32) - 2),
    )
    add(
        "zip trick",
        "weights deflated, declaring 4 GiB",
        set_declared_size(deflated, "model.weights.h5", (1 << 32) - 2),
    )
    add(
        "zip trick",
        "metadata.json declaring more than it holds",
        set_declared_size(data, "metadata.json", 1 << 20),
    )
