"""The format registry: every format's name, extensions and module, declared in
the table at the end of this module. A format's module (and what it imports: h5py, protobuf,
the unpickler) is imported only when that format is sniffed, read or written, so that
listing one file loads one format. Content sniffing wins over the file name."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from convert.core.errors import ConvertError, FormatError, UnsupportedError

if TYPE_CHECKING:  # (the graph imports numpy: `ckpt --version` and `formats` need neither)
    from convert.core.graph import Graph
    from convert.core.report import Report


class Sniff(Protocol):
    """Whether `path` is a file of the format: cheap, by content where it can (the name
    only to give a damaged file the format's precise error). Raises only a ConvertError
    that says why a path meant for this format cannot be read."""

    def __call__(self, path: Path) -> bool: ...


class Read(Protocol):
    """The file at `path` as a lazy Graph: structure, dtypes and shapes, no tensor data."""

    def __call__(self, path: Path) -> Graph: ...


class Write(Protocol):
    """Write `graph` at `path`, one tensor at a time, whole or not at all (`io.outputs`):
    `overwrite` replaces an existing output, `inputs` are the files the graph reads (never
    to be overwritten), `progress` is called with each tensor's bytes, `report` takes the
    counts, files and notes; `options` are the writer options the format's record names."""

    def __call__(
        self,
        graph: Graph,
        path: Path,
        *,
        overwrite: bool = False,
        inputs: tuple[str, ...] = (),
        progress: Callable[[int], None] | None = None,
        report: Report | None = None,
        **options: Any,
    ) -> None: ...


@dataclass(frozen=True)
class Format:
    """A format and the module that implements it, with three module-level functions:
    `{prefix}sniff` (a `Sniff`), `{prefix}read` (a `Read`) and `{prefix}write` (a `Write`);
    tests/test_registry.py checks every record's against these protocols."""

    name: str
    description: str
    extensions: tuple[str, ...]  # e.g. (".safetensors",); matched on the end of the name
    module: str  # e.g. "convert.formats.safetensors"
    prefix: str = ""  # for a module serving several formats
    options: tuple[str, ...] = ()  # the writer's keyword options (WriterOption names, and
    # `directory`, which the API sets for a DST that ends in a separator)
    # Whose layer and naming conventions its files follow (a TF checkpoint's are Keras'),
    # None where a file may hold any framework's (npz); and the character its flat keys
    # are joined with (`encoder.layer.0.weight`, `dense/kernel`).
    framework: str | None = None
    separator: str = "/"
    writes: bool = True  # (False: read only; its `write` says so)

    def _function(self, what: str) -> Callable[..., Any]:
        function: Callable[..., Any] = getattr(
            importlib.import_module(self.module), self.prefix + what
        )
        return function

    @property
    def sniff(self) -> Sniff:
        return self._function("sniff")

    @property
    def read(self) -> Read:
        return self._function("read")

    @property
    def write(self) -> Write:
        return self._function("write")


@dataclass(frozen=True)
class WriterOption:
    """A writer option: its API keyword, how the CLI and a batch manifest spell it, and
    what it takes. The one owner of these: `ckpt convert` and `ckpt batch` flags, the
    manifest's keys and the errors that name an option are all made from this record."""

    name: str  # the API keyword (max_shard_size)
    flag: str  # the CLI flag (--max-shard-size)
    manifest: str  # the key in a batch manifest (max_shard_size)
    kind: str  # "flag" (on/off), "int", or "size" (2GB, 500MB)
    help: str
    chooses_tf: bool = False  # given for a name that says no format, it means tf output


_FORMATS: dict[str, Format] = {}
_OPTIONS: dict[str, WriterOption] = {}


def register_option(option: WriterOption) -> WriterOption:
    _OPTIONS[option.name] = option
    return option


def writer_options() -> dict[str, WriterOption]:
    """Every user-facing writer option, by API keyword, in declared order."""
    return dict(_OPTIONS)


def register(fmt: Format) -> Format:
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> dict[str, Format]:
    return dict(_FORMATS)


def output_formats() -> dict[str, Format]:
    """The formats this tool writes."""
    return {name: fmt for name, fmt in _FORMATS.items() if fmt.writes}


def get(name: str) -> Format:
    try:
        return _FORMATS[name]
    except KeyError:
        raise UnsupportedError(
            f"unknown format {name!r}; known: {', '.join(sorted(_FORMATS))}"
        ) from None


def framework_of(name: str | None) -> str | None:
    """The framework whose conventions files of format `name` follow (None: none, or no
    such format)."""
    fmt = _FORMATS.get(name or "")
    return fmt.framework if fmt is not None else None


def formats_of(framework: str) -> tuple[str, ...]:
    """The formats whose files follow `framework`'s conventions, in declared order."""
    return tuple(f.name for f in _FORMATS.values() if f.framework == framework)


def separator(name: str | None) -> str:
    """The character format `name` joins a path's steps with in its keys."""
    fmt = _FORMATS.get(name or "")
    return fmt.separator if fmt is not None else "/"


def format_asked(dst: str | os.PathLike[str], to: str | None, options: Iterable[str]) -> str | None:
    """The output format asked for: `to`; else `tf` where a TF-only writer option (among the
    API keywords `options`) is given for a name that says no format; else None (the name
    decides)."""
    if to is not None or by_extension(dst) is not None:
        return to
    tf_only = any(_OPTIONS[name].chooses_tf for name in options if name in _OPTIONS)
    return "tf" if tf_only else None


def by_extension(path: str | os.PathLike[str]) -> Format | None:
    """The format whose longest registered extension ends the name."""
    name = os.fspath(path).lower()
    best: tuple[int, Format] | None = None
    for fmt in _FORMATS.values():
        for ext in fmt.extensions:
            if name.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), fmt)
    return best[1] if best else None


