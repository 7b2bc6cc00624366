"""Progress of vmfs-vmdk clone (tools/progress.py): a bar on a terminal, vmkfstools' percent lines
when asked, nothing on a pipe; Ctrl-C in the middle stops at a chunk boundary, removes the partial
copy and leaves the volume fsck-clean."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import pytest
from pyvmfs_tools.progress import Interrupted, Progress, SafeInterrupt

from tests.conftest import tool

SOURCE_MIB = 256


@pytest.fixture(scope="module")
def source_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256 MiB flat disk, every other MiB random (a clone reads it all: about 3 s here)."""
    d = tmp_path_factory.mktemp("src")
    subprocess.run([tool("vmfs-vmdk"), "-c", f"{SOURCE_MIB}M", "-d", "monolithicFlat", str(d / "src.vmdk")],
                   check=True, capture_output=True)
    with open(d / "src-flat.vmdk", "r+b") as f:
        for mib in range(0, SOURCE_MIB, 2):
            f.seek(mib << 20)
            f.write(os.urandom(1 << 20))
    return d / "src.vmdk"


def run_on_pty(argv: list[str], timeout: float = 120.0, stdout: IO[bytes] | None = None) -> tuple[int, str]:
    """Run with stderr (and stdout, unless a file is given for it) on a pseudo-terminal;
    (exit status, everything it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave if stdout is None else stdout, stderr=slave)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_clone_draws_a_bar_on_a_terminal(source_disk: Path, tmp_path: Path) -> None:
    code, out = run_on_pty([tool("vmfs-vmdk"), "-i", str(source_disk), "-d", "thin", str(tmp_path / "dst.vmdk")])
    assert code == 0, out
    frames = [f for f in out.split("\r") if f.startswith("Clone  [")]
    assert len(frames) >= 3, out  # redrawn as it goes, not printed once at the end
    assert re.search(r"\[#{30}\] 100%  [\d.]+ (KiB|MiB|GiB)/s  0:00:00 left", frames[-1]), frames[-1]
    percents = [int(m) for m in re.findall(r"\] +(\d+)%", out)]
    assert percents == sorted(percents) and percents[0] < 100
    assert "Clone:" not in out


def test_clone_progress_lines_and_silence_on_a_pipe(source_disk: Path, tmp_path: Path) -> None:
    quiet = subprocess.run([tool("vmfs-vmdk"), "-i", str(source_disk), str(tmp_path / "a.vmdk")],
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""  # not a terminal: nothing
    r = subprocess.run([tool("vmfs-vmdk"), "--progress", "lines", "-i", str(source_disk), str(tmp_path / "b.vmdk")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert all(re.fullmatch(r"Clone: \d+% done\.", line) for line in lines), lines
    assert [int(line.split()[1][:-1]) for line in lines] == list(range(101))  # vmkfstools: every percent
    assert (tmp_path / "b-flat.vmdk").read_bytes() == (source_disk.parent / "src-flat.vmdk").read_bytes()


def test_ctrl_c_mid_clone_leaves_volume_clean(source_disk: Path, tmp_path: Path) -> None:
    image = tmp_path / "ds.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "2G", str(image)], check=True, capture_output=True)
    proc = subprocess.Popen(
        [tool("vmfs-vmdk"), "--volume", str(image), "--progress", "lines", "-i", f"host:{source_disk}", "-d", "thin",
         "/vm/disk.vmdk", "-p"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until it is well into the copy
        seen.append(line)
        if line.startswith("Clone: 5%"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, [*seen, rest]
    last = rest.strip().splitlines()[-1]
    assert re.fullmatch(r"vmfs-vmdk: interrupted at ([5-9]|\d\d)% \(\d+ of 256 MiB\): the partial copy was removed, "
                        r"the source is untouched; the volume was closed cleanly", last), rest
    assert "Traceback" not in rest
    fsck = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=120)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    ls = subprocess.run([tool("vmfs-debug"), str(image), "ls", "/vm"], capture_output=True, text=True, timeout=60)
    assert "disk" not in ls.stdout, ls.stdout  # no half-made disk left behind


def test_progress_bar_figures() -> None:
    """Rate and time left computed from the positions the library reports."""
    out = io.StringIO()
    p = Progress("Clone", "bar", unit=512, stream=out)
    p.started -= 2.0  # two seconds in
    p(1 << 20, 4 << 20)  # 512 MiB of 2 GiB in sectors
    assert re.search(r"\[#{7}\.{23}\]  25%  25[56]\.\d MiB/s  0:00:0[56] left", out.getvalue()), out.getvalue()
    p.finish()
    assert out.getvalue().endswith("\n")


def test_interrupt_is_raised_only_at_a_progress_call() -> None:
    # whatever handler there was comes back: Python's own, or SIG_IGN when the test run was
    # started in the background by a shell without job control (which ignores SIGINT for it)
    before = signal.getsignal(signal.SIGINT)
    stop = SafeInterrupt()
    p = Progress("Clone", "none", interrupt=stop)
    with stop:
        p(1, 10)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here...
        assert stop.requested
        with pytest.raises(Interrupted):  # ...but at the next safe point
            p(2, 10)
    assert signal.getsignal(signal.SIGINT) is before
    assert p.summary().startswith("at 20%")


def test_snapshot_merge_shows_progress_and_finishes_despite_ctrl_c(tmp_path: Path) -> None:
    """A merge cannot stop half-way (the parent would no longer match its delta): Ctrl-C is held
    until it is done, and the tool says so."""
    from vmfs.vmdk.disk import open_disk
    from vmfs.vmdk.storage import HostStorage

    subprocess.run([tool("vmfs-vmdk"), "-c", "128M", "-d", "thin", str(tmp_path / "t.vmdk")], check=True)
    leaf = subprocess.run([tool("vmfs-vmdk"), "--snapshot", str(tmp_path / "t.vmdk")], check=True,
                          capture_output=True, text=True).stdout.strip()
    written = {}
    disk = open_disk(HostStorage(str(tmp_path)), leaf, writable=True)
    try:
        for mib in range(0, 128, 2):
            written[mib] = os.urandom(1 << 20)
            disk.write_sectors(mib * 2048, written[mib])
    finally:
        disk.close()
    proc = subprocess.Popen([tool("vmfs-vmdk"), "--delete-snapshot", "--progress", "lines", str(tmp_path / leaf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith("Consolidate: 3%"):
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.read().splitlines()
    assert proc.wait(timeout=60) == 0, lines
    assert proc.stdout.read().strip() == "t.vmdk"
    assert lines[-1] == "vmfs-vmdk: Ctrl-C came while delete snapshot could not stop half-way: it was finished"
    percents = [int(x.split()[1][:-1]) for x in lines[:-1]]  # one line per percent reached (64 chunks here)
    assert percents == sorted(set(percents)) and percents[-1] == 100 and len(percents) >= 60, lines
    assert not (tmp_path / leaf).exists()
    base = open_disk(HostStorage(str(tmp_path)), "t.vmdk")
    try:
        for mib, data in written.items():
            assert base.read_sectors(mib * 2048, 2048) == data
    finally:
        base.close()


def test_mkfs_of_a_large_volume_draws_a_bar_but_not_with_json(tmp_path: Path) -> None:
    code, out = run_on_pty([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1T", str(tmp_path / "big.img")])
    assert code == 0, out
    frames = [f for f in out.split("\r") if f.startswith("Format  [")]
    assert len(frames) >= 2 and re.search(r"\] 100%  [\d.]+ (KiB|MiB|GiB)/s  0:00:00 left", out), out
    code, out = run_on_pty([tool("vmfs-mkfs"), "-t", "vmfs5", "--json", "--size", "256G", str(tmp_path / "j.img")])
    assert code == 0, out
    assert "Format" not in out and "\r" not in out.replace("\r\n", "\n")
    assert json.loads(out)["blockSize"] == 1 << 20


def test_ctrl_c_mid_mkfs_removes_the_new_image(tmp_path: Path) -> None:
    image = tmp_path / "big.img"
    proc = subprocess.Popen([tool("vmfs-mkfs"), "-t", "vmfs5", "--progress", "lines", "--size", "1T", str(image)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("Format: 5%"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read().strip().splitlines()
    assert proc.wait(timeout=60) == 130, rest
    assert re.fullmatch(rf"vmfs-mkfs: interrupted at \d+% \(\d+ of \d+ MiB\) before the volume was made usable; "
                        rf"{re.escape(str(image))}: removed", rest[-1]), rest
    assert not image.exists()
