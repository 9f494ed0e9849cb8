"""Errors a user can cause. Each carries one line: which file, what is wrong."""

from __future__ import annotations

import os


class ConvertError(Exception):
    """Base of every error this package raises on purpose (the CLI exits 2 on these)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


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
