"""vmfs-mount read-only behaviour: statfs, read sizes, write refusal, foreground + signals."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Mount, tool, unmount, wait_mounted

pytestmark = pytest.mark.fuse


def test_statfs_shows_real_size_and_free(vmfs5_image: Path, tmp_path: Path) -> None:
    with Mount([tool("vmfs-mount"), str(vmfs5_image), str(tmp_path / "m")], tmp_path / "m") as root:
        st = os.statvfs(root)
        assert st.f_frsize == 1 << 20
        assert st.f_blocks == 256 and st.f_bfree == 241  # vmfs-format.md 12.2
        assert st.f_files == 64 and st.f_ffree == 49
        df = subprocess.run(["df", "-k", str(root)], capture_output=True, text=True, check=True).stdout
        assert re.search(r"\s262144\s+15360\s+246784\s", df), df


def test_read_only_refuses_writes(vmfs6_image: Path, tmp_path: Path) -> None:
    with Mount([tool("vmfs-mount"), str(vmfs6_image), str(tmp_path / "m")], tmp_path / "m") as root:
        with pytest.raises(OSError) as info:
            open(root / "directory" / "file4", "r+b")  # noqa: SIM115
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            (root / "new").write_bytes(b"x")
        assert info.value.errno in (errno.EROFS, errno.ENOSYS, errno.EACCES)
        assert (root / "directory" / "file5").read_bytes() == b"a" * 8192 + b"\n"


def test_large_reads_per_call(vmfs6_image: Path, tmp_path: Path) -> None:
    """With FUSE debug on, every READ of a large sequential read asks for at least 128 KiB."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen(
        [tool("vmfs-mount"), "-d", str(vmfs6_image), str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_mounted(mnt, proc)
        with open(mnt / ".vh.sf", "rb") as f:
            data = f.read()
        assert len(data) == 7340032
    finally:
        unmount(mnt)
        out, _ = proc.communicate(timeout=30)
    sizes = [int(m) for m in re.findall(rb"read\[\d+\] (\d+) bytes from", out)]
    assert sizes, out[-2000:]
    assert max(sizes) >= 128 * 1024
    assert sum(s >= 128 * 1024 for s in sizes) >= len(sizes) - 2


@pytest.mark.skipif(os.geteuid() != 0, reason="the read-ahead of a mount is set through sysfs, as root")
@pytest.mark.parametrize(("option", "expected"), [(None, 1024), ("readahead_kb=256", 256), ("readahead_kb=0", None)])
def test_readahead_is_raised_to_whole_requests(vmfs6_image: Path, tmp_path: Path, option: str | None,
                                               expected: int | None) -> None:
    """FUSE leaves a mount 128 KiB of read-ahead; vmfs-mount raises it (after the kernel's INIT,
    at the first lookup, before any file is opened) so sequential reads arrive as 1 MiB requests."""
    from vmfs.fuse.readonly import fuse_device_number

    argv = [tool("vmfs-mount"), *(["-o", option] if option else []), str(vmfs6_image), str(tmp_path / "m")]
    with Mount(argv, tmp_path / "m") as root:
        device = fuse_device_number(str(root))
        assert device is not None
        knob = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
        if not os.access(knob, os.W_OK):
            pytest.skip("sysfs is read-only here (a container): the read-ahead cannot be set")
        os.stat(root / "directory")  # a lookup (Mount's wait for the mount already made one)
        kernel_default = 32 * os.sysconf("SC_PAGE_SIZE") // 1024  # VM_READAHEAD_PAGES
        assert int(knob.read_text()) == (expected if expected is not None else kernel_default)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_signal_unmounts_cleanly(vmfs5_image: Path, tmp_path: Path, sig: int) -> None:
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), "-f", str(vmfs5_image), str(mnt)], stderr=subprocess.PIPE)
    wait_mounted(mnt, proc)
    assert (mnt / "directory" / "file4").read_bytes() == b"content\n"
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    assert not os.path.ismount(mnt)
    assert b"Traceback" not in proc.stderr.read()


def test_background_mount_returns_and_serves(vmfs5_image: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run([tool("vmfs-mount"), str(vmfs5_image), str(mnt)], timeout=30)
    try:
        assert r.returncode == 0
        assert os.path.ismount(mnt)
        assert os.readlink(mnt / "directory" / "symlink") == "file4"
    finally:
        unmount(mnt)
    assert not os.path.ismount(mnt)


def test_options_are_passed_to_fuse(vmfs5_image: Path, tmp_path: Path) -> None:
    with Mount(
        [tool("vmfs-mount"), "-o", "allow_other,fsname=myvmfs", str(vmfs5_image), str(tmp_path / "m")], tmp_path / "m"
    ):
        mounts = Path("/proc/mounts").read_text()
        line = next(ln for ln in mounts.splitlines() if str(tmp_path / "m") in ln)
        assert line.startswith("myvmfs ")
        assert "allow_other" in line and "ro," in line


def test_help_says_read_only_default() -> None:
    out = subprocess.run([tool("vmfs-mount"), "--help"], capture_output=True, text=True, check=True).stdout
    assert "READ-ONLY by default" in out and "-o rw" in out


def test_read_write_mount_ends_cleanly_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM on a read-write mount: files flushed, journal emptied, heartbeat released."""
    from vmfs.volume.slots import read_slots
    from vmfs.volume.usage import marked_used, referenced_resources
    from vmfs.volume.volume import Volume

    image = tmp_path / "rw.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "1G", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(mnt)], stderr=subprocess.PIPE)
    wait_mounted(mnt, proc)
    (mnt / "d").mkdir()
    with open(mnt / "d" / "f", "wb") as f:
        f.write(b"x" * 3_000_000)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert b"Traceback" not in proc.stderr.read()
    with Volume.open(image) as vol:
        assert not any(s.in_use for s in read_slots(vol))
        refs, used = referenced_resources(vol), marked_used(vol)
        assert all(refs[k] == used[k] for k in used)
        from vmfs.volume.namespace import FileSystem

        assert FileSystem(vol).stat("/d/f").size == 3_000_000
