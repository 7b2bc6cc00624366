"""Interoperability with the real qemu-img 7.2 and dissect.hypervisor (section 9, 10.7).

* every subformat qemu-img can create, filled from a raw pattern, reads sector for sector as
  ``qemu-img convert -O raw`` reads it;
* every format we write, filled by cloning, passes ``qemu-img check``, ``qemu-img compare`` with
  the source and reads identically through dissect;
* qemu-io writes into files we created keep them valid for both sides.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from vmdk_helpers import MIB, dissect_read, needs_qemu, pattern, qemu_check, qemu_img, qemu_io, qemu_raw

from vmfs.vmdk import chain, ops
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.storage import HostStorage

pytestmark = [pytest.mark.oracle, needs_qemu]

#: an odd size (not a whole number of grains or GTs) and a dissect-friendly one (64 KiB multiple)
ODD_SIZE = 12419 * 512
EVEN_SIZE = 6 * MIB + 192 * 1024

QEMU_VARIANTS = [
    pytest.param("monolithicSparse", "", id="monolithicSparse"),
    pytest.param("monolithicSparse", "zeroed_grain=on", id="monolithicSparse-zeroed_grain"),
    pytest.param("monolithicSparse", "adapter_type=lsilogic,hwversion=13", id="monolithicSparse-lsilogic-hw13"),
    pytest.param("monolithicSparse", "adapter_type=buslogic,compat6=on", id="monolithicSparse-buslogic-compat6"),
    pytest.param("monolithicSparse", "adapter_type=legacyESX", id="monolithicSparse-legacyESX"),
    pytest.param("monolithicFlat", "", id="monolithicFlat"),
    pytest.param("twoGbMaxExtentSparse", "", id="twoGbMaxExtentSparse"),
    pytest.param("twoGbMaxExtentSparse", "zeroed_grain=on", id="twoGbMaxExtentSparse-zeroed_grain"),
    pytest.param("twoGbMaxExtentFlat", "adapter_type=ide", id="twoGbMaxExtentFlat"),
    pytest.param("streamOptimized", "", id="streamOptimized"),
]


def _make_qemu_disk(tmp_path: Path, subformat: str, options: str, size: int, seed: int) -> bytes:
    data = pattern(size, seed)
    (tmp_path / "src.raw").write_bytes(data)
    opts = f"subformat={subformat}" + (f",{options}" if options else "")
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", opts, "src.raw", "q.vmdk", cwd=tmp_path)
    return data


def _read_all(storage: HostStorage, name: str) -> bytes:
    disk = open_disk(storage, name)
    try:
        return disk.pread(0, disk.size)
    finally:
        disk.close()


@pytest.mark.parametrize(("subformat", "options"), QEMU_VARIANTS)
@pytest.mark.parametrize("size", [ODD_SIZE, EVEN_SIZE], ids=["odd", "even"])
def test_read_qemu_made_disk(tmp_path: Path, storage: HostStorage, subformat: str, options: str, size: int) -> None:
    data = _make_qemu_disk(tmp_path, subformat, options, size, seed=size)
    expected = qemu_raw("q.vmdk", tmp_path)
    assert expected == data
    ours = _read_all(storage, "q.vmdk")
    assert ours == expected
    # sector for sector, at random places and lengths (crossing grain and GT seams)
    disk = open_disk(storage, "q.vmdk")
    try:
        rnd = random.Random(7)
        for _ in range(200):
            sector = rnd.randrange(disk.sectors)
            count = rnd.randrange(1, min(300, disk.sectors - sector) + 1)
            assert disk.read_sectors(sector, count) == expected[sector * 512 : (sector + count) * 512]
    finally:
        disk.close()


@pytest.mark.parametrize(
    ("subformat", "options"),
    [
        pytest.param("monolithicSparse", "zeroed_grain=on", id="zeroed_grain"),
        pytest.param("monolithicSparse", "", id="plain"),
        pytest.param("streamOptimized", "", id="stream"),
    ],
)
def test_read_after_qemu_io_writes(tmp_path: Path, storage: HostStorage, subformat: str, options: str) -> None:
    """qemu-io writes, including whole-grain zero writes (GTE 1 with zeroed_grain)."""
    opts = f"subformat={subformat}" + (f",{options}" if options else "")
    qemu_img("create", "-f", "vmdk", "-o", opts, "q.vmdk", "4M", cwd=tmp_path)
    if subformat == "streamOptimized":  # only whole, unallocated grains
        cmds = ["write -P 0x41 0 64k", "write -P 0x42 1M 128k", "write -P 0x43 3968k 128k"]
    else:
        cmds = [
            "write -P 0x41 0 64k",
            "write -z 0 64k",
            "write -z 128k 64k",
            "write -P 0x55 1M 4k",
            "write -z 1M 4k",
            "write -P 0x66 2047k 2k",
            "write -P 0x77 4095k 1k",
        ]
    for cmd in cmds:
        qemu_io("q.vmdk", cmd, cwd=tmp_path)
    assert _read_all(storage, "q.vmdk") == qemu_raw("q.vmdk", tmp_path)


def test_read_qemu_child_over_base(tmp_path: Path, storage: HostStorage) -> None:
    _make_qemu_disk(tmp_path, "monolithicSparse", "", 4 * MIB, seed=3)
    qemu_img("create", "-f", "vmdk", "-b", "q.vmdk", "-F", "vmdk", "child.vmdk", cwd=tmp_path)
    qemu_io("child.vmdk", "write -P 0x42 65k 4k", cwd=tmp_path)
    qemu_io("child.vmdk", "write -P 0x43 3M 100k", cwd=tmp_path)
    assert _read_all(storage, "child.vmdk") == qemu_raw("child.vmdk", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("subformat", ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
def test_split_extent_seams(tmp_path: Path, storage: HostStorage, subformat: str) -> None:
    """4 GiB + 5 MiB: three extents, data across both 2 GiB seams (qemu splits at exactly 2 GiB)."""
    qemu_img("create", "-f", "vmdk", "-o", f"subformat={subformat}", "q.vmdk", str(4 * 1024 + 5) + "M", cwd=tmp_path)
    seams = [2 << 30, 4 << 30]
    for i, seam in enumerate(seams):
        qemu_io("q.vmdk", f"write -P {0x30 + i} {seam - 96 * 1024} 200k", cwd=tmp_path)
    qemu_io("q.vmdk", "write -P 0x99 4100M 1M", cwd=tmp_path)
    disk = open_disk(storage, "q.vmdk")
    try:
        assert disk.size == (4 * 1024 + 5) * MIB
        for i, seam in enumerate(seams):
            got = disk.pread(seam - 128 * 1024, 256 * 1024)
            want = bytes(32 * 1024) + bytes([0x30 + i]) * (200 * 1024) + bytes(24 * 1024)
            assert got == want
        assert disk.pread(disk.size - 2 * MIB, 2 * MIB) == bytes(MIB) + b"\x99" * MIB
    finally:
        disk.close()


# --- formats we write ---------------------------------------------------------------------------------

OUR_FORMATS = [
    "monolithicSparse",
    "streamOptimized",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "monolithicFlat",
    "thin",
    "zeroedthick",
    "eagerzeroedthick",
    "vmfsSparse",
    "seSparse",
]
SPARSE_KINDS = {"monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse", "vmfsSparse", "seSparse"}


@pytest.mark.parametrize("disk_format", OUR_FORMATS)
@pytest.mark.parametrize("size", [ODD_SIZE, EVEN_SIZE], ids=["odd", "even"])
def test_export_to_format(tmp_path: Path, storage: HostStorage, disk_format: str, size: int) -> None:
    """Clone a qemu monolithicFlat to each format: qemu check + compare; dissect reads the same."""
    data = _make_qemu_disk(tmp_path, "monolithicFlat", "", size, seed=11)
    ops.clone_disk(storage, "q.vmdk", storage, "out.vmdk", disk_format)
    if disk_format in SPARSE_KINDS:
        qemu_check("out.vmdk", tmp_path)
    proc = qemu_img("compare", "-f", "vmdk", "-F", "raw", "out.vmdk", "src.raw", cwd=tmp_path)
    assert "identical" in proc.stdout
    assert _read_all(storage, "out.vmdk") == data
    if size % (64 * 1024) == 0:  # dissect's tail-read flaw (section 9.4)
        assert dissect_read(tmp_path / "out.vmdk") == data


@pytest.mark.parametrize("disk_format", ["monolithicSparse", "twoGbMaxExtentSparse", "thin", "monolithicFlat"])
def test_qemu_io_writes_into_our_disk(tmp_path: Path, storage: HostStorage, disk_format: str) -> None:
    ops.create_disk(storage, "d.vmdk", 4 * MIB, disk_format)
    for cmd in ["write -P 0x11 0 100k", "write -P 0x22 2000k 200k", "write -z 64k 64k", "write -P 0x33 4095k 1k"]:
        qemu_io("d.vmdk", cmd, cwd=tmp_path)
    if disk_format in SPARSE_KINDS:
        qemu_check("d.vmdk", tmp_path)
    assert _read_all(storage, "d.vmdk") == qemu_raw("d.vmdk", tmp_path)


@pytest.mark.parametrize("disk_format", ["monolithicSparse", "twoGbMaxExtentSparse"])
def test_zeroed_grain_disk_we_create(tmp_path: Path, storage: HostStorage, disk_format: str) -> None:
    """Our zeroed_grain files (version 2, flag 4) and their GTE-1 entries are read by qemu."""
    ops.create_disk(storage, "d.vmdk", 4 * MIB, disk_format, zeroed_grain=True)
    disk = open_disk(storage, "d.vmdk", writable=True)
    disk.pwrite(0, b"\x5a" * (256 * 1024))
    disk.write_zeroes(64 * 1024, 128 * 1024)  # two whole grains: entries become 1
    disk.close()
    qemu_check("d.vmdk", tmp_path)
    expected = b"\x5a" * (64 * 1024) + bytes(128 * 1024) + b"\x5a" * (64 * 1024) + bytes(4 * MIB - 256 * 1024)
    assert qemu_raw("d.vmdk", tmp_path) == expected
    assert _read_all(storage, "d.vmdk") == expected


@pytest.mark.parametrize(
    ("base_format", "delta_format"),
    [
        pytest.param("thin", "vmfsSparse", id="vmfs+COWD"),
        pytest.param("monolithicFlat", "vmfsSparse", id="monolithicFlat+COWD"),
        pytest.param("thin", "seSparse", id="vmfs+seSparse"),
        pytest.param("monolithicSparse", "monolithicSparse", id="hosted"),
    ],
)
def test_snapshot_chain_read_by_oracles(
    tmp_path: Path, storage: HostStorage, base_format: str, delta_format: str
) -> None:
    """Two levels of deltas we wrote (partial grains, GT seams, the last sector, zeroed ranges
    over parent data): qemu-img check passes and qemu, dissect and we read the same bytes."""
    size = 9 * MIB + 64 * 1024
    ops.create_disk(storage, "b.vmdk", size, base_format)
    model = bytearray(pattern(size, 21))
    disk = open_disk(storage, "b.vmdk", writable=True)
    disk.pwrite(0, bytes(model))
    disk.close()
    leaf = "b.vmdk"
    rnd = random.Random(4)
    for _level in range(2):
        leaf = chain.create_snapshot(storage, leaf, delta_format=delta_format)
        disk = open_disk(storage, leaf, writable=True)
        writes = [(2 * MIB - 700, 1400), (size - 512, 512), (4 * MIB, 64 * 1024)]
        writes += [(rnd.randrange(size - 9000), rnd.randrange(1, 9000)) for _ in range(20)]
        for i, (offset, length) in enumerate(writes):
            data = bytes(length) if i % 5 == 0 else rnd.randbytes(length)
            disk.pwrite(offset, data)
            model[offset : offset + length] = data
        disk.close()
    qemu_check(leaf, tmp_path)
    assert qemu_raw(leaf, tmp_path) == model
    assert _read_all(storage, leaf) == model
    assert dissect_read(tmp_path / leaf) == model
