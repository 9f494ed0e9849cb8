"""Errors a user can cause. Each carries one line: which file, what is wrong."""

from __future__ import annotations

import os
from collections.abc import Mapping


def printable(text: str) -> str:
    """`text` with control and other unprintable characters escaped (`\\x07`, `\\n`):
    names from a damaged file must not break the line or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConvertError(Exception):
    """Base of every error this package raises on purpose (the CLI exits 2 on these).

    `keywords` names what would help, for a message that says so with `{keyword}`
    placeholders: `str()` spells each as the Python API takes it (`overwrite=True`), and
    `spelled()` as another front end does (the CLI: `--overwrite`)."""

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        keywords: Mapping[str, str] | None = None,
    ):
        self.path = os.fspath(path) if path is not None else None
        self.reason = message
        self.keywords = dict(keywords or {})
        super().__init__(self.spelled({}))

    def spelled(self, spellings: Mapping[str, str]) -> str:
        """The one-line message, with each keyword spelled as `spellings` says (else as
        the Python API takes it)."""
        reason = self.reason
        if self.keywords:
            reason = reason.format_map(
                {k: spellings.get(k, api) for k, api in self.keywords.items()}
            )
        text = f"{self.path}: {reason}" if self.path else reason
        return printable(text)


class FormatError(ConvertError):
    """The file is not what it claims to be, or is damaged (bad magic, truncated, bad sizes)."""


class ChecksumError(FormatError):
    """A stored checksum does not match the bytes."""


class UnsafeInputError(FormatError):
    """The input asks for something this package refuses to do (e.g. a pickle calling code)."""


class UnsupportedError(ConvertError):
    """Valid input that this package cannot (yet) convert the way asked."""


class OutputExistsError(ConvertError):
    """The destination exists and overwriting was not asked for, or it is an input."""


class RuleError(ConvertError):
    """A rule file that is malformed, or rules that do not fit the conversion asked for."""


class FileAccessError(ConvertError):
    """A file could not be opened, read or written (missing, permissions, a full disk)."""

    @classmethod
    def from_os_error(
        cls, exc: OSError, path: str | os.PathLike[str] | None = None
    ) -> FileAccessError:
        where = path if path is not None else exc.filename
        return cls(exc.strerror or str(exc), where)
