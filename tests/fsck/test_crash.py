"""Power cut during a repair, at every write of it, through the fault device: torn writes, and
with the volatile cache every sector written since the last flush may hold any value it had
since.  Whatever the cut leaves:

* a check (vmfs-fsck -n) reports nothing new: only problems (code and object) of the original
  damage or of a state the repair passes through between its transactions, and the interrupted
  run's own heartbeat slot, journal, locks and journal block (taken or given back half way).
  The check replays that journal first, so a repair transaction cut half way home reads as
  done; without the replay a half-written repair
  shows up as damage in a place no step of the repair leaves it (a block marked free that a file
  uses, a cluster count that disagrees with its bitmap...);
* the next vmfs-fsck -y finishes the job, and its verify phase finds the volume clean;
* the files the damage did not touch are unchanged, and dissect.vmfs (an independent reader,
  at every ``DISSECT_EVERY``-th cut point and the last) reads the same tree and bytes as ours.

The disks are in memory (tests/crash/judge.py lets vmfs-fsck open them): the repair's I/O is
recorded once and each cut point rebuilt from it (tests/crash/trace.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash import judge
from tests.crash.trace import Recorder, crashed_disk
from tests.fsck import corrupt, volumes
from vmfs.device import MemoryDevice, OverlayDevice
from vmfs.device.base import BlockDevice
from vmfs.fsck import Mode

pytestmark = [pytest.mark.crash, pytest.mark.slow]

CASES = {
    "shared-block": [{"op": "pointer", "path": "/top", "index": 1, "like": "/d1/big"}],
    "orphan-dir": [{"op": "remove_entry", "dir": "/d1", "name": "d2"}],
    "bitmaps": [{"op": "bitmap", "resource": "FB", "file": "/d1/big", "block": 1, "state": "free"},
                {"op": "cluster", "resource": "SB", "cluster": 0, "field": "freeResources", "value": {"add": 4}}],
}
UNTOUCHED = ("/d1/small", "/d1/sub", "/many/f42", "/link", "/sparse300m", "/huge")
#: what an interrupted run of vmfs-fsck itself leaves: its slot in use, its journal, its locks
LEFT_BY_A_CRASHED_RUN = {"HB_STALE", "JOURNAL_REPLAY", "LOCK_STALE"}
IMAGE = "damaged.img"
#: dissect.vmfs reads the repaired tree at every DISSECT_EVERY-th cut point (~0.5 s each)
DISSECT_EVERY = 4


def load(path: Path) -> MemoryDevice:
    """An image file as a sparse memory device (only its non-zero MiBs are stored)."""
    size = path.stat().st_size
    dev = MemoryDevice(size)
    zero = bytes(1 << 20)
    with open(path, "rb") as f:
        for off in range(0, size, 1 << 20):
            data = f.read(1 << 20)
            if data != zero[: len(data)]:
                dev.write(off, data)
    return dev


def kinds(findings: list[str]) -> set[tuple[str, str]]:
    """(problem code, subject) of each finding line ("CODE: subject: message")."""
    return {tuple(f.split(": ", 2)[:2]) for f in findings}  # type: ignore[misc]


def run_journal_block(pristine: BlockDevice, events: list) -> int:
    """The file block the repair run took for its journal (its heartbeat slot names it once the
    run is open; the run is deterministic, so every cut run took the same one)."""
    from vmfs.volume.slots import read_slots
    from vmfs.volume.volume import Volume

    writes = 0
    for event in events:
        if event.kind == "flush":
            disk = crashed_disk(pristine, events, writes, volatile=False, seed=0).disk
            with Volume.from_devices([judge._Window(disk, readonly=True)]) as vol:
                for slot in read_slots(vol):
                    if slot.in_use and slot.owner == judge.FSCK_HOST.uuid and slot.hb.journalAddr:
                        return vol.geometry.codec.fb_block(slot.hb.journalAddr)
        else:
            writes += 1
    raise AssertionError("the repair run never named a journal block")


def leaked_journal_block(finding: str, block: int) -> bool:
    """A crash while the run takes or gives back its journal block may leave that block marked
    used with no slot naming it, or named by the dead run's slot and marked free (vmfs/writable.py:
    "at worst one leaked journal block, which vmfs-fsck reclaims")."""
    code, _, rest = finding.partition(": ")
    ends = (f": 1 in use but marked free: FB {block}", f": 1 marked used but not in use: FB {block}")
    return code in ("BITMAP_USED_MARKED_FREE", "BITMAP_FREE_MARKED_USED") and rest.endswith(ends)


def between_transactions(pristine: BlockDevice, events: list) -> set[tuple[str, str]]:
    """What a check finds on the disk as the repair left it at each flush (in order, nothing
    torn): the states a repair passes through between its transactions, and with its journal
    written but nothing home yet.  With the journal replayed, any cut reads as one of them."""
    found: set[tuple[str, str]] = set()
    writes = 0
    for event in events:
        if event.kind == "flush":
            disk = crashed_disk(pristine, events, writes, volatile=False, seed=0).disk
            with judge.devices_for_fsck(pytest.MonkeyPatch(), {IMAGE: disk}):
                found |= kinds(judge.fsck(IMAGE, Mode.NO)[1])
        else:
            writes += 1
    return found


@pytest.mark.parametrize("volatile", [False, True], ids=["in-order", "volatile-cache"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_power_cut_at_every_write(name: str, volatile: bool, tmp_path: Path, populated: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = volumes.copy(populated, tmp_path / IMAGE)
    damaged.chmod(0o644)
    corrupt.apply(damaged, CASES[name])
    pristine = load(damaged)
    damaged.unlink()
    disks: dict[str, BlockDevice] = {}
    with judge.devices_for_fsck(monkeypatch, disks):
        disks[IMAGE] = OverlayDevice(pristine)
        code, original = judge.fsck(IMAGE, Mode.NO)
        assert code == 4 and original, f"{name}: the damage is not found"
        recorder = Recorder(OverlayDevice(pristine))
        disks[IMAGE] = recorder
        code, _ = judge.fsck(IMAGE, Mode.YES)
        assert code == 1, f"{name}: the uninterrupted repair exits {code}"
        reference = judge.our_tree_of(recorder)
        writes = recorder.writes
        assert writes > 3
        allowed = kinds(original) | between_transactions(pristine, recorder.events)
        journal_block = run_journal_block(pristine, recorder.events)
        for cut in range(writes):
            where = f"{name}, cut after write {cut} of {writes}"
            disk = crashed_disk(pristine, recorder.events, cut, volatile=volatile, seed=cut).disk
            disks[IMAGE] = disk
            code, seen = judge.fsck(IMAGE, Mode.NO)
            new = [f for f in seen if tuple(f.split(": ", 2)[:2]) not in allowed
                   and f.partition(":")[0] not in LEFT_BY_A_CRASHED_RUN and not leaked_journal_block(f, journal_block)]
            assert not new, f"{where}: the check finds damage the repair made: {new}"
            # exit 1: repaired, and the verify phase (a third run, read-only) found nothing left
            code, left = judge.fsck(IMAGE, Mode.YES)
            assert code in (0, 1), f"{where}: the repair after the cut exits {code}: {left}"
            ours = judge.our_tree_of(disk)
            for path in UNTOUCHED:
                assert ours[path] == reference[path], f"{where}: {path} changed"
            if cut % DISSECT_EVERY == 0 or cut == writes - 1:
                theirs = judge.dissect_tree(disk)
                assert theirs == ours, f"{where}: dissect.vmfs reads another tree: {judge._diff(ours, theirs)}"
