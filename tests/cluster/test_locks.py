"""Lock semantics between hosts sharing one volume; time is injected (no real lease waits)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.cluster.conftest import host, mount
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import ManualClock
from vmfs.cluster.locks import LockManager
from vmfs.device.file import FileDevice
from vmfs.device.shared import SharedDevice
from vmfs.errors import BusyError, NotFoundError, VolumeLostError
from vmfs.ondisk.heartbeat import HB_FREE
from vmfs.ondisk.lock import LOCK_EXCLUSIVE, LOCK_FREE, LOCK_READ_ONLY, parse_lock
from vmfs.volume.slots import read_slot, read_slots
from vmfs.volume.usage import marked_used, referenced_resources
from vmfs.write.posix import WritableFileSystem

_LUNS = itertools.count(1)


def lock_of(vol, address: int):  # type: ignore[no-untyped-def]
    fd = vol.read_fd(address)
    return parse_lock(vol.device.read(fd.vol_offset, 512))


@pytest.fixture(params=["a device each", "one device object", pytest.param("iscsi", marks=pytest.mark.network),
                        pytest.param("rbd", marks=pytest.mark.network)])
def two_hosts(image: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Two hosts of this process on one volume: each opening the image itself (as two processes
    do), each through its own handle on one device object (as hosts see one LUN), each with its
    own iSCSI session to a real target whose LUN is the image (reservation mode on tgt), or each
    its own client of a real Ceph cluster holding the volume as an RBD image (ATS mode)."""
    clock = ManualClock()
    shared = FileDevice(image, readonly=False) if request.param == "one device object" else None
    if request.param == "iscsi":
        target = request.getfixturevalue("tgt_target")
        url = target.export(f"locks-{next(_LUNS)}", image)
        a, b = mount(url, host(1, clock)), mount(url, host(2, clock))
    elif request.param == "rbd":  # the volume made in the image file, imported as a new RBD image
        spec = request.getfixturevalue("ceph_cluster").import_image(f"locks-{next(_LUNS)}", image)
        a, b = mount(spec, host(1, clock)), mount(spec, host(2, clock))
    elif shared is None:
        a, b = mount(image, host(1, clock)), mount(image, host(2, clock))
    else:
        a = HostAttachment.from_devices([SharedDevice(shared)], host=host(1, clock))
        b = HostAttachment.from_devices([SharedDevice(shared)], host=host(2, clock))
    fa, fb = WritableFileSystem(a), WritableFileSystem(b)
    yield fa, fb, clock, clock
    for att in (a, b):
        if not att.closed:
            try:
                att.close()
            except VolumeLostError:
                pass
    if shared is not None:
        shared.close()


def test_two_writers_one_gets_ebusy(two_hosts) -> None:  # type: ignore[no-untyped-def]
    fa, fb, _ca, _cb = two_hosts
    f = fa.write_file("/shared", b"from A")
    fa.open_file(f.address, write=True)
    lock = lock_of(fb.volume, f.address)
    assert lock.mode == LOCK_EXCLUSIVE and lock.owner == fa.attachment.host.uuid
    with pytest.raises(BusyError) as info:
        fb.open_file(f.address, write=True)
    assert info.value.errno == 16  # EBUSY, and it came back: no hang
    with pytest.raises(BusyError):
        fb.open_file(f.address, write=False)  # an exclusive lock admits no reader
    fa.close_file(f.address, write=True)
    assert lock_of(fb.volume, f.address).mode == LOCK_FREE
    fb.open_file(f.address, write=True)  # now free
    fb.write(f.address, 0, b"from B")
    fb.close_file(f.address, write=True)
    assert fa.volume.reader(fa.resolve("/shared")).read(0, 10) == b"from B"


def test_read_only_sharing(two_hosts) -> None:  # type: ignore[no-untyped-def]
    fa, fb, _ca, _cb = two_hosts
    f = fa.write_file("/base.vmdk", b"parent disk")
    fa.open_file(f.address, write=False)
    fb.open_file(f.address, write=False)
    lock = lock_of(fa.volume, f.address)
    assert lock.mode == LOCK_READ_ONLY and lock.numHolders == 2
    with pytest.raises(BusyError):
        fb.open_file(f.address, write=True)  # upgrade refused while A reads
    with pytest.raises(BusyError):
        fb.unlink("/base.vmdk")
    fa.close_file(f.address, write=False)
    assert lock_of(fa.volume, f.address).numHolders == 1
    fb.close_file(f.address, write=False)
    assert lock_of(fa.volume, f.address).mode == LOCK_FREE


