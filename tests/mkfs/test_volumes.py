"""Formatted images of several sizes and spans, opened with our reader."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.mkfs.conftest import (
    FIXED,
    GIB,
    MIB,
    SYSTEM_NAMES,
    TIB,
    allocated_bytes,
    format_images,
    image_for_lv,
    make_image,
)
from vmfs.device.file import FileDevice
from vmfs.errors import NotVmfsError
from vmfs.ondisk import resource as R
from vmfs.ondisk.heartbeat import HB_FREE
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

SIZES = {"256M": 256 * MIB, "1G": GIB, "10G": 10 * GIB, "2T": 2 * TIB}


def check_volume(vol: Volume, layout) -> None:  # type: ignore[no-untyped-def]
    """What any fresh volume must show through our reader."""
    assert vol.device.size == layout.volume_size
    assert vol.uuid == layout.options.fs_uuid
    assert vol.label == layout.options.label
    assert vol.version_string == "VMFS-5.81"
    fs = FileSystem(vol)
    names = [e.name for e in fs.listdir("/")]
    assert [n for n in names if n not in (".", "..")] == SYSTEM_NAMES
    assert [e.name for e in fs.listdir("/.sdd.sf") if e.name not in (".", "..")] == []
    root = vol.read_fd(4)
    assert (root.meta.linkCount, root.meta.mode, root.size) == (3, 0o1755, 9 * 140)
    for kind in (R.RES_FD, R.RES_SB, R.RES_PB, R.RES_PB2):
        res = vol.resources[kind]
        total, free = res.usage()
        planned = layout.resource(kind)
        assert (total, total - free) == (planned.count, len(planned.used))
    fbb = vol.resources[R.RES_FB]
    spanned = range(-(-layout.used_blocks // fbb.rpc) + 1)
    used = [c * fbb.rpc + r for c in spanned for r in fbb.read_cluster(c).used_resources()]
    assert used == list(range(layout.used_blocks))
    assert fbb.num_resources == layout.num_blocks
    last = fbb.read_cluster(fbb.num_clusters - 1)
    assert last.total == layout.num_blocks - (fbb.num_clusters - 1) * fbb.rpc and last.free == last.total
    geo = vol.geometry
    for slot in (0, 1, geo.hb_slots - 1):
        hb = geo.structs.heartbeat_slot.parse(vol.device.read(geo.hb_slot_addr(slot), geo.hb_slot_size)).hb
        assert (hb.state, hb.addr) == (HB_FREE, geo.hb_slot_addr(slot))


@pytest.mark.parametrize("name", list(SIZES))
def test_format_and_read(name: str, tmp_path: Path) -> None:
    lv = SIZES[name]
    image = make_image(tmp_path / f"{name}.img", image_for_lv(lv))
    t0 = time.process_time()  # CPU time: the bound below holds on a loaded machine too
    layout = format_images([image], FIXED)
    elapsed = time.process_time() - t0
    with Volume.open([image], readonly=True) as vol:
        check_volume(vol, layout)
    # only metadata reaches the disk: what the file occupies is what we wrote (give or take
    # file-system block rounding), and at most the metadata blocks' size
    metadata = layout.used_blocks * layout.block_size + 0x1100000
    assert allocated_bytes(image) <= layout.bytes_written + 64 * 4096
    assert layout.bytes_written <= metadata
    assert elapsed < 30


@pytest.mark.parametrize("count", [2, 3])
def test_spanned_volume_in_any_order(count: int, tmp_path: Path) -> None:
    sizes = [image_for_lv(512 * MIB), 700 * MIB, image_for_lv(256 * MIB)][:count]
    images = [make_image(tmp_path / f"extent{i}.img", s) for i, s in enumerate(sizes)]
    layout = format_images(images, FIXED)
    assert layout.volume_size == sum(e.length for e in layout.extents)
    for order in itertools.permutations(images):
        devices = [FileDevice(p) for p in order]
        vol = Volume.from_devices(devices)
        try:
            check_volume(vol, layout)
            assert sorted(d.volume.firstPE for d in vol.lvm.devices) == [e.first_segment for e in layout.extents]
            assert vol.lvm.devices[0].sd_names or any(d.sd_names for d in vol.lvm.devices)
        finally:
            vol.close()
    # devZero alone carries the names of all extents (vmfs-format.md 2.3)
    with Volume.open(images) as vol:
        names = {d.device.name: d.sd_names for d in vol.lvm.devices}
        assert names[str(images[0])] == [e.name for e in layout.extents]
        assert all(names[str(p)] == [] for p in images[1:])
    with pytest.raises(NotVmfsError, match="extents"):
        Volume.open(images[1:])


def test_reformat_of_dirty_images_zeroes_stale_metadata(tmp_path: Path) -> None:
    """A forced format over another volume leaves no stale FD, cluster or PE entry behind."""
    big = make_image(tmp_path / "a.img", image_for_lv(GIB))
    format_images([big], FIXED)
    with open(big, "r+b") as f:  # junk where the new volume keeps unused FD slots and PE entries
        f.seek(0x1100000 + 0x420000 + 20 * 0x800)
        f.write(b"\xee" * 0x800)
        f.seek(0x180600 + 5 * 128)
        f.write(b"\x01" * 128)
    layout = format_images([big], replace(FIXED, force=True))
    with Volume.open([big]) as vol:
        check_volume(vol, layout)
        assert vol.device.read(0x420000 + 20 * 0x800, 0x800) == bytes(0x800)
        assert len(vol.lvm.devices[0].pe_entries) == 4
