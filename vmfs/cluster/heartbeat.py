"""Host heartbeats (vmfs-format.md 4, esx-design.md 1.3).

A host that mounts a volume read-write claims one slot of the heartbeat region with an atomic
test-and-set, renews the slot's ``stamp`` every period (again with ATS, comparing against the
image it last wrote), and releases it on clean unmount.  A renewal that miscompares means another
host cleared or took the slot (it judged us dead): from then on this host must not write.  A
host that cannot renew within the lease stops writing too; both show up as ``VolumeLostError``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from construct import Container

from vmfs.errors import BusyError, FencedError, NoSpaceError, VmfsError, VolumeLostError
from vmfs.ondisk.common import NULL_UUID, encode_name, fast
from vmfs.ondisk.heartbeat import HB_FREE, HB_IN_USE, Heartbeat
from vmfs.volume.slots import SlotView, read_slot, read_slots

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vmfs.cluster.host import HostIdentity
    from vmfs.device.base import BlockDevice
    from vmfs.volume.volume import Volume

log = logging.getLogger("vmfs.cluster.heartbeat")

#: lockImpl value ESXi writes (both samples); meaning unknown (vmfs-format.md 4.2)
LOCK_IMPL = 3
#: seconds between renewal attempts while the device fails (instead of a whole period)
RETRY_AFTER_FAILURE = 0.5


def incarnation(owner: str, slot_addr: int, generation: int) -> str:
    """The name of one claim of a slot: what a device fences (:meth:`BlockDevice.fence`)."""
    return f"{owner}.{slot_addr:x}.{generation}"


def fence_incarnation(device: BlockDevice, gone: str) -> None:
    """Cut incarnation ``gone`` off every device under ``device`` (RBD: blocklist its client)
    before anything of it is replayed, broken or reused, so that no write it sent can still land
    afterwards; then forget its announcement.  A device that cannot fence is logged, not fatal:
    the host is dead either way, and refusing to recover it would stall every other host."""
    for dev in device.leaves():
        try:
            if dev.fence(gone):
                log.warning("fenced %s on %s", gone, dev.name)
                dev.retire(gone)
        except VmfsError as exc:
            log.error("could not fence %s: %s; a write it sent may still land", gone, exc)


def freed_slot(hb: Container, generation: int) -> Container:
    """A slot given back: free state, new generation, no owner, no journal, nobody replaying;
    stamp, IP and driver version stay (as ESXi leaves a released slot, vmfs-format.md 4.2)."""
    new = Container(hb)
    new.state = HB_FREE
    new.hbGen = generation
    new.owner = NULL_UUID
    new.journalAddr = 0
    new.journalVolAddr = 0
    new.replayHost = NULL_UUID
    new.replayHostHb = 0
    new.replayHostHbGen = 0
    return new


class HeartbeatManager:
    def __init__(self, volume: Volume, host: HostIdentity) -> None:
        self.volume = volume
        self.host = host
        self.slot: int | None = None
        self.addr = 0
        self.generation = 0
        self._image = b""
        self._last_renew_us = 0
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: called after every renewal: watches other hosts and recovers dead ones
        self.reaper = None
        #: the devices whose writes can land late (network storage), and by how much at most
        self._late = [d for d in volume.device.leaves() if d.late_write_bound > 0]
        self.write_bound = max((d.late_write_bound for d in self._late), default=0.0)
        #: the last beat failed on the device: try again soon rather than a period later
        self._failing = False

    # -- state ------------------------------------------------------------------------------------

    @property
    def lost(self) -> str | None:
        """Why this host may no longer write, or None.

        Other hosts may break our locks a lease after our last renewal was sent.  A write of ours
        can still land up to the device's ``late_write_bound`` after we issue it, so on network
        storage we stop issuing writes that much earlier: everything we sent has landed, or never
        will, before anyone may count us dead."""
        if self._lost is None and self.slot is not None:
            age = (self.host.clock.monotonic_us() - self._last_renew_us) / 1e6
            if age > self.host.lease - self.write_bound:
                early = f", less {self.write_bound:g} s for late writes" if self.write_bound else ""
                self._lost = f"heartbeat not renewed for {age:.1f} s (lease {self.host.lease:g} s{early})"
        return self._lost

    @property
    def incarnation(self) -> str:
        return incarnation(self.host.uuid, self.addr, self.generation)

    def _guard(self) -> str | None:
        """The network devices' write guard (:attr:`vmfs.device.base.BlockDevice.write_guard`)."""
        reason = self.lost
        return None if reason is None else f"volume lost: {reason}; this host stopped writing"

    def _guard_writes(self, on: bool) -> None:
        for dev in self._late:
            if on:
                dev.write_guard = self._guard
            elif dev.write_guard == self._guard:
                dev.write_guard = None

    def check_writable(self) -> None:
        reason = self.lost
        if reason is not None:
            raise VolumeLostError(f"volume lost: {reason}; this host stopped writing")

    # -- images -------------------------------------------------------------------------------------

    def _image_for(self, old: Container, *, state: int, gen: int, journal: tuple[int, int] | None) -> bytes:
        d = self.volume.descriptor
        hb = Container(old)
        hb.state = state
        hb.addr = old.addr
        hb.hbGen = gen
        hb.stamp = self.host.clock.monotonic_us()
        if state == HB_IN_USE:
            hb.owner = self.host.uuid
            hb.driverMajor = d.majorVersion
            hb.driverMinor = d.minorVersion
            hb.lockImpl = LOCK_IMPL
            hb.ip = encode_name(self.host.ip[:45], 46)
            if journal is not None:
                hb.journalAddr, hb.journalVolAddr = journal
        else:
            hb = freed_slot(hb, gen)
        hb.replayHost = NULL_UUID
        hb.replayHostHb = 0
        hb.replayHostHbGen = 0
        return fast(Heartbeat).build(hb)

    # -- claim / renew / release -------------------------------------------------------------------------

    def claim(
        self, *, reuse_own: bool = True, dead: tuple[int, int] | None = None, watch: bool = True
    ) -> SlotView | None:
        """Take a slot.  Returns the previous view of our own stale slot when one was reused (its
        journal must be replayed by the caller), else None.  ``dead`` is a (slot, generation) of
        ours whose owner is known to be dead; with ``watch``, any other slot in use under our
        UUID is watched first (:meth:`_refuse_if_renewed`)."""
        views = read_slots(self.volume)
        if reuse_own and watch and self._refuse_if_renewed(views, dead):
            views = read_slots(self.volume)
        own = [v for v in views if v.in_use and v.owner == self.host.uuid] if reuse_own else []
        for view in self._candidates(own, [v for v in views if not v.in_use]):
            if view in own:
                self._fence_previous(view)
            new = self._image_for(view.hb, state=HB_IN_USE, gen=view.hb.hbGen + 1, journal=None)
            sent = self.host.clock.monotonic_us()  # the lease counts from here (see _swap)
            if self.volume.device.compare_and_write(view.addr, view.raw, new):
                with self._lock:
                    self.slot = view.slot
                    self.addr = view.addr
                    self.generation = view.hb.hbGen + 1
                    self._image = new
                    self._last_renew_us = sent
                    self._lost = None
                self._guard_writes(True)
                try:
                    for dev in self.volume.device.leaves():
                        dev.announce(self.incarnation)
                except BaseException:
                    self.release()
                    raise
                log.info("claimed heartbeat slot %d (gen %d)", view.slot, self.generation)
                return view if view in own else None
        if any(v.in_use for v in views) and all(v.in_use for v in views):
            raise NoSpaceError("every heartbeat slot is in use")
        raise BusyError("heartbeat slots changed under us; try again")

    def _fence_previous(self, view: SlotView) -> None:
        """Our own stale slot: the process that had it is dead, but what its client had sent may
        still be on the way (RBD); fence that incarnation before we write as its successor."""
        fence_incarnation(self.volume.device, incarnation(self.host.uuid, view.addr, view.hb.hbGen))

    @staticmethod
    def _candidates(own: list[SlotView], free: list[SlotView]) -> Iterator[SlotView]:
        """Our own stale slots, then free slots that name their own address (a slot ever written);
        only if there are none of either, any free slot.  Lazy, so a claim parses the few slots it
        tries, not all 2,048."""
        yield from own
        found = bool(own)
        for view in free:
            if view.hb.addr == view.addr:
                found = True
                yield view
        if not found:
            yield from free

    def _refuse_if_renewed(self, views: list[SlotView], dead: tuple[int, int] | None) -> bool:
        """A slot in use under our own UUID that no local lock explains may belong to a live
        writer: another process of this machine that took no lock file (another container,
        another lock directory) or a machine with a cloned machine-id.  Reusing it would share
        its journal and locks, so watch it for a lease and a period, as ESX watches a host's
        slot before declaring it dead; BusyError if it moves while still ours.  True if watched."""
        suspects = [v for v in views if v.in_use and v.owner == self.host.uuid and (v.slot, v.hb.hbGen) != dead]
        if not suspects:
            return False
        clock = self.host.clock
        watch = self.host.lease + max(self.host.heartbeat_period, 0.0)
        log.warning("heartbeat slot(s) %s are in use by our host UUID %s and no process of this machine is known "
                    "to have left them: watching them for %g s before reusing them",
                    ", ".join(str(v.slot) for v in suspects), self.host.uuid, watch)
        deadline = clock.monotonic_us() + int(watch * 1_000_000)
        step = min(0.5, max(self.host.heartbeat_period / 4, 0.05))
        while suspects and clock.monotonic_us() < deadline:
            clock.sleep(step)
            still = []
            for view in suspects:
                now = read_slot(self.volume, view.slot)
                if now.raw == view.raw:
                    still.append(view)
                elif now.in_use and now.owner == self.host.uuid:
                    raise BusyError(
                        f"heartbeat slot {view.slot} of host {self.host.uuid} is being renewed by another writer "
                        "(another process or a machine with the same machine-id); use another host UUID"
                    )
            suspects = still
        return True

    def set_journal(self, journal_addr: int, journal_vol_addr: int) -> None:
        with self._lock:
            self.check_writable()
            old = fast(Heartbeat).parse(self._image)
            new = self._image_for(old, state=HB_IN_USE, gen=self.generation, journal=(journal_addr, journal_vol_addr))
            self._swap(new)

    def _swap(self, new: bytes) -> None:
        # The lease counts from when the new stamp was *sent*: another host may see it land at
        # once and start its count then, while our answer is stuck on the way back (a network
        # path that fails after the write reached the storage).  Counting from the answer would
        # let us write past the moment the others may break our locks.
        sent = self.host.clock.monotonic_us()
        try:
            written = self.volume.device.compare_and_write(self.addr, self._image, new)
        except FencedError:
            self._lost = "another host fenced this one off the storage"
            raise VolumeLostError(f"volume lost: {self._lost}") from None
        if not written:
            self._lost = "our heartbeat slot was changed by another host"
            raise VolumeLostError(f"volume lost: {self._lost}")
        self._image = new
        self._last_renew_us = sent

    def renew(self) -> None:
        with self._lock:
            if self.slot is None:
                return
            self.check_writable()
            old = fast(Heartbeat).parse(self._image)
            old.stamp = self.host.clock.monotonic_us()
            self._swap(fast(Heartbeat).build(old))

    def release(self) -> None:
        self.stop()
        with self._lock:
            if self.slot is None:
                return
            if self._lost is None:
                for dev in self.volume.device.leaves():
                    try:
                        dev.retire(self.incarnation)
                    except VmfsError as exc:
                        log.warning("%s", exc)
                old = fast(Heartbeat).parse(self._image)
                new = self._image_for(old, state=HB_FREE, gen=self.generation + 1, journal=None)
                try:
                    self._swap(new)
                except VolumeLostError:
                    log.warning("heartbeat slot %d was taken over before release", self.slot)
            self.slot = None
            self._guard_writes(False)

    # -- renewal thread ----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Renew when a period has passed (simulated time drives this instead of a thread)."""
        if self.slot is None or self._lost is not None:
            return
        period_us = int(self.host.heartbeat_period * 1_000_000)
        if self.host.clock.monotonic_us() - self._last_renew_us >= period_us:
            self._beat()

    def _beat(self) -> bool:
        """One period: renew our slot, then look after the other hosts.  False once lost."""
        try:
            self.renew()
            self._failing = False
            if self.reaper is not None:
                self.reaper()
        except VolumeLostError as exc:
            log.error("%s", exc)
            return False
        except VmfsError as exc:
            # the device failed (all paths down, a cut link): keep trying, soon, since a lease
            # shortened for late writes leaves room for few misses; if it stays away past the
            # lease, this host loses the volume (``lost``) as it must
            self._failing = True
            log.warning("heartbeat renewal failed: %s", exc)
        return True

    def start(self) -> None:
        from vmfs.cluster.host import ManualClock

        if isinstance(self.host.clock, ManualClock):
            if self.tick not in self.host.clock.listeners:
                self.host.clock.listeners.append(self.tick)
            return
        if self._thread is not None or self.host.heartbeat_period <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vmfs-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the slot stays claimed until released)."""
        listeners = getattr(self.host.clock, "listeners", None)
        if listeners is not None and self.tick in listeners:
            listeners.remove(self.tick)
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def _run(self) -> None:
        retry = min(self.host.heartbeat_period, RETRY_AFTER_FAILURE)
        while not self._stop.wait(retry if self._failing else self.host.heartbeat_period):
            if self.volume.closed:
                return
            try:
                if not self._beat():
                    return
            except Exception:  # pragma: no cover - keep the renewal alive through transient I/O errors
                log.exception("heartbeat renewal failed")
