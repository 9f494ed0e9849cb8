"""Checks shared by the readers of zip-based formats (torch zip, npz, .keras): member
names that could leave a directory if anything ever extracted them, and sizes that no
honest zip declares. Each returns why a member is refused, or None."""

from __future__ import annotations

# Deflate cannot expand more than about 1032:1; a member declaring more is lying.
_MAX_DEFLATE_RATIO = 1032
_DEFLATE_SLACK = 1 << 16


def unsafe_name(name: str) -> str | None:
    """Why `name` is refused as a member name: absolute, a drive, a `..` part, a NUL."""
    if (
        name
        and ".." not in name
        and "\x00" not in name
        and name[0] not in "/\\"
        and name[1:2] != ":"
    ):
        return None  # (every member of an honest archive: one test each, no split)
    if not name:
        return "has a member with an empty name"
    if "\x00" in name:
        return f"member name {name!r} holds a NUL byte"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"member name {name!r} is an absolute path"
    if ".." in parts:
        return f"member name {name!r} climbs out of the archive ('..')"
    return None


def lying_sizes(name: str, stored: bool, file_size: int, compress_size: int) -> str | None:
    """Why a member's declared sizes cannot be true: a stored member whose two sizes
    differ, or a compressed one declaring more than deflate can expand to."""
    if stored and file_size != compress_size:
        return f"stored member {name} declares {file_size} bytes but holds {compress_size}"
    if not stored and file_size > compress_size * _MAX_DEFLATE_RATIO + _DEFLATE_SLACK:
        return (
            f"member {name} declares {file_size} bytes from {compress_size} compressed "
            "(more than deflate can hold: a zip bomb or a damaged header)"
        )
    return None
