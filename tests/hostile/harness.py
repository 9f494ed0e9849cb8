"""Runs `ckpt ls` and `ckpt convert` on every corpus case and checks the guarantee.

    python -m tests.hostile.harness CORPUS RESULTS.json

Each command runs in a child forked from this process (which has imported every format's
module, so that a child costs milliseconds, not an interpreter's start), under an
address-space limit (`resource.RLIMIT_AS`: what the process maps now, plus 256 MiB and 8
times the input's size), with its own empty working and output directory. For each run:
exit status 2 and one line naming the case's file for a refusal ("either" cases may also
be read, exit 0); no traceback; no payload ran (the marker file is absent, and no
process-spawning audit event fired); nothing outside the input was opened (an audit hook
sees this process's opens, inotify sees libhdf5's too, in the files the corpus points
at); no output left after a refusal; the input unchanged; an answer within 5 s."""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT = 5.0
_SPAWN_EVENTS = (
    "os.system",
    "subprocess.Popen",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "ctypes.dlopen",
    "os.startfile",
)
IN_OPEN, IN_ACCESS = 0x20, 0x01


class Inotify:
    """Which files in some directories were opened (Linux; elsewhere it sees nothing)."""

    def __init__(self):
        try:
            self.libc = ctypes.CDLL(None, use_errno=True)
            self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            self.fd = -1
        self.names: dict[int, Path] = {}

    def watch(self, directory: Path) -> int:
        if self.fd < 0:
            return -1
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_OPEN | IN_ACCESS)
        self.names[wd] = directory
        return wd

    def unwatch(self, wd: int) -> None:
        if wd >= 0:
            self.libc.inotify_rm_watch(self.fd, wd)

    def opened(self) -> list[Path]:
        if self.fd < 0:
            return []
        found = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            pos = 0
            while pos < len(buf):
                wd, _mask, _cookie, size = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16 : pos + 16 + size].rstrip(b"\0")
                pos += 16 + size
                if name and wd in self.names:
                    found.append(self.names[wd] / os.fsdecode(name))


