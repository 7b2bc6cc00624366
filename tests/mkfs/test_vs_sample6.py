"""A VMFS6 volume formatted by us next to the real ESXi VMFS6 sample (768 MiB LV), field by field.

Both images are read with the construct declarations at the places our reader finds them in
each image independently.  Every differing field must be in EXPECTED below, and every field
listed there must differ: the list is exactly what tells a fresh format from the sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from construct import Container

from tests.mkfs.conftest import format_images, make_image
from tests.mkfs.test_vs_sample import differences, volume_structures
from vmfs.mkfs import MkfsOptions
from vmfs.ondisk import dirent6 as D
from vmfs.ondisk import resource as R
from vmfs.volume.volume import Volume, system_fds

SAMPLE_IMAGE_SIZE = 1072693248
#: vmfs-format.md 12.1: the host that formatted the sample (its MAC is in every cluster it changed)
SAMPLE_HOST = "6112ff90-4e69af20-454b-000c29801686"
LAST_SLOT = 120  # the heartbeat slot ESXi used last (12.1)

LATER_LOCK = {"lock.hbAddr", "lock.hbGen", "lock.token", "lock.mtime"}
TIMES = {"meta.mtime", "meta.ctime", "meta.atime"}
ALLOC = {"meta.freeResources", "meta.firstFree", "meta.body"}
CHANGE = {"meta.counter", "meta.mac", "meta.changeTime"}
CHANGE_TIME = {"meta.changeTime"}  # one second after the format on the sample; ours: the format's

#: What differs and why.  UUIDs, times: chosen at format time.  Device identity: ESXi's disk id
#: and SD-table name.  "Later": what the host did after the format: /directory with six entries
#: (a root entry, 7 FDs, 3 sub-blocks), 30 journal allocations, and its locks on the objects it
#: changed; the growth of .sbc.sf one second after the format (which mkfs also makes) was done
#: under the host's locks, with its own lock serials (539-547 against our 514-517).
EXPECTED: dict[str, set[str]] = {
    "LVM device header": {"devId", "initTimeUS", "modTimeUS", "diskId.len", "diskId.id"},
    "LVM volume descriptor": {"name", "lvId", "creationTimeUS", "modTimeUS"},
    "LVM SD table": {"names"},
    "FS descriptor": {"uuid", "creationTime", "volInfo.lvId"},
    # a released slot keeps its generation, stamp and the host's IP, driver and lock versions
    f"heartbeat {LAST_SLOT}": {"hb.hbGen", "hb.stamp", "hb.driverMajor", "hb.driverMinor", "hb.lockImpl", "hb.ip"},
    "FD /": LATER_LOCK | TIMES | {"meta.linkCount"},
    **{f"FD {n}": TIMES for n in (".fbb.sf", ".fdc.sf", ".pbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf", ".jbc.sf")},
    "FD .sbc.sf": LATER_LOCK | TIMES,
    "root header": {"numEntries", "numAllocated", "hashTable"},
    "root block 1": {"freeSlots", "bitmap"},
    "root entry 8": {"type", "address", "generation", "hash32", "offset", "name"},
    ".fdc.sf cluster 0": LATER_LOCK | ALLOC | CHANGE | {"meta.createCounter"},
    ".sbc.sf cluster 0": LATER_LOCK | ALLOC | CHANGE,
    ".sbc.sf cluster 19": LATER_LOCK,
    **{f".sbc.sf cluster {c}": {"lock.mtime"} for c in (20, 21, 22, 23)},
    ".pb2.sf cluster 0": LATER_LOCK | CHANGE_TIME,
    ".fbb.sf/SFB cluster 1": LATER_LOCK | CHANGE_TIME,
    ".jbc.sf cluster 0": LATER_LOCK | CHANGE,
}


def structures(image: Path) -> dict[str, Any]:
    """Every structure a VMFS6 format writes, parsed where our reader finds it in ``image``."""
    with Volume.open([image], readonly=True) as vol:
        out = volume_structures(vol)
        geo = vol.geometry
        for slot in range(geo.hb_slots):
            out[f"heartbeat {slot}"] = geo.structs.heartbeat_slot.parse(
                vol.device.read(geo.hb_slot_addr(slot), geo.hb_slot_size))
        for name, address in [("/", 4), *system_fds(6).items()]:
            fd = vol.read_fd(address)
            out[f"FD {name}"] = Container(lock=fd.lock, meta=fd.meta, data=bytes(fd.parsed.data))
        for kind, res in vol.resources.items():
            label = res.name + ("/SFB" if kind == R.RES_FB else "")
            out[f"{label} header"] = res.header
            out[f"{label} file length"] = Container(length=res.fd.size)
            for cl in res.iter_clusters():
                out[f"{label} cluster {cl.number}"] = Container(lock=cl.lock, meta=cl.meta)
        pb2 = vol.resources[R.RES_PB2]
        out[".pb2.sf resource 0"] = Container(data=pb2.reader.read(0x20000, 0x10000))
        for name, address in (("root", 4), (".sdd.sf", system_fds(6)[".sdd.sf"])):
            fd = vol.read_fd(address)
            data = vol.reader(fd).read(0, fd.size)
            out[f"{name} file"] = Container(length=len(data))
            out[f"{name} header"] = D.Dir6Header.parse(data[: D.DIR6_HEADER_SIZE])
            for block in range((len(data) - D.DIR6_HEADER_SIZE) // 4096):
                raw = data[D.DIR6_HEADER_SIZE + block * 4096 : D.DIR6_HEADER_SIZE + (block + 1) * 4096]
                out[f"{name} block {block}"] = D.Dir6BlockHeader.parse(raw[:64])
                if block == 0:
                    out[f"{name} allocation map"] = Container(body=raw[64:])
                else:
                    for slot in range(14):
                        at = 64 + slot * D.DIRENT6_SIZE
                        out[f"{name} entry {slot}"] = D.Dirent6.parse(raw[at : at + D.DIRENT6_SIZE])
    return out


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the label and the formatting host (whose MAC ESXi stamps into the clusters it changes)
    image = make_image(tmp_path_factory.mktemp("vs-sample6") / "ours.bin", SAMPLE_IMAGE_SIZE)
    format_images([image], MkfsOptions(version=6, label="VMFS6 Test", host_uuid=SAMPLE_HOST))
    return image


def test_every_structure_matches_the_sample(ours: Path, vmfs6_image: Path) -> None:
    assert differences(structures(ours), structures(vmfs6_image)) == EXPECTED


def test_counts_checked(ours: Path) -> None:
    """The comparison covers every cluster, heartbeat, FD and directory slot of the sample."""
    names = set(structures(ours))
    assert sum(n.startswith("heartbeat ") for n in names) == 1024
    clusters = {".fdc.sf": 64, ".sbc.sf": 24, ".pb2.sf": 1, ".jbc.sf": 16, ".fbb.sf": 1, ".fbb.sf/SFB": 2,
                ".pbc.sf": 0}
    for label, count in clusters.items():
        assert sum(n.startswith(f"{label} cluster ") for n in names) == count, label
    assert sum(n.startswith("FD ") for n in names) == 9
    assert sum(n.startswith("root entry ") for n in names) == 14


def test_layout_is_the_samples(ours: Path, vmfs6_image: Path) -> None:
    """Geometry, resource counts and the block runs of every system file, said plainly."""
    def layout(image: Path) -> dict[str, Any]:
        with Volume.open([image], readonly=True) as vol:
            runs = {}
            for name, address in [("/", 4), *system_fds(6).items()]:
                fd = vol.read_fd(address)
                blocks = sorted(vol.geometry.codec.fb_block(p) for p in _data_pointers(vol, fd))
                runs[name] = _runs(blocks)
            counts = {res.name + str(k): (res.header.numResourcesLo, res.header.resourcesPerCluster,
                                          res.header.clustersPerGroup, res.header.resourceSize)
                      for k, res in vol.resources.items()}
            return {"size": vol.device.size, "geometry": repr(vol.geometry).split(", structs=")[0],
                    "runs": runs, "counts": counts}
    mine, theirs = layout(ours), layout(vmfs6_image)
    assert mine == theirs
    assert mine["runs"][".sbc.sf"] == [(139, 458), (718, 767)]
    assert mine["runs"][".fdc.sf"] == [(7, 7), (10, 137)]


def _data_pointers(vol: Volume, fd: Any) -> list[int]:
    from vmfs.format import address as A

    ptrs = [p for p in fd.pointers if p]
    if fd.meta.zla == 5:
        out = []
        for p in ptrs:
            assert A.kind(p) == A.ADDR_PB2
            out += [q for q in vol.pointer_block(p, fd) if q]
        return out
    return ptrs


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for b in blocks:
        if out and out[-1][1] == b - 1:
            out[-1][1] = b
        else:
            out.append([b, b])
    return [(a, b) for a, b in out]
