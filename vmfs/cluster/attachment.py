"""One host's read-write attachment to a volume: identity, heartbeat, locks, journal, allocators.

A :class:`~vmfs.volume.volume.Volume` is the read side (descriptor, resource files, caches); what
makes a host a *writer* of it lives here, in one object made by one call and ended by one:

- open (:meth:`HostAttachment.open`, or the constructor on an open volume): take this machine's
  lock for our host identity on the volume (:mod:`vmfs.cluster.identitylock`: one process per
  identity), claim a heartbeat slot; if the slot was our own from an unclean stop, replay its
  journal and keep its journal block, else allocate a journal block; record it in the slot.
- close (:meth:`HostAttachment.close`): flush what the writers above deferred, empty the journal,
  release the slot, free the journal block, and only then let go of the identity lock.

A crash at any point leaves at worst one leaked journal block, which vmfs-fsck reclaims.  Two
attachments with different host identities on one device behave as two processes do: they
share nothing but the disk (the volume object, its caches and locks are per attachment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator

from vmfs.cluster.alloc import Allocators
from vmfs.cluster.batch import PendingSectors, size_bound
from vmfs.cluster.grow import GROWABLE, grow
from vmfs.cluster.heartbeat import HeartbeatManager
from vmfs.cluster.host import HostIdentity, ManualClock
from vmfs.cluster.identitylock import IdentityLock
from vmfs.cluster.journal import Journal, JournalArea, decode_transaction, replay_area
from vmfs.cluster.locks import KEEP_IDLE, LockManager, cluster_lock_sites, fd_lock_sites
from vmfs.cluster.transaction import Transaction
from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError, FencedError, ReadOnlyError, UnsupportedError, VmfsError, VolumeLostError
from vmfs.ondisk import resource as R
from vmfs.ondisk.journal import JOURNAL_HEADER_SIZE
from vmfs.volume.filedesc import FileDescriptor
from vmfs.volume.journalblock import journal_address, journal_area, journal_kind, journal_resource
from vmfs.volume.slots import SlotView, read_slot
from vmfs.volume.volume import Volume

log = logging.getLogger("vmfs.cluster.attachment")

#: Versions a host may open read-write.
WRITABLE_VERSIONS = (5, 6)


def _check_vmfs6_writable(volume: Volume) -> None:
    """VMFS6 is written only where every large file block is converted into a cluster of small
    ones (what vmfs-mkfs makes, and the real sample): the state of a free LFB, and of the SFB
    cluster header slot of an unconverted one, is not known (vmfs-format.md 6.4, 6.5 [U])."""
    lfb = volume.resources.get(R.RES_LFB)
    sfb = volume.resources.get(R.RES_FB)
    if lfb is None or sfb is None or sfb.parent is None:
        raise UnsupportedError(f"{volume.device.name}: VMFS6 volume without an LFB/SFB .fbb.sf")
    converted = lfb.header.numResourcesLo and sfb.header.convertedClusters
    if converted != lfb.num_resources or sfb.num_resources != volume.device.size // volume.geometry.block_size:
        raise UnsupportedError(
            f"{volume.device.name}: read-write access to this VMFS6 volume is not supported: "
            f"{lfb.num_resources - sfb.header.convertedClusters} of its {lfb.num_resources} large file blocks "
            "are not converted into small ones"
        )


class HostAttachment:
    """A volume opened read-write by one host.  Every write goes through one of these."""

    def __init__(self, volume: Volume, host: HostIdentity | None = None, *, journaling: bool = True) -> None:
        """Attach ``host`` (default: this machine's stable identity) to an open, writable
        ``volume``.  On failure nothing stays attached and the volume is left open."""
        if volume.readonly:
            raise ReadOnlyError("volume is mounted read-only")
        if volume.geometry.version not in WRITABLE_VERSIONS:
            raise UnsupportedError(
                f"{volume.device.name}: read-write access to {volume.version_string} is not supported "
                "(VMFS5 and VMFS6 only)"
            )
        if volume.geometry.vmfs6:
            _check_vmfs6_writable(volume)
        self.volume = volume
        self.host = host if host is not None else HostIdentity()
        #: False only for measurements: metadata then goes straight home, not crash-safe
        self.journaling = journaling
        #: serialises this host's metadata changes (FUSE calls arrive on several threads)
        self.meta_lock = threading.RLock()
        self.allocators = Allocators(volume, self.host.uuid)
        self.heartbeat = HeartbeatManager(volume, self.host)
        self.locks: LockManager | None = None
        self.journal: Journal | None = None
        self.journal_addr = 0
        self.identity_lock: IdentityLock | None = None
        #: volume offsets of the FDs our previous incarnation still had locked when it stopped
        #: uncleanly (files open at the crash); the writers above reclaim what it had unlinked
        self.left_open: set[int] = set()
        #: run at close before the journal is emptied (writers above flush what they deferred)
        self.flush_hooks: list[Callable[[], None]] = []
        self.closed = False
        self._closing = False
        #: a transaction whose commit the device cut after its journal record (its locks kept)
        self._unfinished: Transaction | None = None
        #: caches could not be re-read after a failure (the device was away)
        self._caches_stale = False
        #: group commit (vmfs.cluster.batch): seconds an open batch may wait (0: every
        #: transaction commits on its own), the batch, when it opened (monotonic µs), its sectors
        self.commit_interval = 0.0
        self._batch: Transaction | None = None
        self._batch_since_us = 0
        self._pending: PendingSectors | None = None
        #: how many batches committed and how many transactions they held (statistics, tests)
        self.batches_committed = 0
        self.batched_transactions = 0
        self._batch_count = 0
        #: gives back the locks kept unused (vmfs.cluster.locks): a thread, or the manual clock
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()
        volume.bind_writer(self)
        try:
            self._attach()
        except BaseException:
            volume.unbind_writer(self)
            raise

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        paths: list[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        host: HostIdentity | None = None,
        journaling: bool = True,
    ) -> HostAttachment:
        """Open the volume on image files or block devices (all extents) and attach ``host``."""
        volume = Volume.open(paths, readonly=False)  # type: ignore[arg-type]
        return cls._on(volume, host, journaling)

    @classmethod
    def from_devices(
        cls, devices: list[BlockDevice], *, host: HostIdentity | None = None, journaling: bool = True
    ) -> HostAttachment:
        """Attach ``host`` to the volume on already-open devices (memory devices of simulations)."""
        return cls._on(Volume.from_devices(devices), host, journaling)

    @classmethod
    def _on(cls, volume: Volume, host: HostIdentity | None, journaling: bool) -> HostAttachment:
        try:
            return cls(volume, host, journaling=journaling)
        except BaseException:
            volume.close()
            raise

    def _attach(self) -> None:
        volume, host, hb = self.volume, self.host, self.heartbeat
        identity = IdentityLock.acquire(volume, host.uuid)  # BusyError while another process writes as us
        self.identity_lock = identity
        try:
            # Storage that is no file (memory devices of simulations) is reachable from this process
            # only: a slot of ours in use there was left by an earlier open, nobody can renew it.
            previous = hb.claim(dead=identity.dead_slot if identity is not None else None, watch=identity is not None)
            if identity is not None:
                identity.update(slot=hb.slot, generation=hb.generation)
        except BaseException:
            if identity is not None:
                identity.give_up()
            raise
        self.locks = LockManager(volume, hb, host, self.allocators, self.meta_lock)
        hb.reaper = self.locks.reap
        if volume.geometry.vmfs6:
            self.allocators.growable = GROWABLE
            self.allocators.grower = lambda tx, kind: grow(volume, self.allocators, tx, kind, self.lock_fd, self.put_fd)
        try:
            journal_addr = 0
            found = None
            if previous is not None and previous.hb.journalAddr:
                journal_addr = previous.hb.journalAddr
                area = JournalArea(previous.journal_vol_addr, journal_area(volume, journal_addr)[1])
                found = decode_transaction(volume.device.read(area.offset, area.size), area.size)
                applied = replay_area(volume.device, area)
                if applied:
                    log.warning("replayed %d records of our own journal after an unclean stop", applied)
                    volume.invalidate_caches()
            if previous is not None:
                self._release_leftover_locks(previous, found[2] if found is not None else [])
            elif identity is not None and identity.dead_slot is not None:
                self._release_recovered_incarnation(*identity.dead_slot)
            if journal_addr:
                area = JournalArea(*journal_area(volume, journal_addr))
                volume.device.write(area.offset, bytes(JOURNAL_HEADER_SIZE))
                hb.set_journal(journal_addr, area.offset)
            else:
                # Under the cluster's lock: pick the block, empty it, name it in our slot, and only
                # then mark it used.  A crash in between leaves a slot naming a free block (recovery
                # frees only what is used), never a used block nobody names.
                tx = Transaction(volume.device, None, self.locks)
                ((c, r),) = self.allocators[journal_kind(volume)].allocate(tx, 1)
                journal_addr = journal_address(volume, c, r)
                area = JournalArea(*journal_area(volume, journal_addr))
                try:
                    volume.device.write(area.offset, bytes(JOURNAL_HEADER_SIZE))
                    hb.set_journal(journal_addr, area.offset)
                    tx.commit()
                finally:
                    tx.release_locks()
            self.journal = Journal(volume.device, area, host.uuid)
            self.journal_addr = journal_addr
            hb.start()
            self._start_keeping()
        except BaseException as exc:
            try:
                hb.release()
            finally:
                if identity is not None:
                    identity.release(f"failed to open: {exc}", slot_released=hb.slot is None)
            raise

    def _start_keeping(self) -> None:
        """Lock keeping as the host identity asks; the sweeps run four times per idle interval,
        from a thread under a real clock and from the clock's listeners under a manual one."""
        assert self.locks is not None
        manual = isinstance(self.host.clock, ManualClock)
        keep = self.host.keep_locks
        idle = (0.0 if manual else KEEP_IDLE) if keep is None else keep
        batching = self.commit_interval > 0
        if idle <= 0 and not batching:
            return
        if idle > 0:
            self.locks.keep_locks(idle)
        if manual:
            listeners = self.host.clock.listeners  # type: ignore[attr-defined]
            for work in ([self.locks.sweep] if idle > 0 else []) + ([self._commit_due] if batching else []):
                if work not in listeners:
                    listeners.append(work)
            return
        if self._keeper is not None:
            return
        period = min([idle / 4] * (idle > 0) + [self.commit_interval / 2] * batching)
        self._keeper_stop.clear()
        self._keeper = threading.Thread(target=self._keep, args=(period, idle > 0), name="vmfs-lock-keeper",
                                        daemon=True)
        self._keeper.start()

    def _keep(self, interval: float, keeping: bool) -> None:
        """The keeper thread: gives back idle kept locks and commits a batch that waited enough."""
        locks = self.locks
        assert locks is not None
        while not self._keeper_stop.wait(interval):
            if self.closed or self.volume.closed:
                return
            try:
                self._commit_due()
                if keeping:
                    locks.sweep()
            except Exception:  # pragma: no cover - keep sweeping through transient errors
                log.exception("giving back kept locks failed")

    def _stop_keeping(self) -> None:
        """No more sweeps, and from now on every lock goes back as its user lets go (the locks
        kept so far stay ours: given back by release_all or the next sweeps, or left on disk by
        a crash)."""
        if self.locks is not None:
            self.locks.keep_locks(0)
        listeners = getattr(self.host.clock, "listeners", None)
        if self.locks is not None and listeners is not None:
            for work in (self.locks.sweep, self._commit_due):
                if work in listeners:
                    listeners.remove(work)
        self._keeper_stop.set()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=10)

    def stop_background(self) -> None:
        """Stop this attachment's threads (heartbeat renewal, lock keeper) before a fork, which
        keeps no thread; :meth:`start_background` in the process that goes on starts them again."""
        self.heartbeat.stop()
        self._stop_keeping()

    def start_background(self) -> None:
        self.heartbeat.start()
        self._start_keeping()

    def _release_leftover_locks(self, previous: SlotView, journaled: list[int]) -> None:
        """Our previous incarnation's locks (the files it had open, the clusters of a transaction
        it was in) are still on disk in its name: let them all go once its journal is replayed,
        so none outlives the crash (fsck finds nothing, no host has to wait to break one)."""
        self._release_incarnation(previous.addr, previous.hb.hbGen, previous.hb.owner, journaled,
                                  "let go of %d lock(s) our previous incarnation held")

    def _release_incarnation(self, slot_addr: int, generation: int, owner: str, extra_sites: list[int],
                             message: str) -> None:
        """Let go of every lock (of a file, of a cluster, and ``extra_sites``) still in the name
        of one incarnation of ours; the files among them were left open (``left_open``)."""
        assert self.locks is not None
        fd_sites = set(fd_lock_sites(self.volume))
        sites = sorted(fd_sites | set(cluster_lock_sites(self.volume)) | set(extra_sites))
        dropped = self.locks.release_incarnation(slot_addr, generation, owner, sites)
        if dropped:
            log.warning(message, len(dropped))
        self.left_open = set(dropped) & fd_sites

    def _release_recovered_incarnation(self, slot: int, generation: int) -> None:
        """Our previous incarnation on this machine stopped without giving its locks back and
        another host has since recovered it (replayed its journal, cleared its slot): a host
        whose link was cut for longer than its lease, or one that crashed and was found dead.
        Its locks are stale by VMFS' rules; let go of them now rather than leave an EBUSY wait
        and an fsck finding for each.  Only locks still in that very incarnation's name change
        (by ATS), so nothing another host took since is touched."""
        geo = self.volume.geometry
        if not 0 <= slot < geo.heartbeat_region_size // geo.hb_slot_size:
            return
        view = read_slot(self.volume, slot)
        if view.in_use and view.owner == self.host.uuid and view.hb.hbGen == generation:
            return  # not recovered: the claim found and handled it as ours
        self._release_incarnation(view.addr, generation, self.host.uuid, [],
                                  "let go of %d lock(s) our previous incarnation held when another host recovered it")

    # -- what the volume's caches ask (vmfs.volume.volume.VolumeWriter) ------------------------------

    def holds_lock(self, vol_offset: int) -> bool:
        return self.locks is not None and self.locks.holds(vol_offset) is not None

    def now_us(self) -> int:
        return self.host.clock.monotonic_us()

    def caches_dropped(self) -> None:
        self.allocators.reset()

    # -- metadata transactions ----------------------------------------------------------------------------

    def check_writable(self) -> None:
        if self.closed or self.volume.closed:
            raise ReadOnlyError("volume is closed")
        self.heartbeat.check_writable()

    def nothing_to_recover(self) -> bool:
        """Writable (raises as :meth:`check_writable` otherwise) with no earlier device failure
        waiting to be repaired (a cut commit to redo, locks to give back, caches to re-read):
        data may then go to blocks a file already owns without a transaction of its own."""
        self.check_writable()
        journal = self.journal
        return not (self._caches_stale or self._unfinished is not None
                    or (journal is not None and journal.pending)
                    or (self.locks is not None and self.locks.unreleased))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Collect metadata writes; commit through the journal on success, forget them (and every
        cache that may hold their effects) on failure.

        A device that fails under a commit (all paths down, I/O errors) may leave its record in
        the journal and its home writes cut.  Then the transaction keeps its locks, which guard
        the redo, and before anything else is written (the next transaction, or the unmount) the
        journal is replayed as it would be after a crash; locks whose release failed are given
        back then too.  While the device is still away those steps fail again, so nothing is
        written on top of a half-applied change."""
        self.check_writable()
        with self.meta_lock:
            self._recover_from_failed_io()
            tx = Transaction(self.volume.device, self.journal if self.journaling else None, self.locks)
            try:
                yield tx
                self.check_writable()
                if self._pending is not None and tx.journal is not None:
                    self._absorb(tx)
                else:
                    tx.commit()
            except BaseException:
                if tx.journal is not None and tx.journal.pending and self._unfinished is None:
                    self._unfinished = tx  # its locks stay until the redo is done
                else:
                    try:
                        tx.release_locks()
                    except VmfsError as exc:
                        log.warning("giving back locks failed (%s); retried before the next change", exc)
                self._drop_caches()
                raise

    # -- group commit (vmfs.cluster.batch) -----------------------------------------------------------------

    def group_commit(self, interval: float) -> None:
        """Let completed transactions wait up to ``interval`` seconds in one batch that commits
        as one journal transaction (0 turns it off, committing what waits).  Without the
        journal there is nothing to batch."""
        if interval < 0:
            raise ValueError("the commit interval cannot be negative")
        with self.meta_lock:
            if interval == 0 or not self.journaling:
                self.commit_pending()
                self.commit_interval = 0.0
                self.volume.device.pending = self._pending = None
                self.allocators.holding = False
                self.allocators.make_room = None
                if self.locks is not None:
                    self.locks.before_wait = None
                self._stop_keeping()
                self._start_keeping()
                return
            self.commit_interval = interval
            if self._pending is None:
                self._pending = PendingSectors(self.commit_pending)
                self.volume.device.pending = self._pending
                self.allocators.holding = True
                self.allocators.make_room = self.commit_pending
                if self.locks is not None:
                    self.locks.before_wait = self._commit_before_waiting
            self._stop_keeping()
            self._start_keeping()

    def new_lock_block(self, offset: int, raw: bytes) -> bytes:
        """The lock block to create at ``offset`` for a new object (``raw``: free): held by us
        under group commit (:meth:`LockManager.born_held`), ``raw`` otherwise."""
        if self._pending is None or self.locks is None:
            return raw
        image = self.locks.born_held(offset, raw)
        return raw if image is None else image

    @property
    def batch_open(self) -> bool:
        """Whether completed transactions are waiting for their commit."""
        return self._batch is not None

    def _absorb(self, tx: Transaction) -> None:
        """A completed transaction joins the open batch (a new one if none is open, after the
        open one if both would not fit the journal together)."""
        journal = tx.journal
        assert journal is not None and self._pending is not None
        if not len(tx):
            tx.commit()  # nothing to write: its callbacks run, its locks go back
            return
        if size_bound(len(tx), tx.lock_count) > journal.capacity:
            self.commit_pending()
            tx.commit()  # on its own, as without batching (too large even so: the caller splits it)
            return
        batch = self._batch
        if batch is not None and size_bound(len(batch) + len(tx), batch.lock_count + tx.lock_count) > journal.capacity:
            self.commit_pending()
            batch = None
        if batch is None:
            batch = self._batch = Transaction(self.volume.device, journal, self.locks)
            self._batch_since_us = self.now_us()
            self._batch_count = 0
        self._pending.add(tx._sectors)
        batch.absorb(tx)
        self._batch_count += 1

    def commit_pending(self) -> None:
        """Commit the open batch now (fsync, unmount, a full journal, something that must see
        it on disk).  A failure is handled as a failed transaction's: the batch's locks stay while
        its record may be in the journal, the caches are dropped, and the error is raised."""
        with self.meta_lock:
            batch, pending = self._batch, self._pending
            if batch is None or pending is None:
                return
            self._batch = None
            count, self._batch_count = self._batch_count, 0
            try:
                self.check_writable()
                pending.committing = True
                try:
                    batch.commit(release=False)
                finally:
                    pending.committing = False
            except BaseException:
                pending.clear()
                self.allocators.held_back.clear()
                if batch.journal is not None and batch.journal.pending and self._unfinished is None:
                    self._unfinished = batch  # its locks stay until the redo is done
                else:
                    with contextlib.suppress(VmfsError):
                        batch.release_locks()
                self._drop_caches()
                raise
            pending.clear()
            self.allocators.held_back.clear()
            self.batches_committed += 1
            self.batched_transactions += count
            try:
                batch.release_locks()
            except VmfsError as exc:
                log.warning("giving back locks failed (%s); retried before the next change", exc)

    def _commit_before_waiting(self) -> bool:
        """A transaction of ours is about to wait for a lock another host holds: commit the open
        batch, so the locks it holds go back while we wait (that host may be waiting for one of
        them, and our keeper cannot commit while the waiting transaction holds ``meta_lock``).
        Not from inside the batch's own commit."""
        pending = self._pending
        if self._batch is None or pending is None or pending.committing:
            return False
        self.commit_pending()
        return True

    def _commit_due(self) -> None:
        """Commit the batch once it has waited its interval (the keeper's timer)."""
        if self._batch is None or self.closed:
            return
        if self.now_us() - self._batch_since_us < self.commit_interval * 1_000_000:
            return
        try:
            self.commit_pending()
        except VmfsError as exc:
            log.warning("group commit failed: %s", exc)

    def _drop_caches(self) -> None:
        """Forget every cache (re-reading pinned FDs); when the device fails meanwhile, again at
        the next transaction."""
        try:
            self.volume.invalidate_caches()
            self._caches_stale = False
        except VmfsError as exc:
            self._caches_stale = True
            log.warning("dropping caches failed (%s); done again before the next change", exc)

    def _recover_from_failed_io(self) -> None:
        """What an earlier device failure left: redo a commit cut after its journal record, give
        back locks whose release failed, and drop caches that could not be re-read."""
        if self._caches_stale:
            self._drop_caches()
            if self._caches_stale:
                raise DeviceError(f"{self.volume.device.name}: the device is still failing")
        journal = self.journal
        if journal is not None and journal.pending:
            applied = journal.replay()
            log.warning("redid %d journal records of a commit the device cut short", applied)
            self.volume.invalidate_caches()
            unfinished, self._unfinished = self._unfinished, None
            if unfinished is not None:
                unfinished.release_locks()
        if self.locks is not None and self.locks.unreleased:
            self.locks.retry_releases()

    def data_written(self) -> None:
        """File data went straight to the device: the next journal commit makes it durable
        before its own record (ordered mode, see :mod:`vmfs.cluster.journal`)."""
        if self.journal is not None:
            self.journal.data_unflushed = True

    def lock_fd(self, tx: Transaction, fd: FileDescriptor) -> FileDescriptor:
        """Take ``fd``'s on-disk lock for the transaction and make sure our copy is current."""
        got = tx.lock(fd.vol_offset)
        if got is None:
            return fd
        held, previous = got
        if fd.clean_token is None or previous != fd.clean_token:
            self.volume.reload_fd(fd)
        if fd.lock is not held.lock:
            fd.set_lock(held.lock)
        fd.validated_us = self.now_us()
        return fd

    def put_fd(self, tx: Transaction, fd: FileDescriptor) -> None:
        """Record ``fd``'s metadata and data area (not its lock block) in ``tx``."""
        md = self.volume.geometry.md_size
        tx.write(fd.vol_offset + md, fd.encode()[md:])

    # -- closing --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Detach (flush, empty the journal, free the slot and the journal block, let go of the
        identity lock), then close the volume."""
        if self.closed or self._closing:
            return
        self._closing = True  # the flush hooks still write; a second close() meanwhile does nothing
        try:
            self._detach()
        finally:
            self.closed = True
            self.volume.unbind_writer(self)
            self.volume.close()

    def crash(self) -> None:
        """Stop as a killed process would: no more heartbeats, nothing flushed, emptied or given
        back; the slot, the locks and the journal stay on disk for whoever recovers this host.
        (Failure injection: tests, and hosts of a simulation that die.)"""
        if self.closed:
            return
        self.closed = True
        self.heartbeat.stop()
        self._stop_keeping()
        self._batch = None  # the open batch dies with the process, as its memory would
        if self._pending is not None:
            self._pending.clear()
        if self.identity_lock is not None:
            self.identity_lock.abandon()
        self.volume.unbind_writer(self)
        self.volume.close()

    def _detach(self) -> None:
        hb = self.heartbeat
        identity = self.identity_lock
        outcome = "failed"
        try:
            try:
                for hook in list(self.flush_hooks):
                    hook()
            finally:
                self._release()
                outcome = "clean" if hb.lost is None else f"lost: {hb.lost}"
        except BaseException as exc:
            outcome = f"failed: {exc}"
            raise
        finally:
            # last: whoever waits for this lock (vmfs-umount) may rely on everything being on disk
            if identity is not None:
                identity.release(outcome, slot_released=outcome == "clean")

    def _release(self) -> None:
        """Empty the journal; under the FB cluster's lock free the journal block, then give back the
        slot.  A crash in between leaves a slot naming a free block, which recovery handles; nobody
        can take the block meanwhile because the cluster stays locked until the slot is free."""
        hb = self.heartbeat
        volume = self.volume
        if hb.lost is None:
            # Is the slot still ours?  A host that stopped beating for a lease (a stalled process,
            # a simulated host whose time stood still) may have been recovered by another one,
            # which then freed its journal block and broke its locks: giving them back now would
            # free what is no longer ours.  One ATS of our own image tells.
            with contextlib.suppress(VolumeLostError):
                hb.renew()
        lost = hb.lost
        try:
            if lost is None:
                with self.meta_lock:
                    self.commit_pending()  # what the open batch holds, before the journal is emptied
                    self._recover_from_failed_io()  # never empty a journal that still has work to redo
            self._stop_keeping()
            if self.locks is not None:
                try:
                    self.locks.release_all()
                except FencedError:
                    if lost is None:
                        raise
                    # the storage refuses us: whatever was ours belongs to whoever recovered us
        except BaseException:
            hb.stop()  # as after a crash: slot, journal and locks stay for whoever recovers us
            raise
        if self.journal is not None and lost is None:
            self.journal.clear()
        hb.stop()
        tx = None
        try:
            if self.journal_addr and lost is None:
                tx = Transaction(volume.device, None, self.locks)
                self.allocators[journal_kind(volume)].free(tx, [journal_resource(volume, self.journal_addr)])
                tx.commit(release=False)
            hb.release()
        finally:
            if tx is not None:
                tx.release_locks()
        if lost is None:
            volume.device.flush()
        else:
            with contextlib.suppress(FencedError):
                volume.device.flush()

    def __enter__(self) -> HostAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
