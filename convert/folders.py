"""Hugging Face model folders: a directory with `config.json` beside a model's weights, in
one or more frameworks' files named as transformers names them.

A conversion through rules reads the weights of the rules' source side (the first side,
or the second with `--reverse`; a folder holding one side's files only decides by
itself) and writes a folder: the target side's weights file, and every other file of the
source folder (config, tokenizer, generation settings) copied unchanged. The folder is
made beside its destination and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from convert.core import registry
from convert.core.errors import ConvertError, FileAccessError
from convert.core.meta import SAVED_BY

if TYPE_CHECKING:
    from convert.core.graph import Graph
    from convert.rules.language import RuleSet

CONFIG = "config.json"
# Weight files by framework, in the order transformers prefers them when loading, each with
# the format its graph has (a sharded TF set reads as keras-h5, as its shards are).
WEIGHTS: dict[str, dict[str, str]] = {
    "torch": {
        "model.safetensors.index.json": "sharded",
        "model.safetensors": "safetensors",
        "pytorch_model.bin.index.json": "sharded",
        "pytorch_model.bin": "torch",
    },
    "tf": {"tf_model.h5.index.json": "keras-h5", "tf_model.h5": "keras-h5"},
    "flax": {"flax_model.msgpack.index.json": "flax", "flax_model.msgpack": "flax"},
}
# What a folder's weights are written as, by the target side's format.
WRITTEN = {
    "safetensors": "model.safetensors",
    "keras-h5": "tf_model.h5",
    "flax": "flax_model.msgpack",
    "sharded": "model.safetensors",  # (sharded past --max-shard-size, as transformers does)
    "torch": "pytorch_model.bin",
}
_SHARD_STEMS = ("model-", "pytorch_model-", "tf_model-", "flax_model-")


def is_model_folder(path: str | os.PathLike) -> bool:
    """A directory with a `config.json` and at least one weights file transformers names."""
    folder = Path(path)
    return (
        folder.is_dir()
        and (folder / CONFIG).is_file()
        and any((folder / n).is_file() for names in WEIGHTS.values() for n in names)
    )


def hint(source: str | os.PathLike, graph: Graph, target_format: str) -> str | None:
    """For a conversion without rules of a Hugging Face TF or Flax file (transformers'
    name, a `config.json` beside it): that the names stay TF's or Flax's, and the rules
    that give PyTorch's."""
    path = Path(source)
    tf_named = graph.root.meta.get(SAVED_BY) == "tf"  # (a TF-format safetensors file)
    rules = "hf-tf" if tf_named else {"keras-h5": "hf-tf", "flax": "hf-flax"}.get(str(graph.format))
    if rules is None or (target_format == graph.format and not tf_named):
        return None
    if not (_is_weights(path.name) and (path.parent / CONFIG).is_file()):
        return None
    return (
        f"{path.name} is a Hugging Face {'TF' if rules == 'hf-tf' else 'Flax'} model's: its "
        f"names stay as they are; --rules {rules} gives PyTorch's "
        f"(ckpt convert {path.parent} OUT_DIR --rules {rules})"
    )


def weight_files(folder: Path) -> dict[str, Path]:
    """Framework → the weights file transformers would load from `folder`."""
    found: dict[str, Path] = {}
    for framework, names in WEIGHTS.items():
        for name in names:
            if (folder / name).is_file():
                found.setdefault(_framework(folder / name, framework), folder / name)
    return found


def _framework(path: Path, named: str) -> str:
    """Whose weights a file holds: its name's framework, unless the file says otherwise
    (transformers' TF classes wrote `model.safetensors` too, marked `format: tf`)."""
    if named != "torch" or "safetensors" not in path.name:
        return named
    try:
        said = registry.detect(path).read(path).root.meta.get(SAVED_BY)
    except (ConvertError, OSError):  # (the conversion's own read says what is wrong)
        return named
    return str(said or named)


@dataclass
class Resolved:
    """A conversion with folders resolved to files: what to read, the skeleton, whether
    `--reverse` still applies, the output format, and the folder being made (if any)."""

    src: str | os.PathLike
    like: str | os.PathLike | None
    reverse: bool
    to: str | None
    output: FolderOutput | None = None


