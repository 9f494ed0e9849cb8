"""Keras 3's name for a layer class in its object paths: the class in snake case
(`Conv2DTranspose` → `conv2d_transpose`, so a Dense is found at `layers/dense`), numbered
per class after the first (`layers/dense_1`).

In the core because two rooms need it and neither may import the other: the Keras format
(`layout.py`: a model config's layers → their Keras 3 object paths) and the
rules (`config.py`, `rules/kinds.py`: a layer's kind and config from its path).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def snake_case(name: str) -> str:
    """Keras 3's object-path name for a class (`MultiHeadAttention` →
    `multi_head_attention`); characters a Python name cannot hold are dropped first, as
    Keras drops them."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def numbered(class_names: Iterable[str]) -> list[str]:
    """The object-path names of a model's layers of these classes, in order: each class in
    snake case, the second and later of a class numbered from 1 (`dense`, `dense_1`)."""
    used: dict[str, int] = {}
    names = []
    for name in class_names:
        base = snake_case(name)
        count = used.get(base, -1) + 1
        used[base] = count
        names.append(f"{base}_{count}" if count else base)
    return names
