"""Corpus cases for DCP directories (`torch.distributed.checkpoint`): the `.metadata`
pickle rewritten (with torch: as DCP itself pickles it) to lie about where and what the
chunks are, to name files outside, or replaced by a payload; the chunk file cut short or
flipped."""

from __future__ import annotations

import pickle

from .corpus_pickles import payloads
from .corpus_tools import cut, flip, random_cuts

META, DATA = "dcp/.metadata", "dcp/__0_0.distcp"


def _rewritten(c, change) -> bytes:
    metadata = pickle.loads(c.seed_bytes("dcp", META))  # (our own seed, written by torch)
    change(metadata)
    return pickle.dumps(metadata)


def _storage(key: str, **fields):
    def change(metadata) -> None:
        info = next(v for k, v in metadata.storage_data.items() if k.fqn == key)
        for name, value in fields.items():
            setattr(info, name, value)

    return change


def _chunks(key: str, *chunks):
    def change(metadata) -> None:
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

        metadata.state_dict_metadata[key].chunks = [
            ChunkStorageMetadata(offsets=o, sizes=s) for o, s in chunks
        ]

    return change


def dcp(c) -> None:
    def add(kind: str, what: str, changes: dict, **kw) -> None:
        c.add("dcp", kind, what, changes, **kw)

    data, meta = c.seed_bytes("dcp", DATA), c.seed_bytes("dcp", META)
    for at in random_cuts(data, c.rng, 3):
        add("truncation", f"chunk file cut at {at}", {DATA: cut(data, at)})
    add("truncation", "chunk file empty", {DATA: b""})
    add("truncation", "chunk file missing", {DATA: None})
    for at in random_cuts(meta, c.rng, 2):
        add("truncation", f".metadata cut at {at}", {META: cut(meta, at)})
    add("bit flip", ".metadata byte", {META: flip(meta, len(meta) // 2, 1)}, ls="either")
    add("bit flip", "chunk data byte", {DATA: flip(data, len(data) // 3, 2)}, ls="either")
    kernel = "model.dense/kernel"  # [4, 3]
    lies = [
        ("storage length past the file", _storage(kernel, length=1 << 40)),
        ("storage offset past the file", _storage(kernel, offset=1 << 40)),
        ("chunks that overlap", _chunks(kernel, ((0, 0), (3, 3)), ((2, 0), (2, 3)))),
        ("chunks that leave a hole", _chunks(kernel, ((0, 0), (2, 3)), ((3, 0), (1, 3)))),
        ("a chunk outside the tensor", _chunks(kernel, ((0, 0), (5, 3)))),
        ("a negative chunk offset", _chunks(kernel, ((-1, 0), (4, 3)))),
        ("a storage extension (compression)", _storage(kernel, transform_descriptors=["zstd"])),
    ]
    for what, change in lies:
        add("lying header", what, {META: _rewritten(c, change)})
    add(
        "path escape",
        "a chunk file named ../secret",
        {META: _rewritten(c, _storage(kernel, relative_path="../secret"))},
    )
    add(
        "path escape",
        "a chunk file named by an absolute path",
        {META: _rewritten(c, _storage(kernel, relative_path=str(c.secret)))},
    )
    for what, payload in payloads(c):
        add("malicious", f".metadata: {what}", {META: pickle.dumps(payload)})
