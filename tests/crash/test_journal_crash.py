"""Power cuts at every write of a journaled workload, each recovered and judged by four readers.

A writer host (host 1) runs the workload of :mod:`tests.crash.workload` once, its I/O recorded;
for every cut point the disk the cut leaves is rebuilt through the fault device (the write the
power goes on torn at a random sector; with the volatile cache, every sector written since the
last flush keeps one of the values it held since).  Then the volume is recovered, at even cut
points by another host (host 2 waits out host 1's lease, replays its journal, clears its slot),
at odd ones by host 1 itself mounting again (its own slot found in use: it replays its own
journal on remount), and judged:

* our reader: the tree is what the acknowledged steps made, the step in flight done or undone
  as a whole (the data of an overwrite may be a sector mix: data is not journaled); every
  resource marked used is referenced and the other way round; the recovered host can write;
* dissect.vmfs (independent): the same tree, the same bytes;
* vmfs-fsck -n: nothing to report but locks of the crashed incarnation of host 1 (the operation
  in flight had taken them), which the library breaks when it next needs them and fsck
  releases (LOCK_STALE);
* fsck.vmfs (vmfs-tools, independent) on about every ``FSCK_VMFS_EVERY``-th cut (a separate
  program on a written-out image: ~1 s each): no lost block, undefined or orphaned inode or
  directory error.  Its "used but not allocated" count is not used: it reports one for a
  single-indirect file whose pointer block is not the cluster's first (PB c0 r1, reported as
  block 0x10000000) though our fsck, dissect.vmfs and the bitmaps agree.

Dissect.vmfs and vmfs-fsck cost about 0.8 s a cut point, recovery about 0.35 s (most of it
parsing the 2048 heartbeat slots), so the independent readers judge every ``ORACLE_EVERY``-th
cut point and the recovery of every cut point is judged by our reader.

Each guarded mechanism has cut points here that fail without it (run, not reasoned: issue 17's
closing note has the table): replay by another host and on remount (a cut between the home
writes of a transaction), both flushes of a commit (volatile cache: the journal may not be on
the medium when the home writes are, or the previous transaction's home writes not when the
next one overwrites the journal), and releasing locks only after the home writes (a lock given
back before them makes recovery skip the transaction as finished).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.conftest import host
from tests.crash import judge
from tests.crash.trace import Recorder, crashed_disk
from tests.crash.workload import Run, workload
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import ManualClock
from vmfs.device import MemoryDevice, OverlayDevice
from vmfs.device.base import BlockDevice
from vmfs.fsck import Mode
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.volume.slots import read_slots
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.write.posix import WritableFileSystem

pytestmark = [pytest.mark.crash, pytest.mark.slow]

WRITER = 1
OTHER = 2
#: cut points judged by dissect.vmfs and vmfs-fsck (~0.8 s) / by fsck.vmfs too (~1 s more)
ORACLE_EVERY = 4
FSCK_VMFS_EVERY = 40


@dataclass
class Recorded:
    start: OverlayDevice  # the disk when the tested part begins (setup done)
    events: list  # the I/O of the tested part
    run: Run


def record(seed: int, version: int = 5) -> Recorded:
    if version == 6:  # the smallest VMFS6 volume leaves no room: 2 GiB, 1024 sub-blocks
        base = MemoryDevice(2 << 30)
        options = MkfsOptions(label="crash", version=6, creation_time_us=1_700_000_000_000_000, num_sub_blocks=1024)
    else:
        base = MemoryDevice(1 << 30)
        options = MkfsOptions(label="crash", creation_time_us=1_700_000_000_000_000, num_pointer_blocks=16)
    format_volume([base], options)
    rec = Recorder(OverlayDevice(base))
    vol = HostAttachment.from_devices([rec], host=host(WRITER, ManualClock()))
    run = workload(WritableFileSystem(vol), rec, seed)
    # the writer never unmounts: the cut points end with the last step
    vol.heartbeat.stop()
    # the disk at the first cut point: the setup part's events applied
    start = OverlayDevice(base)
    writes = 0
    for i, event in enumerate(rec.events):
        if writes == run.first_cut:
            return Recorded(start, rec.events[i:], run)
        if event.kind == "write":
            start.write(event.offset, event.data)
        elif event.kind == "ats":
            assert start.compare_and_write(event.offset, event.expected, event.data) == event.result
        writes += event.kind != "flush"
    raise AssertionError("the setup part is the whole run")


_recorded: dict[tuple[int, int], Recorded] = {}


def recorded(seed: int, version: int = 5) -> Recorded:
    if (seed, version) not in _recorded:
        _recorded[seed, version] = record(seed, version)
    return _recorded[seed, version]


def recover(disk: BlockDevice, who: int) -> tuple[HostAttachment, WritableFileSystem]:
    clock = ManualClock()
    vol = HostAttachment.from_devices([disk], host=host(who, clock))
    if who != WRITER:
        clock.advance(25)  # host 1's lease runs out; the survivor's heartbeat reaper recovers it
    return vol, WritableFileSystem(vol)


def judge_cut(rec: Recorded, cut: int, *, volatile: bool, who: int, seed: int, oracles: bool,
              tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One cut point: rebuild, recover, judge (every failure names the cut and the step)."""
    crash = crashed_disk(rec.start, rec.events, cut - rec.run.first_cut, volatile=volatile, seed=seed * 100_000 + cut)
    done, step = rec.run.at_cut(cut)
    where = f"seed {seed}, cut after write {cut} of {rec.run.total_writes}, in flight {step.name if step else None!r}"
    vol, fs = recover(crash.disk, who)
    assert [s.slot for s in read_slots(vol.volume) if s.in_use] == [vol.heartbeat.slot], where
    ours = judge.our_tree(fs)
    why = judge.allowed(ours, done, step, lambda p, o, n: vol.volume.reader(fs.resolve(p)).read(o, n))
    assert why is None, f"{where}: {why}"
    refs, used = referenced_resources(vol.volume), marked_used(vol.volume)
    for kind in used:
        assert refs[kind] == used[kind], f"{where}: resource type {kind} leaked or unaccounted"
    fs.write_file("/after-crash", b"recovered")
    vol.close()
    ours["/after-crash"] = ("file", *judge.content_key(lambda o, n: b"recovered"[o : o + n], 9))
    if not oracles:
        return
    theirs = judge.dissect_tree(crash.disk)
    assert theirs == ours, f"{where}: dissect.vmfs reads another tree: {judge._diff(ours, theirs)}"
    with judge.devices_for_fsck(monkeypatch, {"crashed": crash.disk}):
        code, findings = judge.fsck("crashed", Mode.NO)
    dead = host(WRITER, ManualClock()).uuid
    real = [f for f in findings if not (f.startswith("LOCK_STALE") and dead in f)]
    assert not real and code in (0, 4), f"{where}: vmfs-fsck -n exit {code}: {real}"
    # fsck.vmfs6 divides by the empty .pbc.sf's zero resources per cluster (vmfs-format.md 13):
    # VMFS6 cut points are judged by our fsck and dissect.vmfs only
    if (cut - rec.run.first_cut) % FSCK_VMFS_EVERY < ORACLE_EVERY and not vol.volume.geometry.vmfs6:
        counts = judge.fsck_vmfs_counts(crash.disk, tmp / "cut.img")
        bad = {k: v for k, v in counts.items() if v and k != "Unallocated blocks"}
        assert not bad, f"{where}: fsck.vmfs reports {bad}"


