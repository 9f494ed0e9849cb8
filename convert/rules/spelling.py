"""How a side spells its paths in a rule set's patterns: by its own paths, or (where the
side goes by them) its TF variable names, then its `[[rename]]`s; and how a skeleton
spells an optional prefix (`bert.`), so that an output takes the skeleton's spelling."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from convert.core.errors import RuleError
from convert.core.graph import GraphPath
from convert.core.meta import TF_NAME_BELOW_MODEL, VARIABLE_NAME
from convert.core.tensor import Tensor
from convert.rules.entries import spell
from convert.rules.language import ANY_PREFIX, RuleSet


def spelled(
    tensors: dict[GraphPath, Tensor], rules: RuleSet, side: str, what: str
) -> tuple[dict[GraphPath, Tensor], dict[GraphPath, GraphPath]]:
    """`tensors` by the paths the patterns name them with on `side`, and each such path's
    own path: the TF variable name where the side goes by those, then the renames."""
    renames = [r for r in rules.renames if r.side == side]
    by_variable = side in rules.variable_names
    if not renames and not by_variable:
        return tensors, {}
    out: dict[GraphPath, Tensor] = {}
    native: dict[GraphPath, GraphPath] = {}
    for path, tensor in tensors.items():
        name = spell(variable_path(tensor) or path if by_variable else path, renames)
        if name in out:
            if out[name] is tensor:
                continue  # (an alias: one tensor at two places)
            raise RuleError(
                f"two {what} tensors are named {'/'.join(name)} by the rules "
                f"({'/'.join(native[name])} and {'/'.join(path)})"
            )
        out[name] = tensor
        native[name] = path
    return out, native


def variable_path(tensor: Tensor) -> GraphPath | None:
    """A Keras 2 weight's TF variable name as a path, without the model's own scope
    (`tf_bert_model/bert/pooler/dense/kernel` is `bert/pooler/dense/kernel`):
    what transformers' TF classes go by. Their layers share variables (a masked-LM decoder
    is the word embeddings) and some scope weights by name alone (T5's `shared/shared`),
    so the place in the `.h5` (layer, then weight) is not the name. A file that kept only
    the name below the model's scope (a TF-format safetensors file) gives that."""
    below = tensor.meta.get(TF_NAME_BELOW_MODEL)
    if isinstance(below, str):
        return tuple(below.split("/"))
    name = tensor.meta.get(VARIABLE_NAME)
    if not isinstance(name, str):
        return None
    parts = name.split("/")
    return tuple(parts[1:] if len(parts) > 1 else parts)


class Skeleton:
    """The skeleton's tensors by path, and how it spells a side's optional prefix."""

    def __init__(self, want: dict[GraphPath, Tensor], prefix: GraphPath | None):
        self.want = want
        self.prefix = prefix
        self.tails: dict[GraphPath, list[GraphPath]] = {}
        if prefix == ANY_PREFIX:
            for path in want:
                self.tails.setdefault(path[1:], []).append(path)

    def spelling(self, path: GraphPath) -> GraphPath:
        """`path` as the skeleton spells it: with or without the side's prefix."""
        if path in self.want or not self.prefix:
            return path
        if self.prefix != ANY_PREFIX:
            other = toggle(path, self.prefix)
            return other if other in self.want else path
        if path[1:] in self.want:
            return path[1:]
        found = self.tails.get(path, [])
        return found[0] if len(found) == 1 else path


def toggle(path: GraphPath, prefix: GraphPath) -> GraphPath:
    return path[len(prefix) :] if path[: len(prefix)] == prefix else (*prefix, *path)


def spellings(
    path: GraphPath, prefix: GraphPath | None
) -> Iterator[tuple[GraphPath, Callable[[GraphPath], GraphPath]]]:
    """A path as it is, then (where the side has an optional prefix, like Hugging Face's
    `bert.`) with the prefix put in or taken out; each with the way back."""
    yield path, lambda p: p
    if prefix:
        yield toggle(path, prefix), lambda p: toggle(p, prefix)
