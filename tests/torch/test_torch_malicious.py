"""Malicious pickles are refused, naming the global they ask for, and nothing runs.

Each payload would create a marker file if its code ran. The reader must refuse it and
the marker must not exist; `test_payloads_are_live` shows, in a child process, that
`torch.load(weights_only=False)` of the same bytes does create the markers (the payloads
are real).
"""

from __future__ import annotations

import builtins
import io
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import convert
from convert.core.errors import FormatError, UnsafeInputError


class Payload:
    """An object whose unpickling calls `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def touch_command(marker: Path) -> str:
    return f"touch {marker}"


def torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A zip shaped like torch's: archive/data.pkl, byteorder, version, one storage."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", b"\0" * 8)
        zf.writestr("archive/version", "3\n")
    return path


def legacy_file(path: Path, first_pickles: list[bytes], obj_pickle: bytes) -> Path:
    path.write_bytes(b"".join(first_pickles) + obj_pickle + pickle.dumps([], protocol=2))
    return path


MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
PROTO = pickle.dumps(1001, protocol=2)
SYS_INFO = pickle.dumps(
    {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    },
    protocol=2,
)


def getattr_chain(marker: Path) -> bytes:
    """builtins.getattr(builtins.__import__('os'), 'system')('touch ...'), by hand."""
    return (
        b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(X\x02\x00\x00\x00ostR"
        + b"X\x06\x00\x00\x00systemtR("
        + _unicode(touch_command(marker))
        + b"tR."
    )


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def storage_pid_payload(marker: Path) -> bytes:
    """A tensor whose persistent storage id hides an os.system call."""
    return (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
        b"cposix\nsystem\n(" + _unicode(touch_command(marker)) + b"tR"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00K\x02\x85K\x01\x85\x89"
        b"ccollections\nOrderedDict\n)RtR."
    )


def make_payloads(directory: Path) -> dict[str, tuple[Path, Path, str]]:
    """name -> (file, marker its code would create, global the error must name)."""
    directory.mkdir(exist_ok=True)
    out: dict[str, tuple[Path, Path, str]] = {}

    def add(name: str, build, expected: str) -> None:
        marker = directory / f"marker-{name}"
        out[name] = (build(directory / f"{name}.pt", marker), marker, expected)

    def zipped(obj_for):
        return lambda path, marker: torch_zip(path, pickle.dumps(obj_for(marker), protocol=2))

    def torch_saved(obj_for, legacy=False):
        def build(path, marker):
            torch.save(obj_for(marker), path, _use_new_zipfile_serialization=not legacy)
            return path

        return build

    add("os_system", zipped(lambda m: Payload(os.system, touch_command(m))), "posix.system")
    add(
        "subprocess",
        zipped(lambda m: Payload(subprocess.Popen, ["touch", str(m)])),
        "subprocess.Popen",
    )
    add(
        "eval",
        zipped(lambda m: Payload(builtins.eval, f"open({str(m)!r}, 'w').close()")),
        "builtins.eval",
    )
    add(
        "exec",
        zipped(lambda m: Payload(builtins.exec, f"open({str(m)!r}, 'w').close()")),
        "builtins.exec",
    )
    add("bound_method", zipped(lambda m: Payload(pathlib.Path(m).touch)), "builtins.getattr")
    add("getattr_chain", lambda p, m: torch_zip(p, getattr_chain(m)), "builtins.getattr")
    add(
        "protocol4",
        lambda p, m: torch_zip(p, pickle.dumps(Payload(os.system, touch_command(m)), protocol=4)),
        "posix.system",
    )
    add(
        "inst_opcode",
        lambda p, m: torch_zip(  # protocol 0's INST: find and call a class
            p, b"\x80\x02(" + _unicode(touch_command(m)) + b"ios\nsystem\n."
        ),
        "os.system",
    )
    add("storage_pid", lambda p, m: torch_zip(p, storage_pid_payload(m)), "posix.system")
    add(
        "in_state_dict",
        torch_saved(
            lambda m: OrderedDict(
                [("weight", torch.ones(2)), ("bias", Payload(os.system, touch_command(m)))]
            )
        ),
        "posix.system",
    )
    add(
        "nested",
        torch_saved(
            lambda m: {
                "state_dict": {
                    "layer": [{"x": torch.zeros(1)}, {"y": Payload(os.system, touch_command(m))}]
                },
                "epoch": 1,
            }
        ),
        "posix.system",
    )
    add(
        "legacy_object",
        torch_saved(
            lambda m: {"w": torch.ones(3), "evil": Payload(subprocess.call, ["touch", str(m)])},
            legacy=True,
        ),
        "subprocess.call",
    )
    add(
        "legacy_magic",
        lambda p, m: legacy_file(
            p, [pickle.dumps(Payload(os.system, touch_command(m)), protocol=2)], b""
        ),
        "posix.system",
    )
    add(
        "legacy_sys_info",
        lambda p, m: legacy_file(
            p,
            [
                MAGIC,
                PROTO,
                pickle.dumps({"little_endian": Payload(os.system, touch_command(m))}, protocol=2),
            ],
            b"",
        ),
        "posix.system",
    )
    return out


PAYLOAD_NAMES = [
    "os_system",
    "subprocess",
    "eval",
    "exec",
    "bound_method",
    "getattr_chain",
    "protocol4",
    "inst_opcode",
    "storage_pid",
    "in_state_dict",
    "nested",
    "legacy_object",
    "legacy_magic",
    "legacy_sys_info",
]


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    return make_payloads(tmp_path_factory.mktemp("evil"))


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_payload_is_refused_and_nothing_runs(payloads, name):
    path, marker, expected_global = payloads[name]
    with pytest.raises(UnsafeInputError) as info:
        convert.load(path).entries()
    message = str(info.value)
    assert expected_global in message and "nothing was run" in message
    assert "\n" not in message
    assert not marker.exists()


def test_whole_module_pickle_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeInputError, match="torch.nn.modules.linear.Linear"):
        convert.load(path)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.", "codec"),
        (b"\x80\x02(X\x06\x00\x00\x00moduleK\x01tQ.", "persistent id"),
        (
            b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00aK\x01sb"
            b"ccollections\nOrderedDict\n)RK\x01b.",
            "BUILD",
        ),
        (b"\x80\x02X\x01\x00\x00\x00a)R.", "refuses to call"),
    ],
)
def test_other_refusals(tmp_path, data, fragment):
    with pytest.raises(UnsafeInputError, match=fragment):
        convert.load(torch_zip(tmp_path / "x.pt", data))


def test_payloads_are_live(tmp_path):
    """The same payloads, loaded by torch.load(weights_only=False) in a child, do run."""
    live = make_payloads(tmp_path / "live")
    script = """