def every_cut(seed: int, *, volatile: bool, stride: int, oracle_every: int, tmp: Path,
              monkeypatch: pytest.MonkeyPatch, version: int = 5) -> None:
    """Every ``stride``-th cut point of the seed's workload (1: all of them).  Cut points take
    turns at the two recoveries (even: another host, odd: the writer mounting again); the
    independent readers and vmfs-fsck judge every ``oracle_every``-th."""
    rec = recorded(seed, version)
    run = rec.run
    assert run.total_writes - run.first_cut > 300 and len(run.steps) > 60
    t = time.monotonic()
    cuts = range(run.first_cut + seed % stride, run.total_writes + 1, stride)
    for n, cut in enumerate(cuts):
        judge_cut(rec, cut, volatile=volatile, who=OTHER if cut % 2 == 0 else WRITER, seed=seed,
                  oracles=n % oracle_every == 0, tmp=tmp, monkeypatch=monkeypatch)
    print(f"seed {seed}, VMFS{version}: {len(cuts)} cut points in {time.monotonic() - t:.0f} s")


@pytest.mark.parametrize("volatile", [False, True], ids=["in-order", "volatile-cache"])
def test_every_cut_point(volatile: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    every_cut(1, volatile=volatile, stride=1, oracle_every=ORACLE_EVERY, tmp=tmp_path, monkeypatch=monkeypatch)


@pytest.mark.parametrize("seed", [2, 3])
def test_other_seeds(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other sizes, names and data orders; a quarter of the cut points, in-order for seed 2 and
    with the volatile cache for seed 3."""
    every_cut(seed, volatile=seed == 3, stride=4, oracle_every=ORACLE_EVERY, tmp=tmp_path, monkeypatch=monkeypatch)


def test_vmfs6_cut_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same workload on VMFS6 (hashed directories, journal blocks, sub-block pointer blocks):
    every third cut point, with the volatile write cache."""
    every_cut(1, volatile=True, stride=3, oracle_every=ORACLE_EVERY, tmp=tmp_path, monkeypatch=monkeypatch,
              version=6)