# Files people try that no format here reads, by extension: what they are instead.
_FOREIGN = {
    ".onnx": "is an ONNX model (a graph with its weights), which this tool does not read; "
    "export the weights from the framework that made it",
}


def detect(path: str | os.PathLike[str]) -> Format:
    """The format of an existing input, by content first, then by name. A sniff may
    raise a ConvertError that says why a path meant for its format cannot be read (a
    directory of several TF checkpoints): if no format claims the path, the first such
    message is the error, as it says more than "is not a checkpoint"."""
    path = Path(path)
    named = by_extension(path)
    if path.is_file() and path.stat().st_size == 0:
        kind = f" (its name says {named.name})" if named else ""
        raise FormatError(f"is 0 bytes: an empty file, not a checkpoint{kind}", path)
    # The module the name points at first, so usually only that module loads; its
    # formats keep their declared order (a Keras 3 file may be called `x.h5`).
    first = named.module if named else None
    ordered = sorted(_FORMATS.values(), key=lambda fmt: fmt.module != first)
    reason: ConvertError | None = None
    for fmt in ordered:
        try:
            if fmt.sniff(path):
                return fmt
        except ConvertError as exc:
            reason = reason or exc
    if reason is not None:
        raise reason
    if not path.exists() and not _has_siblings(path):
        raise ConvertError("no such file or directory", path)
    foreign = _FOREIGN.get(path.suffix.lower())
    if foreign:
        raise UnsupportedError(foreign, path)
    raise ConvertError(
        "is not a checkpoint this tool reads (expected a TensorFlow checkpoint prefix, "
        ".index or .data file or directory, or a file of: "
        + ", ".join(sorted({e for f in _FORMATS.values() for e in f.extensions}))
        + ")",
        path,
    )


def _has_siblings(path: Path) -> bool:
    """A TF prefix names no file itself; its `.index` is what exists."""
    return path.parent.is_dir() and any(path.parent.glob(path.name + ".*"))


# The built-in formats: one module or package each under convert/formats, declared here
# by name, extensions and module (imported only when used), with the framework whose
# conventions their files follow and the separator of their flat keys (the one owner of
# both facts); and the writer options, which the CLI's flags and a batch manifest's keys
# are made from.
#
# Order is sniffing order after the format the file name points at: TensorFlow first (a
# prefix names no file, so only its sniff can claim it), then the formats with magic
# numbers or strict headers, and the Keras 2 sniff last, since it claims any HDF5 file
# (so that a foreign HDF5 file gets an error that says so).