import sys, torch
for path in sys.argv[1:]:
    try:
        torch.load(path, weights_only=False)  # what an unsafe loader does
    except Exception:
        pass
"""
    subprocess.run(
        [sys.executable, "-c", script, *(str(p) for p, _, _ in live.values())],
        check=True,
        cwd=tmp_path,
        timeout=120,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    missing = [name for name, (_, marker, _) in live.items() if not marker.exists()]
    assert missing == []


def test_payload_bytes_are_not_hidden_from_pickletools(payloads):
    """Sanity: the refused files really carry the dangerous GLOBAL (not a broken pickle)."""
    import pickletools

    path, _, _ = payloads["os_system"]
    with zipfile.ZipFile(path) as zf:
        text = io.StringIO()
        pickletools.dis(zf.read("archive/data.pkl"), out=text)
    assert "posix system" in text.getvalue()


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\x80\x02\x8b\x00\x00\x10\x00" + b"\x01" * 1048576 + b".", "integer"),  # 1 MiB int
        (b"\x80\x02(" * 1000 + b".", "STOP"),  # marks never closed
        (b"\x80\x02h\x05.", "memo slot 5"),
        (b"\x80\x02T\xff\xff\xff\xff.", "negative length"),
        (b"\x80\x02X\xff\xff\xff\x7f.", "remain"),
        (b"\x80\x02\x95" + b"\0" * 8 + b"u.", "MARK"),
    ],
)
def test_malformed_pickles_are_format_errors(tmp_path, data, fragment):
    with pytest.raises(FormatError, match=fragment):
        convert.load(torch_zip(tmp_path / "x.pt", data))
