"""The corpus table: per format and kind of damage, the cases tried, refused cleanly, and
read as valid files (only where the damage leaves one), and the misses."""

from __future__ import annotations

from collections import defaultdict

from .corpus import CONTROL, KINDS


def table(rows: list[dict]) -> str:
    """One block per format: a line per kind of damage. A case is refused cleanly when
    `ckpt convert` refused it and neither command missed (`ckpt ls` reads no tensor data,
    so it may list a file whose data is damaged); valid: still a readable file."""
    cases: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        cases[row["format"]][row["id"]].append(row)
    lines = [f"{'format':<12}{'damage':<14}{'tried':>6}{'refused':>9}{'valid':>7}{'missed':>8}"]
    totals = [0, 0, 0, 0]
    for fmt in sorted(cases):
        by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for runs in cases[fmt].values():
            kind = runs[0]["kind"]
            counts = by_kind[kind]
            counts[0] += 1
            if any(r["problems"] for r in runs):
                counts[3] += 1
            elif runs[-1]["code"] == 2:  # (convert reads every byte; ls reads no data)
                counts[1] += 1
            else:
                counts[2] += 1
        for kind in KINDS:
            if kind in by_kind:
                c = by_kind[kind]
                lines.append(f"{fmt:<12}{kind:<14}{c[0]:>6}{c[1]:>9}{c[2]:>7}{c[3]:>8}")
                if kind != CONTROL:
                    totals = [t + n for t, n in zip(totals, c, strict=True)]
    lines.append(
        f"{'all':<12}{'(bad inputs)':<14}{totals[0]:>6}{totals[1]:>9}{totals[2]:>7}{totals[3]:>8}"
    )
    return "\n".join(lines)


def misses(rows: list[dict]) -> list[str]:
    return [
        f"{r['id']} ({r['what']}), ckpt {r['command']}: {'; '.join(r['problems'])} "
        f"[{r['error'][:200]}]"
        for r in rows
        if r["problems"]
    ]


def bad_cases(rows: list[dict]) -> int:
    return len({r["id"] for r in rows if r["kind"] != CONTROL})