for _option in (
    WriterOption(
        "max_to_keep",
        "--max-to-keep",
        "max_to_keep",
        "int",
        "tf: write DST as a CheckpointManager directory keeping this many.",
        chooses_tf=True,
    ),
    WriterOption(
        "name_based",
        "--tf-names",
        "tf_names",
        "flag",
        "tf: write a name-based (TF1 Saver) checkpoint without an object graph.",
        chooses_tf=True,
    ),
    WriterOption(
        "max_shard_size",
        "--max-shard-size",
        "max_shard_size",
        "size",
        "torch/safetensors/keras: split DST into shards of at most this size (2GB, 500MB).",
    ),
    WriterOption("compress", "--compress", "compress", "flag", "npz: deflate the members."),
    WriterOption(
        "shards",
        "--shards",
        "shards",
        "int",
        "dcp: split each tensor's rows into this many files, as that many ranks save them.",
    ),
    WriterOption(
        "strided",
        "--strided",
        "strided",
        "flag",
        "torch: write transposed tensors as strided views of the source's bytes (as "
        "torch.save writes w.t()): no transpose; they load non-contiguous.",
    ),
):
    register_option(_option)

for _format in (
    Format(
        "tf",
        "TensorFlow checkpoint (TensorBundle; object- or name-based; SavedModel)",
        (".index", ".ckpt"),
        "convert.formats.tf",
        options=("name_based", "max_to_keep", "directory"),
        framework="keras",
    ),
    Format(
        "orbax",
        "Orbax checkpoint (CheckpointManager root, step or item; zarr with or without OCDBT)",
        (),
        "convert.formats.orbax",
        options=("directory",),
        framework="flax",
    ),
    Format(
        "dcp",
        "torch.distributed.checkpoint directory (FSDP, torchtitan, accelerate)",
        (),
        "convert.formats.torch",
        "dcp_",
        options=("shards", "directory"),
        framework="torch",
        separator=".",
    ),
    Format(
        "deepspeed",
        "DeepSpeed ZeRO checkpoint folder (stages 1-3, universal): fp32 weights, or --pick module",
        (),
        "convert.formats.torch",
        "deepspeed_",
        framework="torch",
        separator=".",
        writes=False,
    ),
    Format(
        "consolidated",
        "Meta's model-parallel folder (consolidated.00.pth ..., params.json): ranks side by side",
        (),
        "convert.formats.torch",
        "consolidated_",
        options=("directory",),
        framework="torch",
        separator=".",
    ),
    Format(
        "safetensors",
        "safetensors (Hugging Face), single files",
        (".safetensors",),
        "convert.formats.safetensors",
        options=("max_shard_size",),
        framework="torch",
        separator=".",
    ),
    Format(
        "sharded",
        "Hugging Face *.index.json set of safetensors or torch shards (reads TF, Flax sets too)",
        (".index.json",),
        "convert.formats.sharded",
        options=("max_shard_size",),
        framework="torch",
        separator=".",
    ),
    Format(
        "torch",
        "PyTorch torch.save (zip and legacy), state dicts and nested checkpoints",
        (".pt", ".pth", ".bin"),
        "convert.formats.torch",
        options=("max_shard_size", "strided"),
        framework="torch",
        separator=".",
    ),
    Format(
        "npz",
        "NumPy .npz archive of arrays, keys joined with '/'",
        (".npz",),
        "convert.formats.npz",
        options=("compress",),
    ),
    Format(
        "flax",
        "Flax msgpack state dict (flax.serialization.to_bytes)",
        (".msgpack",),
        "convert.formats.flax",
        framework="flax",
    ),
    Format(
        "keras",
        "Keras 3 .weights.h5, sharded .weights.json, .keras archive",
        (".weights.h5", ".weights.json", ".keras"),
        "convert.formats.keras",
        "keras3_",
        options=("max_shard_size",),
        framework="keras",
    ),
    Format(
        "keras-h5",
        "Keras 2 legacy HDF5 weights and full-model .h5 (tf.keras, tf_keras)",
        (".h5", ".hdf5"),
        "convert.formats.keras",
        "legacy_",
        framework="keras",
    ),
):
    register(_format)
