"""A VM's folder on a real VMFS5 datastore (hostsim.vmm.folder): the layout ESX makes, register and
unregister, destroy, snapshots with data checks (create, revert, remove one, remove all), bad
input.  Every volume comes from ``vmfs-mkfs`` and must pass ``vmfs-fsck -n`` after the test; disk
contents are checked by our reader and, through vmfs-tools' ``vmfs-fuse``, by ``qemu-img``."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsim.errors import HostsimError
from hostsim.vmm.files import DatastoreFullError, VmFileNotFoundError, exists, lock_owner, read_file, write_file
from hostsim.vmm.folder import DiskSpec, Inventory, SnapshotError, VmExistsError, VmFolder, VmPoweredOnError
from hostsim.vmm.poweron import PoweredOnVm
from hostsim.vmm.vmsd import SnapshotTree
from hostsim.vmm.vmx import VmxError
from tests.conftest import tool
from tests.hostsim.vmfiles_helpers import (
    MIB,
    Datastore,
    datastore_for,
    fsck_clean,
    fuse_view,
    host_uuid,
    mkfs,
    needs_fuse,
    needs_qemu,
    qemu_compare,
    qemu_info,
)
from vmfs.vmdk.descriptor import Descriptor
from vmfs.vmdk.volume_storage import VolumeStorage

DISK_MB = 16
SECTORS = DISK_MB * MIB // 512


@pytest.fixture
def datastore(tmp_path: Path) -> Iterator[Datastore]:
    yield from datastore_for(tmp_path)


def pattern(tag: int, n: int = 64 << 10) -> bytes:
    return random.Random(tag).randbytes(n)


def disk_bytes(folder: VmFolder, node: str = "scsi0:0") -> bytes:
    vm = PoweredOnVm.power_on(folder, random.Random(0))
    try:
        disk = vm.scsi.disk(node)
        return b"".join(disk.read(s, 4096) for s in range(0, disk.sectors, 4096))
    finally:
        vm.power_off()


def guest_write(folder: VmFolder, model: bytearray, lba: int, data: bytes) -> None:
    vm = PoweredOnVm.power_on(folder, random.Random(0))
    try:
        vm.scsi.disk("scsi0:0").write(lba, data)
    finally:
        vm.power_off()
    model[lba * 512 : lba * 512 + len(data)] = data


def descriptor(fs, path: str) -> Descriptor:  # type: ignore[no-untyped-def]
    return Descriptor.parse(read_file(fs, path), source=path)


@pytest.mark.parametrize("provisioning", ["thin", "zeroedthick", "eagerzeroedthick"])
def test_layout_as_esx_makes_it(datastore: Datastore, provisioning: str) -> None:
    fs = datastore.host()
    folder = VmFolder.create(fs, "web01", memsize_mb=256, disks=(DiskSpec(DISK_MB, provisioning), DiskSpec(4)))
    assert folder.files() == sorted([
        "web01.vmx", "web01.vmdk", "web01-flat.vmdk", "web01_1.vmdk", "web01_1-flat.vmdk",
        "web01.vmsd", "web01.nvram", "vmware.log",
    ])
    assert folder.datastore_path == "[ds1] web01/web01.vmx"
    assert folder.volumes_path == f"/vmfs/volumes/{fs.volume.uuid}/web01/web01.vmx"
    desc = descriptor(fs, "/web01/web01.vmdk")
    assert desc.create_type == "vmfs"
    assert [(e.type, e.filename, e.sectors) for e in desc.extents] == [("VMFS", "web01-flat.vmdk", SECTORS)]
    assert dict(desc.ddb_items()).get("ddb.adapterType") == "lsilogic"
    assert (dict(desc.ddb_items()).get("ddb.thinProvisioned") == "1") == (provisioning == "thin")
    lock = VolumeStorage(fs, "/web01").describe_lock("web01-flat.vmdk")
    blocks = DISK_MB  # 1 MiB file blocks
    allocated = {"thin": 0, "zeroedthick": blocks * MIB, "eagerzeroedthick": blocks * MIB}[provisioning]
    tbz = {"thin": 0, "zeroedthick": blocks, "eagerzeroedthick": 0}[provisioning]
    assert (int(lock["size"]), int(lock["allocated"]), int(lock["tbz blocks"])) == (DISK_MB * MIB, allocated, tbz)
    assert read_file(fs, "/web01/web01.vmsd") == b""
    assert len(read_file(fs, "/web01/web01.nvram")) == 8684
    assert b"| vmx| created with 2 disk(s)" in read_file(fs, "/web01/vmware.log")
    vmx = read_file(fs, "/web01/web01.vmx").decode()
    assert 'scsi0:0.fileName = "web01.vmdk"' in vmx and 'scsi0:1.fileName = "web01_1.vmdk"' in vmx


@needs_fuse
@needs_qemu
def test_vmx_and_disk_as_vmfs_tools_and_qemu_see_them(datastore: Datastore, tmp_path: Path) -> None:
    fs = datastore.host()
    folder = VmFolder.create(fs, "vm1", memsize_mb=128, disks=(DiskSpec(DISK_MB, "thin"),))
    text, names = folder.vmx.render(), folder.files()
    datastore.close()
    with fuse_view(datastore.image, tmp_path / "mnt") as root:
        assert (root / "vm1" / "vm1.vmx").read_text() == text
        assert sorted(p.name for p in (root / "vm1").iterdir()) == names
        info = qemu_info(root / "vm1" / "vm1.vmdk")
        assert f"virtual size: {DISK_MB} MiB" in info
        raw = tmp_path / "zero.raw"
        raw.write_bytes(bytes(DISK_MB * MIB))
        qemu_compare(root / "vm1" / "vm1.vmdk", raw)


def test_register_on_another_host_unregister_and_destroy(datastore: Datastore) -> None:
    fs1, fs2 = datastore.host(1), datastore.host(2)
    created = VmFolder.create(fs1, "vm1", memsize_mb=128, disks=(DiskSpec(4),), program="idle.guest",
                              program_text=b"loop: halt 10ms\n")
    inv = Inventory(fs2)
    vmid = inv.register("/vm1/vm1.vmx")
    assert vmid == 1 and [(i, f.datastore_path) for i, f in inv.items()] == [(1, "[ds1] vm1/vm1.vmx")]
    folder = inv.get(vmid)
    assert folder.config == VmConfig_of(created)
    assert folder.program() == ("[ds1] vm1/idle.guest", b"loop: halt 10ms\n")
    with pytest.raises(VmExistsError, match=r"already registered as vmid 1"):
        inv.register("/vm1/vm1.vmx")
    assert inv.unregister(vmid) is folder and inv.items() == []
    with pytest.raises(VmFileNotFoundError, match="vmid 1: no such registered VM"):
        inv.get(1)
    # unregistering leaves the files; destroying removes the folder
    assert "vm1.vmx" in created.files()
    created.destroy()
    datastore.clock.advance(1.5)  # host 2 trusts its cached metadata for 1 s (vmfs.volume: revalidate)
    with pytest.raises(VmFileNotFoundError, match=r"^\[ds1\] vm1/vm1.vmx: "):
        VmFolder.open(fs2, "/vm1/vm1.vmx")


def VmConfig_of(folder: VmFolder):  # type: ignore[no-untyped-def]
    from hostsim.vmm.vmx import VmConfig, VmxFile

    return VmConfig.from_vmx(VmxFile.parse(folder.vmx.to_bytes(), folder.datastore_path))


def test_bad_input_gives_one_line_errors_naming_the_file(datastore: Datastore) -> None:
    fs = datastore.host()
    folder = VmFolder.create(fs, "vm1", memsize_mb=128, disks=(DiskSpec(4),))

    def one_line(exc: pytest.ExceptionInfo[HostsimError]) -> str:
        assert "\n" not in str(exc.value) and isinstance(exc.value, HostsimError)
        return str(exc.value)

    with pytest.raises(VmFileNotFoundError) as exc:
        VmFolder.open(fs, "/nosuch/nosuch.vmx")
    assert one_line(exc).startswith("[ds1] nosuch/nosuch.vmx: ")
    with pytest.raises(VmExistsError) as exc2:
        VmFolder.create(fs, "vm1", memsize_mb=128)
    assert one_line(exc2) == "[ds1] vm1: already exists"
    bad = folder.vmx.render().replace('memsize = "128"', 'memsize = "12x"')
    write_file(fs, "/vm1/vm1.vmx", bad.encode())
    with pytest.raises(VmxError) as exc3:
        VmFolder.open(fs, "/vm1/vm1.vmx")
    line = bad.splitlines().index('memsize = "12x"') + 1
    assert one_line(exc3) == f"[ds1] vm1/vm1.vmx:{line}: memsize: '12x' is not a whole number"
    write_file(fs, "/vm1/vm1.vmx", folder.vmx.to_bytes())
    fs.unlink("/vm1/vm1.vmdk")
    with pytest.raises(VmFileNotFoundError) as exc4:
        VmFolder.open(fs, "/vm1/vm1.vmx")
    assert one_line(exc4) == "[ds1] vm1/vm1.vmx: scsi0:0 names [ds1] vm1/vm1.vmdk: no such file"


def test_a_vm_that_does_not_fit_leaves_nothing(datastore: Datastore) -> None:
    fs = datastore.host()
    before = sorted(e.name for e in fs.listdir("/"))
    with pytest.raises(DatastoreFullError) as exc:
        VmFolder.create(fs, "big", memsize_mb=128, disks=(DiskSpec(1024, "zeroedthick"),))
    assert str(exc.value).startswith("creating the disk: [ds1] big/big.vmdk: no space left on the datastore")
    assert sorted(e.name for e in fs.listdir("/")) == before


def test_snapshots_create_revert_remove_and_removeall_keep_the_data(datastore: Datastore) -> None:
    fs = datastore.host()
    folder = VmFolder.create(fs, "vm1", memsize_mb=128, disks=(DiskSpec(DISK_MB, "thin"),))
    model = bytearray(DISK_MB * MIB)
    guest_write(folder, model, 0, pattern(1))
    guest_write(folder, model, 20000, pattern(2))
    at_s1 = bytes(model)

    s1 = folder.create_snapshot("s1", "before the upgrade")
    assert folder.vmx["scsi0:0.fileName"] == "vm1-000001.vmdk"
    assert {"vm1-000001.vmdk", "vm1-000001-delta.vmdk"} <= set(folder.files())
    delta = descriptor(fs, "/vm1/vm1-000001.vmdk")
    assert (delta.create_type, delta.parent_hint) == ("vmfsSparse", "vm1.vmdk")
    tree = folder.snapshots()
    assert (tree.current, tree.last_uid, [s.uid for s in tree.snapshots]) == (1, 1, [1])
    assert tree.snapshots[0].disks == [("scsi0:0", "vm1.vmdk")] and s1.description == "before the upgrade"
    vmsd = read_file(fs, "/vm1/vm1.vmsd").decode().splitlines()
    assert 'snapshot0.displayName = "s1"' in vmsd and 'snapshot0.disk0.node = "scsi0:0"' in vmsd

    guest_write(folder, model, 0, pattern(3))
    assert disk_bytes(folder) == bytes(model)
    folder.revert_snapshot()
    assert disk_bytes(folder) == at_s1
    model[:] = at_s1

    guest_write(folder, model, 100, pattern(4, 4096))
    at_s2 = bytes(model)
    folder.create_snapshot("s2")
    assert folder.vmx["scsi0:0.fileName"] == "vm1-000002.vmdk"
    guest_write(folder, model, 0, pattern(5))
    now = bytes(model)

    with pytest.raises(SnapshotError, match="only the current snapshot"):
        folder.revert_snapshot(1)
    folder.remove_snapshot(1)  # its changes (pattern 4) merge into the base
    tree = folder.snapshots()
    assert [(s.uid, s.parent, s.disks) for s in tree.snapshots] == [(2, None, [("scsi0:0", "vm1.vmdk")])]
    assert tree.current == 2 and "vm1-000001.vmdk" not in folder.files()
    assert descriptor(fs, "/vm1/vm1-000002.vmdk").parent_hint == "vm1.vmdk"
    assert disk_bytes(folder) == now
    folder.revert_snapshot()
    assert disk_bytes(folder) == at_s2
    model[:] = at_s2

    guest_write(folder, model, 30000, pattern(6))
    folder.remove_all_snapshots()
    assert folder.vmx["scsi0:0.fileName"] == "vm1.vmdk"
    assert not any("-00000" in f for f in folder.files())
    tree = SnapshotTree.parse(read_file(fs, "/vm1/vm1.vmsd"), "vm1.vmsd")
    assert (tree.snapshots, tree.current, tree.last_uid) == ([], None, 2)
    assert disk_bytes(folder) == bytes(model)
    with pytest.raises(SnapshotError, match="no snapshot to revert to"):
        folder.revert_snapshot()


@needs_fuse
@needs_qemu
def test_snapshot_chain_read_by_qemu_through_vmfs_fuse(datastore: Datastore, tmp_path: Path) -> None:
    fs = datastore.host()
    folder = VmFolder.create(fs, "vm1", memsize_mb=128, disks=(DiskSpec(DISK_MB, "zeroedthick"),))
    model = bytearray(DISK_MB * MIB)
    guest_write(folder, model, 8, pattern(7))
    folder.create_snapshot("s1")
    guest_write(folder, model, 4, pattern(8, 8192))
    folder.create_snapshot("s2")
    guest_write(folder, model, 32000, pattern(9))
    leaf = folder.vmx["scsi0:0.fileName"]
    datastore.close()
    r = subprocess.run([tool("vmfs-vmdk"), "--volume", str(datastore.image), "--info", f"/vm1/{leaf}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    layers = [line.split()[:2] for line in r.stdout.splitlines() if line.startswith("  vm1")]
    assert layers == [[leaf, "vmfsSparse"], ["vm1-000001.vmdk", "vmfsSparse"], ["vm1.vmdk", "vmfs"]]
    raw = tmp_path / "expected.raw"
    raw.write_bytes(model)
    with fuse_view(datastore.image, tmp_path / "mnt") as root:
        info = qemu_info(root / "vm1" / leaf)
        assert info.count("image: ") == 3  # leaf, s1's delta, base
        qemu_compare(root / "vm1" / leaf, raw)


def test_snapshot_operations_need_the_vm_powered_off(datastore: Datastore) -> None:
    fs = datastore.host()
    folder = VmFolder.create(fs, "vm1", memsize_mb=64, disks=(DiskSpec(4),))
    vm = PoweredOnVm.power_on(folder, random.Random(0))
    try:
        for op in (lambda: folder.create_snapshot("x"), folder.remove_all_snapshots, folder.destroy):
            with pytest.raises(VmPoweredOnError, match=r"^\[ds1\] vm1/vm1.vmx: cannot .* a powered-on VM$"):
                op()
        with pytest.raises(VmPoweredOnError, match="already powered on"):
            PoweredOnVm.power_on(folder, random.Random(0))
    finally:
        vm.power_off()
    assert folder.running is None


def test_a_disk_on_another_datastore(datastore: Datastore, tmp_path: Path) -> None:
    """``disk=SIZE@DATASTORE``: the disk lives in folder NAME on the other datastore, the .vmx
    names it by its /vmfs/volumes path; deltas go beside it; destroy removes it too."""
    other = Datastore(mkfs(tmp_path / "ds2.img", label="ds2"))
    other.clock = datastore.clock
    try:
        fs, fs2 = datastore.host(1), other.host(1)
        folder = VmFolder.create(fs, "vm1", memsize_mb=64, disks=(DiskSpec(8), DiskSpec(8, "thin", datastore=fs2)))
        far = f"/vmfs/volumes/{fs2.volume.uuid}/vm1/vm1_1.vmdk"
        assert folder.vmx["scsi0:1.fileName"] == far
        assert sorted(e.name for e in fs2.listdir("/vm1") if e.name not in (".", "..")) == [
            "vm1_1-flat.vmdk", "vm1_1.vmdk"]
        assert "vm1_1.vmdk" not in folder.files()
        with pytest.raises(VmFileNotFoundError, match=f"datastore {fs2.volume.uuid} is not mounted here"):
            VmFolder.open(fs, "/vm1/vm1.vmx")
        folder = VmFolder.open(fs, "/vm1/vm1.vmx", datastores=[fs2])
        vm = PoweredOnVm.power_on(folder, random.Random(0))
        vm.scsi.disk("scsi0:1").write(0, b"far" * 512)
        assert lock_owner(fs2, "/vm1/vm1_1-flat.vmdk") == (host_uuid(1), "exclusive")
        vm.power_off()
        folder.create_snapshot("s1")
        assert folder.vmx["scsi0:1.fileName"] == f"/vmfs/volumes/{fs2.volume.uuid}/vm1/vm1_1-000001.vmdk"
        assert exists(fs2, "/vm1/vm1_1-000001-delta.vmdk")
        assert folder.vmx["scsi0:0.fileName"] == "vm1-000001.vmdk"
        folder.remove_all_snapshots()
        assert folder.vmx["scsi0:1.fileName"] == far
        assert disk_bytes(folder, "scsi0:1")[:1536] == b"far" * 512
        folder.destroy()
        assert not exists(fs2, "/vm1") and not exists(fs, "/vm1")
    finally:
        other.close()
    fsck_clean(other.image)
