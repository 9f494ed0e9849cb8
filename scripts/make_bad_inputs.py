#!/usr/bin/env python3
"""Write the hostile corpus: `scripts/make_bad_inputs.py DIR [--check]`.

Writes valid files with the real frameworks (TensorFlow, tf_keras, Keras 3, torch,
safetensors, Flax, numpy) under DIR/seeds, then at least 200 damaged or malicious cases
made from them under DIR/cases, and DIR/manifest.json (tests/hostile/corpus.py says what
each case holds). With --check, also runs `ckpt ls` and `ckpt convert` on every case
(tests/hostile/harness.py), prints the table per format and kind of damage, and exits 1
on any miss."""

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.directory.exists() and any(args.directory.iterdir()):
        parser.error(f"{args.directory} is not empty")
    warnings.simplefilter("ignore")
    from tests.hostile.corpus import write_corpus

    cases = write_corpus(args.directory)
    print(f"{len(cases)} cases in {args.directory}", file=sys.stderr)
    if not args.check:
        return 0
    results = args.directory / "results.json"
    subprocess.run(
        [sys.executable, "-m", "tests.hostile.harness", str(args.directory), str(results)],
        check=True,
        cwd=ROOT,
    )
    from tests.hostile.report import misses, table

    rows = json.loads(results.read_text())
    print(table(rows))
    for miss in misses(rows):
        print(miss)
    return 1 if misses(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
