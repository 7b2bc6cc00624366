"""Virtual SCSI disks, power-on locks and the swap file (hostsim.vmm.scsi, poweron, swapfile) on
real VMFS5 volumes made by ``vmfs-mkfs``: guest-style writes read back by qemu-img through
vmfs-tools' vmfs-fuse, two hosts and ESX's "locked" error naming the owner, the out-of-space
stun and its retry with nothing lost, the ``.vswp`` created and removed.  ``vmfs-fsck -n`` must
pass after every test."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsim.errors import HostsimError
from hostsim.vmm.files import DatastoreFullError, VmFileLockedError, VmFileNotFoundError, lock_owner, read_file
from hostsim.vmm.folder import DiskSpec, VmFolder
from hostsim.vmm.poweron import PoweredOnVm
from hostsim.vmm.scsi import GuestStun, ScsiDisk, ScsiError, out_of_space_question
from hostsim.vmm.swapfile import SwapFile, SwapFileError
from tests.hostsim.vmfiles_helpers import (
    MIB,
    Datastore,
    datastore_for,
    fuse_view,
    host_uuid,
    needs_fuse,
    needs_qemu,
    qemu_compare,
)
from vmfs.volume.usage import volume_usage


@pytest.fixture
def datastore(tmp_path: Path) -> Iterator[Datastore]:
    yield from datastore_for(tmp_path)


def make_vm(ds: Datastore, n: int = 1, *, disk_mb: int = 32, provisioning: str = "thin", memsize: int = 64,
            mem_min: int = 0) -> VmFolder:
    return VmFolder.create(ds.host(n), "vm1", memsize_mb=memsize, disks=(DiskSpec(disk_mb, provisioning),),
                           extra={"sched.mem.min": str(mem_min)})


def one_line(exc: BaseException) -> str:
    assert isinstance(exc, HostsimError) and "\n" not in str(exc), repr(exc)
    return str(exc)


# -- guest I/O ---------------------------------------------------------------------------------------


@needs_fuse
@needs_qemu
def test_guest_writes_then_close_read_back_by_qemu_through_vmfs_fuse(datastore: Datastore, tmp_path: Path) -> None:
    folder = make_vm(datastore, disk_mb=32)
    rng = random.Random(12)
    model = bytearray(32 * MIB)
    vm = PoweredOnVm.power_on(folder, rng)
    disk = vm.scsi.disk("scsi0:0")
    assert (disk.sectors, disk.size, disk.name) == (32 * MIB // 512, 32 * MIB, "vm1.vmdk")
    for i in range(150):
        count = rng.choice((1, 8, 16, 128, 2048))
        lba = rng.randrange(0, disk.sectors - count)
        data = rng.randbytes(count * 512)
        disk.write(lba, data)
        model[lba * 512 : (lba + count) * 512] = data
        if i % 37 == 0:
            disk.flush()
        probe = rng.randrange(0, disk.sectors - 64)
        assert disk.read(probe, 64) == bytes(model[probe * 512 : (probe + 64) * 512])
    c = disk.counters()
    assert (c.writes, c.reads, c.flushes, c.stuns) == (150, 150, 5, 0)
    assert c.bytes_read == 150 * 64 * 512
    vm.power_off()
    # a fresh power-on reads the same bytes
    vm = PoweredOnVm.power_on(folder, rng)
    disk = vm.scsi.disk("scsi0:0")
    assert b"".join(disk.read(s, 8192) for s in range(0, disk.sectors, 8192)) == bytes(model)
    vm.power_off()
    datastore.close()
    raw = tmp_path / "expected.raw"
    raw.write_bytes(model)
    with fuse_view(datastore.image, tmp_path / "mnt") as root:
        qemu_compare(root / "vm1" / "vm1.vmdk", raw)


def test_commands_outside_the_disk_are_refused(datastore: Datastore) -> None:
    folder = make_vm(datastore, disk_mb=4)
    vm = PoweredOnVm.power_on(folder, random.Random(0))
    disk = vm.scsi.disk("scsi0:0")
    with pytest.raises(ScsiError, match=r"^scsi0:0: blocks 8191\.\.8193 beyond the disk's 8192 blocks$"):
        disk.write(8191, bytes(1024))
    with pytest.raises(ScsiError, match="not whole 512-byte blocks"):
        disk.write(0, b"abc")
    with pytest.raises(ScsiError, match="beyond the disk"):
        disk.read(-1, 1)
    with pytest.raises(ScsiError, match=r"no disk at scsi0:1 \(has scsi0:0\)"):
        vm.scsi.disk("scsi0:1")
    vm.power_off()
    with pytest.raises(ScsiError, match="the disk is closed"):
        disk.read(0, 1)


# -- locks between hosts -------------------------------------------------------------------------------------


def test_a_second_host_cannot_power_on_a_running_vm(datastore: Datastore) -> None:
    folder = make_vm(datastore, 1)
    vm = PoweredOnVm.power_on(folder, random.Random(1))
    vm.scsi.disk("scsi0:0").write(0, b"A" * 4096)
    vm.scsi.disk("scsi0:0").flush()
    fs2 = datastore.host(2)
    other = VmFolder.open(fs2, "/vm1/vm1.vmx")  # reading the .vmx needs no lock: registering works
    owner = host_uuid(1)
    for name in ("vm1.vmx", "vm1-flat.vmdk", vm.swap.name):
        assert lock_owner(fs2, f"/vm1/{name}") == (owner, "exclusive"), name
    with pytest.raises(VmFileLockedError) as exc:
        PoweredOnVm.power_on(other, random.Random(2))
    assert one_line(exc.value) == (
        f"Unable to access file [ds1] vm1/vm1.vmx since it is locked (exclusive lock, owner {owner})"
    )
    assert exc.value.owner == owner
    # the disk itself, opened directly: ESX's disk message, naming the flat file and the owner
    with pytest.raises(VmFileLockedError) as exc2:
        ScsiDisk.open(other, "scsi0:0", "vm1.vmdk")
    text = one_line(exc2.value)
    uuid = fs2.volume.uuid
    assert text.startswith(f"Cannot open the disk '/vmfs/volumes/{uuid}/vm1/vm1.vmdk' or one of the snapshot")
    assert text.endswith(f"Failed to lock the file. Unable to access file [ds1] vm1/vm1-flat.vmdk since it is locked "
                         f"(exclusive lock, owner {owner})")
    assert other.running is None
    vm.power_off()
    for name in ("vm1.vmx", "vm1-flat.vmdk"):
        assert lock_owner(fs2, f"/vm1/{name}") is None
    datastore.clock.advance(1.5)  # host 2's metadata cache is trusted for 1 s
    vm2 = PoweredOnVm.power_on(other, random.Random(2))
    assert vm2.scsi.disk("scsi0:0").read(0, 8) == b"A" * 4096
    assert lock_owner(datastore.host(3), "/vm1/vm1-flat.vmdk") == (host_uuid(2), "exclusive")
    vm2.power_off()


def test_parents_of_a_running_snapshot_chain_are_held_read_only(datastore: Datastore) -> None:
    folder = make_vm(datastore, 1, disk_mb=8, provisioning="zeroedthick")
    folder.create_snapshot("s1")
    vm = PoweredOnVm.power_on(folder, random.Random(1))
    fs2 = datastore.host(2)
    assert lock_owner(fs2, "/vm1/vm1-000001-delta.vmdk") == (host_uuid(1), "exclusive")
    assert lock_owner(fs2, "/vm1/vm1-flat.vmdk") == (host_uuid(1), "read-only")
    other = VmFolder.open(fs2, "/vm1/vm1.vmx")
    with pytest.raises(VmFileLockedError) as exc:
        ScsiDisk.open(other, "scsi0:0", "vm1.vmdk")  # the base, for writing
    assert one_line(exc.value).endswith(
        f"[ds1] vm1/vm1-flat.vmdk since it is locked (read-only lock, owner {host_uuid(1)})"
    )
    vm.power_off()


# -- out of space -----------------------------------------------------------------------------------------------


def fill_datastore(folder: VmFolder, leave_blocks: int) -> int:
    """A filler file takes every free block but ``leave_blocks``; returns its FD address."""
    fs = folder.fs
    free = volume_usage(fs.volume)["blocks_free"]
    fd = fs.create("/filler")
    fs.allocate(fd.address, (free - leave_blocks) * MIB, eager=False)
    assert volume_usage(fs.volume)["blocks_free"] == leave_blocks
    return fd.address


@pytest.mark.parametrize("layout", ["thin", "snapshot-delta"])
def test_out_of_space_stuns_the_guest_and_retry_loses_nothing(datastore: Datastore, tmp_path: Path,
                                                              layout: str) -> None:
    folder = make_vm(datastore, disk_mb=24, provisioning="thin" if layout == "thin" else "zeroedthick")
    if layout != "thin":
        folder.create_snapshot("s1")
    leaf = folder.vmx["scsi0:0.fileName"]
    vm = PoweredOnVm.power_on(folder, random.Random(3))
    disk = vm.scsi.disk("scsi0:0")
    filler = fill_datastore(folder, leave_blocks=5)
    model = bytearray(24 * MIB)
    rng = random.Random(4)
    stunned_at = None
    i = 0
    while i < 24:
        data = rng.randbytes(MIB)
        try:
            disk.write(i * 2048, data)
        except GuestStun as stun:
            assert stun.question == out_of_space_question(leaf) == (
                f"There is no more space for virtual disk {leaf}. You might be able to continue this session by "
                "freeing disk space on the relevant volume, and clicking Retry. Click Cancel to terminate this session."
            )
            assert (stun.node, stun.disk, stun.choices, disk.stunned) == ("scsi0:0", leaf, ("Retry", "Cancel"), True)
            assert one_line(stun) == stun.question
            # every acknowledged write is intact; the failed one left nothing
            assert disk.read(0, 24 * 2048) == bytes(model)
            with pytest.raises(GuestStun):  # still full: the retry stuns again
                disk.write(i * 2048, data)
            if stunned_at is None:
                stunned_at = i
                fs = folder.fs
                fs.truncate(filler, fs.volume.read_fd(filler).size - 32 * MIB)  # the user frees space
            else:
                pytest.fail(f"stunned again at {i} MiB after space was freed")
            disk.write(i * 2048, data)  # Retry
        assert not disk.stunned
        model[i * MIB : (i + 1) * MIB] = data
        i += 1
    assert stunned_at is not None and 1 <= stunned_at <= 5
    assert disk.counters().stuns == 2
    assert disk.read(0, 24 * 2048) == bytes(model)
    vm.power_off()
    assert b"msg.hbacommon.outofspace" in read_file(folder.fs, "/vm1/vmware.log")
    datastore.close()
    raw = tmp_path / "expected.raw"
    raw.write_bytes(model)
    with fuse_view(datastore.image, tmp_path / "mnt") as root:
        qemu_compare(root / "vm1" / leaf, raw)


# -- the swap file --------------------------------------------------------------------------------------------------


def test_vswp_created_at_power_on_and_removed_at_power_off(datastore: Datastore) -> None:
    folder = make_vm(datastore, memsize=96, mem_min=32)
    vm = PoweredOnVm.power_on(folder, random.Random(7))
    swap = vm.swap
    assert re.fullmatch(r"vm1-[0-9a-f]{8}\.vswp", swap.name)
    assert swap.name == f"vm1-{random.Random(7).getrandbits(32):08x}.vswp"  # the simulation's generator
    assert swap.size == (96 - 32) * MIB and folder.config.swap_mb == 64
    fs = folder.fs
    assert fs.resolve(swap.path).size == 64 * MIB
    assert lock_owner(fs, swap.path) == (host_uuid(1), "exclusive")
    assert folder.vmx["sched.swap.derivedName"] == f"/vmfs/volumes/{fs.volume.uuid}/vm1/{swap.name}"
    assert f'sched.swap.derivedName = "/vmfs/volumes/{fs.volume.uuid}/vm1/{swap.name}"' in read_file(
        fs, "/vm1/vm1.vmx").decode().splitlines()
    page = random.Random(8).randbytes(4096)
    swap.write(5 * 4096, page)
    swap.write(swap.size - 4096, page[::-1])
    assert swap.read(5 * 4096, 4096) == page and swap.read(swap.size - 4096, 4096) == page[::-1]
    assert swap.read(0, 4096) == bytes(4096)
    c = swap.counters()
    assert (c.writes, c.reads, c.bytes_written, c.bytes_read) == (2, 3, 8192, 3 * 4096)
    with pytest.raises(SwapFileError, match="outside the 67108864-byte swap file"):
        swap.read(swap.size - 10, 11)
    vm.power_off()
    assert swap.name not in folder.files()
    with pytest.raises(SwapFileError, match="closed"):
        swap.read(0, 1)
    # a fully reserved VM gets an empty swap file
    folder.vmx.set("sched.mem.min", "96")
    folder.save()
    vm = PoweredOnVm.power_on(folder, random.Random(9))
    assert vm.swap.size == 0 and fs.resolve(vm.swap.path).size == 0
    vm.power_off()


def test_a_swap_file_that_does_not_fit_fails_the_power_on_and_leaves_nothing(datastore: Datastore) -> None:
    folder = make_vm(datastore, memsize=4096)
    fs = folder.fs
    with pytest.raises(DatastoreFullError) as exc:
        PoweredOnVm.power_on(folder, random.Random(1))
    assert one_line(exc.value).startswith(
        "Could not power on VM: No space left on device. Failed to extend swap file from 0 KB to 4194304 KB"
    )
    assert not any(name.endswith(".vswp") for name in folder.files())
    assert folder.running is None
    for name in ("vm1.vmx", "vm1-flat.vmdk"):
        assert lock_owner(fs, f"/vm1/{name}") is None
    folder.vmx.set("memsize", "64")
    folder.save()
    PoweredOnVm.power_on(folder, random.Random(1)).power_off()


def test_swap_file_names_never_collide_with_a_leftover(datastore: Datastore) -> None:
    folder = make_vm(datastore)
    rng_a, rng_b = random.Random(5), random.Random(5)
    first = SwapFile.create(folder.fs, "/vm1", "vm1", 1, rng_a)  # a leftover of a crashed power-on
    second = SwapFile.create(folder.fs, "/vm1", "vm1", 1, rng_b)
    assert first.name != second.name
    first.remove()
    second.remove()


# -- bad input ------------------------------------------------------------------------------------------------------


def test_missing_disk_file_fails_the_power_on_naming_it(datastore: Datastore) -> None:
    folder = make_vm(datastore)
    folder.fs.unlink("/vm1/vm1-flat.vmdk")
    with pytest.raises(VmFileNotFoundError) as exc:
        PoweredOnVm.power_on(folder, random.Random(1))
    text = one_line(exc.value)
    assert text.startswith(f"Cannot open the disk '/vmfs/volumes/{folder.fs.volume.uuid}/vm1/vm1.vmdk'")
    assert "vm1-flat.vmdk" in text and text.endswith("(scsi0:0)")
    assert lock_owner(folder.fs, "/vm1/vm1.vmx") is None and folder.running is None
    assert not any(name.endswith(".vswp") for name in folder.files())


# -- through the hardware interface ---------------------------------------------------------------------------------


def test_two_simulated_hosts_on_one_lun_through_hic_datastores(datastore: Datastore) -> None:
    """The way the simulated host wires it: a LUN seen by two hosts' storage stacks, each
    datastore attached with its own identity; the second host's power-on names the first's UUID."""
    from hostsim.hic import Lun, StepClock, StorageSystem
    from hostsim.vmm.files import host_filesystem

    datastore.close()  # the image is used through the LUN from here on
    clock = StepClock()
    lun = Lun.image(datastore.image, clock=clock, serial="array-1-lun-0")
    hosts = []
    for n in (1, 2):
        storage = StorageSystem(f"esx{n}", clock, seed=n, epoch_s=1_700_000_000)
        storage.add_adapter().present(lun)
        storage.rescan()
        att = storage.volumes["ds1"].attach(datastore_identity(datastore, n))
        hosts.append((storage, host_filesystem(att)))
    try:
        (_, fs1), (_, fs2) = hosts
        folder = VmFolder.create(fs1, "vm1", memsize_mb=64, disks=(DiskSpec(4),))
        vm = PoweredOnVm.power_on(folder, random.Random(1))
        vm.scsi.disk("scsi0:0").write(8, b"Z" * 512)
        with pytest.raises(VmFileLockedError, match=f"owner {host_uuid(1)}"):
            PoweredOnVm.power_on(VmFolder.open(fs2, "/vm1/vm1.vmx"), random.Random(2))
        vm.power_off()
    finally:
        for storage, _ in hosts:
            storage.close()


def datastore_identity(ds: Datastore, n: int):  # type: ignore[no-untyped-def]
    from vmfs.cluster.host import HostIdentity

    return HostIdentity(uuid=host_uuid(n), ip=f"192.0.2.{n}", clock=ds.clock)


def test_snapshots_of_a_running_vm_reopen_its_disks(datastore: Datastore) -> None:
    folder = make_vm(datastore, disk_mb=8)
    vm = PoweredOnVm.power_on(folder, random.Random(1))
    disk = vm.scsi.disk("scsi0:0")
    disk.write(0, b"A" * 8192)
    snap = vm.create_snapshot("live")
    assert snap.disks == [("scsi0:0", "vm1.vmdk")] and folder.running is vm
    assert vm.scsi.disk("scsi0:0") is disk and disk.file_name == "vm1-000001.vmdk"
    fs2 = datastore.host(2)
    assert lock_owner(fs2, "/vm1/vm1-000001-delta.vmdk") == (host_uuid(1), "exclusive")
    assert lock_owner(fs2, "/vm1/vm1-flat.vmdk") == (host_uuid(1), "read-only")
    disk.write(8, b"B" * 4096)
    assert disk.read(0, 24) == b"A" * 4096 + b"B" * 4096 + bytes(4096)
    vm.remove_all_snapshots()
    assert disk.file_name == "vm1.vmdk" and not any("-00000" in f for f in folder.files())
    assert lock_owner(fs2, "/vm1/vm1-flat.vmdk") == (host_uuid(1), "exclusive")
    assert disk.read(0, 24) == b"A" * 4096 + b"B" * 4096 + bytes(4096)
    vm.power_off()


def test_a_large_write_that_runs_out_of_space_stuns_instead_of_storing_part(datastore: Datastore) -> None:
    """One 96 MiB guest write with 80 MiB free: a stun, never a silent short write (vmfs.vmdk
    alone acknowledges it after storing its first 64 MiB); the retry stores all of it."""
    folder = make_vm(datastore, disk_mb=128)
    vm = PoweredOnVm.power_on(folder, random.Random(3))
    disk = vm.scsi.disk("scsi0:0")
    filler = fill_datastore(folder, leave_blocks=80)
    data = random.Random(5).randbytes(96 * MIB)
    with pytest.raises(GuestStun):
        disk.write(2048, data)
    fs = folder.fs
    fs.truncate(filler, fs.volume.read_fd(filler).size - 64 * MIB)
    disk.write(2048, data)
    assert disk.read(2048, 96 * 2048) == data and disk.read(0, 2048) == bytes(MIB)
    vm.power_off()


def test_the_vswp_backs_the_memory_managers_swapping(datastore: Datastore) -> None:
    """The VMkernel's memory manager swaps a VM held to half its memory into the real .vswp:
    the pages' bytes are in the file at their slots and come back on a touch."""
    from hostsim.vmkernel.engine import MS, SECOND, Engine
    from hostsim.vmkernel.memory import MemoryManager
    from vmfs.volume.filereader import FileReader

    folder = make_vm(datastore, memsize=4)
    vm = PoweredOnVm.power_on(folder, random.Random(1))
    engine = Engine(1)
    mem = MemoryManager(engine, 512, seed=1, share_scan_vm=0, swap_in_us=7 * MS)
    guest = mem.power_on("vm1", max_mb=4, swap=vm.swap, balloon=False, limit_mb=2)

    def page(n: int) -> bytes:
        return random.Random(n).randbytes(4096)

    for ppn in range(guest.pages):
        guest.touch(ppn, page(ppn))
    engine.run(until=3 * SECOND)
    swapped = dict(guest.swap.swapped)
    assert len(swapped) == guest.pages // 2 and vm.swap.counters().writes >= len(swapped)
    fd = folder.fs.resolve(vm.swap.path)
    for ppn, slot in sorted(swapped.items())[:20]:
        assert FileReader(fd).read(slot * 4096, 4096) == page(ppn)
    victim = min(swapped)
    assert guest.touch(victim) == 7 * MS and guest.read_page(victim) == page(victim)
    mem.power_off(guest)
    vm.power_off()
