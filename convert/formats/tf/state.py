"""The `checkpoint` state file (a text-format CheckpointState) and CheckpointManager-style
numbering and retention (`ckpt-N`, newest `max_to_keep` kept)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from google.protobuf import text_format

from convert.core.errors import FormatError
from convert.formats.tf import protos
from convert.io.outputs import OutputSet

STATE_FILE = "checkpoint"
_NUMBERED = re.compile(r"^ckpt-(\d+)\.index$")


def load(directory: Path):
    state = protos.CheckpointState()
    path = directory / STATE_FILE
    try:
        text_format.Parse(path.read_text(), state)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise FormatError(f"is not a valid checkpoint state file ({exc})", path) from None
    return state


def _in(directory: Path, name: str) -> str:
    """The prefix a state file's entry names, as text. Entries may be absolute or relative
    to their directory; a moved directory keeps working through the base name. A TF1
    `saver.save(sess, "dir/")` records "." (or the path `dir/`): the prefix `dir/`, whose
    files are `dir/.index` and `dir/.data-*` (which a Path, dropping the `/`, cannot say)."""
    p = name if os.path.isabs(name) else os.path.join(directory, name)
    if os.path.basename(p) in (".", ""):
        p = os.path.join(os.path.dirname(p) if p.endswith(".") else p, "")
    if not Path(f"{p}.index").is_file():
        moved = os.path.join(directory, os.path.basename(p))
        if Path(f"{moved}.index").is_file():
            return moved
    return p


def latest(directory: Path) -> str:
    """The newest checkpoint the state file names, as TF's `latest_checkpoint` finds it."""
    state = load(directory)
    if not state.model_checkpoint_path:
        raise FormatError("names no checkpoint", directory / STATE_FILE)
    prefix = _in(directory, state.model_checkpoint_path)
    if not Path(f"{prefix}.index").is_file():
        raise FormatError(
            f"names {state.model_checkpoint_path!r}, whose .index is missing",
            directory / STATE_FILE,
        )
    return prefix


def next_prefix(directory: Path) -> Path:
    numbers = (
        [int(m.group(1)) for f in directory.glob("ckpt-*.index") if (m := _NUMBERED.match(f.name))]
        if directory.is_dir()
        else []
    )
    return directory / f"ckpt-{max(numbers, default=0) + 1}"


def update(out: OutputSet, prefix: Path, max_to_keep: int | None) -> list[str]:
    """Record `prefix` as the newest checkpoint of its directory (in the same OutputSet, so
    it lands with the checkpoint); returns the prefixes that fall out of `max_to_keep`."""
    directory = prefix.parent
    now = time.time()
    paths: list[str] = []
    stamps: list[float] = []
    if (directory / STATE_FILE).is_file():
        old = load(directory)
        paths = list(old.all_model_checkpoint_paths)
        stamps = list(old.all_model_checkpoint_timestamps)
        if len(stamps) != len(paths):
            stamps = [now] * len(paths)
    pairs = [
        (p, s)
        for p, s in zip(paths, stamps, strict=True)
        if _in(directory, p) != str(prefix) and Path(f"{_in(directory, p)}.index").is_file()
    ]
    pairs.append((prefix.name, now))
    stale: list[str] = []
    if max_to_keep is not None and max_to_keep > 0 and len(pairs) > max_to_keep:
        stale = [_in(directory, p) for p, _ in pairs[:-max_to_keep]]
        pairs = pairs[-max_to_keep:]
    state = protos.CheckpointState(
        model_checkpoint_path=prefix.name,
        all_model_checkpoint_paths=[p for p, _ in pairs],
        all_model_checkpoint_timestamps=[s for _, s in pairs],
        last_preserved_timestamp=now,
    )
    out.path(directory / STATE_FILE, replace=True).write_text(text_format.MessageToString(state))
    return stale
