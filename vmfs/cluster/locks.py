"""On-disk locks (vmfs-format.md 5, esx-design.md 1.4-1.7), taken and released with ATS.

Every lockable object (an FD, a resource cluster) starts with a lock block.  A host takes a lock
by an atomic test-and-set of the block's first sector: the image it read, with mode, owner, its
heartbeat slot address and generation, and ``token + 1``, replaces the old image only if nobody
changed it in between.  Modes: exclusive (one host), read-only and multi-writer (up to eight
holders in ``holders[]``).

A lock held by another host is *stale* when the holder's heartbeat slot no longer shows that
holder's incarnation (slot free, other owner, other generation), or when the slot's stamp has not
moved for a whole lease.  A stale lock is broken only after the dead host's journal has been
replayed and its slot cleared (:meth:`LockManager.recover_host`); a live owner's lock is never
broken, however long we wait (then the caller gets EBUSY, never a hang).

The lock ``token`` doubles as a generation number for cached metadata: it moves on every
acquisition, so a host that finds a token different from the one it cached knows the object may
have changed and reads it again (optimistic locking).

Lock keeping (lock caching): a busy host would pay two test-and-sets per lock per transaction.
So an exclusive lock whose last user let go stays ours (:attr:`LockManager.keep_idle`) and the
next transaction that needs it takes it without any I/O; :meth:`LockManager.sweep`, run a few
times per ``keep_idle`` by the attachment, gives back what has been idle that long.  A waiter
cannot be seen through the disk (nothing of it reaches the holder but its reads), so no lock is
kept past :attr:`LockManager.keep_max` from the moment we took it: it is then given back at the
end of its current use and not taken again for :attr:`LockManager.courtesy`, longer than the
longest pause between a waiter's tries (:attr:`LockManager.poll_max`, doubled by the jitter).
A host waiting for a lock another host keeps therefore gets it within ``keep_idle`` + a sweep
interval when the holder is idle, and within ``keep_max`` + one of the holder's transactions +
``poll_max`` when it is busy (one waiter; several waiters take turns without an order); under
group commit (vmfs.cluster.batch) a lock the open batch holds is let go when the batch commits,
so add the commit interval to both.  A host about to wait for a lock commits its own open batch
first (:attr:`LockManager.before_wait`): the waiting transaction holds the attachment's lock, so
its keeper could not commit the batch meanwhile, and two hosts each waiting for a lock the
other's batch holds would both wait out the lock timeout.  Keeping
never changes what is on disk: a kept lock is exactly a held lock, and a crash leaves it as it
leaves any held lock (broken by whoever recovers the host; replaying our last transaction while
we still hold its locks rewrites what is already home).
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from construct import Container

from vmfs.cluster.heartbeat import fence_incarnation, freed_slot, incarnation
from vmfs.cluster.journal import JournalArea, replay_area
from vmfs.errors import BusyError, CorruptError, UnsupportedError, VmfsError
from vmfs.ondisk.common import NULL_UUID, SECTOR, fast
from vmfs.ondisk.heartbeat import HB_IN_USE, HEARTBEAT_REGION_OFFSET, Heartbeat
from vmfs.ondisk.lock import (
    LOCK_EXCLUSIVE,
    LOCK_FREE,
    LOCK_MULTI_WRITER,
    LOCK_READ_ONLY,
    MAX_HOLDERS,
    NO_HOLDERS,
    LockHolders,
    build_lock,
    parse_lock,
)
from vmfs.volume.journalblock import journal_area, journal_kind, journal_resource
from vmfs.volume.slots import SlotView, read_slot, read_slots

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from vmfs.cluster.alloc import Allocators
    from vmfs.cluster.heartbeat import HeartbeatManager
    from vmfs.cluster.host import HostIdentity
    from vmfs.device.base import BlockDevice
    from vmfs.volume.volume import Volume

log = logging.getLogger("vmfs.cluster.locks")

SHARED_MODES = (LOCK_READ_ONLY, LOCK_MULTI_WRITER)

#: lock keeping under a real clock (module docstring): seconds an unused exclusive lock stays ours
KEEP_IDLE = 0.05
#: ... seconds at most from taking a lock to giving it back, however busy we are
KEEP_MAX = 1.0
#: ... seconds we leave a lock alone after giving it back for ``KEEP_MAX``
COURTESY = 0.06
#: longest pause between two tries at a busy lock when hosts keep locks (0.02 × jitter up to 2)
POLL_BUSY = 0.02
#: ... and when they do not (the pauses double up to this)
POLL_MAX = 0.5


@dataclass
class Held:
    offset: int
    mode: int
    image: bytes  # the sector we last wrote
    token: int
    count: int = 1
    _lock: Container | None = None
    #: when we took it from the disk (monotonic µs): no lock is kept past ``keep_max`` from here
    taken_us: int = 0

    @property
    def lock(self) -> Container:
        """The lock fields we wrote (parsed once)."""
        if self._lock is None:
            self._lock = parse_lock(self.image)
        return self._lock


class _Blocked(str):
    """Why a lock was not taken, and the live-looking host that holds it."""

    def __new__(cls, text: str, holder: tuple[int, int, str]) -> _Blocked:
        self = super().__new__(cls, text)
        self.holder = holder
        return self


class LockManager:
    def __init__(
        self,
        volume: Volume,
        heartbeat: HeartbeatManager,
        host: HostIdentity,
        allocators: Allocators,
        meta_lock: threading.RLock,
        *,
        wait: float = 5.0,
    ) -> None:
        self.volume = volume
        self.hb = heartbeat
        self.host = host
        #: frees a dead host's journal block when we recover it
        self.allocators = allocators
        #: the attachment's lock on metadata changes: recovery runs under it
        self.meta_lock = meta_lock
        self.wait = wait
        self.held: dict[int, Held] = {}
        self._watch: dict[int, tuple[int, int, int]] = {}  # slot addr -> (stamp, gen, first seen us)
        self._mutex = threading.RLock()
        #: (slot address, generation, owner) of hosts whose recovery we are running: their locks
        #: count as stale from the moment we decided they are dead
        self._recovering: set[tuple[int, int, str]] = set()
        #: called with the volume offset of every lock whose token moved under us
        self.on_stale_cache = None
        #: offsets of locks still ours on disk because giving them back failed (device errors)
        self.unreleased: set[int] = set()
        #: wait for a holder whose heartbeat stands still until its lease ends (then break its
        #: lock), rather than EBUSY after ``wait`` (:meth:`_silent_until`)
        self.wait_for_silent = True
        #: lock keeping (module docstring); 0 gives every lock back as soon as its user lets go
        self.keep_idle = 0.0
        self.keep_max = KEEP_MAX
        self.courtesy = COURTESY
        self.poll_max = POLL_MAX
        #: offset -> when its last user let go (µs), for the exclusive locks we keep unused
        self._kept: dict[int, int] = {}
        #: offset -> when we gave it back for having kept it ``keep_max`` (µs)
        self._yielded: dict[int, int] = {}
        #: called once before we wait for a lock another live host holds (group commit: the
        #: attachment commits its open batch, whose locks that host may be waiting for in turn)
        #: (True when it committed something)
        self.before_wait: Callable[[], bool] | None = None

    def keep_locks(self, idle: float, *, poll: float = POLL_BUSY) -> None:
        """Keep unused exclusive locks for ``idle`` seconds (0: never), polling busy locks at
        most every ``poll`` seconds (× jitter): see the module docstring for the bound."""
        self.keep_idle = idle
        self.poll_max = poll if idle > 0 else POLL_MAX

    # -- identity -----------------------------------------------------------------------------------

    def _me(self) -> tuple[int, int, str]:
        assert self.hb is not None
        return self.hb.addr, self.hb.generation, self.host.uuid

    def _is_me(self, hb_addr: int, hb_gen: int, owner: str) -> bool:
        addr, gen, uuid = self._me()
        return owner == uuid and hb_addr == addr and hb_gen == gen

    # -- liveness of other hosts -------------------------------------------------------------------------

    def holder_state(self, hb_addr: int, hb_gen: int, owner: str) -> str:
        """'self', 'alive', 'gone' (its incarnation left the slot) or 'dead' (lease expired)."""
        if self._is_me(hb_addr, hb_gen, owner):
            return "self"
        if (hb_addr, hb_gen, owner) in self._recovering:
            return "gone"
        geo = self.volume.geometry
        region_end = HEARTBEAT_REGION_OFFSET + geo.heartbeat_region_size
        misplaced = (hb_addr - HEARTBEAT_REGION_OFFSET) % geo.hb_slot_size
        if not HEARTBEAT_REGION_OFFSET <= hb_addr < region_end or misplaced:
            return "gone"  # the lock names no heartbeat slot: nobody can be holding it
        slot = read_slot(self.volume, (hb_addr - HEARTBEAT_REGION_OFFSET) // geo.hb_slot_size)
        hb = slot.hb
        if hb.state != HB_IN_USE or hb.owner != owner or hb.hbGen != hb_gen:
            return "gone"
        return self._watch_slot(slot)

    def _watch_slot(self, slot: SlotView) -> str:
        now = self.host.clock.monotonic_us()
        seen = self._watch.get(slot.addr)
        if seen is None or seen[0] != slot.hb.stamp or seen[1] != slot.hb.hbGen:
            self._watch[slot.addr] = (slot.hb.stamp, slot.hb.hbGen, now)
            return "alive"
        if now - seen[2] >= self.host.lease * 1_000_000:
            return "dead"
        return "alive"

    def _silent_until(self, holder: tuple[int, int, str] | None) -> int | None:
        """A holder whose heartbeat has not moved for two periods may be dead (a cut link, a
        crash): rather than EBUSY, wait until its lease runs out, when its lock is broken.
        Returns until when (monotonic µs), or None for a holder that renews."""
        period = self.host.heartbeat_period
        if holder is None or period <= 0 or not self.wait_for_silent:
            return None
        seen = self._watch.get(holder[0])
        if seen is None:
            return None
        period_us = int(period * 1_000_000)
        if self.host.clock.monotonic_us() - seen[2] < 2 * period_us:
            return None
        return seen[2] + int(self.host.lease * 1_000_000) + period_us

    def recover_host(self, slot: SlotView) -> bool:
        """A dead host: replay its journal, clear its slot (generation + 1), free its journal
        block.  Its locks are then stale and may be broken (esx-design.md 1.7).  False when it is
        left to another rescuer (or the slot changed): look again later."""
        hb = slot.hb
        addr, gen, uuid = self._me()
        if hb.replayHost not in (NULL_UUID, uuid) and self._rescuer_alive(hb):
            return False  # another live host is replaying it: leave it that host's job
        log.warning("host %s (slot %d) is dead: replaying its journal and clearing its slot", hb.owner, slot.slot)
        # mark the slot as being replayed by us (ATS, so two rescuers never both replay: the
        # other one sees our mark above, and our mark is what its ATS would have to match)
        replaying = Container(hb)
        replaying.replayHost = uuid
        replaying.replayHostHb = addr
        replaying.replayHostHbGen = gen
        image = Heartbeat.build(replaying)
        if not self.volume.device.compare_and_write(slot.addr, slot.raw, image):
            return False  # someone else is on it (or the host came back): look again later
        fence_incarnation(self.volume.device, incarnation(hb.owner, slot.addr, hb.hbGen))
        from vmfs.cluster.transaction import Transaction

        # Hold the journal block's cluster from the replay until the slot is clear: nobody can
        # take the block while some slot still names it.
        tx = Transaction(self.volume.device, None, self)
        dead = (slot.addr, hb.hbGen, hb.owner)
        self._recovering.add(dead)
        try:
            # Replay first, while the dead host's locks are all still in place: they decide
            # whether its last transaction may not have reached home (vmfs/journal.py).
            if hb.journalVolAddr:
                geo = self.volume.geometry
                size = journal_area(self.volume, hb.journalAddr)[1] if hb.journalAddr else geo.block_size
                area = JournalArea(hb.journalVolAddr, size)
                if not journal_is_ours_or_empty(self.volume, area):
                    raise UnsupportedError(
                        f"host {hb.owner} left a journal at 0x{hb.journalVolAddr:x} in a format we cannot replay"
                    )
                applied = replay_area(self.volume.device, area)
                if applied:
                    log.warning("replayed %d journal records of host %s", applied, hb.owner)
                self.volume.invalidate_caches()
            # Then free its journal block under the block's cluster lock, held until the slot no
            # longer names the block, so nobody can take the block while a slot still names it.
            if hb.journalAddr:
                c, r = journal_resource(self.volume, hb.journalAddr)
                self.allocators[journal_kind(self.volume)].free_if_used(tx, c, r)
                tx.commit(release=False)
            cleared = freed_slot(replaying, hb.hbGen + 1)
            if not self.volume.device.compare_and_write(slot.addr, image, Heartbeat.build(cleared)):
                # only another rescuer can have changed it (the dead host's own ATS expects its
                # image, which our mark replaced): it finishes the job, and we are not lost
                log.warning("heartbeat slot %d was taken over by another rescuer while we replayed it", slot.slot)
                return False
            self._watch.pop(slot.addr, None)
            return True
        finally:
            tx.release_locks()
            self._recovering.discard(dead)

    def _rescuer_alive(self, hb: Container) -> bool:
        """Is the host named as replaying ``hb``'s slot still in the slot it had then?  (A
        rescuer that died midway leaves its mark; its own slot then moves on.)"""
        geo = self.volume.geometry
        at = hb.replayHostHb
        if not HEARTBEAT_REGION_OFFSET <= at < HEARTBEAT_REGION_OFFSET + geo.heartbeat_region_size:
            return False
        view = read_slot(self.volume, (at - HEARTBEAT_REGION_OFFSET) // geo.hb_slot_size)
        return view.in_use and view.hb.owner == hb.replayHost and view.hb.hbGen == hb.replayHostHbGen

    def reap(self) -> list[int]:
        """Look at every other host's heartbeat; recover those whose lease ran out (their
        journal replayed, their slot cleared).  Returns the slots recovered."""
        recovered = []
        for slot in read_slots(self.volume, in_use_only=True):
            if not slot.in_use or self._is_me(slot.addr, slot.hb.hbGen, slot.hb.owner):
                continue
            if self._watch_slot(slot) == "dead":
                try:
                    with self.meta_lock:
                        if self.recover_host(slot):
                            recovered.append(slot.slot)
                except UnsupportedError as exc:
                    log.error("cannot recover slot %d: %s", slot.slot, exc)
        return recovered

    # -- acquire / release -------------------------------------------------------------------------------

    def acquire(self, offset: int, mode: int = LOCK_EXCLUSIVE, *, wait: float | None = None) -> tuple[Held, int]:
        """Take the lock at volume ``offset``; returns (held lock, token seen before we took it).

        Waits up to ``wait`` seconds (default: the manager's) for other hosts, breaking locks of
        dead ones, then raises BusyError."""
        if self.hb is not None:
            self.hb.check_writable()
        with self._mutex:
            held = self.held.get(offset)
            if held is not None:
                if held.mode == LOCK_EXCLUSIVE or held.mode == mode:
                    held.count += 1
                    self._kept.pop(offset, None)
                    return held, held.token
                if held.mode in SHARED_MODES and mode == LOCK_EXCLUSIVE:
                    return self._upgrade(held, wait)
        limit = self.wait if wait is None else wait
        clock = self.host.clock
        yielded = self._yielded.pop(offset, None)
        if yielded is not None:  # we kept it for keep_max: let a waiting host have its turn first
            pause = yielded + int(self.courtesy * 1_000_000) - clock.monotonic_us()
            if pause > 0:
                clock.sleep(pause / 1_000_000)
        deadline = clock.monotonic_us() + int(limit * 1_000_000)
        delay = 0.01
        before_wait = self.before_wait
        while True:
            got = self._try(offset, mode)
            if isinstance(got, tuple):
                return got
            if got == "retry":
                continue
            if before_wait is not None:
                hook, before_wait = before_wait, None
                if hook():
                    continue  # our batch committed, which took time: look again before pausing
            if clock.monotonic_us() >= deadline:
                until = self._silent_until(getattr(got, "holder", None))
                if until is None or clock.monotonic_us() >= until:
                    raise BusyError(f"lock at 0x{offset:x} is held by another host ({got})")
                deadline = until
            clock.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, self.poll_max)

    def _try(self, offset: int, mode: int):  # type: ignore[no-untyped-def]
        dev = self.volume.device
        raw = dev.read(offset, SECTOR)
        lock = parse_lock(raw)
        if lock.type >> 20 != 0x10C:
            raise CorruptError("lock block", offset, f"bad lock type 0x{lock.type:08x}")
        previous_token = lock.token
        holders = self._holders(lock)
        blocking = [h for h in holders if not self._is_me(*h)]
        if blocking and not (mode in SHARED_MODES and lock.mode == mode):
            for h in blocking:
                state = self.holder_state(*h)
                if state == "dead":
                    geo = self.volume.geometry
                    if self.recover_host(read_slot(self.volume, (h[0] - HEARTBEAT_REGION_OFFSET) // geo.hb_slot_size)):
                        return "retry"
                    return _Blocked(f"mode {lock.mode}, owner {h[2]}, being recovered", h)
                if state == "alive":
                    return _Blocked(f"mode {lock.mode}, owner {h[2]}", h)
            # every holder is gone: the lock is stale and is broken below
            lock = self._cleared(lock)
        elif blocking and mode in SHARED_MODES:
            live = [h for h in blocking if self.holder_state(*h) != "gone"]
            if len(live) >= MAX_HOLDERS:
                return f"{len(live)} hosts share it"
            lock = self._with_holders(lock, live)
        new = self._taken(lock, mode)
        image = build_lock(new, raw)
        if not dev.compare_and_write(offset, raw, image):
            return "retry"
        held = Held(offset, mode, image, new.token, taken_us=self.host.clock.monotonic_us())
        with self._mutex:
            self.held[offset] = held
        return held, previous_token

    def _upgrade(self, held: Held, wait: float | None) -> tuple[Held, int]:
        raw = self.volume.device.read(held.offset, SECTOR)
        lock = parse_lock(raw)
        others = [h for h in self._holders(lock) if not self._is_me(*h) and self.holder_state(*h) != "gone"]
        if others:
            raise BusyError(f"lock at 0x{held.offset:x} is shared with other hosts")
        new = self._taken(self._cleared(lock), LOCK_EXCLUSIVE)
        image = build_lock(new, raw)
        if not self.volume.device.compare_and_write(held.offset, raw, image):
            raise BusyError(f"lock at 0x{held.offset:x} changed while upgrading")
        held.mode = LOCK_EXCLUSIVE
        held.image = image
        held.token = new.token
        held._lock = None
        held.count += 1
        return held, lock.token

    def release(self, offset: int, *, keep: bool = True) -> None:
        """One user lets go; the last one gives the lock back, or keeps it unused (``keep``, an
        exclusive lock, keeping on and not yet held for ``keep_max``)."""
        with self._mutex:
            held = self.held.get(offset)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            if keep and self.keep_idle > 0 and held.mode == LOCK_EXCLUSIVE and offset not in self.unreleased:
                now = self.host.clock.monotonic_us()
                if not self._overdue(held, now):
                    held.count = 0
                    self._kept[offset] = now
                    return
                self._yielded[offset] = now
            self._kept.pop(offset, None)
            del self.held[offset]
        try:
            self._give_back(offset, held)
        except VmfsError:
            # the device failed under us (all paths down): the lock is still ours on disk; keep
            # knowing it, so the next transaction or the unmount gives it back
            with self._mutex:
                held.count = 0
                self.held.setdefault(offset, held)
                self.unreleased.add(offset)
            raise
        self.unreleased.discard(offset)

    def born_held(self, offset: int, raw: bytes) -> bytes | None:
        """The lock block ``raw`` (free) of an object being created in the open batch (group
        commit), made exclusively ours with no I/O: it reaches the disk with the batch already
        held, so a user of the new object takes it from memory instead of testing bytes the disk
        does not have yet.  Kept unused from the start, like any lock whose user let go, and given
        back the same way.  None when locks are not kept (the block is then created free)."""
        if self.keep_idle <= 0:
            return None
        new = self._taken(parse_lock(raw), LOCK_EXCLUSIVE)
        image = build_lock(new, raw)
        now = self.host.clock.monotonic_us()
        with self._mutex:
            self.held[offset] = Held(offset, LOCK_EXCLUSIVE, image, new.token, count=0, taken_us=now)
            self._kept[offset] = now
        return image

    def _overdue(self, held: Held, now_us: int) -> bool:
        """True once we have had ``held`` for ``keep_max`` since taking it: then it is given
        back, not kept, so a waiting host gets its turn (module docstring)."""
        return now_us - held.taken_us >= self.keep_max * 1_000_000

    def retry_releases(self) -> None:
        """Give back the locks whose release failed earlier (and that nobody took up again)."""
        for offset in sorted(self.unreleased):
            held = self.held.get(offset)
            if held is None or held.count > 0:
                self.unreleased.discard(offset)
                continue
            held.count = 1
            self.release(offset, keep=False)

    def sweep(self) -> None:
        """Give back the kept locks that have been unused for ``keep_idle`` or ours for
        ``keep_max`` (run periodically; the give-back is under the manager's mutex, so a
        transaction either takes a kept lock before or takes it anew after)."""
        if not self._kept and not self._yielded:
            return
        now = self.host.clock.monotonic_us()
        idle_us = int(self.keep_idle * 1_000_000)
        pending = self.volume.device.pending
        with self._mutex:
            for offset, since in list(self._yielded.items()):
                if now - since >= 2 * self.courtesy * 1_000_000:
                    del self._yielded[offset]
            for offset, since in list(self._kept.items()):
                held = self.held.get(offset)
                if held is None or held.count > 0:
                    del self._kept[offset]
                    continue
                overdue = self._overdue(held, now)
                if now - since < idle_us and not overdue:
                    continue
                if pending and pending.overlaps(offset, SECTOR):
                    # born held in the open batch (born_held): its block is not on disk yet, and
                    # giving it back would commit the batch under this mutex; the next sweep after
                    # the commit does it
                    continue
                del self._kept[offset]
                del self.held[offset]
                if overdue:
                    self._yielded[offset] = now
                try:
                    self._give_back(offset, held)
                except VmfsError as exc:
                    self.held.setdefault(offset, held)
                    self.unreleased.add(offset)
                    log.warning("giving back the kept lock at 0x%x failed (%s); retried later", offset, exc)

    @property
    def kept(self) -> int:
        """How many locks we keep unused right now."""
        return len(self._kept)

    def _give_back(self, offset: int, held: Held) -> None:
        if held.mode in SHARED_MODES:
            self._leave_shared(offset)
            return
        raw = self.volume.device.read(offset, SECTOR)
        if raw != held.image:
            if self.hb is not None and self.hb.lost is not None:
                return
            log.error("lock at 0x%x was changed by another host while we held it", offset)
            return
        lock = parse_lock(raw)
        new = self._cleared(lock)
        # ESXi keeps the last holder's heartbeat address, generation and token (section 5)
        new.hbAddr, new.hbGen, new.token = lock.hbAddr, lock.hbGen, lock.token
        self.volume.device.compare_and_write(offset, raw, build_lock(new, raw))

    def _leave_shared(self, offset: int) -> None:
        """Drop ourselves from a shared lock's holders; other holders may change it meanwhile,
        so retry the test-and-set on the current image."""
        for _ in range(100):
            raw = self.volume.device.read(offset, SECTOR)
            lock = parse_lock(raw)
            holders = self._holders(lock)
            if not any(self._is_me(*h) for h in holders):
                return
            remaining = [h for h in holders if not self._is_me(*h)]
            new = self._with_holders(lock, remaining) if remaining else self._cleared(lock)
            if self.volume.device.compare_and_write(offset, raw, build_lock(new, raw)):
                return
        log.error("could not leave the shared lock at 0x%x", offset)

    def forget(self, offset: int) -> None:
        """The object under this lock was freed (its whole block rewritten): nothing to release."""
        with self._mutex:
            self.held.pop(offset, None)
            self._kept.pop(offset, None)
            self._yielded.pop(offset, None)

    def holds(self, offset: int) -> int | None:
        held = self.held.get(offset)
        return held.mode if held is not None else None

    def release_all(self) -> None:
        """Give back every lock (unmount); a failure stops at the first, the rest stay known."""
        for offset in list(self.held):
            held = self.held.get(offset)
            if held is not None:
                held.count = 1
                self.release(offset, keep=False)

    def release_incarnation(self, hb_addr: int, hb_gen: int, owner: str, offsets: list[int]) -> list[int]:
        """Let go of every lock at ``offsets`` that an earlier incarnation of this host (same
        owner, that slot and generation) still holds on disk; returns the offsets let go.

        Run when we re-attach after our own unclean stop: nobody else can hold a lock in that
        incarnation's name, and leaving them for other hosts to break means a first EBUSY and
        an fsck finding for locks we know are ours to drop (esx-design.md 1.7, step 4)."""
        old = (hb_addr, hb_gen, owner)
        dropped: list[int] = []
        for offset, first in _read_sectors(self.volume.device, offsets):
            raw = first
            for _ in range(100):
                if raw is None:
                    raw = self.volume.device.read(offset, SECTOR)
                lock = parse_lock(raw)
                if lock.type >> 20 != 0x10C:
                    break  # no lock block here (a freed object): nothing to let go
                holders = self._holders(lock)
                if old not in holders:
                    break
                remaining = [h for h in holders if h != old]
                if lock.mode in SHARED_MODES and remaining:
                    new = self._with_holders(lock, remaining)
                else:
                    new = self._cleared(lock)
                    new.hbAddr, new.hbGen, new.token = lock.hbAddr, lock.hbGen, lock.token
                if self.volume.device.compare_and_write(offset, raw, build_lock(new, raw)):
                    dropped.append(offset)
                    break
                raw = None
        return dropped

    # -- images ----------------------------------------------------------------------------------------

    @staticmethod
    def _holders(lock: Container) -> list[tuple[int, int, str]]:
        if lock.mode == LOCK_FREE:
            return []
        if lock.mode in SHARED_MODES:
            n = min(lock.numHolders, MAX_HOLDERS)
            return [(h.hbAddr, h.hbGen, h.owner) for h in fast(LockHolders).parse(lock.holders)[:n]]
        return [(lock.hbAddr, lock.hbGen, lock.owner)]

    @staticmethod
    def _cleared(lock: Container) -> Container:
        new = Container(lock)
        new.mode = LOCK_FREE
        new.owner = NULL_UUID
        new.numHolders = 0
        new.holders = NO_HOLDERS
        return new

    def _with_holders(self, lock: Container, holders: list[tuple[int, int, str]]) -> Container:
        new = Container(lock)
        slots = [Container(hbAddr=a, hbGen=g, owner=o) for a, g, o in holders]
        new.numHolders = len(slots)
        padding = [Container(hbAddr=0, hbGen=0, owner=NULL_UUID)] * (MAX_HOLDERS - len(slots))
        new.holders = fast(LockHolders).build(slots + padding)
        return new

    def _taken(self, lock: Container, mode: int) -> Container:
        addr, gen, uuid = self._me()
        new = Container(lock)
        new.token = (lock.token + 1) & 0xFFFFFFFFFFFFFFFF
        new.hbAddr = addr
        new.hbGen = gen
        new.mtime = (lock.mtime + 1) & 0xFFFFFFFFFFFFFFFF
        if mode in SHARED_MODES:
            holders = self._holders(lock) if lock.mode == mode else []
            holders = [h for h in holders if not self._is_me(*h)] + [(addr, gen, uuid)]
            new = self._with_holders(new, holders)
            new.mode = mode
            new.owner = NULL_UUID
        else:
            new.mode = LOCK_EXCLUSIVE
            new.owner = uuid
            new.numHolders = 0
        return new


#: largest read that fetches several lock sectors at once (lock sites cluster in the metadata)
_SITES_READ = 1 << 20


def _read_sectors(device: BlockDevice, offsets: list[int]) -> Iterator[tuple[int, bytes]]:
    """Each offset with the sector there, read in as few commands as the offsets allow (one per
    run of sites within :data:`_SITES_READ`): on network storage one read per site costs a round
    trip each, thousands after a crash."""
    order = sorted(set(offsets))
    i = 0
    while i < len(order):
        start = order[i]
        j = i
        while j + 1 < len(order) and order[j + 1] + SECTOR - start <= _SITES_READ:
            j += 1
        data = device.read(start, order[j] + SECTOR - start)
        for off in order[i : j + 1]:
            yield off, data[off - start : off - start + SECTOR]
        i = j + 1


def fd_lock_sites(volume: Volume) -> list[int]:
    """Volume offsets of the lock blocks of every file descriptor in use (vmfs-format.md 5)."""
    from vmfs.ondisk import resource as R

    fds = volume.resources[R.RES_FD]
    return [fds.volume_offset(c, r) for c in range(fds.num_clusters) for r in fds.read_cluster(c).used_resources()]


def cluster_lock_sites(volume: Volume) -> list[int]:
    """Volume offsets of the lock blocks in the header of every resource cluster."""
    return [
        res.reader.volume_offset(res.cluster_header_offset(c))
        for res in volume.resources.values()
        for c in range(res.num_clusters)
    ]


def lock_sites(volume: Volume) -> list[int]:
    """Volume offsets of every lock block a host may hold: the file descriptors in use and the
    header of every resource cluster."""
    return fd_lock_sites(volume) + cluster_lock_sites(volume)


def journal_is_ours_or_empty(volume: Volume, area: JournalArea) -> bool:
    """True when the journal at ``area`` is in our format or holds no committed transaction.

    An all-zero first sector means "nothing committed" in both formats: ours clears its header on
    every clean unmount, and ESXi's VMFS5 journal (docs/SPEC.md "ESXi journal") keeps its
    records from 0x350 on behind a header area that is zero once they have been applied."""
    from vmfs.ondisk.journal import JOURNAL_MAGIC

    head = volume.device.read(area.offset, 512)
    if int.from_bytes(head[:8], "little") == JOURNAL_MAGIC:
        return True
    return not any(head)


__all__ = [
    "LOCK_EXCLUSIVE",
    "LOCK_MULTI_WRITER",
    "LOCK_READ_ONLY",
    "Held",
    "LockManager",
    "cluster_lock_sites",
    "fd_lock_sites",
    "lock_sites",
]
