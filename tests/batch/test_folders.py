"""Two conversions writing into one new folder at once (as batch workers do)."""

from __future__ import annotations

from pathlib import Path

from convert.io.reads import OutputSet


def test_a_folder_made_meanwhile_by_another_conversion(tmp_path, monkeypatch):
    """The folder appears between the check and the mkdir: it is used, and it is not
    this output's to remove when the output is abandoned."""
    folder = tmp_path / "new"
    exists = Path.exists

    def racing_exists(path: Path) -> bool:
        if path == folder and not exists(path):
            folder.mkdir()  # (the other worker, just now)
            return False
        return exists(path)

    monkeypatch.setattr(Path, "exists", racing_exists)
    outputs = OutputSet()
    tmp = outputs.path(folder / "x.safetensors")
    tmp.write_bytes(b"data")
    (folder / "other.safetensors").write_bytes(b"the other worker's")
    outputs.abort()
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["other.safetensors"]
