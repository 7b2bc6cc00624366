"""Shared by the tests of a VM's files (test_vmx, test_folder, test_scsi): real VMFS5 volumes made
by ``vmfs-mkfs``, hosts with their own identities on one simulated clock, ``vmfs-fsck -n`` after
each test, and the independent readers (vmfs-tools' ``vmfs-fuse``, ``qemu-img``)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hostsim.vmm.files import host_filesystem
from tests.conftest import tool
from tests.oracles import OracleMount
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.write.posix import WritableFileSystem

MIB = 1 << 20
LABEL = "ds1"
QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img is not installed")
needs_fuse = pytest.mark.skipif(
    shutil.which("vmfs-fuse") is None or not Path("/dev/fuse").exists(), reason="vmfs-fuse or /dev/fuse missing"
)


def host_uuid(n: int) -> str:
    return f"6000000{n}-00000000-0000-02000000000{n}"


def mkfs(image: Path, size: str = "600M", label: str = LABEL) -> Path:
    """A fresh VMFS5 volume made by the real tool."""
    r = subprocess.run(
        [tool("vmfs-mkfs"), "-t", "vmfs5", "--progress", "none", "-L", label, "--size", size, str(image)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    return image


def fsck_clean(image: Path) -> None:
    r = subprocess.run([tool("vmfs-fsck"), "-n", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, f"vmfs-fsck -n exited {r.returncode}:\n{r.stdout}{r.stderr}"


class Datastore:
    """One image and the hosts attached to it (each its own HostIdentity, one shared clock)."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.clock = ManualClock()
        self.attachments: list[HostAttachment] = []

    def host(self, n: int = 1) -> WritableFileSystem:
        identity = HostIdentity(uuid=host_uuid(n), ip=f"192.0.2.{n}", clock=self.clock)
        att = HostAttachment.open(self.image, host=identity)
        self.attachments.append(att)
        return host_filesystem(att)

    def close(self) -> None:
        for att in self.attachments:
            if not att.closed:
                att.close()


def datastore_for(tmp_path: Path) -> Iterator[Datastore]:
    """A volume for one test (a fixture's body); every host is detached and ``vmfs-fsck -n``
    must pass afterwards."""
    ds = Datastore(mkfs(tmp_path / "ds1.img"))
    try:
        yield ds
    finally:
        ds.close()
    fsck_clean(ds.image)


@contextmanager
def fuse_view(image: Path, mountpoint: Path) -> Iterator[Path]:
    """The volume as vmfs-tools' vmfs-fuse shows it (read-only, independent code)."""
    with OracleMount("vmfs-fuse", [image], mountpoint) as root:
        yield root


def qemu_compare(vmdk: Path, raw: Path) -> None:
    """``qemu-img compare`` of a disk (its whole chain) against the expected raw bytes."""
    assert QEMU_IMG is not None
    r = subprocess.run(
        [QEMU_IMG, "compare", "-f", "vmdk", "-F", "raw", str(vmdk), str(raw)],
        capture_output=True, text=True, cwd=vmdk.parent,
    )
    assert r.returncode == 0 and "Images are identical." in r.stdout, f"qemu-img compare: {r.stdout}{r.stderr}"


def qemu_info(vmdk: Path) -> str:
    assert QEMU_IMG is not None
    r = subprocess.run([QEMU_IMG, "info", "--backing-chain", str(vmdk)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout
