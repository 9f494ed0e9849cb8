#!/usr/bin/env python
"""Print the conversion matrix: every source kind (saved by its framework's own call) ×
every target this tool writes, each result loaded the way that target's users would.

    PYTHONPATH=. scripts/matrix.py [--sources a,b] [--targets x,y] [--no-round-trip] [-v]
    PYTHONPATH=. scripts/matrix.py --write docs/reports/matrix.md

Cells: right (loads with equal values or predictions), refused (exit 2, one line, nothing
written), wrong. A second table gives each round trip A -> B -> A. Exits 1 on any wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", help="comma-separated source names (default: all)")
    parser.add_argument("--targets", help="comma-separated target names (default: all)")
    parser.add_argument("--no-round-trip", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every cell's detail")
    parser.add_argument(
        "--write",
        metavar="PAGE",
        help="rewrite the tables of this page (docs/reports/matrix.md); "
        "needs every source, every target and the round trips",
    )
    args = parser.parse_args()

    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from tests.matrix import harness, page, sources

    if args.write and (args.sources or args.targets or args.no_round_trip):
        parser.error("--write needs the whole matrix: no --sources, --targets, --no-round-trip")

    targets = args.targets.split(",") if args.targets else list(harness.TARGETS)
    wanted = set(args.sources.split(",")) if args.sources else None
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ckpt-matrix-") as tmp:
        built = sources.build(Path(tmp) / "sources", wanted)
        cells = []
        for source in built.values():
            for target in targets:
                cell = harness.run_cell(
                    source,
                    target,
                    Path(tmp) / "cells" / source.name / target,
                    round_trip=not args.no_round_trip,
                )
                cells.append(cell)
                if args.verbose or cell.worst == harness.WRONG:
                    print(
                        f"{cell.source} -> {cell.target}: {cell.status} ({cell.detail})"
                        + (f"; back: {cell.back} ({cell.back_detail})" if cell.back else ""),
                        file=sys.stderr,
                    )
    names = list(built)
    results = {(c.source, c.target): (c.status, c.back or page.NOT_RUN) for c in cells}
    print("Conversions (source -> target):\n")
    print(page.table(results, names, targets, back=False))
    if not args.no_round_trip:
        print("\nRound trips (source -> target -> the source's own format):\n")
        print(page.table(results, names, targets, back=True))
    if args.write:
        path = Path(args.write)
        path.write_text(
            page.rewrite(path.read_text(encoding="utf8"), results, names, targets), encoding="utf8"
        )
        print(f"\nwrote the tables into {path}")
    counts = {
        s: sum(c.worst == s for c in cells) for s in (harness.RIGHT, harness.REFUSED, harness.WRONG)
    }
    print(
        f"\n{len(cells)} cells: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" ({time.monotonic() - start:.0f} s)"
    )
    return 1 if counts[harness.WRONG] else 0


if __name__ == "__main__":
    sys.exit(main())
