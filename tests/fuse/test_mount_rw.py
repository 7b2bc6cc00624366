"""Read-write mount properties that the model checker does not look at."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import tool, unmount, wait_mounted

pytestmark = pytest.mark.fuse


def test_large_writes_per_call(tmp_path: Path) -> None:
    image = tmp_path / "w.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "2G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), "-d", "-o", "rw", str(image), str(mnt)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_mounted(mnt, proc)
        with open(mnt / "f", "wb") as f:
            for _ in range(16):
                f.write(b"\xab" * (1 << 20))
    finally:
        unmount(mnt)
        out, _ = proc.communicate(timeout=30)
    sizes = [int(m) for m in re.findall(rb"write\[\d+\] (\d+) bytes", out)]
    assert sizes and min(sizes) >= 128 * 1024, sizes[:10]
    assert sum(sizes) >= 16 << 20  # (libfuse logs each write as it arrives and as it completes)


def test_open_file_unlinked_and_preallocation_given_back_at_close(tmp_path: Path) -> None:
    """A file unlinked while open stays readable through its handle (libfuse hides it until the
    release, our library refuses to free an open FD); what close(2) returns after is on disk:
    preallocated blocks are given back at FLUSH, which close waits for, not at RELEASE."""
    from tests.fsck.cases import codes, run_fsck
    from tests.model.backends import accounting_problems
    from vmfs.volume.namespace import FileSystem
    from vmfs.volume.volume import Volume

    image = tmp_path / "u.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "2G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    # commit=0: another reader of the image is to see at once what close(2) left (under group
    # commit, the default, it would see it once the batch commits, 50 ms later)
    proc = subprocess.Popen([tool("vmfs-mount"), "-f", "-o", "rw,commit=0", str(image), str(mnt)])
    try:
        wait_mounted(mnt, proc)
        block = b"\x5a" * (1 << 20)
        with open(mnt / "kept", "wb") as f:
            for _ in range(40):
                f.write(block)
        with Volume.open(image) as vol:  # read while mounted: close(2) has returned
            assert accounting_problems(vol) == []
            kept = FileSystem(vol).resolve("/kept")
            assert (kept.size, kept.meta.numBlocks, kept.meta.numPreAllocBlocks) == (40 << 20, 40, 0)
        with open(mnt / "gone", "wb+") as f:
            for _ in range(40):
                f.write(block)
            os.unlink(mnt / "gone")
            assert not (mnt / "gone").exists()
            f.write(block)
            f.seek(0)
            assert f.read(1 << 20) == block
        deadline = time.monotonic() + 60  # RELEASE, and libfuse's unlink of the hidden name, are asynchronous
        while [n for n in os.listdir(mnt) if n.startswith(".fuse_hidden")]:
            assert time.monotonic() < deadline, os.listdir(mnt)
            time.sleep(0.05)
    finally:
        unmount(mnt)
        proc.wait(timeout=30)
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])
    with Volume.open(image) as vol:
        assert accounting_problems(vol) == []


def test_background_mount_logs_to_a_file(tmp_path: Path) -> None:
    """A background mount has no terminal: --log-file is where it says what happened."""
    image = tmp_path / "l.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    subprocess.run([tool("vmfs-mount"), "-v", "--log-file", str(log), "-o", "rw", str(image), str(mnt)],
                   check=True, timeout=30)
    try:
        (mnt / "f").write_bytes(b"x")
    finally:
        unmount(mnt)
    deadline = time.monotonic() + 60  # a generous ceiling: the loop ends as soon as the line is there
    while "claimed heartbeat slot" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_system_files_cannot_be_removed_or_changed(tmp_path: Path) -> None:
    """The ``.sf`` files hold the volume's own metadata: rm, truncation, writes and attribute
    changes through the mount answer EBUSY (as rename already did) and change nothing; an
    ``rm -rf`` of the mount's root removes what users made and leaves the volume intact."""
    import errno

    image = tmp_path / "s.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "2G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(mnt)])
    try:
        wait_mounted(mnt, proc)
        (mnt / "d").mkdir()
        (mnt / "d" / "f").write_bytes(b"user data")
        system = sorted(p.name for p in mnt.iterdir() if p.name.endswith(".sf"))
        assert ".fdc.sf" in system and ".vh.sf" in system
        before = {name: os.stat(mnt / name) for name in system}
        on_files = {
            "unlink": lambda p: os.unlink(p),
            "truncate": lambda p: os.truncate(p, 0),
            "open for writing": lambda p: open(p, "r+b").close(),
            "link": lambda p: os.link(p, mnt / "d" / "alias"),
        }
        on_all = {
            "chmod": lambda p: os.chmod(p, 0o777),
            "chown": lambda p: os.chown(p, 1000, 1000),
            "rename": lambda p: os.rename(p, mnt / "d" / "moved"),
        }
        for name in system:
            is_dir = (mnt / name).is_dir()  # VMFS5's .sdd.sf is a directory
            attempts = {**on_all, **({"rmdir": lambda p: os.rmdir(p)} if is_dir else on_files)}
            for what, attempt in attempts.items():
                start = time.monotonic()
                with pytest.raises(OSError) as err:
                    attempt(mnt / name)
                assert err.value.errno == errno.EPERM, f"{what} {name}: {err.value}"
                assert time.monotonic() - start < 2, f"{what} {name}: refused only after a wait"
        subprocess.run(["rm", "-rf", str(mnt)], capture_output=True)  # the user's part goes, errors for the rest
        left = sorted(p.name for p in mnt.iterdir())
        assert left == system, left
        for name in system:
            now = os.stat(mnt / name)
            assert (now.st_size, now.st_mode) == (before[name].st_size, before[name].st_mode), name
    finally:
        unmount(mnt)
        proc.wait(timeout=30)
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