def test_live_owner_keeps_its_lock(two_hosts) -> None:  # type: ignore[no-untyped-def]
    fa, fb, ca, _cb = two_hosts
    f = fa.write_file("/vm.vmdk", b"x")
    fa.open_file(f.address, write=True)
    gen = fa.attachment.heartbeat.generation
    for _ in range(20):  # 60 s of B retrying while A's heartbeat renews every 3 s
        ca.advance(3)
        with pytest.raises(BusyError):
            fb.open_file(f.address, write=True)
        assert fb.attachment.locks.reap() == []
    assert fa.attachment.heartbeat.generation == gen
    assert read_slot(fa.volume, fa.attachment.heartbeat.slot).hb.hbGen == gen
    fa.write(f.address, 0, b"A still writes")


def test_stale_lock_is_broken_only_after_the_lease(two_hosts) -> None:  # type: ignore[no-untyped-def]
    fa, fb, ca, cb = two_hosts
    f = fa.write_file("/vm.vmdk", b"A's data")
    fa.open_file(f.address, write=True)
    fa.write(f.address, 8, b" more")
    fa.fsync(f.address)
    slot_a = fa.attachment.heartbeat.slot
    gen_a = fa.attachment.heartbeat.generation
    # A dies: no more renewals, nothing released
    fa.attachment.heartbeat.stop()
    last_stamp = fa.attachment.heartbeat._last_renew_us
    lease_us = int(fb.attachment.host.lease * 1_000_000)
    fb.busy_timeout = 0  # one attempt at the operation level: what waits is the lock itself
    locks = fb.attachment.locks
    locks.wait_for_silent = False  # first as a caller that wants EBUSY at once
    while cb.now_us - last_stamp < lease_us - 2_000_000:  # well inside the lease: always refused
        with pytest.raises(BusyError):
            fb.open_file(f.address, write=True)
        cb.advance(1)
    # then as every operation does: A's heartbeat has stood still for two periods, so B waits
    # for the lease to run out (and no longer) instead of answering EBUSY, then breaks the lock
    locks.wait_for_silent = True
    fb.open_file(f.address, write=True)
    assert lease_us <= cb.now_us - last_stamp <= lease_us + 5_000_000
    slot = read_slot(fb.volume, slot_a)
    assert slot.hb.state == HB_FREE and slot.hb.hbGen == gen_a + 1
    assert lock_of(fb.volume, f.address).owner == fb.attachment.host.uuid
    assert fb.volume.reader(fb.resolve("/vm.vmdk")).read(0, 20) == b"A's data more"
    fb.close_file(f.address, write=True)
    # A's journal block went back to the free pool: nothing leaked or shared
    refs, used = referenced_resources(fb.volume), marked_used(fb.volume)
    assert all(refs[k] == used[k] for k in used)
    # and A, should it wake up, finds its slot taken away and stops writing
    fa.attachment.heartbeat._last_renew_us = ca.now_us
    with pytest.raises(VolumeLostError):
        fa.attachment.heartbeat.renew()
    with pytest.raises(VolumeLostError):
        fa.write(f.address, 0, b"zombie")


def test_own_lease_expiry_stops_writes(two_hosts) -> None:  # type: ignore[no-untyped-def]
    fa, fb, ca, _cb = two_hosts
    fa.write_file("/before", b"ok")
    fa.attachment.heartbeat.stop()  # A's renewals stall (e.g. its storage path hangs)
    ca.advance(17)
    with pytest.raises(VolumeLostError):
        fa.write_file("/after", b"no")
    assert fb.resolve("/before")


def test_the_lease_counts_from_when_the_renewal_was_sent_not_answered(image: Path) -> None:
    """A renewal whose answer comes back 10 s late (the write reached the storage, the path back
    failed): other hosts may have seen the new stamp at once, so this host's lease runs from the
    moment it sent it, and it stops writing a lease after that, not a lease after the answer."""
    clock = ManualClock()
    att = mount(image, host(1, clock))
    fs = WritableFileSystem(att)
    hb = att.heartbeat
    hb.stop()  # renewals by hand
    lv = att.volume.device
    real = lv.compare_and_write

    def late_answer(offset: int, expected: bytes, new: bytes) -> bool:
        done = real(offset, expected, new)
        clock.now_us += 10_000_000  # without listeners: nothing else runs meanwhile
        return done

    lv.compare_and_write = late_answer  # type: ignore[method-assign]
    sent = clock.now_us
    hb.renew()
    lv.compare_and_write = real  # type: ignore[method-assign]
    fs.write_file("/in-time", b"ok")  # 10 s after sending: still inside the lease
    clock.now_us = sent + int((att.host.lease + 0.5) * 1_000_000)  # 6.5 s after the answer
    with pytest.raises(VolumeLostError):
        fs.write_file("/too-late", b"no")
    att.crash()


