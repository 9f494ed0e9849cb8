"""What a conversion, save or migration did: the record every writer fills in (tensors,
bytes, files, notes) and the jobs above complete (the rules' and the migration's reports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Report:
    """What a conversion or save did."""

    source: str | None
    destination: str
    source_format: str | None
    target_format: str
    tensors: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things a user should know (folded aliases…)
    rules: dict[str, Any] | None = None  # the rules report: consumed, unused, missing, plan
    migration: dict[str, Any] | None = None  # `migrate`: moved, kept, dropped, aliased, added
    written: bool = True  # False for a dry run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
