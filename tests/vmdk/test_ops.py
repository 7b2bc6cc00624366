"""vmkfstools-style operations (section 7, 9.1) on host files, checked against the files they
leave, the data read back, and (oracle tests) qemu-img."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vmdk_helpers import MIB, needs_qemu, pattern, qemu_check, qemu_img, qemu_raw, snapshot_files

from vmfs.vmdk import chain, ops
from vmfs.vmdk.descriptor import Descriptor
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, UnsupportedError
from vmfs.vmdk.storage import HostStorage


def _desc(path: Path) -> Descriptor:
    return Descriptor.parse(path.read_bytes())


def _read(storage: HostStorage, name: str) -> bytes:
    disk = open_disk(storage, name)
    try:
        return disk.pread(0, disk.size)
    finally:
        disk.close()


def _write(storage: HostStorage, name: str, offset: int, data: bytes) -> None:
    disk = open_disk(storage, name, writable=True)
    try:
        disk.pwrite(offset, data)
    finally:
        disk.close()


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


# --- create ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disk_format", "create_type", "files"),
    [
        ("thin", "vmfs", ["d-flat.vmdk", "d.vmdk"]),
        ("zeroedthick", "vmfs", ["d-flat.vmdk", "d.vmdk"]),
        ("eagerzeroedthick", "vmfs", ["d-flat.vmdk", "d.vmdk"]),
        ("vmfsThin", "vmfsThin", ["d-flat.vmdk", "d.vmdk"]),
        ("vmfsEagerZeroedThick", "vmfsEagerZeroedThick", ["d-flat.vmdk", "d.vmdk"]),
        ("monolithicSparse", "monolithicSparse", ["d.vmdk"]),
        ("streamOptimized", "streamOptimized", ["d.vmdk"]),
        ("monolithicFlat", "monolithicFlat", ["d-flat.vmdk", "d.vmdk"]),
        ("twoGbMaxExtentSparse", "twoGbMaxExtentSparse", ["d-s001.vmdk", "d.vmdk"]),
        ("2gbsparse", "twoGbMaxExtentSparse", ["d-s001.vmdk", "d.vmdk"]),
        ("twoGbMaxExtentFlat", "twoGbMaxExtentFlat", ["d-f001.vmdk", "d.vmdk"]),
        ("vmfsSparse", "vmfsSparse", ["d-delta.vmdk", "d.vmdk"]),
        ("seSparse", "seSparse", ["d-sesparse.vmdk", "d.vmdk"]),
    ],
)
def test_create(storage: HostStorage, tmp_path: Path, disk_format: str, create_type: str, files: list[str]) -> None:
    ops.create_disk(storage, "d.vmdk", 3 * MIB + 512, disk_format)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    disk = open_disk(storage, "d.vmdk")
    try:
        assert disk.top.descriptor.create_type == create_type
        assert disk.size == 3 * MIB + 512
        assert disk.pread(0, disk.size) == bytes(disk.size)
        desc = disk.top.descriptor
        assert desc.parent_cid == 0xFFFFFFFF and not desc.has_parent
        assert desc.adapter_type == "lsilogic"
        assert desc.geometry == (3, 64, 32)  # VMware's small SCSI rule
    finally:
        disk.close()
    head = (tmp_path / "d.vmdk").read_bytes()[:4]
    assert head == (b"KDMV" if create_type in ("monolithicSparse", "streamOptimized") else b"# Di")


def test_create_provisioning_on_host(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "t.vmdk", 8 * MIB, "thin")
    ops.create_disk(storage, "z.vmdk", 8 * MIB, "zeroedthick")
    ops.create_disk(storage, "e.vmdk", 8 * MIB, "eagerzeroedthick")
    assert _allocated(tmp_path / "t-flat.vmdk") == 0
    assert _allocated(tmp_path / "z-flat.vmdk") >= 8 * MIB
    assert _allocated(tmp_path / "e-flat.vmdk") >= 8 * MIB
    assert _desc(tmp_path / "t.vmdk").thin_provisioned
    assert not _desc(tmp_path / "z.vmdk").thin_provisioned
    desc = _desc(tmp_path / "t.vmdk")
    assert desc.get("ddb.uuid").startswith("60 00 C2 ")  # type: ignore[union-attr]
    assert desc.get("ddb.longContentID").endswith(f"{desc.cid:08x}")  # type: ignore[union-attr]
    assert desc.get("encoding") == "UTF-8"


def test_create_split_extents(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", 5 << 30, "twoGbMaxExtentFlat", hosted_provisioning="thin")
    lines = _desc(tmp_path / "d.vmdk").extents
    assert [(x.sectors, x.filename, x.offset) for x in lines] == [
        (4192256, "d-f001.vmdk", 0),
        (4192256, "d-f002.vmdk", 0),
        (10485760 - 2 * 4192256, "d-f003.vmdk", 0),
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(("d.vmdk", 0, "thin"), InvalidArgumentError, id="zero-size"),
        pytest.param(("d.vmdk", MIB, "sparse-ish"), InvalidArgumentError, id="bad-format"),
        pytest.param(("d.img", MIB, "thin"), InvalidArgumentError, id="not-vmdk"),
    ],
)
def test_create_bad_arguments(storage: HostStorage, tmp_path: Path, args: tuple, error: type) -> None:
    with pytest.raises(error):
        ops.create_disk(storage, *args)
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_existing_and_leaves_nothing(storage: HostStorage, tmp_path: Path) -> None:
    (tmp_path / "d-flat.vmdk").write_bytes(b"keep me")
    with pytest.raises(ExistsError):
        ops.create_disk(storage, "d.vmdk", MIB, "thin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d-flat.vmdk"]
    assert (tmp_path / "d-flat.vmdk").read_bytes() == b"keep me"
    ops.create_disk(storage, "e.vmdk", MIB, "thin")
    with pytest.raises(ExistsError):
        ops.create_disk(storage, "e.vmdk", MIB, "monolithicSparse")


# --- clone ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["thin", "monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse", "seSparse"])
def test_clone_chain_flattens(storage: HostStorage, tmp_path: Path, target: str) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "thin")
    data = bytearray(pattern(4 * MIB, 5))
    _write(storage, "b.vmdk", 0, bytes(data))
    leaf = chain.create_snapshot(storage, "b.vmdk")
    _write(storage, leaf, MIB + 100, b"\x77" * 5000)
    data[MIB + 100 : MIB + 5100] = b"\x77" * 5000
    before = snapshot_files(tmp_path)
    ops.clone_disk(storage, leaf, storage, "c.vmdk", target)
    assert {k: v for k, v in snapshot_files(tmp_path).items() if k in before} == before  # source untouched
    assert _read(storage, "c.vmdk") == data
    assert not open_disk(storage, "c.vmdk").top.descriptor.has_parent


@pytest.mark.parametrize("target", ["monolithicSparse", "thin"])
def test_clone_from_stream(storage: HostStorage, target: str) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "thin")
    data = pattern(4 * MIB, 8)
    _write(storage, "b.vmdk", 0, data)
    ops.clone_disk(storage, "b.vmdk", storage, "s.vmdk", "streamOptimized")
    ops.clone_disk(storage, "s.vmdk", storage, "c.vmdk", target)
    assert _read(storage, "s.vmdk") == data
    assert _read(storage, "c.vmdk") == data


def test_clone_keeps_zero_grains_sparse(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "b.vmdk", 8 * MIB, "thin")
    _write(storage, "b.vmdk", 3 * MIB, b"\x01" * 4096)
    ops.clone_disk(storage, "b.vmdk", storage, "c.vmdk", "monolithicSparse")
    size = (tmp_path / "c.vmdk").stat().st_size
    assert size <= 64 * 1024 + 65536  # metadata (one grain) + one data grain


def test_clone_failure_leaves_no_target(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "thin")
    (tmp_path / "c-flat.vmdk").write_bytes(b"")
    with pytest.raises(ExistsError):
        ops.clone_disk(storage, "b.vmdk", storage, "c.vmdk", "thin")
    assert not (tmp_path / "c.vmdk").exists()


# --- extend ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("disk_format", ["thin", "zeroedthick", "monolithicFlat", "monolithicSparse"])
def test_extend(storage: HostStorage, tmp_path: Path, disk_format: str) -> None:
    ops.create_disk(storage, "d.vmdk", 30 * MIB, disk_format)
    data = pattern(30 * MIB, 9)
    _write(storage, "d.vmdk", 0, data)
    cid = open_disk(storage, "d.vmdk").top.cid
    ops.extend_disk(storage, "d.vmdk", 70 * MIB)  # 1 -> 3 grain tables for sparse
    disk = open_disk(storage, "d.vmdk", writable=True)
    try:
        assert disk.size == 70 * MIB
        assert disk.top.cid != cid
        desc = disk.top.descriptor
        assert desc.capacity == 70 * 2048
        assert desc.geometry is not None and desc.geometry.cylinders > 30
        assert disk.pread(0, disk.size) == data + bytes(40 * MIB)
        disk.pwrite(69 * MIB, b"\x42" * MIB)
        assert disk.pread(69 * MIB, MIB) == b"\x42" * MIB
    finally:
        disk.close()


@pytest.mark.parametrize("disk_format", ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
def test_extend_split_adds_extents(storage: HostStorage, tmp_path: Path, disk_format: str) -> None:
    size = 2000 * MIB
    ops.create_disk(storage, "d.vmdk", size, disk_format, hosted_provisioning="thin")
    _write(storage, "d.vmdk", size - MIB, b"\x31" * MIB)
    ops.extend_disk(storage, "d.vmdk", 4500 * MIB, provisioning="thin")
    lines = _desc(tmp_path / "d.vmdk").extents
    assert [x.sectors for x in lines] == [4192256, 4192256, 4500 * 2048 - 2 * 4192256]
    disk = open_disk(storage, "d.vmdk", writable=True)
    try:
        assert disk.size == 4500 * MIB
        assert disk.pread(size - MIB, 2 * MIB) == b"\x31" * MIB + bytes(MIB)
        seam = 4192256 * 512
        disk.pwrite(seam - 1000, b"\x32" * 3000)
        disk.pwrite(2 * seam - 7, b"\x33" * 20)
        assert disk.pread(seam - 1000, 3000) == b"\x32" * 3000
        assert disk.pread(2 * seam - 7, 20) == b"\x33" * 20
    finally:
        disk.close()


def test_extend_refusals(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", 4 * MIB, "thin")
    with pytest.raises(InvalidArgumentError):
        ops.extend_disk(storage, "d.vmdk", 2 * MIB)
    leaf = chain.create_snapshot(storage, "d.vmdk")
    before = snapshot_files(tmp_path)
    with pytest.raises(UnsupportedError):
        ops.extend_disk(storage, leaf, 8 * MIB)
    ops.create_disk(storage, "s.vmdk", 4 * MIB, "streamOptimized")
    with pytest.raises(UnsupportedError):
        ops.extend_disk(storage, "s.vmdk", 8 * MIB)
    after = snapshot_files(tmp_path)
    assert {k: after[k] for k in before} == before


# --- inflate, eager zero, punch zero ------------------------------------------------------------------------


def test_inflate_thin(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", 8 * MIB, "thin")
    _write(storage, "d.vmdk", MIB, b"\x10" * 5000)
    ops.inflate_disk(storage, "d.vmdk")
    assert _allocated(tmp_path / "d-flat.vmdk") >= 8 * MIB
    assert not _desc(tmp_path / "d.vmdk").thin_provisioned
    assert _read(storage, "d.vmdk") == bytes(MIB) + b"\x10" * 5000 + bytes(7 * MIB - 5000)
    with pytest.raises(InvalidArgumentError):
        ops.inflate_disk(storage, "d.vmdk")  # no longer thin


def test_eager_zero(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "z.vmdk", 4 * MIB, "zeroedthick")
    _write(storage, "z.vmdk", 0, b"\x01" * 512)
    ops.eager_zero(storage, "z.vmdk")
    assert _read(storage, "z.vmdk") == b"\x01" * 512 + bytes(4 * MIB - 512)
    ops.create_disk(storage, "t.vmdk", 4 * MIB, "thin")
    with pytest.raises(InvalidArgumentError):
        ops.eager_zero(storage, "t.vmdk")


def test_punch_zero(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", 8 * MIB, "eagerzeroedthick")
    _write(storage, "d.vmdk", 2 * MIB, b"\x55" * 10000)
    _write(storage, "d.vmdk", 6 * MIB + 4096, bytes(4096))
    before = _read(storage, "d.vmdk")
    punched = ops.punch_zero(storage, "d.vmdk")
    assert punched >= 8 * MIB - 16384
    assert _allocated(tmp_path / "d-flat.vmdk") <= 16384
    assert _read(storage, "d.vmdk") == before
    assert _desc(tmp_path / "d.vmdk").thin_provisioned
    ops.create_disk(storage, "s.vmdk", 4 * MIB, "monolithicSparse")
    with pytest.raises(UnsupportedError):
        ops.punch_zero(storage, "s.vmdk")


# --- delete, rename ------------------------------------------------------------------------------------------


def test_delete_removes_only_that_disk(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "thin")
    leaf = chain.create_snapshot(storage, "b.vmdk")
    removed = ops.delete_disk(storage, leaf)
    assert sorted(removed) == ["b-000001-delta.vmdk", "b-000001.vmdk"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-flat.vmdk", "b.vmdk"]
    with pytest.raises(InvalidArgumentError):
        ops.delete_disk(storage, "nothing.vmdk")


def test_delete_with_missing_extent(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "b.vmdk", 4 * MIB, "twoGbMaxExtentFlat")
    (tmp_path / "b-f001.vmdk").unlink()
    ops.delete_disk(storage, "b.vmdk")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("disk_format", ["thin", "twoGbMaxExtentSparse", "monolithicSparse", "streamOptimized"])
def test_rename(storage: HostStorage, tmp_path: Path, disk_format: str) -> None:
    ops.create_disk(storage, "old.vmdk", 4 * MIB, disk_format)
    if disk_format != "streamOptimized":
        _write(storage, "old.vmdk", 12345, b"renamed")
    data = _read(storage, "old.vmdk")
    cid = open_disk(storage, "old.vmdk").top.cid
    ops.rename_disk(storage, "old.vmdk", "new.vmdk")
    assert not any(p.name.startswith("old") for p in tmp_path.iterdir())
    disk = open_disk(storage, "new.vmdk")
    try:
        assert disk.pread(0, disk.size) == data
        assert disk.top.cid == cid  # renaming is not a content change
        assert all(x.filename and x.filename.startswith("new") for x in disk.top.descriptor.extents)
    finally:
        disk.close()


def test_rename_refuses_existing(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "a.vmdk", MIB, "thin")
    (tmp_path / "b-flat.vmdk").write_bytes(b"x")
    before = snapshot_files(tmp_path)
    with pytest.raises(ExistsError):
        ops.rename_disk(storage, "a.vmdk", "b.vmdk")
    assert snapshot_files(tmp_path) == before


def test_change_tracking_disk_is_read_only(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", MIB, "thin")
    desc = _desc(tmp_path / "d.vmdk")
    desc.set("changeTrackPath", "d-ctk.vmdk")
    (tmp_path / "d.vmdk").write_bytes(desc.to_bytes())
    assert _read(storage, "d.vmdk") == bytes(MIB)
    before = snapshot_files(tmp_path)
    with pytest.raises(UnsupportedError, match="changed-block tracking"):
        open_disk(storage, "d.vmdk", writable=True)
    assert snapshot_files(tmp_path) == before


# --- RDM, lock info ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("passthrough", [False, True])
def test_rdm(storage: HostStorage, tmp_path: Path, passthrough: bool) -> None:
    device = tmp_path / "lun.img"
    device.write_bytes(b"\xab" * 4096)
    ops.create_rdm(storage, "r.vmdk", str(device), 2 * MIB // 512, passthrough=passthrough)
    desc = _desc(tmp_path / "r.vmdk")
    suffix = "rdmp" if passthrough else "rdm"
    assert desc.create_type == ("vmfsPassthroughRawDeviceMap" if passthrough else "vmfsRawDeviceMap")
    assert desc.extents[0].render() == f'RW 4096 VMFSRDM "r-{suffix}.vmdk"'
    mapping = tmp_path / f"r-{suffix}.vmdk"
    assert mapping.stat().st_size == 2 * MIB and _allocated(mapping) == 0
    if passthrough:
        with pytest.raises(UnsupportedError):
            chain.create_snapshot(storage, "r.vmdk")
    else:
        assert chain.create_snapshot(storage, "r.vmdk") == "r-000001.vmdk"


def test_lock_info_damaged_disk(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", 4 * MIB, "twoGbMaxExtentSparse")
    (tmp_path / "d-s001.vmdk").write_bytes(b"garbage")
    assert [i["file"] for i in ops.lock_info(storage, "d.vmdk")] == ["d.vmdk", "d-s001.vmdk"]


def test_lock_info(storage: HostStorage, tmp_path: Path) -> None:
    ops.create_disk(storage, "d.vmdk", MIB, "thin")
    (tmp_path / "d.vmdk.lck").mkdir()
    (tmp_path / "d.vmdk.lck" / "M12345.lck").write_bytes(b"")
    info = ops.lock_info(storage, "d.vmdk")
    assert [i["file"] for i in info] == ["d.vmdk", "d-flat.vmdk"]
    assert "M12345.lck" in info[0]["hosted lock"]
    assert info[1]["size"] == str(MIB) and info[1]["allocated"] == "0"


# --- snapshot naming -------------------------------------------------------------------------------------------


def test_snapshot_names(storage: HostStorage) -> None:
    assert chain.split_name("vm/d-000002.vmdk") == ("vm", "d")
    assert chain.split_name("a-b.vmdk") == ("", "a-b")
    ops.create_disk(storage, "vm_1.vmdk", MIB, "thin")
    first = chain.create_snapshot(storage, "vm_1.vmdk")
    second = chain.create_snapshot(storage, first)
    assert (first, second) == ("vm_1-000001.vmdk", "vm_1-000002.vmdk")
    assert _desc(Path(storage.path(second))).parent_hint == "vm_1-000001.vmdk"


def test_snapshot_in_subdirectory(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "vm")
    storage = HostStorage(tmp_path)
    ops.create_disk(storage, "vm/d.vmdk", MIB, "monolithicSparse")
    leaf = chain.create_snapshot(storage, "vm/d.vmdk")
    assert leaf == "vm/d-000001.vmdk"
    _write(storage, leaf, 0, b"sub")
    assert _read(storage, leaf)[:3] == b"sub"
    assert chain.delete_snapshot(storage, leaf) == "vm/d.vmdk"
    assert _read(storage, "vm/d.vmdk")[:3] == b"sub"


def test_delete_middle_snapshot_repoints_child(storage: HostStorage) -> None:
    ops.create_disk(storage, "b.vmdk", 2 * MIB, "thin")
    _write(storage, "b.vmdk", 0, b"\x01" * MIB)
    s1 = chain.create_snapshot(storage, "b.vmdk")
    _write(storage, s1, 4096, b"\x02" * 4096)
    s2 = chain.create_snapshot(storage, s1)
    _write(storage, s2, 8192, b"\x03" * 4096)
    expected = _read(storage, s2)
    assert chain.delete_snapshot(storage, s1, child=s2) == "b.vmdk"
    assert _read(storage, s2) == expected
    assert len(open_disk(storage, s2).layers) == 2
    assert chain.consolidate(storage, s2) == "b.vmdk"
    assert _read(storage, "b.vmdk") == expected


# --- oracle ---------------------------------------------------------------------------------------------------


@pytest.mark.oracle
@needs_qemu
@pytest.mark.parametrize("disk_format", ["thin", "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse"])
def test_qemu_agrees_after_ops(storage: HostStorage, tmp_path: Path, disk_format: str) -> None:
    ops.create_disk(storage, "d.vmdk", 30 * MIB, disk_format)
    _write(storage, "d.vmdk", 29 * MIB, pattern(MIB, 3))
    ops.extend_disk(storage, "d.vmdk", 70 * MIB)
    ops.rename_disk(storage, "d.vmdk", "e.vmdk")
    info = qemu_img("info", "e.vmdk", cwd=tmp_path).stdout
    assert "virtual size: 70 MiB" in info
    if "Sparse" in disk_format:
        qemu_check("e.vmdk", tmp_path)
    assert qemu_raw("e.vmdk", tmp_path) == _read(storage, "e.vmdk")
