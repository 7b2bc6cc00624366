"""Virtual disks inside a VMFS5 volume, through :class:`VolumeStorage` and ``vmfs-vmdk --volume``
(no mount), checked against vmfs-tools (vmfs-fuse, fsck.vmfs), dissect.vmfs and qemu-img.

Volumes are real: sparse image files formatted with :func:`vmfs.mkfs.format_volume`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pyvmfs_tools.vmdk import main as vmdk_main
from vmdk_helpers import MIB, needs_qemu, pattern, qemu_img, qemu_io

from tests.oracles import OracleMount
from vmfs.cluster.host import HostIdentity
from vmfs.device.file import FileDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.vmdk import chain, ops
from vmfs.vmdk.descriptor import Descriptor
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, MissingExtentError, ReadOnlyError, VmdkError
from vmfs.vmdk.storage import DiskStorage, HostStorage, ProvisioningStorage, ThinStorage
from vmfs.vmdk.volume_storage import VolumeStorage, open_volume_storage, vmkfstools_d
from vmfs.volume.filedesc import BlockMap
from vmfs.volume.usage import marked_used, referenced_resources, resource_usage, volume_usage

GIB = 1 << 30
KIB64 = 64 << 10
LABEL = "ds1"
HOST_UUID = "5f000000-11111111-2222-001122334455"
OTHER_UUID = "5f000000-33333333-4444-00aabbccddee"

oracle = pytest.mark.oracle
fuse = pytest.mark.fuse


# -- helpers -----------------------------------------------------------------------------------------


def make_volume(path: Path, size: int = GIB, *more: Path) -> Path:
    """Format ``path`` (and the extents ``more``, same size) as one VMFS5 volume."""
    for p in (path, *more):
        with open(p, "wb") as fh:
            fh.truncate(size)
    devices = [FileDevice(p, readonly=False) for p in (path, *more)]
    try:
        format_volume(devices, MkfsOptions(label=LABEL, creation_time_us=1_700_000_000_000_000))
    finally:
        for dev in devices:
            dev.close()
    return path


def host(uuid: str = HOST_UUID) -> HostIdentity:
    return HostIdentity(uuid=uuid)


def writable(image: Path, directory: str = "/"):  # type: ignore[no-untyped-def]
    return open_volume_storage([image], directory, writable=True, host=host())


def vmdk(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(vmdk_main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def on_volume(image: Path, *args: str) -> tuple[int, str, str]:
    return vmdk("--volume", str(image), "--host-uuid", HOST_UUID, *args)


def fd_of(storage: VolumeStorage, name: str):  # type: ignore[no-untyped-def]
    return storage.volume.read_fd(storage.fs.resolve(storage.path(name)).address)


def text(storage: VolumeStorage, name: str) -> bytes:
    with storage.open(name, "rb") as fh:
        return fh.read()


def pread(storage: VolumeStorage, name: str, offset: int, length: int) -> bytes:
    disk = open_disk(storage, name)
    try:
        return disk.pread(offset, length)
    finally:
        disk.close()


def tbz_of(storage: VolumeStorage, name: str) -> int:
    meta = fd_of(storage, name).meta
    return meta.numTBZBlocksLo | meta.numTBZBlocksHi << 32


def consistent(storage: VolumeStorage) -> None:
    """What the bitmaps mark used is exactly what the tree (and live journals) references."""
    used = marked_used(storage.volume)
    refs = referenced_resources(storage.volume)
    for kind, marked in used.items():
        assert marked == refs[kind], f"resource {kind}: {len(marked ^ refs[kind])} bits disagree"


def volume_state(image: Path) -> dict[str, object]:
    """Every file below the root (size, blocks, TBZ count, sha256) and the free counts."""
    state: dict[str, object] = {}
    with open_volume_storage([image]) as st:
        for directory, entries in st.fs.walk("/"):
            for e in entries:
                path = directory.rstrip("/") + "/" + e.name
                fd = st.volume.read_fd(e.address)
                if e.name.endswith(".sf") or fd.is_dir:
                    continue
                with st.open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                state[path] = (fd.size, fd.meta.numBlocks, tbz_of(st, path), digest)
        state["free"] = [(r["name"], r["free"]) for r in resource_usage(st.volume)]
    return state


class SparseModel:
    """The expected bytes of a large disk, one MiB bytearray per block written."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.blocks: dict[int, bytearray] = {}

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            index, within = divmod(offset + pos, MIB)
            n = min(MIB - within, len(data) - pos)
            block = self.blocks.setdefault(index, bytearray(MIB))
            block[within : within + n] = data[pos : pos + n]
            pos += n

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            index, within = divmod(offset, MIB)
            n = min(MIB - within, length)
            block = self.blocks.get(index)
            out += block[within : within + n] if block is not None else bytes(n)
            offset += n
            length -= n
        return bytes(out)

    def holes(self, count: int, rnd: random.Random) -> Iterator[int]:
        """Offsets of MiB blocks never written."""
        found = 0
        while found < count:
            index = rnd.randrange(self.size // MIB)
            if index not in self.blocks:
                found += 1
                yield index * MIB

    def write_raw(self, path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(self.size)
            for index, block in sorted(self.blocks.items()):
                fh.seek(index * MIB)
                fh.write(block)


def export_pair(storage: VolumeStorage, name: str, out: Path) -> Path:
    """Copy a flat disk (descriptor + extents) out of the volume, sparse: only allocated data."""
    desc_bytes = text(storage, name)
    (out / Path(name).name).write_bytes(desc_bytes)
    directory = storage.path(name).rpartition("/")[0]
    for line in Descriptor.parse(desc_bytes).extents:
        assert line.filename is not None
        ext = VolumeStorage(storage.fs, directory)
        with ext.open(line.filename, "rb") as src, open(out / line.filename, "wb") as dst:
            dst.truncate(ext.size(line.filename))
            for start, length in ext.allocated_ranges(line.filename):
                src.seek(start)
                dst.seek(start)
                dst.write(src.read(length))
    return out / Path(name).name


def fsck_vmfs(image: Path) -> list[str]:
    """fsck.vmfs's report minus its known false reports (``fsck_vmfs_problems``), and two more
    that virtual disks bring out, each checked against the volume:

    * every descriptor is a resident file starting ``# Di``, which fsck.vmfs reads as block
      0x69442023 "referenced by multiple inodes" once there are two of them;
    * fsck.vmfs records the block addresses of a file with their flag bits, so a TBZ block
      (0x20 set) never matches its bitmap bit: each one is "lost" (vmfs-tools ``vmfs_fsck.c``).
    """
    from tests.interop.test_write_interop import fsck_vmfs_problems

    heads: set[int] = set()
    tbz: set[int] = set()
    with open_volume_storage([image]) as st:
        codec = st.volume.geometry.codec
        for _, entries in st.fs.walk("/"):
            for e in entries:
                fd = st.volume.read_fd(e.address)
                if fd.is_resident and fd.size >= 4:
                    heads.add(int.from_bytes(fd.resident_data[:4], "little"))
                elif not fd.is_resident and not fd.is_dir:
                    refs = BlockMap(fd).references()
                    tbz.update(codec.clear_tbz(a) for _, a, pb in refs if not pb and codec.fb_tbz(a))
    known = {f"Block 0x{h:08x} is referenced by multiple inodes: " for h in heads}
    known |= {f"File Block 0x{a:08x} is lost." for a in tbz}
    return [line for line in fsck_vmfs_problems(image) if line not in known]


def vmfs_fuse(image: Path, mountpoint: Path, *more: Path) -> OracleMount:
    return OracleMount("vmfs-fuse", [image, *more], mountpoint)


# -- the storage object --------------------------------------------------------------------------------


def test_protocols_and_names(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    with writable(image, "/vms/vm1") as st:
        assert isinstance(st, DiskStorage) and isinstance(st, ThinStorage) and isinstance(st, ProvisioningStorage)
        assert st.path("d.vmdk") == "/vms/vm1/d.vmdk"
        assert st.path("../base/b.vmdk") == "/vms/base/b.vmdk"
        assert st.path("../../../../x") == "/x"
        assert st.path("/other/y.vmdk") == "/other/y.vmdk"
        # parent hints written by ESXi name the datastore
        assert st.path(f"/vmfs/volumes/{LABEL}/vm2/p.vmdk") == "/vm2/p.vmdk"
        assert st.path(f"/vmfs/volumes/{st.volume.uuid}/vm2/p.vmdk") == "/vm2/p.vmdk"
        assert st.path("/vmfs/volumes/elsewhere/p.vmdk") == "/vmfs/volumes/elsewhere/p.vmdk"


def test_file_object(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    data = pattern(3 * MIB + 4096, seed=5)
    with writable(image) as st:
        st.makedirs("a/b")
        with st.open("a/b/f", "w+b") as fh:
            assert fh.write(data) == len(data)
            assert fh.tell() == len(data)
            fh.seek(100)
            assert fh.read(10) == data[100:110]
            fh.seek(-5, os.SEEK_END)
            assert fh.read() == data[-5:]
            fh.seek(len(data) + MIB)  # past the end: a write there leaves a hole
            fh.write(b"tail")
            fh.truncate(len(data) + MIB + 2)
        assert st.size("a/b/f") == len(data) + MIB + 2
        with st.open("a/b/f", "rb") as fh:
            assert fh.read() == data + bytes(MIB) + b"ta"
            with pytest.raises(ReadOnlyError):
                fh.write(b"x")
        with st.open("a/b/f", "w+b") as fh:  # truncates
            assert fh.read() == b""
        with pytest.raises(MissingExtentError) as info:
            st.open("a/b/none", "rb")
        assert info.value.errno == errno.ENOENT
        with pytest.raises(InvalidArgumentError):
            st.open("a/b", "rb")
        with pytest.raises(InvalidArgumentError):
            st.open("a/b/f", "ab")
        st.create("a/g", 0, "thin")
        with pytest.raises(ExistsError):
            st.create("a/g", 0, "thin")
        with pytest.raises(ExistsError):
            st.rename("a/g", "a/b/f")
        st.rename("a/g", "a/b/g")
        assert st.exists("a/b/g") and not st.exists("a/g") and not st.exists("a/g/x")
        st.remove("a/b/g")
        with pytest.raises(MissingExtentError):
            st.remove("a/b/g")
        consistent(st)


def test_read_only_volume_refuses_changes(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    with writable(image) as st:
        ops.create_disk(st, "d.vmdk", 4 * MIB, "thin")
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    with open_volume_storage([image]) as st:
        assert not st.writable
        assert pread(st, "d.vmdk", 0, 512) == bytes(512)  # reading works
        for attempt in (
            lambda: st.open("d.vmdk", "r+b"),
            lambda: st.open("new", "w+b"),
            lambda: st.create("new", MIB, "thin"),
            lambda: st.remove("d.vmdk"),
            lambda: st.rename("d.vmdk", "e.vmdk"),
            lambda: st.punch_zero("d-flat.vmdk", 0, MIB),
            lambda: open_disk(st, "d.vmdk", writable=True),
            lambda: chain.create_snapshot(st, "d.vmdk"),
        ):
            with pytest.raises(ReadOnlyError) as info:
                attempt()
            assert info.value.errno == errno.EROFS and "read-only" in str(info.value)
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


# -- provisioning (vmdk-format.md 7.2) -------------------------------------------------------------------


@oracle
@fuse
@pytest.mark.parametrize("provisioning", ["thin", "zeroedthick", "eagerzeroedthick"])
def test_create_provisioning(tmp_path: Path, provisioning: str) -> None:
    image = make_volume(tmp_path / "vol.img")
    size = 48 * MIB
    with writable(image) as st:
        # leave old data in free blocks: lazily zeroed thick must not show it, eager must erase it
        st.makedirs("vm")
        with st.open("vm/junk", "w+b") as fh:
            fh.write(b"\xa5" * (64 * MIB))
        st.remove("vm/junk")
        ops.create_disk(st, "vm/d.vmdk", size, provisioning)
        fd = fd_of(st, "vm/d-flat.vmdk")
        blocks = size // MIB
        assert fd.size == size
        assert fd.meta.numBlocks == (0 if provisioning == "thin" else blocks)
        assert tbz_of(st, "vm/d-flat.vmdk") == (blocks if provisioning == "zeroedthick" else 0)
        expect_ranges = [] if provisioning != "eagerzeroedthick" else [(0, size)]
        assert st.allocated_ranges("vm/d-flat.vmdk") == expect_ranges
        with st.open("vm/d-flat.vmdk", "rb") as fh:
            assert fh.read() == bytes(size)
        desc = Descriptor.parse(text(st, "vm/d.vmdk"))
        assert desc.create_type == "vmfs" and desc.thin_provisioned == (provisioning == "thin")
        if provisioning != "thin":
            # what is on the device under the file's blocks: old data (TBZ) or zeros (eager)
            raw = b"".join(
                st.volume.device.read(st.volume.geometry.codec.fb_block(a) * MIB, MIB)
                for _, a, is_pb in BlockMap(fd).references()
                if not is_pb
            )
            assert (raw.count(0) == len(raw)) == (provisioning == "eagerzeroedthick")
        consistent(st)
    with vmfs_fuse(image, tmp_path / "mnt") as root:
        flat = root / "vm" / "d-flat.vmdk"
        assert flat.stat().st_size == size
        assert flat.read_bytes() == bytes(size)
        assert Descriptor.parse((root / "vm" / "d.vmdk").read_bytes()).extents[0].sectors == size // 512
    assert fsck_vmfs(image) == []


@oracle
def test_inflate_eagerzero_punch_extend(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    with writable(image) as st:
        ops.create_disk(st, "t.vmdk", 8 * MIB, "thin")
        disk = open_disk(st, "t.vmdk", writable=True)
        disk.pwrite(3 * MIB + 100, b"\x07" * 5000)
        disk.close()
        assert st.allocated_ranges("t-flat.vmdk") == [(3 * MIB, MIB)]
        ops.inflate_disk(st, "t.vmdk")  # -j: every block allocated and zeroed
        assert fd_of(st, "t-flat.vmdk").meta.numBlocks == 8 and tbz_of(st, "t-flat.vmdk") == 0
        assert st.allocated_ranges("t-flat.vmdk") == [(0, 8 * MIB)]
        assert not Descriptor.parse(text(st, "t.vmdk")).thin_provisioned
        # -K: the all-zero blocks go back; the block holding data stays
        assert ops.punch_zero(st, "t.vmdk", block=MIB) == 7 * MIB
        assert fd_of(st, "t-flat.vmdk").meta.numBlocks == 1
        assert st.allocated_ranges("t-flat.vmdk") == [(3 * MIB, MIB)]
        assert pread(st, "t.vmdk", 3 * MIB, MIB) == bytes(100) + b"\x07" * 5000 + bytes(MIB - 5100)
        assert Descriptor.parse(text(st, "t.vmdk")).thin_provisioned
        # a punch smaller than a block zeroes the data in place
        st.punch_zero("t-flat.vmdk", 3 * MIB, 1000)
        assert pread(st, "t.vmdk", 3 * MIB, 6000) == bytes(1000) + b"\x07" * 4100 + bytes(900)
        # -k on a lazily zeroed thick disk: TBZ blocks are zeroed and lose their flag
        ops.create_disk(st, "z.vmdk", 6 * MIB, "zeroedthick")
        disk = open_disk(st, "z.vmdk", writable=True)
        disk.pwrite(MIB, b"\x01" * 512)
        disk.close()
        assert tbz_of(st, "z-flat.vmdk") == 5
        ops.eager_zero(st, "z.vmdk")
        assert tbz_of(st, "z-flat.vmdk") == 0 and fd_of(st, "z-flat.vmdk").meta.numBlocks == 6
        assert pread(st, "z.vmdk", 0, 6 * MIB) == bytes(MIB) + b"\x01" * 512 + bytes(5 * MIB - 512)
        # -X: a zeroedthick disk grows with TBZ blocks
        ops.extend_disk(st, "z.vmdk", 10 * MIB)
        assert st.size("z-flat.vmdk") == 10 * MIB and tbz_of(st, "z-flat.vmdk") == 4
        assert Descriptor.parse(text(st, "z.vmdk")).extents[0].sectors == 10 * MIB // 512
        consistent(st)
    assert fsck_vmfs(image) == []  # vmfs-tools agrees with the bitmaps after the punches


# -- acceptance: a 4 GiB thin disk, a snapshot, consolidation, three readers -------------------------------


@oracle
@fuse
@pytest.mark.slow
@needs_qemu
def test_thin_disk_snapshot_consolidate_round_trip(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img", 9 * GIB)
    size = 4 * GIB
    rnd = random.Random(20240611)
    model = SparseModel(size)

    def random_writes(disk, count: int) -> None:  # type: ignore[no-untyped-def]
        for _ in range(count):
            # 64 KiB at any sector: crosses 1 MiB VMFS blocks and COWD grain tables now and then
            offset = rnd.randrange((size - KIB64) // 512) * 512
            data = rnd.randbytes(KIB64)
            disk.pwrite(offset, data)
            model.write(offset, data)

    with writable(image) as st:
        st.makedirs("vms/vm1")
        vm = VolumeStorage(st.fs, "/vms/vm1")
        ops.create_disk(vm, "disk.vmdk", size, "thin")
        disk = open_disk(vm, "disk.vmdk", writable=True)
        random_writes(disk, 300)
        disk.close()
        leaf = chain.create_snapshot(vm, "disk.vmdk")
        assert leaf == "disk-000001.vmdk"
        assert Descriptor.parse(text(vm, leaf)).create_type == "vmfsSparse"
        disk = open_disk(vm, leaf, writable=True)
        random_writes(disk, 300)
        disk.close()
        disk = open_disk(vm, leaf)
        try:
            assert len(disk.layers) == 2
            for index in sorted(model.blocks):
                assert disk.pread(index * MIB, MIB) == model.read(index * MIB, MIB), f"block {index}"
            for offset in model.holes(32, rnd):
                assert disk.pread(offset, MIB) == bytes(MIB)
        finally:
            disk.close()
        assert chain.consolidate(vm, leaf) == "disk.vmdk"
        names = sorted(e.name for e in st.fs.listdir("/vms/vm1") if e.name not in (".", ".."))
        assert names == ["disk-flat.vmdk", "disk.vmdk"]
        desc = Descriptor.parse(text(vm, "disk.vmdk"))
        assert not desc.has_parent and [(e.type, e.filename) for e in desc.extents] == [("VMFS", "disk-flat.vmdk")]
        with vm.open("disk-flat.vmdk", "rb") as fh:
            for index in sorted(model.blocks):
                fh.seek(index * MIB)
                assert fh.read(MIB) == model.read(index * MIB, MIB), f"flat block {index}"
        # thin: only blocks that were written hold storage
        data_blocks = {start // MIB + i for start, n in vm.allocated_ranges("disk-flat.vmdk") for i in range(n // MIB)}
        assert data_blocks == set(model.blocks)
        consistent(st)
        out = tmp_path / "export"
        out.mkdir()
        exported = export_pair(vm, "disk.vmdk", out)
    # qemu-img reads the pair as exported from the volume: the whole 4 GiB equals the model
    model.write_raw(tmp_path / "model.raw")
    qemu_img("compare", "-f", "vmdk", "-F", "raw", str(exported), str(tmp_path / "model.raw"), cwd=out)
    # vmfs-tools reads the flat file in the volume identically, 16 MiB chunk by chunk
    with vmfs_fuse(image, tmp_path / "mnt") as root:
        flat = root / "vms" / "vm1" / "disk-flat.vmdk"
        assert flat.stat().st_size == size
        chunk = 16 * MIB
        with open(flat, "rb") as fh:
            for offset in range(0, size, chunk):
                got = hashlib.sha256(fh.read(chunk)).hexdigest()
                assert got == hashlib.sha256(model.read(offset, chunk)).hexdigest(), f"chunk at {offset:#x}"
        assert Descriptor.parse((root / "vms" / "vm1" / "disk.vmdk").read_bytes()).cid == desc.cid
    assert fsck_vmfs(image) == []


# -- clones between the host and the volume -----------------------------------------------------------------


@oracle
@needs_qemu
def test_clone_host_sparse_into_volume_and_out_to_stream(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicSparse", "src.vmdk", "24M", cwd=host_dir)
    for offset, length, byte in ((0, 65536, 0x11), (5 * MIB + 4096, 300000, 0x22), (24 * MIB - 8192, 8192, 0x33)):
        qemu_io("src.vmdk", f"write -P {byte} {offset} {length}", cwd=host_dir)
    src = str(host_dir / "src.vmdk")
    code, _, err = on_volume(image, "-p", "-i", f"host:{src}", "-d", "thin", "/vms/c/disk.vmdk")
    assert code == 0, err
    code, out, _ = on_volume(image, "--info", "/vms/c/disk.vmdk")
    assert code == 0 and "disk.vmdk  vmfs" in out and "disk-flat.vmdk 49152 sectors" in out
    with open_volume_storage([image], "/vms/c") as st:
        assert Descriptor.parse(text(st, "disk.vmdk")).thin_provisioned
        # thin: the blocks holding the three writes, nothing else
        assert st.allocated_ranges("disk-flat.vmdk") == [(0, MIB), (5 * MIB, MIB), (23 * MIB, MIB)]
    out_path = host_dir / "out.vmdk"
    code, _, err = on_volume(image, "-i", "/vms/c/disk.vmdk", "-d", "streamOptimized", f"host:{out_path}")
    assert code == 0, err
    qemu_img("compare", src, str(out_path), cwd=host_dir)
    assert "streamOptimized" in qemu_img("info", str(out_path), cwd=host_dir).stdout
    # and a clone inside the volume, zeroedthick: TBZ everywhere but the copied data
    code, _, err = on_volume(image, "-i", "/vms/c/disk.vmdk", "/vms/c/thick.vmdk")
    assert code == 0, err
    with open_volume_storage([image], "/vms/c") as st:
        assert tbz_of(st, "thick-flat.vmdk") == 21 and fd_of(st, "thick-flat.vmdk").meta.numBlocks == 24
        consistent(st)
    assert fsck_vmfs(image) == []


# -- the tool on the volume: -D, -U, -E and errors ------------------------------------------------------------


@oracle
def test_lock_info_against_dissect_and_a_live_holder(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    code, _, err = on_volume(image, "-p", "-c", "16M", "-d", "thin", "/vm/d.vmdk")
    assert code == 0, err
    # another host has the disk open for writing (ESXi: a running VM): exclusive lock on disk
    with open_volume_storage([image], "/vm", writable=True, host=host(OTHER_UUID)) as other:
        disk = open_disk(other, "d.vmdk", writable=True)
        try:
            disk.pwrite(0, b"busy")
            code, out, err = vmdk("--volume", str(image), "-D", "/vm/d.vmdk")
            assert code == 0, err
            from dissect.vmfs import lvm, vmfs

            with open(image, "rb") as fh:
                theirs = vmfs.VMFS(lvm.LVM([fh]).volumes[0].open()).get("/vm/d-flat.vmdk").debug()
        finally:
            disk.close()
    lines = out.splitlines()
    flat_at = lines.index("d-flat.vmdk")
    flat_block = lines[flat_at + 1 : flat_at + 8]
    assert "\n".join(flat_block) == theirs.replace("flags 0x0,", "flags 0,")
    assert flat_block[0].startswith("Lock [type 10c00001 offset ")
    assert f"mode 1, owner {OTHER_UUID}" in flat_block[1]
    assert any(line.startswith("  heartbeat: slot ") and "(holder alive)" in line for line in lines[flat_at:])
    assert "  lock mode: exclusive" in lines[flat_at:]
    assert lines[0] == "d.vmdk" and out.count("Lock [type 10c00001") == 2
    # once the holder is gone the lock is free, the last holder's heartbeat kept (ESXi does)
    with open_volume_storage([image], "/vm") as st:
        info = st.describe_lock("d-flat.vmdk")
        assert info["lock mode"] == "free" and "free now" in info["heartbeat"]
        assert info["vmkfstools -D"] == vmkfstools_d(fd_of(st, "d-flat.vmdk"))


def test_disk_in_use_by_another_host_is_busy(tmp_path: Path) -> None:
    """VMFS locking (vmdk-format.md 7.5): while one host writes a disk, another cannot open it."""
    from vmfs.write.posix import WritableFileSystem

    if not hasattr(WritableFileSystem, "open_file"):
        pytest.skip("the volume library takes no file locks for open files")
    image = make_volume(tmp_path / "vol.img")
    with writable(image) as st:
        ops.create_disk(st, "d.vmdk", 4 * MIB, "thin")
    with open_volume_storage([image], "/", writable=True, host=host(OTHER_UUID)) as other:
        disk = open_disk(other, "d.vmdk", writable=True)
        try:
            with writable(image) as st:
                st.wfs.busy_timeout = 0.2
                before = fd_of(st, "d-flat.vmdk").meta.numBlocks
                with pytest.raises(VmdkError) as info:
                    open_disk(st, "d.vmdk", writable=True)
                assert info.value.errno == errno.EBUSY and "d-flat.vmdk" in str(info.value)
                assert "held by another host" in str(info.value)
        finally:
            disk.close()
    with writable(image) as st:  # released: the disk opens again, nothing was changed by the refusal
        assert fd_of(st, "d-flat.vmdk").meta.numBlocks == before
        disk = open_disk(st, "d.vmdk", writable=True)
        disk.close()


def test_delete_and_rename_on_volume(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    with writable(image) as st:
        st.makedirs("vm")
    with open_volume_storage([image]) as st:
        free_before = resource_usage(st.volume)
    assert on_volume(image, "-c", "8M", "-d", "eagerzeroedthick", "/vm/a.vmdk")[0] == 0
    assert on_volume(image, "--snapshot", "/vm/a.vmdk")[1].strip() == "a-000001.vmdk"
    code, _, err = on_volume(image, "-E", "/vm/a-000001.vmdk", "/vm/b-000001.vmdk")
    assert code == 0, err
    with open_volume_storage([image], "/vm") as st:
        names = sorted(e.name for e in st.fs.listdir("/vm") if e.name not in (".", ".."))
        assert names == ["a-flat.vmdk", "a.vmdk", "b-000001-delta.vmdk", "b-000001.vmdk"]
        desc = Descriptor.parse(text(st, "b-000001.vmdk"))
        assert desc.extents[0].filename == "b-000001-delta.vmdk" and desc.parent_hint == "a.vmdk"
        assert pread(st, "b-000001.vmdk", 0, 512) == bytes(512)  # the chain still opens
    assert on_volume(image, "-E", "/vm/a.vmdk", "/vm/moved/c.vmdk")[0] == 1  # no such directory
    assert on_volume(image, "-U", "/vm/b-000001.vmdk")[0] == 0
    assert on_volume(image, "-U", "/vm/a.vmdk")[0] == 0
    with open_volume_storage([image]) as st:
        assert [e.name for e in st.fs.listdir("/vm") if e.name not in (".", "..")] == []
        assert resource_usage(st.volume) == free_before  # every block and FD came back
        consistent(st)


def _break_missing_extent(st: VolumeStorage) -> None:
    st.remove("d-flat.vmdk")


def _break_cid(st: VolumeStorage) -> None:
    desc = Descriptor.parse(text(st, "d.vmdk"))
    desc.cid = desc.cid ^ 1
    data = desc.to_bytes()
    with st.open("d.vmdk", "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))


@pytest.mark.parametrize(
    ("damage", "args", "message"),
    [
        pytest.param(_break_missing_extent, ["-X", "32M", "/vm/d.vmdk"], "does not exist", id="missing-extent-extend"),
        pytest.param(_break_missing_extent, ["--snapshot", "/vm/d.vmdk"], "does not exist", id="missing-extent-snap"),
        pytest.param(_break_missing_extent, ["-i", "/vm/d.vmdk", "/vm/e.vmdk"], "does not exist", id="missing-clone"),
        pytest.param(_break_cid, ["--consolidate", "/vm/d-000001.vmdk"], "parentCID", id="cid-consolidate"),
        pytest.param(_break_cid, ["--snapshot", "/vm/d-000001.vmdk"], "parentCID", id="cid-snapshot"),
        pytest.param(_break_cid, ["-i", "/vm/d-000001.vmdk", "/vm/e.vmdk"], "parentCID", id="cid-clone"),
        pytest.param(_break_cid, ["--revert", "/vm/d-000001.vmdk"], "parentCID", id="cid-revert"),
        pytest.param(None, ["-c", "2G", "-d", "eagerzeroedthick", "/vm/e.vmdk"], "no space", id="volume-full"),
    ],
)
def test_errors_leave_volume_unchanged(tmp_path: Path, damage, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    image = make_volume(tmp_path / "vol.img")
    with writable(image, "/vm") as st:
        st.makedirs("/vm")
        ops.create_disk(st, "d.vmdk", 16 * MIB, "thin")
        disk = open_disk(st, "d.vmdk", writable=True)
        disk.pwrite(MIB, b"\x42" * 70000)
        disk.close()
        leaf = chain.create_snapshot(st, "d.vmdk")
        disk = open_disk(st, leaf, writable=True)
        disk.pwrite(0, b"\x43" * 4096)
        disk.close()
        if damage is not None:
            damage(st)
    before = volume_state(image)
    code, out, err = on_volume(image, *args)
    assert code == 1 and err.startswith("vmfs-vmdk: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in out + err
    assert volume_state(image) == before
    with open_volume_storage([image]) as st:
        consistent(st)


def test_host_paths_and_usage_errors(tmp_path: Path) -> None:
    image = make_volume(tmp_path / "vol.img")
    host_disk = tmp_path / "h.vmdk"
    assert on_volume(image, "-c", "1M", f"host:{host_disk}")[0] == 0  # host: still means the host
    assert (tmp_path / "h-flat.vmdk").stat().st_size == MIB
    assert on_volume(image, "-E", f"host:{host_disk}", "/x.vmdk")[0] == 2  # across places
    assert vmdk("-p", "-c", "1M", str(tmp_path / "y.vmdk"))[0] == 2  # -p without --volume
    code, _, err = vmdk("--volume", str(tmp_path / "nothing.img"), "--info", "/d.vmdk")
    assert code == 1 and err.startswith("vmfs-vmdk: ") and err.count("\n") == 1
    # a command that only reads opens the volume read-only: the image does not change at all
    assert on_volume(image, "-c", "2M", "/r.vmdk")[0] == 0
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    assert on_volume(image, "--info", "/r.vmdk")[0] == 0
    assert on_volume(image, "-D", "/r.vmdk")[0] == 0
    assert on_volume(image, "-i", "/r.vmdk", "-d", "monolithicSparse", f"host:{tmp_path / 'r.vmdk'}")[0] == 0
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    assert HostStorage(tmp_path).exists("r.vmdk")


@oracle
@fuse
def test_spanned_volume(tmp_path: Path) -> None:
    """``--volume`` takes every extent of a spanned volume; a disk larger than one extent."""
    first, second = tmp_path / "e1.img", tmp_path / "e2.img"
    make_volume(first, 785 * MIB, second)  # 3 segments of 256 MiB each
    size = 1000 * MIB
    code, _, err = vmdk("--volume", f"{first},{second}", "-p", "-c", "1000M", "-d", "eagerzeroedthick", "/vm/big.vmdk")
    assert code == 0, err
    with open_volume_storage([second, first], "/vm", writable=True, host=host()) as st:  # any order
        disk = open_disk(st, "big.vmdk", writable=True)
        for offset in (0, 500 * MIB, size - KIB64):  # both extents of the volume
            disk.pwrite(offset, bytes([offset % 251 + 1]) * KIB64)
        disk.close()
        assert st.volume.device.size == 6 * 256 * MIB and st.size("big-flat.vmdk") == size
        codec = st.volume.geometry.codec
        blocks = [codec.fb_block(a) for _, a, pb in BlockMap(fd_of(st, "big-flat.vmdk")).references() if not pb]
        assert min(blocks) < 3 * 256 <= max(blocks)  # the disk's blocks lie on both extents
    with vmfs_fuse(first, tmp_path / "mnt", second) as root, open(root / "vm" / "big-flat.vmdk", "rb") as fh:
        for offset in (0, 500 * MIB, size - KIB64):
            fh.seek(offset)
            assert fh.read(KIB64) == bytes([offset % 251 + 1]) * KIB64
        fh.seek(MIB)
        assert fh.read(MIB) == bytes(MIB)


def test_a_long_write_that_fills_the_volume_fails_instead_of_storing_short(tmp_path: Path) -> None:
    """A guest write larger than one library chunk (64 MiB) that runs out of space part way:
    the library's POSIX write stores what fits and returns the short count; the disk layer must
    not take that for success (it used to: 192 of 282 MiB stored, no error).  Now the rest is
    written again and the ENOSPC comes through; what was stored before it is still readable."""
    image = make_volume(tmp_path / "small.img", 300 << 20)
    with open_volume_storage([image], writable=True, host=HostIdentity(uuid=HOST_UUID)) as st:
        free = volume_usage(st.volume)["blocks_free"]
        ops.create_disk(st, "d.vmdk", 512 * MIB, "thin")
        disk = open_disk(st, "d.vmdk", writable=True)
        try:
            with pytest.raises(VmdkError) as info:
                disk.pwrite(0, b"\xab" * ((free + 40) * MIB))
            assert getattr(info.value, "errno", None) == errno.ENOSPC
            head = disk.pread(0, MIB)
            assert head == b"\xab" * MIB
        finally:
            disk.close()
