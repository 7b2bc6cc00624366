"""Helpers for the vmfs-mkfs tests: images formatted through the library or the tool."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tool
from vmfs.device.file import FileDevice
from vmfs.mkfs import Layout, MkfsOptions, format_volume
from vmfs.ondisk.lvm import SEGMENT_SIZE
from vmfs.volume.namespace import FileSystem, stat_fd

MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
#: LVM metadata before the first PE (vmfs-format.md 2.3): a device of LV + this holds an LV.
LVM_AREA = 0x1100000
#: Every value a format would pick by itself, fixed so that tests are reproducible.
FIXED = MkfsOptions(
    label="mkfs test",
    fs_uuid="61137dd5-df6bc2c8-f0e7-000c29801686",
    lv_uuid="61137dd5-d0727810-7ac2-000c29801686",
    host_uuid="61137d5a-a2df8778-7ed5-000c29801686",
    creation_time_us=1628667349728073,
)
SYSTEM_NAMES = [".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf"]


def image_for_lv(lv_size: int) -> int:
    """Size of a device whose LVM5 extent holds exactly ``lv_size`` bytes of volume."""
    assert lv_size % SEGMENT_SIZE == 0
    return lv_size + LVM_AREA


def make_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def format_images(paths: list[Path], options: MkfsOptions = FIXED) -> Layout:
    devices = [FileDevice(p, readonly=False) for p in paths]
    try:
        return format_volume(list(devices), options)
    finally:
        for d in devices:
            d.close()


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def run_mkfs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", *map(str, args)], capture_output=True, text=True)


def capture_ours(paths: list[Path]) -> dict[str, dict[str, int]]:
    """What our reader sees below the root, in the shape of tests.helpers.capture_dissect."""
    from vmfs.volume.volume import Volume

    with Volume.open(paths, readonly=True) as vol:
        fs = FileSystem(vol)
        tree: dict[str, dict[str, int]] = {}
        for dirpath, entries in fs.walk("/"):
            for e in entries:
                if e.name in (".", ".."):
                    continue
                st = stat_fd(vol.read_fd(e.address))
                path = dirpath.rstrip("/") + "/" + e.name
                tree[path] = {"mode": st.mode, "uid": st.uid, "gid": st.gid, "size": st.size, "nlink": st.nlink,
                              "mtime": st.mtime, "ctime": st.ctime, "atime": st.atime}
        return tree


def _sparse_limit_ok(directory: Path, size: int) -> bool:
    probe = directory / ".mkfs-size-probe"
    try:
        with open(probe, "wb") as f:
            f.truncate(size)
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


@pytest.fixture
def huge_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that can hold a 64 TiB sparse file: tmp_path, else a tmpfs mounted on a
    folder of tmp_path (ext4 stops at 16 TiB; tmpfs counts only the pages written), so nothing
    is written outside pytest's temporary folders.  Unmounted afterwards."""
    if _sparse_limit_ok(tmp_path, 64 * TIB + 64 * MIB):
        yield tmp_path
        return
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8G,mode=0700", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no file system here holds a 64 TiB sparse file (tmpfs: {r.stderr.strip()})")
    try:
        if not _sparse_limit_ok(d, 64 * TIB + 64 * MIB):
            pytest.skip("no file system here holds a 64 TiB sparse file (not even tmpfs)")
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)
