"""Ordered mode against a write cache that destages the journal before the data.

A write that gives a file new blocks writes the data straight to them, then commits the
transaction that maps them.  Writing the data first is not enough with a volatile cache: the
journal record may reach the medium while the data does not, and the replay then maps blocks
that hold whatever they held before (zeros, or a deleted file's bytes).  Every cut point of such
writes is judged here against the worst cache there is for this: each unflushed sector of the
journal keeps its newest value, every other unflushed sector its value at the last flush.  The
file must then be as it was before the write or hold exactly the bytes written, never another
file's bytes or zeros where data was acknowledged.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.cluster.conftest import host
from tests.crash.trace import IoEvent, Recorder, crashed_disk
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import ManualClock
from vmfs.device import MemoryDevice, OverlayDevice
from vmfs.device.fault import FaultDevice
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.crash]

MIB = 1 << 20


def journal_first_cache(journal: range) -> Callable[[OverlayDevice, int], FaultDevice]:
    """A volatile cache that destages the journal (sectors in ``journal``) and lock updates (ATS)
    and loses every other unflushed write; the power may go at any write, ATS or flush."""
    return lambda disk, cut: FaultDevice(
        disk, cut_after=cut, tear=False, volatile=True, destage=lambda offset: offset in journal, cut_at_flush=True
    )


def _run(rng: random.Random, preallocated: bool) -> tuple[OverlayDevice, list[IoEvent], range, bytes, bytes]:
    """A deleted file's blocks, then a new file written over them: the disk before the new
    file's write, that write's I/O, the journal area, the deleted file's bytes and the new ones.
    ``preallocated``: the new file is open for writing and its first block's append took the
    following blocks too; the write judged is the next append, into those blocks, whose length
    only its fsync commits."""
    base = MemoryDevice(1 << 30)
    format_volume([base], MkfsOptions(label="ordered", creation_time_us=1_700_000_000_000_000))
    rec = Recorder(OverlayDevice(base))
    vol = HostAttachment.from_devices([rec], host=host(1, ManualClock()))
    fs = WritableFileSystem(vol)
    old = rng.randbytes(24 * MIB)
    fd = fs.create("/old")
    fs.write(fd.address, 0, old)
    fs.fsync(fd.address)
    fs.unlink("/old")
    new_fd = fs.create("/new")
    fs.fsync(new_fd.address)
    journal = vol.journal
    assert journal is not None
    ((_, where, _),) = vol.volume.device._segments(journal.area.offset, 1)  # type: ignore[attr-defined]
    area = range(where, where + journal.area.size)  # on the recorded device (below the LVM)
    new = rng.randbytes(18 * MIB + 1000)
    at = 0
    if preallocated:
        fs.open_file(new_fd.address, write=True)
        at = 16 * MIB  # the append of block 15 took block 16 too (15 // 8)
        fs.write(new_fd.address, 0, new[:at])
        fs.fsync(new_fd.address)
        assert fs._fd(new_fd.address).meta.numPreAllocBlocks >= 1
    first = len(rec.events)
    fs.write(new_fd.address, at, new[at:])
    fs.fsync(new_fd.address)
    vol.heartbeat.stop()  # the writer dies here; its lease runs out on the survivor's clock
    start = OverlayDevice(base)
    for event in rec.events[:first]:
        if event.kind == "write":
            start.write(event.offset, event.data)
        elif event.kind == "ats":
            assert start.compare_and_write(event.offset, event.expected, event.data) == event.result
    return start, rec.events[first:], area, old, new


@pytest.mark.parametrize("preallocated", [False, True], ids=["mapped-by-the-write", "preallocated"])
def test_new_blocks_never_show_other_bytes_after_a_cut(preallocated: bool) -> None:
    start, events, area, old, new = _run(random.Random(7), preallocated)
    writes = len(events)  # every write, ATS and flush is a cut point
    assert writes > 3
    old_sectors = {old[i : i + 512] for i in range(0, len(old), 512)}
    bad = []
    for cut in range(writes + 1):
        disk = crashed_disk(start, events, cut, fault=journal_first_cache(area)).disk
        clock = ManualClock()
        vol = HostAttachment.from_devices([disk], host=host(2, clock))
        clock.advance(25)  # host 1's lease runs out: host 2 replays its journal
        fs = WritableFileSystem(vol)
        got = vol.volume.reader(fs.resolve("/new")).read(0, len(new) + 1)
        if got not in (new[: 16 * MIB if preallocated else 0], new):
            sectors = [got[i : i + 512] for i in range(0, len(got), 512)]
            zeros = sum(1 for s in sectors if not any(s))
            stale = sum(1 for s in sectors if s in old_sectors)
            bad.append(f"cut {cut}: {len(got)} bytes, {zeros} zero sectors, {stale} of the deleted file")
        vol.close()
    assert not bad, f"{len(bad)} of {writes + 1} cut points: " + "; ".join(bad[:4])
