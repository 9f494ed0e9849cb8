"""Pairing a side that orders its layers only in chains with a fully ordered one: the one
interleaving of the chains that fits, found without trying every one, and without the
call stack (a group may hold thousands of layers)."""

from __future__ import annotations

import random

import pytest

from convert.rules.order import _interleave


def every_merge(chains: list[list]) -> list[list]:
    total = sum(map(len, chains))
    found: list[list] = []

    def grow(heads: list[int], sequence: list) -> None:
        if len(sequence) == total:
            found.append(list(sequence))
            return
        for c, chain in enumerate(chains):
            if heads[c] < len(chain):
                heads[c] += 1
                sequence.append(chain[heads[c] - 1])
                grow(heads, sequence)
                sequence.pop()
                heads[c] -= 1

    grow([0] * len(chains), [])
    return found


@pytest.mark.parametrize("seed", range(2))
def test_the_one_fitting_merge_or_none(seed):
    rng = random.Random(seed)
    for _ in range(300):
        chains, n = [], 0
        for _ in range(rng.randint(1, 3)):
            length = rng.randint(1, 3)
            chains.append([(n + i, rng.randint(0, 2)) for i in range(length)])  # (id, shape)
            n += length
        other = [rng.randint(0, 2) for _ in range(n)]

        def fits(item, shape):
            return item[1] == shape

        fitting = [
            m for m in every_merge(chains) if all(fits(a, b) for a, b in zip(m, other, strict=True))
        ]
        assert _interleave(chains, other, fits) == (fitting[0] if len(fitting) == 1 else None)


def test_thousands_of_layers():
    chains = [[(i, i)] for i in range(1200)]
    merged = _interleave(chains, list(range(1200)), lambda item, shape: item[1] == shape)
    assert merged == [(i, i) for i in range(1200)]
