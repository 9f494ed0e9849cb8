#!/usr/bin/env python3
"""Kill `ckpt convert` (SIGKILL) at random points while it writes, in every output
format: `scripts/kill_writes.py [--megabytes 256] [--kills 24] [--format NAME ...]`.

Prints a row per output format (conversion time, runs killed, of those how many had
already committed, runs that ended before their kill) and every problem: a destination
that is neither absent nor, with --overwrite, exactly as before, or a temporary left
behind. Then converts under a file size limit (a full disk) in every format. Exits 1 on
any problem."""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hostile import crash  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=256)
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--format", action="append", choices=list(crash.TARGETS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kill-writes-") as tmp:
        rows = crash.run(Path(tmp), args.megabytes, args.kills, args.format)
        print(crash.table(rows), flush=True)
        problems = [f"{r.target}: {p}" for r in rows for p in r.problems]
        sources = crash.make_sources(Path(tmp) / "disk_sources", 8)
        for target in args.format or crash.TARGETS:
            kind, name, options = crash.TARGETS[target]
            code, err, left = crash.full_disk(
                Path(tmp) / "disk" / target.replace(" ", "_"), sources[kind], name, options, 1 << 20
            )
            ok = code == 2 and len(err.strip().splitlines()) == 1 and not left
            print(f"full disk, {target:<14} exit {code}, left {left}: {err.strip()}")
            if not ok:
                problems.append(f"{target}: full disk: exit {code}, left {left}, {err!r}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
