"""The hostile corpus: at least 200 damaged or malicious inputs made from the seeds (valid
files written by the real frameworks, seeds.py), in every format this project reads.

`write_corpus(out)` writes `out/seeds/`, one directory per case under `out/cases/`, the
files the cases point at from outside (`out/outside/secret`, `out/outside/secret.h5`),
and `out/manifest.json`: for each case its id, format, kind of damage, what was done, the
input path, and what `ckpt ls` and `ckpt convert` must do: "refuse" (exit 2, one line);
"accept" for the seeds themselves (the control: the limits refuse nothing valid); or
"either" where the damage leaves a file the format cannot tell from a valid one (a flipped
bit in data that no checksum covers), which may then be read as it is. A payload that
ran would create `out/MARKER`."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import corpus_formats
from .seeds import write_seeds

CONTROL = "control"  # a seed as the framework wrote it: must be read (exit 0)
KINDS = (
    CONTROL,
    "truncation",
    "bit flip",
    "lying header",
    "nesting",
    "malicious",
    "zip trick",
    "hdf5 link",
    "path escape",
)


@dataclass
class Case:
    id: str
    format: str
    kind: str
    what: str
    input: str
    ls: str = "refuse"
    convert: str = "refuse"


class Corpus:
    """Collects cases: each is a copy of a seed's set with some files replaced."""

    def __init__(self, out: Path, seeds: dict[str, tuple[str, str]]):
        self.out = out
        self.seed_dir = out / "seeds"
        self.seeds = seeds
        self.cases: list[Case] = []
        self.rng = random.Random(14)
        self.marker = out / "MARKER"
        self.secret = out / "outside" / "secret"
        self.secret_h5 = out / "outside" / "secret.h5"

    def seed_bytes(self, seed: str, rel: str | None = None) -> bytes:
        return (self.seed_dir / (rel or self.seeds[seed][1])).read_bytes()

    def add(
        self,
        seed: str,
        kind: str,
        what: str,
        changes: dict[str, bytes | None],
        ls: str = "refuse",
        convert: str | None = None,
        input: str | None = None,
    ) -> Path:
        """A case from `seed` with `changes` ({path: new bytes, or None to delete}, paths
        as in the seeds directory). Returns the case's directory."""
        assert kind in KINDS, kind
        fmt, seed_input = self.seeds[seed]
        case_id = f"{len(self.cases):03d}-{seed}-{kind.replace(' ', '-')}"
        case_dir = self.out / "cases" / case_id
        case_dir.mkdir(parents=True)
        parts = Path(seed_input).parts
        if len(parts) > 1 or (self.seed_dir / seed_input).is_dir():
            shutil.copytree(self.seed_dir / parts[0], case_dir / parts[0])
            # What `../secret` names from the set's directory: no reader may open it.
            (case_dir / "secret").write_text("secret: outside the input's directory\n")
        else:
            shutil.copy(self.seed_dir / seed_input, case_dir / seed_input)
        for rel, data in changes.items():
            target = case_dir / rel
            if data is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        self.cases.append(Case(case_id, fmt, kind, what, input or seed_input, ls, convert or ls))
        return case_dir


def write_corpus(out: Path) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    seeds = write_seeds(out / "seeds")
    corpus = Corpus(out, seeds)
    corpus.secret.parent.mkdir()
    corpus.secret.write_text("secret: no reader may open this file\n")
    corpus_formats.write_secret_h5(corpus.secret_h5)
    for seed in seeds:
        corpus.add(seed, CONTROL, "the valid file", {}, ls="accept")
    for make in corpus_formats.MAKERS:
        make(corpus)
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "marker": str(corpus.marker),
                "outside": str(corpus.secret.parent),
                "cases": [asdict(c) for c in corpus.cases],
            },
            indent=1,
        )
    )
    return corpus.cases
