"""Volumes that are consistent check clean: the two real ESXi samples, every volume vmfs-mkfs makes,
and volumes after writes through the library.  The real VMFS5 sample's live heartbeat (slot 984,
journal FB 13) is reported, not counted as an error, unless the host is declared or watched gone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import oracles
from tests.conftest import copy_image, tool
from tests.fsck import volumes
from tests.fsck.cases import codes, run_fsck
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.volume.usage import marked_used
from vmfs.volume.volume import Volume
from vmfs.write.posix import WritableFileSystem

SAMPLE_HOST = "61137d5a-a2df8778-7ed5-000c29801686"
MIB = 1 << 20


def notes(report: dict) -> str:
    return "\n".join(report["check"]["notes"])


def test_real_samples_are_clean(real_image: Path) -> None:
    before = volumes.sparse_digest(real_image)
    rc, report = run_fsck(real_image, "-n")
    assert (rc, codes(report)) == (0, [])
    rc, report = run_fsck(real_image, "-y")  # nothing to repair: the image is not even opened for writing
    assert (rc, codes(report)) == (0, [])
    assert volumes.sparse_digest(real_image) == before


def test_vmfs5_sample_live_heartbeat_is_reported_not_an_error(vmfs5_image: Path) -> None:
    rc, report = run_fsck(vmfs5_image, "-n")
    assert rc == 0
    assert re.search(rf"slot 984: in use by host {SAMPLE_HOST} \(10\.199\.5\.140\).*journal at FB 13", notes(report))
    assert "not in pyvmfs journal format" in notes(report)  # ESXi's journal: reported, never replayed
    text = subprocess.run([tool("vmfs-fsck"), "-n", str(vmfs5_image)], capture_output=True, text=True).stdout
    assert f"in use by host {SAMPLE_HOST}" in text and "journal at FB 13" in text


@pytest.mark.oracle
def test_vmfs5_sample_slot_984_declared_gone(vmfs5_image: Path, tmp_path: Path) -> None:
    """Declared (or watched) gone, slot 984 is stale: -y clears it and frees FB 13 without replaying
    the foreign journal.  fsck.vmfs's one "lost block" on the sample is exactly that journal block:
    after the repair it reports none."""
    fsck_vmfs = oracles.fsck_vmfs(vmfs5_image)
    assert "File Block 0x00000341 is lost." in fsck_vmfs.lines and fsck_vmfs.counts["Lost blocks"] == 1
    with Volume.open(vmfs5_image) as vol:
        assert vol.geometry.codec.fb_block(0x341) == 13
    image = copy_image(vmfs5_image, tmp_path / "sample.img")
    rc, report = run_fsck(image, "-n", "--watch", "--lease", "0.2")  # a frozen image: the stamp never moves
    assert (rc, codes(report)) == (4, ["0x060002 HB_STALE"])
    rc, report = run_fsck(image, "-n", "--stale-host", SAMPLE_HOST)
    assert (rc, codes(report)) == (4, ["0x060002 HB_STALE"])
    assert "not replayed" in report["check"]["findings"][0]["fix"]
    rc, report = run_fsck(image, "-y", "--stale-host", SAMPLE_HOST)
    assert rc == 1, report
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])
    with Volume.open(image) as vol:
        assert (0, 13) not in marked_used(vol)[1]
    after = oracles.fsck_vmfs(image)
    assert after.counts["Lost blocks"] == 0 and not [line for line in after.lines if "is lost" in line]


@pytest.mark.parametrize("size", ["300M", "1G", "5G", "40G"])
def test_vmfs_mkfs_volumes_are_clean(size: str, tmp_path: Path) -> None:
    image = tmp_path / "new.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", size, "-L", "fresh", str(image)], check=True,
                   capture_output=True)
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, [])


def test_spanned_vmfs_mkfs_volume_is_clean(tmp_path: Path) -> None:
    images = [tmp_path / "e0.img", tmp_path / "e1.img"]
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--extent-size", "600M", "--extent-size", "800M", *map(str,
                   images)],
                   check=True, capture_output=True)
    r = subprocess.run([tool("vmfs-fsck"), "-n", "--json", *map(str, images)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_populated_volume_is_clean(populated: Path) -> None:
    rc, report = run_fsck(populated, "-n")
    assert (rc, codes(report)) == (0, [])
    assert report["summary"]["files"]["used"] == 90


def test_volume_after_a_write_workload_is_clean(tmp_path: Path, populated: Path) -> None:
    """Creates, deletes, renames, truncates across address modes, thick files, a directory grown
    past one sub-block and shrunk again, through the library."""
    image = volumes.copy(populated, tmp_path / "work.img")
    image.chmod(0o644)
    host = HostIdentity(uuid=volumes.WRITER, ip="192.0.2.1", clock=ManualClock(), heartbeat_period=3600, lease=1e9)
    with HostAttachment.open(image, host=host) as vol:
        fs = WritableFileSystem(vol)
        fs.unlink("/d1/big")
        fs.rename("/top", "/d1/d2/top")
        fs.rename("/d1/d2", "/moved")
        fd = fs.resolve("/moved/top")
        fs.truncate(fd.address, 100)  # file blocks -> resident
        fs.write(fd.address, 5000, b"x" * 10)  # resident -> sub-block
        fs.write(fd.address, 300 * MIB, b"y")  # -> single indirect
        fs.truncate(fd.address, 3 * MIB)  # back to direct blocks
        for i in range(70):
            fs.unlink(f"/many/f{i:02d}")
        fs.rmdir("/many")
        fs.mkdir("/again")
        for i in range(80):
            fs.write_file(f"/again/n{i}", bytes([i]) * (i * 50))
        for i in range(0, 80, 3):
            fs.unlink(f"/again/n{i}")
        thick = fs.create("/thick")
        fs.allocate(thick.address, 5 * MIB, eager=False)
        eager = fs.create("/eager")
        fs.allocate(eager.address, 2 * MIB, eager=True)
        fs.unlink("/huge")
        fs.symlink("/vmfs/volumes/fsck test/again/n1", "/abs")
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, []), report


@pytest.mark.slow
def test_huge_vmfs_mkfs_volume_is_clean(huge_dir: Path) -> None:
    """60 TiB: .fbb.sf is mapped through pointer blocks (ZLA 3), 314,572 file-block clusters."""
    image = huge_dir / "huge.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "60T", str(image)], check=True, capture_output=True)
    try:
        rc, report = run_fsck(image, "-n")
        assert (rc, codes(report)) == (0, [])
        assert report["summary"]["blocks"]["total"] == 62914304
    finally:
        image.unlink()


@pytest.mark.fuse
def test_volume_written_through_a_read_write_mount_is_clean(tmp_path: Path) -> None:
    """vmfs-mkfs, then the interop tree (renames, deletes, a 300 GiB sparse file...) written through
    vmfs-mount -o rw."""
    from tests.conftest import Mount
    from tests.interop.test_write_interop import write_tree

    image = tmp_path / "vol.img"
    subprocess.run([tool("vmfs-mkfs"), "-t", "vmfs5", "--size", "4G", "-L", "interop", str(image)], check=True,
                   capture_output=True)
    with Mount([tool("vmfs-mount"), "-f", "-o", "rw", str(image), str(tmp_path / "rw")], tmp_path / "rw") as root:
        write_tree(root)
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (0, []), report
