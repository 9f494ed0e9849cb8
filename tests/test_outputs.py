"""Where outputs go and what errors say: the format a destination's name asks for, `DIR/`,
TF-only options, file modes, temporary names, and the Python API's own errors."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import convert
from convert.core.errors import ConvertError, OutputExistsError
from tests.conftest import assert_one_line_error, listing


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory) -> Path:
    """A small state dict written by torch itself."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("src") / "x.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).state_dict(), path)
    return path


def test_dir_slash_writes_a_managed_directory_that_does_not_exist_yet(torch_file, tmp_path, ckpt):
    from tests.tf.conftest import tf

    result = ckpt("convert", torch_file, f"{tmp_path / 'out' / 'newdir'}{os.sep}")
    assert result.code == 0, result.err
    assert listing(tmp_path) == {
        "out",
        "out/newdir",
        "out/newdir/checkpoint",
        "out/newdir/ckpt-1.index",
        "out/newdir/ckpt-1.data-00000-of-00001",
    }
    prefix = tf.train.latest_checkpoint(str(tmp_path / "out" / "newdir"))
    assert prefix == str(tmp_path / "out" / "newdir" / "ckpt-1")


def test_dir_slash_for_a_file_format_is_refused(torch_file, tmp_path, ckpt):
    result = ckpt("convert", torch_file, f"{tmp_path / 'out'}{os.sep}", "--to", "npz")
    assert_one_line_error(result, "names a directory", "npz output is a file")
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("option", [["--tf-names"], ["--max-to-keep", "3"]])
def test_tf_options_do_not_override_the_destination_name(torch_file, tmp_path, ckpt, option):
    result = ckpt("convert", torch_file, tmp_path / "y.pt", *option)
    assert_one_line_error(result, f"torch output does not take the option {option[0]}")
    assert listing(tmp_path) == set()


def test_tf_options_still_choose_tf_for_a_name_without_extension(torch_file, tmp_path, ckpt):
    result = ckpt("convert", torch_file, tmp_path / "managed", "--max-to-keep", "2")
    assert result.code == 0, result.err
    assert (tmp_path / "managed" / "ckpt-1.index").is_file()


def test_an_extension_no_format_owns_is_refused(torch_file, tmp_path, ckpt):
    assert_one_line_error(ckpt("convert", torch_file, tmp_path / "o.xyz"), "'.xyz'", "--to FORMAT")
    assert listing(tmp_path) == set()
    forced = ckpt("convert", torch_file, tmp_path / "o.xyz", "--to", "torch")
    assert forced.code == 0, forced.err


def test_a_tf_step_number_is_not_an_extension(torch_file, tmp_path, ckpt):
    result = ckpt("convert", torch_file, tmp_path / "model.ckpt-1000")
    assert result.code == 0, result.err
    assert (tmp_path / "model.ckpt-1000.index").is_file()


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_mode_of_a_normal_write(torch_file, tmp_path, umask):
    script = (
        "import os, sys, convert; os.umask(int(sys.argv[3], 8)); "
        "convert.convert(sys.argv[1], sys.argv[2], to='tf', directory=True); "
        "convert.convert(sys.argv[1], sys.argv[2] + '.npz')"
    )
    subprocess.run(
        [sys.executable, "-c", script, torch_file, tmp_path / "d", oct(umask)], check=True
    )
    expected = 0o666 & ~umask
    assert set(_modes(tmp_path / "d").values()) == {expected}, _modes(tmp_path / "d")
    assert _modes(tmp_path)["d.npz"] == expected


def test_overwriting_keeps_the_mode_of_the_file_replaced(torch_file, tmp_path):
    target = tmp_path / "w.npz"
    convert.convert(torch_file, target)
    target.chmod(0o640)
    convert.convert(torch_file, target, overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_destination_under_a_regular_file_is_named(torch_file, tmp_path, ckpt):
    (tmp_path / "afile").write_text("x")
    result = ckpt("convert", torch_file, tmp_path / "afile" / "out.npz")
    assert_one_line_error(result, str(tmp_path / "afile" / "out.npz"), "not a directory")
    assert ".tmp" not in result.err


def test_control_bytes_in_a_refused_global_are_escaped(tmp_path, ckpt):
    body = b"\x80\x02c" + b"os\x1b[2J\x07\n" + b"sys\x08tem\n" + b"q\x00."
    path = tmp_path / "bad.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", body)
        zf.writestr("archive/version", "3\n")
    pickle.loads(b"\x80\x02cbuiltins\nlen\nq\x00.")  # (the framing is a real pickle's)
    result = ckpt("ls", path)
    assert_one_line_error(result, "refuses global", "os\\x1b[2J\\x07.sys\\x08tem")
    assert not any(c in result.err.strip() for c in "\x1b\x07\x08")


def test_api_errors_are_convert_errors_naming_api_keywords(torch_file, tmp_path):
    data = tmp_path / "gone.data-00000-of-00001"
    data.write_bytes(b"\0" * 8)
    with pytest.raises(ConvertError, match="gone.index is missing"):
        convert.load(data)
    with pytest.raises(ConvertError, match="No such file"):  # (the reader asked for by name)
        convert.load(tmp_path / "none.safetensors", "safetensors")
    target = tmp_path / "w.npz"
    convert.convert(torch_file, target)
    with pytest.raises(OutputExistsError, match=r"overwrite=True") as caught:
        convert.convert(torch_file, target)
    assert "--" not in str(caught.value)
    with pytest.raises(ConvertError, match="does not take the option name_based"):
        convert.convert(torch_file, tmp_path / "y.pt", name_based=True)
