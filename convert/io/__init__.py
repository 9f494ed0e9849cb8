"""Bytes in and out: bounded reads of untrusted files, outputs that appear whole or not at
all, stored bytes copied without Python, reading ahead while writing, checksums, banded
transposes and the checks zip-based readers share. Above the core only."""
