"""Random byte corruption of the metadata of a populated volume, VMFS5 and VMFS6 (hypothesis).

Whatever the bytes: vmfs-fsck never crashes or hangs (an alarm bounds every example), -n never
writes, and after -y a second run is clean.  The one way out is damage the checker declares fatal
(a typed problem, exit 12: the volume cannot be walked), which it must then neither repair nor
write.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fsck import volumes
from vmfs.cluster.host import HostIdentity
from vmfs.device.file import FileDevice
from vmfs.device.lvm import open_logical_volume
from vmfs.fsck import ExitCode, Flag, FsckOptions, Mode, Policy, check
from vmfs.ondisk import resource as R
from vmfs.ondisk.heartbeat import HEARTBEAT_REGION_OFFSET
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

pytestmark = pytest.mark.slow

FSCK_HOST = HostIdentity(uuid="5f000000-0000000a-000a-02000000000a", ip="192.0.2.10")
ALARM = 120
#: FSCK_FUZZ_EXAMPLES=2000 for a longer hunt


def metadata_regions(image: Path) -> list[tuple[str, int, int]]:
    """(what, volume offset, length) of the metadata a corruption may hit."""
    out: list[tuple[str, int, int]] = []
    with Volume.open(image) as vol:
        geo = vol.geometry
        fs = FileSystem(vol)
        out.append(("heartbeats", HEARTBEAT_REGION_OFFSET, 16 * geo.hb_slot_size))
        for _kind, res in vol.resources.items():
            out.append((f"{res.name} header", res.reader.volume_offset(0), R.RES_HEADER_SIZE))
            for c in range(min(res.num_clusters, 4)):
                off = res.reader.volume_offset(res.cluster_header_offset(c))
                out.append((f"{res.name} cluster {c}", off, res.ch))
        fdc = vol.resources[R.RES_FD]
        first_user = fdc.volume_offset(0, 8)  # FDs after the system files of cluster 0
        out.append(("FDs", first_user, 88 * geo.fd_size))
        for path in ("/", "/d1", "/many", "/d1/d2"):
            fd = fs.resolve(path)
            out.append((f"directory {path}", FileReader(fd).volume_offset(0), min(fd.size, 4096)))
            if geo.vmfs6:  # the allocation map and dirent blocks after the 64 KiB header
                for block in range((fd.size - 0x10000) // geo.md_size):
                    where = FileReader(fd).volume_offset(0x10000 + block * geo.md_size)
                    out.append((f"directory {path} block {block}", where, geo.md_size))
        for path in ("/huge", "/sparse300m"):
            fd = fs.resolve(path)
            pb = next(p for p in fd.pointers if p)
            kind, c, r = geo.codec.split(pb)
            out.append((f"pointer block of {path}", vol.resources[kind].volume_offset(c, r), 64))
    return out


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise _Timeout("vmfs-fsck took too long")


@pytest.fixture(scope="module")
def regions(populated: Path) -> list[tuple[str, int, int]]:
    return metadata_regions(populated)


@pytest.fixture(scope="module")
def regions6(populated6: Path) -> list[tuple[str, int, int]]:
    return metadata_regions(populated6)


mutation = st.tuples(st.integers(min_value=0, max_value=1 << 30), st.integers(min_value=0, max_value=1 << 30),
                     st.binary(min_size=1, max_size=256))


EXAMPLES = int(os.environ.get("FSCK_FUZZ_EXAMPLES", "60"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=12))
def test_random_metadata_damage(mutations, regions, populated: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _damage_and_check(mutations, regions, populated, tmp_path)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=12))
def test_random_metadata_damage6(mutations, regions6, populated6: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same on VMFS6, whose hashed directories, 2-bit SFB bitmaps and journal blocks the
    repairs rewrite differently."""
    _damage_and_check(mutations, regions6, populated6, tmp_path)


def _damage_and_check(mutations, regions, base: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = volumes.copy(base, tmp_path / "fuzz.img")
    image.chmod(0o644)
    dev = FileDevice(image, readonly=False)
    lv = open_logical_volume([dev])
    hit = []
    try:
        for which, pos, data in mutations:
            what, start, length = regions[which % len(regions)]
            off = start + pos % length
            lv.write(off, data[: length - pos % length])
            hit.append(f"{what} +0x{pos % length:x} = {data.hex()}")
    finally:
        lv.close()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM)
    try:
        before = volumes.sparse_digest(image)
        first = check([str(image)], FsckOptions(Policy(Mode.NO), host=FSCK_HOST))
        assert volumes.sparse_digest(image) == before, f"-n wrote: {hit}"
        fatal = any(f.problem.flags & Flag.FATAL for f in first.findings)
        if first.exit_code & ExitCode.OPERATIONAL:
            assert fatal, f"{first.error}: {hit}"
        repaired = check([str(image)], FsckOptions(Policy(Mode.YES), host=FSCK_HOST))
        if fatal:
            assert repaired.exit_code == first.exit_code and volumes.sparse_digest(image) == before, hit
            return
        assert repaired.error is None, f"{repaired.error}: {hit}"
        again = check([str(image)], FsckOptions(Policy(Mode.NO), host=FSCK_HOST))
        assert again.exit_code == 0, (hit, [f.message for f in again.findings])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