def resolve(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    rules: RuleSet | None,
    like: str | os.PathLike | None,
    reverse: bool,
    to: str | None,
    overwrite: bool,
) -> Resolved:
    """Folders among a conversion's arguments, as the files they stand for. The rules'
    source side is the first, or the second with `reverse`; a folder holding one side's
    weights only is read as that side. A folder source, or a file source `--like` a folder,
    with a destination that names no file format makes a folder."""
    done = Resolved(src, like, reverse, to)
    if not is_model_folder(src):
        if like is not None and is_model_folder(like) and rules is not None:
            done.like = _side_file(Path(like), rules, _target_side(rules, src, reverse), "--like")
            fmt = to or _format(Path(done.like))
            if registry.by_extension(os.fspath(dst)) is None and fmt in WRITTEN:
                # (a file into a folder like the skeleton's: its other files copied too)
                done.output = FolderOutput(dst, Path(like), output_name(fmt, dst), overwrite)
        return done
    folder = Path(src)
    if rules is None:
        done.src = only_weights(folder)
        written = to or _format(Path(done.src))
    else:
        sides = [rules.side_formats(s) for s in rules.sides]
        files = weight_files(folder)
        held = [i for i in range(len(sides)) if _side_files(rules, i, files)]
        if not held:
            raise ConvertError(
                f"holds no weights file the rules {rules.name} read ("
                + (", ".join(p.name for p in files.values()) or "none")
                + ")",
                folder,
            )
        side = held[0] if len(held) == 1 else int(reverse)
        done.src = _side_file(folder, rules, side, "the source")
        # (the file's format gives the direction, unless both sides read one format)
        done.reverse = reverse and bool(set(sides[0]) & set(sides[1]))
        if like is not None and is_model_folder(like):
            done.like = _side_file(Path(like), rules, 1 - side, "--like")
        written = to or next((f for f in WRITTEN if f in sides[1 - side]), None)
    if registry.by_extension(os.fspath(dst)) is None:
        # (a skeleton in no weights format, a `ckpt ls --json` listing: the side decides)
        fmt = (_format(Path(done.like)) if done.like is not None else None) or written
        # (a format whose output is a folder of its own, Orbax's or a TF checkpoint's, is
        # written at `dst` itself)
        if fmt is not None and "directory" not in registry.get(fmt).options:
            done.output = FolderOutput(dst, folder, output_name(fmt, dst), overwrite)
    return done


def _target_side(rules: RuleSet, src: str | os.PathLike, reverse: bool) -> int:
    fmt = _format(Path(src))
    first, second = (rules.side_formats(s) for s in rules.sides)
    reads_first = fmt in first and not (reverse and fmt in second)
    return 1 if reads_first else 0


def _side_files(rules: RuleSet, side: int, files: dict[str, Path]) -> list[Path]:
    """The files of `files` (by framework) that are the rules' side `side`'s: those of the
    framework the side is named after, and those of other frameworks in a format it reads."""
    name, formats = rules.sides[side], rules.side_formats(rules.sides[side])
    return [
        path
        for framework, path in files.items()
        if framework == name or (framework not in rules.sides and _format(path) in formats)
    ]


def _side_file(folder: Path, rules: RuleSet, side: int, what: str) -> Path:
    hits = _side_files(rules, side, weight_files(folder))
    if not hits:
        formats = rules.side_formats(rules.sides[side])
        raise ConvertError(f"({what}) holds no {' or '.join(formats)} weights file", folder)
    return hits[0]


def only_weights(folder: Path) -> Path:
    """The folder's one weights file, for a conversion without rules."""
    files = weight_files(folder)
    if len(files) != 1:
        raise ConvertError(
            f"holds weights of {len(files)} frameworks "
            f"({', '.join(p.name for p in files.values())}); name the file, or give --rules",
            folder,
        )
    return next(iter(files.values()))


def _format(path: Path) -> str | None:
    """The format of a weights file's graph: by its transformers name, else detected."""
    known = next((names[path.name] for names in WEIGHTS.values() if path.name in names), None)
    if known is not None:
        return known
    try:
        return registry.detect(path).name
    except (ConvertError, OSError):
        return None


def output_name(target_format: str, folder: str | os.PathLike) -> str:
    try:
        return WRITTEN[target_format]
    except KeyError:
        raise ConvertError(
            f"a model folder holds {', '.join(WRITTEN.values())}; {target_format} output "
            "is not one of them (name an output file instead)",
            folder,
        ) from None


def _is_weights(name: str) -> bool:
    if any(name in names for names in WEIGHTS.values()):
        return True
    return name.startswith(_SHARD_STEMS) and "-of-" in name


class FolderOutput:
    """A model folder made beside `dst` and renamed into place on `commit`; `path` is
    where the weights file goes meanwhile."""

    def __init__(self, dst: str | os.PathLike, source: Path, weights_name: str, overwrite: bool):
        self.dst = Path(dst)
        self.source = source
        if self.dst.resolve() == source.resolve() or source.resolve() in self.dst.resolve().parents:
            raise ConvertError("is the source folder or inside it; name another folder", dst)
        if (
            self.dst.exists()
            and not overwrite
            and (not self.dst.is_dir() or any(self.dst.iterdir()))
        ):
            raise FileAccessError("exists; pass --overwrite to replace it", dst)
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.", dir=self.dst.parent))
        umask = os.umask(0)
        os.umask(umask)
        self.tmp.chmod(0o777 & ~umask)  # (mkdtemp's 0o700 is for a private directory)
        self.path = self.tmp / weights_name
        self.copied: list[str] = []

    def commit(self) -> None:
        for item in sorted(self.source.iterdir()):
            if item.is_file() and not _is_weights(item.name):
                shutil.copy2(item, self.tmp / item.name)
                self.copied.append(item.name)
        old = None
        if self.dst.exists():
            old = self.dst.with_name(f".{self.dst.name}.old-{os.getpid()}")
            os.replace(self.dst, old)
        os.replace(self.tmp, self.dst)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    def abandon(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
