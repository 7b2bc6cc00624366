"""Mutated real samples: the read path raises only VmfsError and never hangs.

Bytes of the metadata regions (LVM header, FS descriptor, resource headers and cluster headers,
every FD in use, directory data, pointer blocks) are overwritten in a copy-on-write overlay, then
the whole volume is walked, stat'ed and read.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.helpers import region_mutations
from vmfs.device import FileDevice, OverlayDevice
from vmfs.errors import VmfsError
from vmfs.ondisk import filedesc as F
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.volume.usage import volume_usage
from vmfs.volume.volume import Volume

LVM_DATA = 0x1100000


class Hang(Exception):
    pass


def metadata_regions(image: Path) -> list[tuple[int, int]]:
    """(device offset, length) of the metadata of an unchanged sample."""
    regions = [(0x100000, 0x200), (0x100000 + 0x200, 0x200)]
    with Volume.open(image) as vol:
        geo = vol.geometry
        regions.append((LVM_DATA + 0x200000, 0x170))
        regions.append((LVM_DATA + geo.hb_slot_addr(0), geo.hb_slot_size))
        for res in vol.resources.values():
            regions.append((LVM_DATA + res.reader.volume_offset(res.header_offset), 0x60))
            regions.append((LVM_DATA + res.reader.volume_offset(res.cluster_header_offset(0)), geo.cluster_header_size))
        fs = FileSystem(vol)
        for d, entries in fs.walk("/"):
            fd = fs.resolve(d)
            regions.append((LVM_DATA + fd.vol_offset, geo.fd_size))
            for _, n, loc in FileReader(fd).extents(0, min(fd.size, 0x12000)):
                if loc is not None:
                    regions.append((LVM_DATA + loc, n))
            for e in entries:
                child = vol.read_fd(e.address)
                regions.append((LVM_DATA + child.vol_offset, geo.fd_size))
                if child.zla in (F.ZLA_POINTER_BLOCKS, F.ZLA_POINTER2_BLOCKS):
                    res = vol.resources[5]
                    regions.append((LVM_DATA + res.volume_offset(0, 0), 0x200))
    return regions


def exercise(device: OverlayDevice) -> None:
    vol = Volume.from_devices([device])
    fs = FileSystem(vol)
    volume_usage(vol)
    for d, entries in fs.walk("/"):
        for e in entries:
            path = d.rstrip("/") + "/" + e.name
            fd = fs.resolve(path, follow=False)
            fs.stat(path)
            if fd.is_symlink:
                fs.readlink(path)
            elif not fd.is_dir:
                r = FileReader(fd)
                r.read(0, 1 << 16)
                r.read(max(fd.size - (1 << 16), 0), 1 << 16)


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise Hang()


def mutate_and_read(image: Path, regions: list[tuple[int, int]], mutations: list[tuple[int, int, bytes]]) -> None:
    """Apply ``mutations`` (region index, position, bytes) in an overlay and read everything:
    only the library's own errors may come out, within 30 seconds."""
    base = FileDevice(image)
    dev = OverlayDevice(base)
    for index, pos, data in mutations:
        start, length = regions[index]
        off = start + pos % length
        dev.write(off, data)
    dev.readonly = True  # the read path only: no heartbeat, no journal
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        exercise(dev)
    except VmfsError:
        pass
    except Hang:
        pytest.fail(f"read path hung on mutations {mutations!r}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        base.close()


#: cases hypothesis once found, kept so they are tried on every run
FOUND = [
    # a VMFS6 system file opened before .sbc.sf whose block address turned into a sub-block
    # address: looked the sub-block resource up before it existed (KeyError)
    ("vmfs6", [(24, 0, b"\x02")]),
]


@pytest.mark.parametrize(("name", "mutations"), FOUND)
def test_mutations_found_before(name: str, mutations: list[tuple[int, int, bytes]],
                                request: pytest.FixtureRequest) -> None:
    image: Path = request.getfixturevalue(f"{name}_image")
    mutate_and_read(image, metadata_regions(image), mutations)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vmfs5", "vmfs6"])
def test_mutated_metadata_never_crashes(name: str, request: pytest.FixtureRequest) -> None:
    image: Path = request.getfixturevalue(f"{name}_image")
    regions = metadata_regions(image)
    assert len(regions) > 20

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(region_mutations(len(regions), max_pos=1 << 16, max_bytes=8, max_count=6))
    def run(mutations: list[tuple[int, int, bytes]]) -> None:
        mutate_and_read(image, regions, mutations)

    run()
