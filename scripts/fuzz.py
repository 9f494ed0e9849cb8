#!/usr/bin/env python3
"""Fuzz one reader: `scripts/fuzz.py FORMAT --minutes N [--seeds DIR] [--findings DIR]`.

Writes the seeds (valid files from the real frameworks) unless --seeds names a directory
of them, damages them with hypothesis for N minutes, and prints the executions, how many
inputs were refused (ConvertError) or still read as valid files, and each finding (any
other exception, a MemoryError, or an answer slower than 5 s), saved under --findings."""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hostile import fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=[*fuzz.FORMATS, "all"])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seeds", type=Path, help="a directory written by seeds.write_seeds")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    args = parser.parse_args()
    seeds = args.seeds
    if seeds is None or not (seeds / "model.pt").exists():
        from tests.hostile.seeds import write_seeds

        seeds = seeds or Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))
        write_seeds(seeds)
    formats = fuzz.FORMATS if args.format == "all" else (args.format,)
    failed = False
    for fmt in formats:
        start = time.monotonic()
        stats = fuzz.run(fmt, seeds, args.minutes * 60 / len(formats), args.findings)
        took = time.monotonic() - start
        print(
            json.dumps(
                {
                    "format": fmt,
                    "seconds": round(took),
                    "executions": stats.executions,
                    "refused": stats.refused,
                    "still_valid": stats.accepted,
                    "findings": stats.findings,
                }
            ),
            flush=True,
        )
        failed |= bool(stats.findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