def test_shared_directory_creates_from_both(two_hosts) -> None:  # type: ignore[no-untyped-def]
    fa, fb, _ca, _cb = two_hosts
    fa.mkdir("/shared")
    for i in range(30):
        fa.write_file(f"/shared/a{i}", b"A" * i)
        fb.write_file(f"/shared/b{i}", b"B" * i)
    names_a = sorted(e.name for e in fa.listdir("/shared"))
    fa.volume.trust_cache_for(0)
    fb.volume.trust_cache_for(0)
    names_a = sorted(e.name for e in fa.listdir("/shared"))
    names_b = sorted(e.name for e in fb.listdir("/shared"))
    assert names_a == names_b and len(names_a) == 60
    assert fb.volume.reader(fb.resolve("/shared/a29")).read(0, 100) == b"A" * 29
    refs, used = referenced_resources(fa.volume), marked_used(fa.volume)
    assert all(refs[k] == used[k] for k in used)


def test_recovery_never_undoes_later_changes_of_others(two_hosts) -> None:  # type: ignore[no-untyped-def]
    """A's last transaction stays in its journal after it reached home; B changes the same
    directory afterwards; A dies.  Recovering A must not replay that old transaction."""
    fa, fb, clock, _ = two_hosts
    fa.mkdir("/d")
    fa.write_file("/d/from-a", b"A")  # A's journal now holds the directory change
    fb.write_file("/d/from-b", b"B")  # B rewrites the same directory blocks after A
    fa.attachment.heartbeat.stop()  # A dies with that transaction still in its journal
    clock.advance(25)  # B's reaper recovers A
    assert not any(s.owner == fa.attachment.host.uuid for s in read_slots(fb.volume) if s.in_use)
    fb.volume.trust_cache_for(0)
    fb.volume.invalidate_caches()
    assert sorted(e.name for e in fb.listdir("/d")) == ["from-a", "from-b"]
    refs, used = referenced_resources(fb.volume), marked_used(fb.volume)
    assert all(refs[k] == used[k] for k in used)


def test_remount_after_own_crash_lets_go_of_every_lock_of_the_old_incarnation(image: Path) -> None:
    """A host that crashed holding a file open for writing (exclusive lock) and one open for
    reading beside another host (shared lock) comes back with its own identity: both locks of its
    previous generation are let go (the shared one keeps the other host), none is left for fsck
    to find or for another host to wait a lease to break."""
    clock = ManualClock()
    a, b = mount(image, host(1, clock)), mount(image, host(2, clock))
    fa, fb = WritableFileSystem(a), WritableFileSystem(b)
    written = fa.write_file("/vm.vmdk", b"A writes")
    shared = fa.write_file("/base.vmdk", b"parent")
    fa.open_file(written.address, write=True)
    fa.open_file(shared.address, write=False)
    fb.open_file(shared.address, write=False)
    old_gen = a.heartbeat.generation
    assert lock_of(b.volume, written.address).hbGen == old_gen
    assert lock_of(b.volume, shared.address).numHolders == 2
    a.crash()
    again = mount(image, host(1, clock))
    try:
        assert again.heartbeat.slot == a.heartbeat.slot and again.heartbeat.generation == old_gen + 1
        lock = lock_of(again.volume, written.address)
        assert lock.mode == LOCK_FREE and lock.hbGen == old_gen  # ESXi keeps the last holder's address
        lock = lock_of(again.volume, shared.address)
        assert lock.mode == LOCK_READ_ONLY and lock.numHolders == 1
        assert [owner for _, _, owner in LockManager._holders(lock)] == [b.host.uuid]
        fb.busy_timeout = 0
        fb.close_file(shared.address, write=False)
        assert lock_of(b.volume, shared.address).mode == LOCK_FREE
        fb.open_file(written.address, write=True)  # at once: no lease to wait out
        fb.close_file(written.address, write=True)
    finally:
        again.close()
        b.close()


