"""Runners for the independent readers the tests compare us with (vmfs-tools' fsck.vmfs,
debugvmfs, vmfs-fuse; vmfs6-tools' debugvmfs6, vmfs6-fuse; dissect.vmfs).

Why one module: an oracle that crashes, is missing, or prints something other than what we
parse must fail the test, never read as "no problems" or "nothing there".  Every runner here
checks how the program ended (a signal, an exit status outside the ones the program uses for
an answer, a time-out) and every parser checks that the output has the shape it expects, so a
comparison built on them always compares something.  Programs are looked up on PATH at call
time, which is how tests/interop/test_oracle_failures.py puts fake, crashing oracles in front.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.conftest import unmount
from tests.helpers import capture_dissect, capture_mount

#: the five counters fsck.vmfs prints last, and the four it prints after scanning the inodes
FSCK_SUMMARY = ("Unallocated blocks", "Lost blocks", "Undefined inodes", "Orphaned inodes", "Directory errors")
FSCK_COLLECTED = ("File Blocks", "Sub-Blocks", "Pointer Blocks", "Inodes")
#: exit statuses of debugvmfs that come with an answer (it exits 1 after some good answers,
#: docs/SPEC.md "Oracle bugs met"); anything else, or a signal, is a failure
DEBUGVMFS_OK = (0, 1)

Images = Sequence[Path | str]


class OracleError(AssertionError):
    """An oracle gave no usable answer (crashed, failed, or printed something unparsable)."""


def _env() -> dict[str, str]:
    """The current environment (PATH as the test set it) with times printed in UTC."""
    return {**os.environ, "TZ": "UTC"}


def _tail(text: str | bytes, n: int = 600) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-n:].strip()


def _ended_badly(name: str, rc: int, ok: Sequence[int]) -> str | None:
    """Why an exit status is not an answer, or None when it is one."""
    if rc < 0:
        return f"{name} was killed by signal {signal.Signals(-rc).name}"
    if rc in ok:
        return None
    if rc > 128:  # what a shell reports for a child killed by a signal
        return f"{name} exited {rc} (a shell's status for signal {rc - 128})"
    return f"{name} exited {rc} (answers come with {', '.join(map(str, ok))})"


def which(name: str) -> str:
    """Full path of an oracle program on the current PATH; a missing oracle fails the test."""
    path = shutil.which(name, path=os.environ.get("PATH"))
    if path is None:
        raise OracleError(f"oracle {name} is not installed (not on PATH)")
    return path


def run_oracle(
    argv: Sequence[str | Path], *, ok: Sequence[int] = (0,), timeout: float = 300.0, text: bool = True
) -> subprocess.CompletedProcess[Any]:
    """Run an oracle to completion; raise OracleError unless it ended with a status in ``ok``."""
    name = str(argv[0])
    cmd = [which(name), *map(str, argv[1:])]
    try:
        r = subprocess.run(cmd, capture_output=True, text=text, env=_env(), timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OracleError(f"{name} did not finish within {timeout:.0f} s") from e
    why = _ended_badly(name, r.returncode, ok)
    if why:
        raise OracleError(f"{why}: {' '.join(cmd[1:])}\nstderr: {_tail(r.stderr)}\nstdout: {_tail(r.stdout)}")
    return r


# -- fsck.vmfs --------------------------------------------------------------------------------------


@dataclass
class FsckVmfs:
    """A complete fsck.vmfs report: its counters and every line it printed."""

    counts: dict[str, int]
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def parse_fsck_vmfs(out: str) -> FsckVmfs:
    """The counters of a fsck.vmfs report; a report without its summary (cut short by a crash,
    or not fsck.vmfs's at all) raises."""
    counts = {k: int(v) for k, v in re.findall(r"^\s*([A-Z][A-Za-z -]+?)\s*:\s*(\d+)\s*$", out, re.M)}
    missing = [k for k in (*FSCK_COLLECTED, *FSCK_SUMMARY) if k not in counts]
    if missing:
        raise OracleError(f"fsck.vmfs printed no complete summary (missing {', '.join(missing)}): {_tail(out)!r}")
    last = [line for line in out.splitlines() if line.strip()][-len(FSCK_SUMMARY):]
    if [line.partition(":")[0].strip() for line in last] != list(FSCK_SUMMARY):
        raise OracleError(f"fsck.vmfs's report does not end with its summary: {_tail(out)!r}")
    if counts["Inodes"] == 0:  # every volume has its system files
        raise OracleError(f"fsck.vmfs scanned no inode: {_tail(out)!r}")
    return FsckVmfs(counts, out.splitlines())


def fsck_vmfs(*images: Path | str, prog: str = "fsck.vmfs") -> FsckVmfs:
    """fsck.vmfs's whole report (it exits 0 whatever it finds, non-zero when it cannot open)."""
    return parse_fsck_vmfs(run_oracle([prog, *images]).stdout)


# -- debugvmfs / debugvmfs6 ---------------------------------------------------------------------------


def debugvmfs(images: Images, *command: str, prog: str = "debugvmfs", ok: Sequence[int] = DEBUGVMFS_OK) -> str:
    """debugvmfs's answer to one command, without debugvmfs6's "VMFS version" banner.  debugvmfs6
    prints that banner once it has opened the volume: its absence is a failure."""
    out = run_oracle([prog, *images, *command], ok=ok).stdout
    lines = out.splitlines()
    if prog.endswith("6"):
        if not lines or lines[0] != "VMFS version: 6":
            raise OracleError(f"{prog} did not open the volume (no 'VMFS version: 6' line): {_tail(out)!r}")
        lines = lines[1:]
    return "\n".join(lines)


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def debugvmfs_show(images: Images, *what: str, prog: str = "debugvmfs", require: Sequence[str] = ()) -> dict[str, str]:
    """``show`` as ``key: value`` pairs; none at all, or a required key missing, raises."""
    values = _fields(debugvmfs(images, "show", *what, prog=prog))
    missing = [k for k in require if k not in values]
    if not values or missing:
        raise OracleError(f"{prog} show {' '.join(what)}: no {', '.join(missing) or 'value'} in {values}")
    return values


#: what ``show`` with no variable (the FS descriptor) always prints
SHOW_FS_KEYS = ("Volume Version", "Version", "Label", "UUID", "Block size", "Subblock size", "FDC Bitmap count")

_LS = re.compile(r"(\S+)\s+(\d+)\s+\S+\s+\S+\s+(\d+)\s+\S+ \S+ (.+)$")


def debugvmfs_ls(images: Images, path: str = "/", prog: str = "debugvmfs") -> dict[str, tuple[str, int, int]]:
    """``ls -l PATH``: name -> (mode string, links, size), in listing order.  A line that is not
    a listing line, or a listing without "." and "..", raises."""
    listing: dict[str, tuple[str, int, int]] = {}
    out = debugvmfs(images, "ls", "-l", path, prog=prog)
    for line in out.splitlines():
        m = _LS.match(line)
        if not m:
            raise OracleError(f"{prog} ls -l {path}: not a listing line: {line!r}")
        listing[m.group(4)] = (m.group(1), int(m.group(2)), int(m.group(3)))
    if "." not in listing or ".." not in listing:
        raise OracleError(f"{prog} ls -l {path}: no '.' and '..' in {_tail(out)!r}")
    return listing


def debugvmfs_df(images: Images, prog: str = "debugvmfs") -> dict[str, int]:
    """``df``: total, allocated and free file blocks (all three must be printed)."""
    values = _fields(debugvmfs(images, "df", prog=prog))
    keys = ("Total blocks", "Allocated blocks", "Free blocks")
    if any(not values.get(k, "").isdigit() for k in keys):
        raise OracleError(f"{prog} df printed no block counts: {values}")
    return {k: int(values[k]) for k in keys}


def debugvmfs_bitmap_errors(images: Images, prog: str = "debugvmfs", timeout: float = 600.0) -> int:
    """``check_vol_bitmaps``: the total error count it ends with."""
    out = run_oracle([prog, *images, "check_vol_bitmaps"], ok=DEBUGVMFS_OK, timeout=timeout).stdout
    m = re.search(r"^Total errors: (\d+)$", out, re.M)
    if not m:
        raise OracleError(f"{prog} check_vol_bitmaps printed no total: {_tail(out)!r}")
    return int(m.group(1))


def debugvmfs_cat(images: Images, path: str, prog: str = "debugvmfs") -> bytes:
    """``cat PATH``'s bytes.  An empty file prints nothing, so only exit status 0 (it exits 255
    for a missing file) tells an answer from a failure here."""
    out = run_oracle([prog, *images, "cat", path], text=False).stdout
    banner = b"VMFS version: 6\n"  # debugvmfs6 prints it before every command's output (vmfs-format.md 12)
    return out[len(banner):] if prog == "debugvmfs6" and out.startswith(banner) else out


def debugvmfs_heartbeats(images: Images, prog: str = "debugvmfs") -> dict[int, dict[str, str]]:
    """``show_heartbeats``: heartbeat ID (its address) -> its Magic, Sequence, Uptime and UUID
    lines.  Only active heartbeats are listed, so an empty answer is legal here: tests that
    compare heartbeats must have one (see test_debug_vs_debugvmfs.py)."""
    out = debugvmfs(images, "show_heartbeats", prog=prog)
    beats: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in out.splitlines():
        m = re.match(r"Heartbeat ID (0x[0-9a-f]+):$", line)
        if m:
            current = beats.setdefault(int(m.group(1), 16), {})
        elif line.strip() and current is not None and line.startswith("  - "):
            key, _, value = line[4:].partition(":")
            current[key.strip()] = value.strip()
        elif line.strip():
            raise OracleError(f"{prog} show_heartbeats: unexpected line {line!r}")
    for addr, fields in beats.items():
        if fields.get("Magic") != "0xabcdef02" or "UUID" not in fields:
            raise OracleError(f"{prog} show_heartbeats: heartbeat {addr:#x} is incomplete: {fields}")
    return beats


# -- vmfs-fuse / vmfs6-fuse ---------------------------------------------------------------------------


class OracleMount:
    """A FUSE oracle run in the foreground, so its end is seen: exiting before the mount is up,
    or ending with anything but status 0 after the unmount (a crash under the tree walk), fails.
    """

    def __init__(self, prog: str, images: Images, mountpoint: Path, *, timeout: float = 60.0) -> None:
        self.argv = [prog, "-f", *map(str, images), str(mountpoint)]
        self.mountpoint = mountpoint
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    def _close_log(self) -> str:
        """What the oracle printed (its last lines); the log is closed."""
        assert self.log is not None
        self.log.seek(0)
        text = _tail(self.log.read())
        self.log.close()
        return text

    def __enter__(self) -> Path:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.log = tempfile.TemporaryFile()  # closed by _close_log
        argv = [which(self.argv[0]), *self.argv[1:]]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + self.timeout
        while not os.path.ismount(self.mountpoint):
            rc = self.proc.poll()
            if rc is not None:
                why = _ended_badly(self.argv[0], rc, ()) if rc else f"{self.argv[0]} exited 0"
                raise OracleError(f"{why} before mounting: {self._close_log()!r}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise OracleError(f"{self.argv[0]} did not mount within {self.timeout:.0f} s: {self._close_log()!r}")
            time.sleep(0.05)
        return self.mountpoint

    def __exit__(self, exc_type: object, *exc: object) -> None:
        assert self.proc is not None and self.log is not None
        unmount(self.mountpoint)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        output = self._close_log()
        why = _ended_badly(self.argv[0], rc, (0,))
        if why and exc_type is None:  # never hide the error that is already on its way
            raise OracleError(f"{why} after the unmount: {output!r}")


def fuse_tree(
    prog: str, images: Images, mountpoint: Path, *, unreadable: frozenset[str] = frozenset(),
    skip_content: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """The whole tree (tests/helpers.capture_mount) as a FUSE oracle shows it; never empty."""
    with OracleMount(prog, images, mountpoint) as root:
        tree = capture_mount(root, unreadable=unreadable, skip_content=skip_content)
    if not tree:
        raise OracleError(f"{prog} showed an empty volume")
    return tree


# -- dissect.vmfs -------------------------------------------------------------------------------------


def dissect_tree(images: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """The whole tree as dissect.vmfs reads it (in process: its exceptions fail the test by
    themselves); never empty, as every volume has its system files."""
    tree = capture_dissect(list(images))
    if not tree:
        raise OracleError("dissect.vmfs read an empty volume")
    return tree


def holed_files(image: Path) -> frozenset[str]:
    """Regular files of a VMFS6 image with a hole (a null block pointer) before data: vmfs6-fuse
    reads everything after a file's first hole as zeros (docs/SPEC.md, oracle bugs), so their
    content is compared through dissect.vmfs instead."""
    import stat as st

    from vmfs.volume.filedesc import BlockMap
    from vmfs.volume.namespace import FileSystem
    from vmfs.volume.volume import Volume

    found = set()
    with Volume.open([image]) as vol:
        fs = FileSystem(vol)
        for dirpath, entries in fs.walk("/"):
            for e in entries:
                if e.name in (".", ".."):
                    continue
                path = dirpath.rstrip("/") + "/" + e.name
                fd = vol.read_fd(e.address)
                if not st.S_ISREG(fs.stat(path).mode) or fd.is_resident or not fd.size:
                    continue
                mapped = {index for index, _, pb in BlockMap(fd).references() if index is not None and not pb}
                if mapped and len(mapped) <= max(mapped):  # an index below the last one is a hole
                    found.add(path)
    return frozenset(found)
