"""mount(8) and fstab: ``mount -t vmfs`` and ``mount -a -T FSTAB`` through tools/mount_helper.py.

mount(8) looks for its helpers in /sbin only, so the fixture links ours there for the module and
removes the links after (never one that was there before: the test is skipped then)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyvmfs_tools.common import mountpoint_key
from pyvmfs_tools.umount import mounted_at

from tests.conftest import copy_image, tool

pytestmark = pytest.mark.fuse

HELPERS = {"/sbin/mount.vmfs": "mount.vmfs", "/sbin/umount.fuse.vmfs": "umount.fuse.vmfs"}


@pytest.fixture(scope="module")
def helpers_in_sbin() -> Iterator[None]:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("mount(8) with a helper in /sbin needs root and /dev/fuse")
    made = []
    try:
        for link, name in HELPERS.items():
            if os.path.lexists(link):
                if os.path.realpath(link) != os.path.realpath(tool(name)):
                    pytest.skip(f"{link} exists and is not ours")
                continue
            os.symlink(tool(name), link)
            made.append(link)
        yield
    finally:
        for link in made:
            os.unlink(link)


def mountinfo_line(mnt: Path) -> str:
    target = mountpoint_key(str(mnt))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == target:
                return line
    return ""


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


def test_mount_t_vmfs_read_only(helpers_in_sbin: None, vmfs5_image: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run("mount", "-t", "vmfs", str(vmfs5_image), str(mnt), "-o", "ro")
    assert r.returncode == 0, r.stderr
    try:
        line = mountinfo_line(mnt)  # there as soon as mount(8) returns: no waiting here
        assert " fuse.vmfs " in line and f" {vmfs5_image} " in line and " ro," in line, line
        assert (mnt / "directory" / "file5").read_bytes() == b"a" * 8192 + b"\n"
        w = run("touch", str(mnt / "x"))
        assert w.returncode != 0 and "Read-only file system" in w.stderr
    finally:
        u = run("umount", str(mnt))
    assert u.returncode == 0, u.stderr
    assert not mounted_at(mountpoint_key(str(mnt)))


def test_fstab_read_write_then_fsck_clean(helpers_in_sbin: None, vmfs5_image: Path, tmp_path: Path) -> None:
    """An fstab with the usual options: ``mount -a`` mounts the auto line read-write (a second
    ``mount -a`` sees it mounted), ``mount DIR`` the noauto one read-only; umount(8) returns once
    the writer is done, so fsck right after finds the volume clean and the new file in it."""
    image = copy_image(vmfs5_image, tmp_path / "v5.img")
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test fstab\n{image} {rw} vmfs rw,nofail,_netdev,x-systemd.automount,allow_other 0 0\n"
                     f"{image} {ro} vmfs ro,noauto,user,x-systemd.device-timeout=10 0 0\n")
    r = run("mount", "-a", "-T", str(fstab))
    assert r.returncode == 0, r.stderr
    try:
        assert " rw," in mountinfo_line(rw) and "allow_other" in mountinfo_line(rw)
        assert not mounted_at(mountpoint_key(str(ro)))  # noauto
        again = run("mount", "-a", "-T", str(fstab))
        assert again.returncode == 0, again.stderr
        (rw / "from-fstab.txt").write_bytes(b"written through an fstab mount\n")
        assert (rw / "directory" / "file5").read_bytes() == b"a" * 8192 + b"\n"
    finally:
        u = run("umount", str(rw))
    assert u.returncode == 0, u.stderr
    fsck = run(tool("vmfs-fsck"), "-n", str(image))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    r = run("mount", "-T", str(fstab), str(ro))
    assert r.returncode == 0, r.stderr
    try:
        assert " ro," in mountinfo_line(ro)
        assert (ro / "from-fstab.txt").read_bytes() == b"written through an fstab mount\n"
    finally:
        assert run("umount", str(ro)).returncode == 0


@pytest.mark.parametrize("what", ["missing", "not-vmfs", "not-a-dir"])
def test_mount_failures_exit_32_one_line(helpers_in_sbin: None, tmp_path: Path, what: str) -> None:
    mnt = tmp_path / "m"
    mnt.mkdir()
    image = tmp_path / "img"
    if what != "missing":
        image.write_bytes(b"\0" * 4096)
    if what == "not-a-dir":
        mnt = image
    r = run("mount", "-t", "vmfs", str(image), str(mnt))
    assert r.returncode == 32, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mount.vmfs: ") and "Traceback" not in r.stderr, r.stderr


def test_helper_usage_and_fake(tmp_path: Path) -> None:
    """Called directly: bad usage exits 1 (mount(8)'s code); -f checks and mounts nothing."""
    r = run(tool("mount.vmfs"))
    assert r.returncode == 1 and "Usage:" in r.stderr
    (tmp_path / "m").mkdir()
    (tmp_path / "img").write_bytes(b"")
    opts = "ro,noauto,x-a.b,extent=/e"
    r = run(tool("mount.vmfs"), str(tmp_path / "img"), str(tmp_path / "m"), "-f", "-v", "-o", opts)
    assert r.returncode == 0, r.stderr
    assert "-o ro,fsname=" in r.stderr and "noauto" not in r.stderr and "x-a" not in r.stderr
    assert r.stderr.rstrip().endswith(f"img /e {tmp_path / 'm'}"), r.stderr
    assert not mounted_at(mountpoint_key(str(tmp_path / "m")))