def _snapshot(directory: Path) -> dict[str, tuple]:
    return {
        str(p.relative_to(directory)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _child(args: list[str], run_dir: Path, budget: int, forbidden: list[str]) -> None:
    """In the forked child: limits, redirections, the audit hook, then the CLI."""
    os.chdir(run_dir)
    out = os.open(run_dir / "stdout", os.O_WRONLY | os.O_CREAT, 0o644)
    err = os.open(run_dir / "stderr", os.O_WRONLY | os.O_CREAT, 0o644)
    events = os.open(run_dir / "events", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    def audit(event: str, hook_args: tuple) -> None:
        if event == "ctypes.dlopen" and hook_args[0] in (None, "libc.so.6"):
            return  # (fileio links unnamed outputs into place with libc's linkat)
        if event.startswith(_SPAWN_EVENTS):
            os.write(events, f"ran: {event} {hook_args[0]!r:.80}\n".encode())
        elif event == "open" and isinstance(hook_args[0], (str, bytes)):
            path = os.path.abspath(os.fsdecode(hook_args[0]))
            if any(path == f or path.startswith(f + os.sep) for f in forbidden):
                os.write(events, f"opened: {path}\n".encode())

    sys.addaudithook(audit)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + budget, resource.RLIM_INFINITY))
    sys.argv = ["ckpt", *args]
    code = 1
    try:
        from convert.cli import main

        main(args, prog_name="ckpt", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001  (as the interpreter would: a traceback, exit 1)
        import traceback

        traceback.print_exc()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run_one(
    args: list[str], run_dir: Path, budget: int, forbidden: list[str]
) -> tuple[int | None, float, int]:
    """(exit status or None on a timeout or signal, seconds, peak RSS in KiB)."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _child(args, run_dir, budget, forbidden)
        finally:
            os._exit(99)
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > TIMEOUT:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return None, time.monotonic() - start, usage.ru_maxrss
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    return (code if code >= 0 else None), time.monotonic() - start, usage.ru_maxrss


def check_case(
    case: dict, corpus: Path, marker: Path, inotify: Inotify, forbidden: list[str]
) -> list[dict]:
    case_dir = corpus / "cases" / case["id"]
    source = case_dir / case["input"]
    # (the case's own directories too: an input may be one, a DCP checkpoint)
    allowed = {p for p in case_dir.rglob("*") if p.name != "secret"}
    size = sum(p.stat().st_size for p in allowed if p.is_file())
    budget = (256 << 20) + 8 * size
    watches = [
        inotify.watch(d) for d in [case_dir, *(p for p in case_dir.rglob("*") if p.is_dir())]
    ]
    before = _snapshot(case_dir)
    target = "out.safetensors" if case["format"] == "npz" else "out.npz"
    results = []
    for command in ("ls", "convert"):
        run_dir = Path(tempfile.mkdtemp(prefix="hostile-run-"))
        out_dir = run_dir / "out"
        out_dir.mkdir()
        args = (
            ["ls", str(source)]
            if command == "ls"
            else ["convert", str(source), str(out_dir / target), "--quiet"]
        )
        inotify.opened()  # (drop events from before this run)
        code, seconds, rss = run_one(args, run_dir, budget, forbidden)
        err = (run_dir / "stderr").read_text(errors="replace")
        events = (run_dir / "events").read_text() if (run_dir / "events").exists() else ""
        opened = [str(p) for p in inotify.opened() if p not in allowed]
        expect = case[command]
        problems = []
        lines = err.strip().splitlines()
        if code is None:
            problems.append(f"no answer within {TIMEOUT:g} s, or killed by a signal")
        elif code == 0 and expect == "refuse":
            problems.append("accepted a file that must be refused")
        elif code != 0 and expect == "accept":
            problems.append(f"refused a valid file: {lines[-1] if lines else code}")
        elif code not in (0, 2):
            problems.append(f"exit status {code}")
        if "Traceback" in err:
            problems.append("traceback")
        if code == 2 and (len(lines) != 1 or not lines[0].startswith("ckpt: error: ")):
            problems.append(f"{len(lines)} lines of error")
        if code == 2 and lines and str(case_dir) not in lines[0]:
            problems.append("the error names no file of the input")
        if marker.exists():
            problems.append("a payload ran (the marker file exists)")
            marker.unlink()
        problems += [e for e in events.splitlines() if e]
        problems += [f"opened {p}" for p in opened]
        if code != 0 and any(out_dir.iterdir()):
            problems.append(f"left output: {sorted(p.name for p in out_dir.iterdir())}")
        if command == "convert" and code == 0:
            problems = [p for p in problems if not p.startswith("left output")]
        results.append(
            {
                "id": case["id"],
                "format": case["format"],
                "kind": case["kind"],
                "what": case["what"],
                "command": command,
                "expect": expect,
                "code": code,
                "error": lines[0] if lines else "",
                "seconds": round(seconds, 3),
                "max_rss_kib": rss,
                "problems": problems,
            }
        )
        shutil.rmtree(run_dir, ignore_errors=True)
    if _snapshot(case_dir) != before:
        results[-1]["problems"].append("the input changed")
    for wd in watches:
        inotify.unwatch(wd)
    return results


def preload() -> None:
    """Import every format's module now, so that each forked child starts warm."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import pkgutil
    import platform

    import convert.formats

    for module in pkgutil.walk_packages(convert.formats.__path__, "convert.formats."):
        importlib.import_module(module.name)
    importlib.import_module("convert.cli")
    platform.processor()  # (h5py asks the platform module, which runs `uname -p` once)


def main(corpus: Path, results_path: Path) -> int:
    manifest = json.loads((corpus / "manifest.json").read_text())
    preload()
    inotify = Inotify()
    outside = Path(manifest["outside"])
    inotify.watch(outside)
    forbidden = [str(outside), "/etc/passwd", "/etc/shadow"]
    results = []
    for case in manifest["cases"]:
        case_dir = corpus / "cases" / case["id"]
        results += check_case(
            case, corpus, Path(manifest["marker"]), inotify, forbidden + [str(case_dir / "secret")]
        )
    results_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
