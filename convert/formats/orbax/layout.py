"""Where an Orbax checkpoint's trees are: the folder a user names may be a
`CheckpointManager` root (one folder per step), one step, or one item of a step.

- An item is a folder with `_METADATA` (the tree's paths and key types, written by
  `PyTreeCheckpointHandler`, which `StandardCheckpointer` and the `StandardSave` args use)
  beside its arrays.
- A step is a folder with `_CHECKPOINT_METADATA`: an item itself (`StandardCheckpointer`
  saves its one tree there), or the parent of items (`CheckpointManager` saves each item
  under its name: `default/`, or `state/`, `params/`, ...).
- A manager root holds steps named by their number (`0/`, `1000/`); as TensorFlow's
  `checkpoint` file does, the newest finished one is read unless a step is named.
  Folders Orbax is still writing (`*.orbax-checkpoint-tmp*`) are not steps.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from convert.core.errors import FormatError

METADATA = "_METADATA"
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
_TEMPORARY = ".orbax-checkpoint-tmp"
_STEP = re.compile(r"(?:.*_)?(\d+)")  # `1000`, or a prefixed `checkpoint_1000`


def is_item(folder: Path) -> bool:
    return (folder / METADATA).is_file()


def is_step(folder: Path) -> bool:
    return (folder / CHECKPOINT_METADATA).is_file() and _TEMPORARY not in folder.name


def steps(root: Path) -> dict[int, Path]:
    """A manager root's finished steps by number."""
    found: dict[int, Path] = {}
    for name in os.listdir(root):
        match = _STEP.fullmatch(name)
        if match and is_step(root / name):
            found[int(match.group(1))] = root / name
    return found


def is_orbax(path: Path) -> bool:
    return path.is_dir() and (is_item(path) or is_step(path) or bool(steps(path)))


@dataclass
class Found:
    """The items to read (name → folder; "" for a step that is its one item) and what
    the report says about how they were found."""

    items: dict[str, Path]
    step: int | None = None
    notes: list[str] = field(default_factory=list)
    folder: Path | None = None  # the step's folder (its `_CHECKPOINT_METADATA`)


def locate(path: Path) -> Found:
    if is_item(path):
        return Found({"": path}, folder=path)
    notes = []
    step_number = None
    if not is_step(path):
        found = steps(path)
        if not found:
            raise FormatError("holds no Orbax step, item or _METADATA", path)
        step_number = max(found)
        if len(found) > 1:
            older = ", ".join(str(n) for n in sorted(found)[:-1][-4:])
            notes.append(f"step {step_number}, the newest (also there: {older})")
        path = found[step_number]
    items = {name: path / name for name in sorted(os.listdir(path)) if is_item(path / name)}
    if not items:
        raise FormatError("is an Orbax step without a tree item (_METADATA)", path)
    others = sorted(
        name
        for name in os.listdir(path)
        if (path / name).is_dir() and name not in items and not name.startswith(("_", "."))
    )
    if others:
        notes.append(f"left out: items that hold no tree ({', '.join(others)})")
    if len(items) == 1:  # (its tree at the top: what restoring that item gives)
        ((name, only),) = items.items()
        if name != "default":
            notes.append(f"item {name}")
        items = {"": only}
    return Found(items, step_number, notes, path)
