"""Every on-disk structure: declared size, build(parse(b)) == b for any bytes, and for every
metadata structure of the two real samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmfs.ondisk import dirent5, dirent6, filedesc, fsdesc, heartbeat, journal, lock, lvm, resource
from vmfs.ondisk.structset import structset
from vmfs.volume.volume import Volume

# (structure, size from vmfs-format.md)
SIZES = [
    (lvm.ScsiDiskId, 78),
    (lvm.LvmDeviceHeader, 512),
    (lvm.LvmVolumeDescriptor, 512),
    (lvm.LvmPeEntry, 128),
    (lvm.LvmExtDevMetadata, 512),
    (fsdesc.FsDescriptor, 512),
    (heartbeat.Heartbeat, 512),
    (lock.LockFields, 0x174),
    (lock.LockHolders, 256),
    (journal.JournalHeader, 512),
    (journal.RecordHeader, 16),
    (lock.LockBlock, 512),
    (resource.ResourceHeader, 512),
    (resource.ClusterMeta5, 512),
    (resource.cluster_meta6(4096), 4096),
    (filedesc.FileMetadata, 512),
    (dirent5.Dirent5, 140),
    (dirent6.Dirent6, 288),
    (dirent6.Dir6Header, 0x10000),
    (dirent6.Dir6BlockHeader, 64),
    (dirent6.LinkGroup, 0x54),
    (structset(False, 512).file_descriptor, 0x800),
    (structset(True, 4096).file_descriptor, 0x2000),
    (structset(True, 4096).heartbeat_slot, 4096),
]


@pytest.mark.parametrize(("struct", "size"), SIZES, ids=lambda v: getattr(v, "name", None) or str(v))
def test_declared_size(struct, size) -> None:  # type: ignore[no-untyped-def]
    assert struct.sizeof() == size


def test_field_offsets_match_the_spec() -> None:
    """A few offsets that vmfs-format.md pins down, checked through a build."""
    import construct

    def offset_of(struct, field):  # type: ignore[no-untyped-def]
        total = 0
        for sub in struct.subcons:
            if sub.name == field:
                return total
            total += sub.sizeof()
        raise KeyError(field)

    assert offset_of(fsdesc.FsDescriptor, "mdAlignment") == 0x134
    assert offset_of(fsdesc.FsDescriptor, "pb2VolAddr") == 0xE1
    assert offset_of(fsdesc.FsDescriptor, "leaseIntervalMs") == 0x14C
    assert offset_of(lvm.LvmDeviceHeader, "dataOffset") == 0x7A
    assert offset_of(lvm.LvmDeviceHeader, "mdAlignment") == 0xCA
    assert offset_of(lvm.LvmVolumeDescriptor, "numDevs") == 0x90
    assert offset_of(heartbeat.Heartbeat, "journalVolAddr") == 0x64
    assert offset_of(lock.LockFields, "mode") == 0x24
    assert offset_of(lock.LockFields, "gblBrk") == 0x170
    assert offset_of(filedesc.FileMetadata, "zla") == 0x44
    assert offset_of(filedesc.FileMetadata, "blockOffsetShift") == 0x89
    assert offset_of(filedesc.FileMetadata, "lastFreeSFBC") == 0x168
    assert offset_of(resource.ResourceHeader, "convertedClusters") == 0x54
    assert offset_of(dirent6.Dir6Header, "hashTable") == 0x5F8
    assert offset_of(dirent6.Dirent6, "name") == 0x18
    assert isinstance(fsdesc.FsDescriptor, construct.Struct)


ROUND_TRIP = [s for s, _ in SIZES] + [dirent6.Dir6Header]



def _make_bytes(seed: int, fill: str, patches: list[tuple[int, bytes]], size: int) -> bytes:
    import random

    if fill == "random":
        buf = bytearray(random.Random(seed).randbytes(size))
    else:
        buf = bytearray(b"\xff" * size if fill == "ones" else bytes(size))
    for pos, data in patches:
        pos %= max(size, 1)
        buf[pos : pos + len(data)] = data[: size - pos]
    return bytes(buf)


@pytest.mark.parametrize("struct", ROUND_TRIP, ids=lambda v: str(ROUND_TRIP.index(v)))
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    fill=st.sampled_from(["random", "zero", "ones"]),
    patches=st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)), max_size=8),
)
def test_round_trip_any_bytes(struct, seed: int, fill: str, patches) -> None:  # type: ignore[no-untyped-def]
    raw = _make_bytes(seed, fill, patches, struct.sizeof())
    assert struct.build(struct.parse(raw)) == raw


def _metadata_units(volume: Volume):  # type: ignore[no-untyped-def]
    """(structure, volume offset, size) of every metadata structure reached from the root."""
    geo = volume.geometry
    dev = volume.device
    yield fsdesc.FsDescriptor, 0x200000, 512
    for i in range(geo.hb_slots):
        yield geo.structs.heartbeat_slot, geo.hb_slot_addr(i), geo.hb_slot_size
    for res in volume.resources.values():
        yield resource.ResourceHeader, res.reader.volume_offset(res.header_offset), 512
        for c in range(res.num_clusters):
            off = res.reader.volume_offset(res.cluster_header_offset(c))
            yield geo.structs.lock, off, geo.md_size
            yield res.meta_struct, off + geo.md_size, res.meta_struct.sizeof()
    fdc = volume.resources[4]
    for c in range(fdc.num_clusters):
        cl = fdc.read_cluster(c)
        for r in cl.used_resources():
            yield geo.structs.file_descriptor, fdc.volume_offset(c, r), geo.fd_size
    del dev


@pytest.mark.parametrize("name", ["vmfs5", "vmfs6"])
def test_round_trip_real_metadata(name: str, request: pytest.FixtureRequest) -> None:
    image: Path = request.getfixturevalue(f"{name}_image")
    with Volume.open(image) as volume:
        count = 0
        for struct, offset, size in _metadata_units(volume):
            raw = volume.device.read(offset, size)
            assert struct.build(struct.parse(raw)) == raw, (struct, hex(offset))
            count += 1
        assert count > 1000