def test_remount_after_own_crash_removes_what_it_had_unlinked_while_open(image: Path) -> None:
    """A crashed host had unlinked files it still held open: one under our hidden name, one
    under libfuse's (its high-level API renames instead of unlinking while it counts a file
    open, and removes the name at release).  Nobody can hold them any more: the remount by the
    same host removes both and gives their blocks back (the bitmaps mark used exactly what the
    tree reaches), and leaves alone a hidden-looking name it did not have open and a file it had
    open under its own name."""
    clock = ManualClock()
    a = mount(image, host(1, clock))
    fa = WritableFileSystem(a)
    fa.mkdir("/d")
    ours = fa.write_file("/d/ours", b"x" * 300_000)
    libfuse = fa.write_file("/d/theirs", b"y" * 5000)
    innocent = fa.write_file("/.fuse_hidden0000000a00000001", b"a user's own file")
    kept = fa.write_file("/d/kept", b"z" * 70_000)
    for f in (ours, libfuse, kept):
        fa.open_file(f.address, write=True)
    fa.unlink("/d/ours")
    fa.rename("/d/theirs", "/d/.fuse_hidden0000000900000001")
    hidden = sorted(e.name for e in fa.listdir("/d") if e.name.startswith(".f") or e.name.startswith(".v"))
    assert hidden == [".fuse_hidden0000000900000001", f".vmfs-deleted-{ours.address:x}"]
    a.crash()
    again = mount(image, host(1, clock))
    try:
        fs = WritableFileSystem(again)
        names = sorted(e.name for e in fs.listdir("/d") if e.name not in (".", ".."))
        assert names == ["kept"]
        assert fs.resolve("/.fuse_hidden0000000a00000001").address == innocent.address
        assert fs.volume.reader(fs.resolve("/d/kept")).read(0, 4) == b"zzzz"
        refs, used = referenced_resources(fs.volume), marked_used(fs.volume)
        assert refs == used, "the removed files' FDs and blocks are free again"
    finally:
        again.close()


def test_a_cached_directory_another_host_changed_is_read_again_not_called_corrupt(two_hosts) -> None:  # type: ignore[no-untyped-def]
    """B listed /d (its directory is cached and trusted for a short while), then A deletes f:
    B's next lookup of f lands on a freed FD, which means B's copy is stale, not that the volume
    is corrupt: B reads the directory again and answers ENOENT (it used to raise CorruptError)."""
    fa, fb, _ca, _cb = two_hosts
    fa.mkdir("/d")
    fa.write_file("/d/f", b"A's file")
    assert sorted(e.name for e in fb.listdir("/d") if e.name not in (".", "..")) == ["f"]  # B caches /d
    fa.unlink("/d/f")
    fa.write_file("/d/g", b"new")
    with pytest.raises(NotFoundError):
        fb.resolve("/d/f")
    assert fb.volume.reader(fb.resolve("/d/g")).read(0, 3) == b"new"


def test_a_host_recovered_while_its_time_stood_still_gives_nothing_back_at_close(image: Path) -> None:
    """B stops beating without knowing it (its clock stands still: a stalled process, or a
    simulated host whose engine did not run) while A's clock runs on: A recovers B (journal
    replayed and freed, slot cleared).  B's close must see that its slot is no longer its own
    and give nothing back: freeing its journal block again used to fail as "freed twice" or,
    worse, free a block A had reused."""
    clock_a, clock_b = ManualClock(), ManualClock()
    a, b = mount(image, host(1, clock_a)), mount(image, host(2, clock_b))
    fb = WritableFileSystem(b)
    fb.write_file("/from-b", b"B wrote this before it stalled")
    slot_b = b.heartbeat.slot
    clock_a.advance(20)  # A watches B's stamp stand still for more than a lease
    clock_a.advance(20)
    assert read_slot(a.volume, slot_b).hb.state == HB_FREE  # A recovered B
    fa = WritableFileSystem(a)
    fa.write_file("/from-a", b"A goes on" * 1000)  # may reuse what B held
    b.close()  # no exception, nothing freed a second time
    assert b.heartbeat.lost is not None
    a.close()
    vol = HostAttachment.open(image, host=host(3, ManualClock()))
    try:
        refs, used = referenced_resources(vol.volume), marked_used(vol.volume)
        assert all(refs[k] == used[k] for k in used)
        fs = WritableFileSystem(vol)
        assert fs.volume.reader(fs.resolve("/from-b")).read(0, 30) == b"B wrote this before it stalled"
    finally:
        vol.close()
