"""Corpus cases for safetensors, sharded sets, npz, Flax msgpack and TF bundles (torch
pickles: corpus_pickles.py; HDF5 and .keras: corpus_hdf5.py). Each maker takes the
Corpus and adds its cases."""

from __future__ import annotations

import json
import struct
import zipfile

from . import corpus_dcp, corpus_hdf5, corpus_pickles
from .corpus_tools import (
    cut,
    flip,
    msgpack_starts,
    put,
    random_cuts,
    rezip,
    set_declared_size,
    zip_boundaries,
    zip_members,
)

ST = "model.safetensors"


def _st(header: dict | bytes, data: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def safetensors(c) -> None:
    data = c.seed_bytes("safetensors")
    n = struct.unpack_from("<Q", data)[0]
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    add = lambda kind, what, blob, **kw: c.add("safetensors", kind, what, {ST: blob}, **kw)  # noqa: E731
    for at in [
        0,
        4,
        7,
        8,
        9,
        8 + n // 2,
        8 + n - 1,
        8 + n,
        8 + n + len(body) // 2,
        len(data) - 1,
    ] + random_cuts(data, c.rng, 3):
        add("truncation", f"cut at byte {at}", cut(data, at))
    for pos in (0, 3, 7):
        add("bit flip", f"length field byte {pos}", flip(data, pos, 6))
    for pos in (8, 8 + n // 3, 8 + 2 * n // 3):
        add("bit flip", f"header byte {pos}", flip(data, pos, 5), ls="either")
    for pos in (8 + n, len(data) - 1):
        add("bit flip", f"data byte {pos}", flip(data, pos, 3), ls="either")
    key = next(k for k in header if k != "__metadata__")
    entry = header[key]

    def lie(what, **change):
        h = json.loads(json.dumps(header))
        h[key].update(change)
        add("lying header", what, _st(h, body))

    begin, end = entry["data_offsets"]
    lie("offsets past the end of the data", data_offsets=[begin, len(body) + 64])
    lie("offsets end before they begin", data_offsets=[end, begin])
    lie("negative offset", data_offsets=[-8, end])
    lie("offsets of 1 TiB", data_offsets=[0, 1 << 40])
    lie("shape larger than the region", shape=[e * 3 for e in entry["shape"]])
    lie("element count overflows 64 bits", shape=[1 << 32, 1 << 32, 1 << 32])
    lie("negative dimension", shape=[-1, 91])
    lie("unknown dtype", dtype="F99")
    lie("dtype of another width", dtype="F64")
    lie("offsets as strings", data_offsets=["0", "4"])
    lie("shape as a string", shape="7x13")
    h = json.loads(json.dumps(header))
    other = next(k for k in header if k not in ("__metadata__", key))
    h[other]["data_offsets"] = entry["data_offsets"]
    add("lying header", "two tensors over one region", _st(h, body))
    add("lying header", "header length 2**63", _st(header, body, 1 << 63))
    add("lying header", "header length past the file", _st(header, body, len(data) * 4))
    add("lying header", "header length 0", _st(b"", body, 0))
    add("lying header", "header is a JSON list", _st(b"[1, 2]", body))
    add("lying header", "header is not UTF-8", _st(b'{"\xff\xfe": 1}', body))
    add(
        "lying header",
        "metadata values not strings",
        _st({**header, "__metadata__": {"format": [1, 2]}}, body),
    )
    add("nesting", "header nested 100000 lists deep", _st(b"[" * 100000 + b"]" * 100000, body))
    add(
        "nesting",
        "header nested 50000 objects deep",
        _st(b'{"a":' * 50000 + b"1" + b"}" * 50000, body),
    )
    add("nesting", "header of 2**32-1 bytes declared", _st(b"{}", body, (1 << 32) - 1))


SH = "sharded/model.safetensors.index.json"
SHARD2 = "sharded/model-00002-of-00002.safetensors"


def sharded(c) -> None:
    index = json.loads(c.seed_bytes("sharded-safetensors"))

    def with_map(kind, what, value, seed="sharded-safetensors", **kw):
        rel = c.seeds[seed][1]
        i = json.loads(c.seed_bytes(seed))
        first = next(iter(i["weight_map"]))
        i["weight_map"][first] = value
        c.add(seed, kind, what, {rel: json.dumps(i).encode()}, **kw)

    with_map("path escape", "a shard named ../secret", "../secret")
    with_map("path escape", "a shard named ../../outside/secret", "../../../outside/secret")
    with_map("path escape", "a shard named by an absolute path", str(c.secret))
    with_map("path escape", "a shard named /etc/passwd", "/etc/passwd")
    with_map("path escape", "a shard named sub/../../secret", "sub/../../secret")
    with_map("path escape", "a shard named .", ".")
    with_map("path escape", "a shard that is the index itself", "model.safetensors.index.json")
    with_map("path escape", "a shard name with a NUL byte", "model\x00.safetensors")
    with_map("path escape", "a .bin shard named ../secret", "../secret", seed="sharded-bin")
    with_map("lying header", "a shard that is missing", "model-00009-of-00009.safetensors")
    with_map("lying header", "a shard name that is a number", 7)
    with_map("lying header", "a shard name that is a list", ["a", "b"])
    raw = c.seed_bytes("sharded-safetensors")
    for at in (0, 1, len(raw) // 2, len(raw) - 2):
        c.add("sharded-safetensors", "truncation", f"index cut at byte {at}", {SH: cut(raw, at)})
    shard = c.seed_bytes("sharded-safetensors", SHARD2)
    c.add(
        "sharded-safetensors",
        "truncation",
        "second shard cut in half",
        {SHARD2: cut(shard, len(shard) // 2)},
    )
    c.add(
        "sharded-safetensors",
        "lying header",
        "weight_map is a list",
        {SH: json.dumps({"weight_map": list(index["weight_map"])}).encode()},
    )
    c.add(
        "sharded-safetensors",
        "lying header",
        "index is not UTF-8",
        {SH: b'{"weight_map": {"\xff": "x"}}'},
    )
    c.add(
        "sharded-safetensors",
        "lying header",
        "a number of 10**100000 digits",
        {SH: b'{"metadata": {"total_size": 1' + b"0" * 100000 + b'}, "weight_map": {}}'},
    )
    c.add(
        "sharded-safetensors",
        "nesting",
        "index nested 100000 deep",
        {SH: b'{"weight_map": ' + b"[" * 100000 + b"]" * 100000 + b"}"},
    )
    c.add("sharded-safetensors", "bit flip", "flipped byte in the index", {SH: flip(raw, 3, 1)})


NPZ = "arrays.npz"


def _npy(
    header: str | bytes,
    payload: bytes,
    version: tuple[int, int] = (1, 0),
    header_len: int | None = None,
) -> bytes:
    raw = header.encode("latin1") if isinstance(header, str) else header
    pad = -(10 + len(raw) + 1) % 64
    raw = raw + b" " * pad + b"\n"
    size = len(raw) if header_len is None else header_len
    width = "<I" if version[0] >= 2 else "<H"
    return b"\x93NUMPY" + bytes(version) + struct.pack(width, size) + raw + payload


def npz(c) -> None:
    data = c.seed_bytes("npz")
    add = lambda kind, what, blob, **kw: c.add("npz", kind, what, {NPZ: blob}, **kw)  # noqa: E731
    marks = zip_boundaries(data)
    for name, at in marks.items():
        add("truncation", f"cut at {name} (byte {at})", cut(data, at))
    comp = c.seed_bytes("npz-compressed")
    for name in ("data0", "mid1", "cd"):
        at = zip_boundaries(comp)[name]
        c.add(
            "npz-compressed",
            "truncation",
            f"deflated, cut at {name}",
            {"compressed.npz": cut(comp, at)},
        )
    for pos in (marks["data0"] + 12, marks["data1"] + 30):
        add("bit flip", f"npy header byte {pos}", flip(data, pos, 2), ls="either")
    add("bit flip", "data byte", flip(data, marks["data0"] + 130, 1), ls="either")
    add("bit flip", "central directory byte", flip(data, marks["cd"] + 10, 4), ls="either")
    members = zip_members(data)
    name0, npy0 = members[0]
    body = npy0[npy0.index(b"\n") + 1 :]

    def member(kind, what, npy, name=name0, method=zipfile.ZIP_STORED, **kw):
        add(kind, what, rezip([(name, npy)] + members[1:], method), **kw)

    h = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }"
    member("lying header", "shape larger than the data", _npy(h % "(7000, 13000)", body))
    member(
        "lying header", "element count overflows", _npy(h % "(4294967296, 4294967296, 16)", body)
    )
    member("lying header", "negative dimension", _npy(h % "(-1, 13)", body))
    member("lying header", "shape not a tuple", _npy(h % "'seven'", body))
    member("lying header", "unknown dtype", _npy(h.replace("<f4", "<f99") % "(7, 13)", body))
    member(
        "lying header",
        "structured dtype (skipped, with a note)",
        _npy(
            "{'descr': [('a', '<f4'), ('b', '<i8')], 'fortran_order': False, 'shape': (7,), }", body
        ),
        ls="either",
    )
    member(
        "lying header", "header length past the member", _npy(h % "(7, 13)", body, header_len=60000)
    )
    member("lying header", "format version 9.0", _npy(h % "(7, 13)", body, (9, 0)))
    member("lying header", "header is not a dict", _npy("[1, 2, 3]", body))
    member("lying header", "header calls a function", _npy("__import__('os').system('x')", body))
    member(
        "nesting",
        "shape nested 100000 tuples deep",
        _npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': "
            + "(" * 100000
            + ")" * 100000
            + "}",
            body,
            (2, 0),
        ),
    )
    member("zip trick", "a member named ../../x.npy", npy0, name="../../x.npy")
    member("zip trick", "a member named /abs/x.npy", npy0, name="/tmp/x.npy")
    add("zip trick", "a member held twice", rezip(members + [members[0]]))
    big = rezip([(name0, npy0 + b"\x00" * 200000)] + members[1:], zipfile.ZIP_DEFLATED)
    add(
        "zip trick", "deflated member declaring 4 GiB", set_declared_size(big, name0, (1 << 32) - 2)
    )
    add("zip trick", "local header names another member", put(data, marks["local0"] + 30, b"X"))
    corpus_pickles.npz_pickles(c, members, h)


def _flax_unpack(data: bytes):
    import msgpack

    return msgpack.unpackb(data, strict_map_key=False)


def flax(c) -> None:
    import msgpack

    data = c.seed_bytes("flax")
    add = lambda kind, what, blob, **kw: c.add("flax", kind, what, {"model.msgpack": blob}, **kw)  # noqa: E731
    starts = msgpack_starts(data)
    for at in sorted(set(starts[1:]))[:: max(1, len(starts) // 10)] + [len(data) - 1]:
        add("truncation", f"cut at object boundary {at}", cut(data, at))
    for pos in (0, 1, len(data) // 2):
        add("bit flip", f"byte {pos}", flip(data, pos, 4), ls="either")
    tree = _flax_unpack(data)
    params = tree["params"]
    layer = next(iter(params))
    ext = params[layer]["kernel"]
    shape, dtype, buf = msgpack.unpackb(ext.data)

    def leaf(what, shape=shape, dtype=dtype, buf=buf, code=ext.code):
        t = _flax_unpack(data)
        t["params"][layer]["kernel"] = msgpack.ExtType(code, msgpack.packb((shape, dtype, buf)))
        add("lying header", what, msgpack.packb(t))

    leaf("shape larger than the buffer", shape=[s * 100 for s in shape])
    leaf("element count overflows", shape=[1 << 32, 1 << 32, 1 << 32])
    leaf("negative dimension", shape=[-7, 13])
    leaf("unknown dtype", dtype="float99")
    leaf("object dtype", dtype="object")
    leaf("buffer shorter than the shape", buf=buf[:5])
    leaf("shape is a string", shape="7x13")
    leaf("unknown ext type", code=42)
    add("nesting", "arrays nested 100000 deep", b"\x91" * 100000 + b"\xc0")
    add("nesting", "maps nested 100000 deep", b"\x81\xa1a" * 100000 + b"\xc0")
    add("lying header", "a map declaring 2**32-1 entries", b"\xdf\xff\xff\xff\xff\xa1a\xc0")
    add("lying header", "an array declaring 2**32-1 items", b"\xdd\xff\xff\xff\xff\xc0")
    add("lying header", "bin32 declaring 4 GiB", b"\x81\xa1a\xc6\xff\xff\xff\xff\x00")
    add("lying header", "ext32 declaring 4 GiB", b"\x81\xa1a\xc9\xff\xff\xff\xff\x01\x00")


TF_INDEX = "tf/ckpt.index"
TF_DATA = "tf/ckpt.data-00000-of-00001"


def tf(c) -> None:
    from tensorflow.core.protobuf import tensor_bundle_pb2 as tb

    from convert.formats.tf.table import TableReader, TableWriter, read_varint

    index, data = c.seed_bytes("tf", TF_INDEX), c.seed_bytes("tf", TF_DATA)
    add = lambda kind, what, ch, **kw: c.add("tf", kind, what, ch, **kw)  # noqa: E731
    for at in [
        0,
        8,
        len(index) - 48,
        len(index) - 40,
        len(index) - 8,
        len(index) - 1,
        len(index) // 2,
    ] + random_cuts(index, c.rng, 2):
        add("truncation", f"index cut at byte {at}", {TF_INDEX: cut(index, at)})
    for at in (0, len(data) // 2, len(data) - 1):
        add("truncation", f"data cut at byte {at}", {TF_DATA: cut(data, at)})
    add("truncation", "data shard missing", {TF_DATA: None})
    footer = len(index) - 48
    _, after_meta = read_varint(index, read_varint(index, footer, len(index))[1], len(index))
    for pos in (1, len(index) // 3, after_meta, len(index) - 3):
        add("bit flip", f"index byte {pos}", {TF_INDEX: flip(index, pos, 0)})
    # (the footer's padding: TensorFlow does not read it either)
    add("bit flip", "footer padding byte", {TF_INDEX: flip(index, len(index) - 12, 0)}, ls="either")
    for pos in (3, len(data) // 2, len(data) - 2):
        add(
            "bit flip",
            f"data byte {pos}",
            {TF_DATA: flip(data, pos, 0)},
            ls="either",
            convert="refuse",
        )
    items = list(TableReader(c.seed_dir / TF_INDEX).items())

    def rewrite(what, edit, kind="lying header"):
        import io

        out = io.BytesIO()
        writer = TableWriter(out)
        done = False
        for key, value in items:
            if key == b"":
                header = tb.BundleHeaderProto.FromString(value)
                value = edit(key, header) or header.SerializeToString()
            elif not done and b"kernel" in key and b"OPTIMIZER" not in key:
                entry = tb.BundleEntryProto.FromString(value)
                new = edit(key, entry)
                value = new if isinstance(new, bytes) else entry.SerializeToString()
                done = True
            writer.add(key, value)
        writer.finish()
        add(kind, what, {TF_INDEX: out.getvalue()})

    def entry(f):
        return lambda key, m: None if key == b"" else f(m)

    def header(f):
        return lambda key, m: f(m) if key == b"" else None

    def dims(*sizes):
        def f(m):
            del m.shape.dim[:]
            for s in sizes:
                m.shape.dim.add(size=s)

        return f

    rewrite("offset past the data file", entry(lambda m: setattr(m, "offset", 1 << 40)))
    rewrite("size disagrees with the shape", entry(lambda m: setattr(m, "size", 3)))
    rewrite("size of 1 TiB", entry(lambda m: setattr(m, "size", 1 << 40)))
    rewrite("shape of 2**40 x 2**40", entry(dims(1 << 40, 1 << 40)))
    rewrite("element count overflows", entry(dims(1 << 62, 1 << 62, 1 << 62)))
    rewrite("negative dimension", entry(dims(-7, 13)))
    rewrite("unknown dtype enum", entry(lambda m: setattr(m, "dtype", 999)))
    rewrite("variant dtype", entry(lambda m: setattr(m, "dtype", 21)))
    rewrite("shard id past the shard count", entry(lambda m: setattr(m, "shard_id", 7)))
    rewrite("entry is not a protobuf", entry(lambda m: b"\xff\xff\xff\xff\xff"))
    rewrite("2**31-1 shards declared", header(lambda m: setattr(m, "num_shards", 2**31 - 1)))
    rewrite("big-endian bundle", header(lambda m: setattr(m, "endianness", 1)))
    rewrite(
        "a bundle version from the future",
        header(
            lambda m: (
                setattr(m.version, "producer", 1 << 30)
                or setattr(m.version, "min_consumer", 1 << 30)
            )
        ),
    )
    rewrite(
        "entry nested 100000 messages deep",
        entry(lambda m: b"\x12\x02" * 1 + (b"\x12\x80\x80\x04" * 20000)),
        kind="nesting",
    )


MAKERS = [
    safetensors,
    sharded,
    npz,
    flax,
    tf,
    corpus_pickles.torch_zip,
    corpus_pickles.torch_legacy,
    corpus_dcp.dcp,
    corpus_hdf5.keras_h5,
    corpus_hdf5.keras_v3,
    corpus_hdf5.keras_archive,
]
write_secret_h5 = corpus_hdf5.write_secret_h5
