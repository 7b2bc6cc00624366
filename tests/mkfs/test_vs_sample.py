"""A volume formatted by us next to the real ESXi VMFS5 sample (256 MiB LV), field by field.

Both images are read with the construct declarations at the places our reader finds them in
each image independently.  Every differing field must be in EXPECTED below, and every field
listed there must differ: the list is exactly what tells a fresh format from the sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from construct import Container, ListContainer

from tests.mkfs.conftest import format_images, make_image
from vmfs.mkfs import MkfsOptions
from vmfs.ondisk import resource as R
from vmfs.ondisk.dirent5 import DIRENT5_SIZE, Dirent5
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FsDescriptor
from vmfs.volume.volume import SYSTEM_FDS, Volume

SAMPLE_IMAGE_SIZE = 535822336
LIVE_SLOT = 984  # vmfs-format.md 12.1: the sample was imaged with this host's heartbeat live

LOCK_OF_A_LATER_WRITER = {"lock.hbAddr", "lock.hbGen", "lock.token", "lock.mtime"}
TIMES = {"meta.mtime", "meta.ctime", "meta.atime"}
ALLOCATION = {"meta.freeResources", "meta.nextFreeIdx", "meta.bitmap"}

#: What differs and why.  UUIDs and times: chosen at format time.  Device identity: the SCSI
#: disk id and SD-table name of ESXi's disk.  Everything else: changes ESXi made after the format,
#: when /directory with six entries was created (root entry, 7 FDs, 2 sub-blocks, FB 14) and the
#: host's journal took FB 13 (vmfs-format.md 10, 12.2).
EXPECTED: dict[str, set[str]] = {
    "LVM device header": {"devId", "initTimeUS", "modTimeUS", "diskId.len", "diskId.id"},
    "LVM volume descriptor": {"name", "lvId", "creationTimeUS", "modTimeUS"},
    "LVM SD table": {"names"},
    "FS descriptor": {"uuid", "creationTime", "volInfo.lvId", "hostUuid"},
    f"heartbeat {LIVE_SLOT}": {
        "hb.state", "hb.hbGen", "hb.stamp", "hb.owner", "hb.journalAddr", "hb.driverMajor", "hb.driverMinor",
        "hb.lockImpl", "hb.ip", "hb.journalVolAddr",
    },
    "FD /": LOCK_OF_A_LATER_WRITER | TIMES | {"meta.linkCount", "meta.fileLength"},
    **{f"FD {name}": TIMES for name in (".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf")},
    ".fbb.sf cluster 0": LOCK_OF_A_LATER_WRITER | ALLOCATION,
    ".fdc.sf cluster 0": LOCK_OF_A_LATER_WRITER | ALLOCATION | {"meta.createCounter"},
    ".sbc.sf cluster 4": LOCK_OF_A_LATER_WRITER | ALLOCATION,
}


def diff(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted paths of the fields that differ between two parsed structures."""
    if isinstance(a, Container):
        out: set[str] = set()
        for key in a:
            if not key.startswith("_"):
                out |= diff(a[key], b[key], f"{prefix}{key}.")
        return out
    if isinstance(a, ListContainer):
        return {p for x, y in zip(a, b, strict=True) for p in diff(x, y, prefix)}
    return set() if a == b else {prefix.rstrip(".")}


def volume_structures(vol: Volume) -> dict[str, Any]:
    """The LVM metadata of the first extent and the FS descriptor, parsed."""
    out: dict[str, Any] = {}
    dev = vol.lvm.devices[0]
    lay = dev.layout
    out["LVM device header"] = dev.header
    out["LVM volume descriptor"] = dev.volume
    out["LVM SD table"] = Container(names=dev.sd_names)
    for off, entry in dev.pe_entries:
        out[f"LVM PE entry @0x{off:x}"] = entry
    out["LVM PE bitmap"] = Container(bits=dev.device.read(lay.pe_bitmap, lay.pe_bitmap_size))
    out["FS descriptor"] = FsDescriptor.parse(vol.device.read(FS_DESCRIPTOR_OFFSET, 512))
    return out


def structures(image: Path) -> dict[str, Any]:
    """Every structure a format writes, parsed where our reader finds it in ``image``."""
    with Volume.open([image], readonly=True) as vol:
        out = volume_structures(vol)
        geo = vol.geometry
        for slot in range(geo.hb_slots):
            out[f"heartbeat {slot}"] = geo.structs.heartbeat_slot.parse(vol.device.read(geo.hb_slot_addr(slot), 512))
        for name, address in [("/", 4), *SYSTEM_FDS.items()]:
            if name == ".jbc.sf":
                continue
            fd = vol.read_fd(address)
            out[f"FD {name}"] = Container(lock=fd.lock, meta=fd.meta, data=bytes(fd.parsed.data))
        for kind, res in vol.resources.items():
            out[f"{res.name} header"] = res.header
            assert res.fd.size == res.reader.size
            out[f"{res.name} file length"] = Container(length=res.fd.size)
            for cl in res.iter_clusters():
                out[f"{res.name} cluster {cl.number}"] = Container(lock=cl.lock, meta=cl.meta)
            assert kind == res.kind
        root = vol.read_fd(4)
        data = vol.reader(root).read(0, 9 * DIRENT5_SIZE)
        for i in range(9):
            out[f"root entry {i}"] = Dirent5.parse(data[i * DIRENT5_SIZE : (i + 1) * DIRENT5_SIZE])
        sdd = vol.read_fd(SYSTEM_FDS[".sdd.sf"])
        data = vol.reader(sdd).read(0, sdd.size)
        for i in range(2):
            out[f".sdd.sf entry {i}"] = Dirent5.parse(data[i * DIRENT5_SIZE : (i + 1) * DIRENT5_SIZE])
    return out


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # nothing injected but the label: UUIDs and time are the formatter's own
    image = make_image(tmp_path_factory.mktemp("vs-sample") / "ours.bin", SAMPLE_IMAGE_SIZE)
    format_images([image], MkfsOptions(label="VMFS5 Test"))
    return image


def differences(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, set[str]]:
    """Structure name -> the dotted fields that differ (both images must hold the same structures)."""
    assert set(mine) == set(theirs)
    found = {}
    for name in mine:
        d = diff(mine[name], theirs[name])
        if d:
            found[name] = d
    return found


def test_every_structure_matches_the_sample(ours: Path, vmfs5_image: Path) -> None:
    assert differences(structures(ours), structures(vmfs5_image)) == EXPECTED


def test_counts_checked(ours: Path, vmfs5_image: Path) -> None:
    """The comparison above really covers every cluster and heartbeat of the sample."""
    names = set(structures(vmfs5_image))
    assert sum(n.startswith("heartbeat ") for n in names) == 2048
    clusters = {R.RES_FB: 2, R.RES_SB: 8, R.RES_PB: 1, R.RES_FD: 2, R.RES_PB2: 1}
    files = {R.RES_FB: ".fbb.sf", R.RES_SB: ".sbc.sf", R.RES_PB: ".pbc.sf", R.RES_FD: ".fdc.sf", R.RES_PB2: ".pb2.sf"}
    for kind, count in clusters.items():
        assert sum(n.startswith(f"{files[kind]} cluster ") for n in names) == count
    assert sum(n.startswith("FD ") for n in names) == 8
    assert sum(n.startswith("LVM PE entry") for n in names) == 1
