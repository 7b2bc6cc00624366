"""HostStorage, the host-file implementation of the DiskStorage seam."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, MissingExtentError
from vmfs.vmdk.storage import (
    DiskStorage,
    HostStorage,
    ProvisioningStorage,
    ThinStorage,
    host_device_sectors,
    join,
    parent_dir,
)

MIB = 1 << 20


def test_protocols(storage: HostStorage) -> None:
    assert isinstance(storage, DiskStorage)
    assert isinstance(storage, ThinStorage)
    assert isinstance(storage, ProvisioningStorage)


def test_names() -> None:
    assert parent_dir("a/b/c.vmdk") == "a/b" and parent_dir("c.vmdk") == ""
    assert join("a", "b.vmdk") == "a/b.vmdk" and join("", "b.vmdk") == "b.vmdk"
    assert join("a", "/vmfs/volumes/x/b.vmdk") == "/vmfs/volumes/x/b.vmdk"


@pytest.mark.parametrize("provisioning", ["thin", "zeroedthick", "eagerzeroedthick"])
def test_create(storage: HostStorage, tmp_path: Path, provisioning: str) -> None:
    storage.create("f", 4 * MIB, provisioning)
    path = tmp_path / "f"
    assert path.stat().st_size == 4 * MIB
    assert path.read_bytes() == bytes(4 * MIB)
    allocated = path.stat().st_blocks * 512
    assert allocated == 0 if provisioning == "thin" else allocated >= 4 * MIB
    with pytest.raises(ExistsError):
        storage.create("f", MIB, provisioning)
    with pytest.raises(InvalidArgumentError):
        storage.create("g", MIB, "lazy")


def test_resize_and_provisioning(storage: HostStorage, tmp_path: Path) -> None:
    storage.create("f", MIB, "thin")
    storage.resize("f", 3 * MIB, "zeroedthick")
    assert storage.size("f") == 3 * MIB
    assert (tmp_path / "f").stat().st_blocks * 512 == 2 * MIB
    storage.set_provisioning("f", "eagerzeroedthick")
    assert (tmp_path / "f").stat().st_blocks * 512 >= 3 * MIB
    storage.resize("f", MIB, "thin")
    assert storage.size("f") == MIB


def test_punch_and_allocated_ranges(storage: HostStorage, tmp_path: Path) -> None:
    storage.create("f", 4 * MIB, "thin")
    with storage.open("f", "r+b") as fh:
        fh.seek(MIB)
        fh.write(b"\x01" * MIB)
    ranges = storage.allocated_ranges("f")
    assert sum(n for _, n in ranges) >= MIB and all(a >= MIB and a + n <= 2 * MIB for a, n in ranges)
    storage.punch_zero("f", MIB, 512 * 1024)
    assert (tmp_path / "f").read_bytes()[MIB : 2 * MIB] == bytes(512 * 1024) + b"\x01" * (512 * 1024)
    assert (tmp_path / "f").stat().st_blocks * 512 <= 512 * 1024 + 65536


def test_errors(storage: HostStorage, tmp_path: Path) -> None:
    with pytest.raises(MissingExtentError) as info:
        storage.open("nope", "rb")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(MissingExtentError):
        storage.remove("nope")
    with pytest.raises(MissingExtentError):
        storage.size("nope")
    with pytest.raises(InvalidArgumentError):
        storage.open("x", "a")
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(ExistsError):
        storage.rename("a", "b")
    storage.rename("a", "c")
    assert not storage.exists("a") and storage.exists("c")


def test_relative_names(tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "base.vmdk").write_bytes(b"base")
    storage = HostStorage(tmp_path / "vm")
    assert storage.exists("../other/base.vmdk")
    with storage.open("../other/base.vmdk", "rb") as fh:
        assert fh.read() == b"base"


def test_describe_lock(storage: HostStorage, tmp_path: Path) -> None:
    storage.create("d.vmdk", MIB, "thin")
    info = storage.describe_lock("d.vmdk")
    assert info["file"] == "d.vmdk" and info["size"] == str(MIB) and info["allocated"] == "0"
    assert info["hosted lock"] == "no .lck directory"
    with pytest.raises(MissingExtentError):
        storage.describe_lock("x.vmdk")


def test_host_device_sectors(tmp_path: Path) -> None:
    (tmp_path / "dev").write_bytes(bytes(3 * 512 + 100))
    assert host_device_sectors(tmp_path / "dev") == 3
    with pytest.raises(MissingExtentError):
        host_device_sectors(tmp_path / "nodev")
