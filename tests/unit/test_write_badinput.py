"""Writing to a damaged volume: every operation ends in the library's own error (or succeeds),
never a traceback or a hang.  The damage is made in a copy-on-write overlay of a populated volume,
so the volume made once serves every example."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fsck import volumes
from tests.fsck.test_fuzz import metadata_regions
from tests.helpers import region_mutations
from vmfs.cluster.attachment import HostAttachment
from vmfs.device.file import FileDevice
from vmfs.device.lvm import open_logical_volume
from vmfs.device.overlay import OverlayDevice
from vmfs.errors import CorruptError, VmfsError
from vmfs.write.posix import WritableFileSystem


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fsck tests' populated VMFS5 volume: every address mode, deep and wide directories."""
    return volumes.make_volume(tmp_path_factory.mktemp("write-badinput") / "populated.img")


class Hang(Exception):
    pass


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise Hang()


def operations(fs: WritableFileSystem) -> list[Callable[[], object]]:
    return [
        lambda: fs.write_file("/d1/new", b"n" * 5000),
        lambda: fs.unlink("/d1/small"),
        lambda: fs.rename("/top", "/d1/d2/top2"),
        lambda: fs.truncate(fs.resolve("/d1/big").address, 10),
        lambda: fs.mkdir("/many/sub"),
        lambda: fs.write(fs.resolve("/huge").address, 5, b"zz"),
        lambda: fs.rmdir("/d1/d2"),
        lambda: fs.symlink("x", "/many/l"),
        lambda: fs.unlink("/many/f05"),
        lambda: fs.write_file("/top", b"q" * 3_000_000),
    ]


def damaged(image: Path, regions: list[tuple[str, int, int]], mutations: list[tuple[int, int, bytes]]) -> OverlayDevice:
    dev = OverlayDevice(FileDevice(image))
    lv = open_logical_volume([dev])
    for index, pos, data in mutations:
        _, offset, length = regions[index]
        lv.write(offset + pos % length, data)
    return dev


def write_through(dev: OverlayDevice, first: int, count: int = 4) -> list[VmfsError]:
    """Open read-write and run ``count`` operations; the library errors they end in."""
    errors: list[VmfsError] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        vol = HostAttachment.from_devices([dev], host=volumes.host())
        try:
            ops = operations(WritableFileSystem(vol))
            for k in range(first, first + count):
                try:
                    ops[k % len(ops)]()
                except VmfsError as exc:
                    errors.append(exc)
        finally:
            try:
                vol.close()
            except VmfsError:
                pass
    except VmfsError as exc:
        errors.append(exc)
    except Hang:
        pytest.fail("a write on a damaged volume hung")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return errors


def test_pointer_block_entry_of_no_pointer_kind(populated: Path) -> None:
    """Found by the fuzz below: a double-indirect file whose top pointer block holds an address
    of kind NULL made the writer raise ValueError (the reader already said CorruptError)."""
    regions = metadata_regions(populated)
    index = next(i for i, r in enumerate(regions) if r[0] == "pointer block of /huge")
    dev = damaged(populated, regions, [(index, 0, (0x3F5B4200).to_bytes(4, "little"))])
    errors = write_through(dev, 5, count=1)
    assert len(errors) == 1 and isinstance(errors[0], CorruptError), errors
    assert "is not a pointer-block address" in str(errors[0])


@pytest.mark.slow
def test_random_damage_then_writes(populated: Path) -> None:
    regions = metadata_regions(populated)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(region_mutations(len(regions), max_pos=1 << 30, max_bytes=16, max_count=4), st.integers(0, 9))
    def run(mutations: list[tuple[int, int, bytes]], first: int) -> None:
        write_through(damaged(populated, regions, mutations), first)

    run()
