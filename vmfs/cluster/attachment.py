"""Read-write life cycle of a volume on this host: heartbeat, journal, allocators.

Mount (``attach_writer``): take this machine's lock for our host identity on the volume
(:mod:`vmfs.cluster.identitylock`: one process per identity), claim a heartbeat slot; if the slot was our own
from an unclean stop, replay its journal and keep its journal block, else allocate a journal
block; record it in the slot.  Unmount (``detach_writer``): flush deferred metadata, empty the
journal, release the slot, free the journal block, and only then let go of the identity lock.  A
crash at any point leaves at worst one leaked journal block, which vmfs-fsck reclaims.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vmfs.cluster.alloc import Allocators
from vmfs.cluster.heartbeat import HeartbeatManager
from vmfs.cluster.host import HostIdentity
from vmfs.cluster.identitylock import IdentityLock
from vmfs.cluster.journal import Journal, JournalArea, decode_transaction, replay_area
from vmfs.cluster.transaction import Transaction
from vmfs.errors import UnsupportedError
from vmfs.ondisk import resource as R
from vmfs.ondisk.journal import JOURNAL_HEADER_SIZE

if TYPE_CHECKING:
    from vmfs.volume.volume import Volume

log = logging.getLogger("vmfs.cluster.attachment")


def attach_writer(volume: Volume, host: HostIdentity | None) -> None:
    if volume.geometry.version != 5:
        raise UnsupportedError(
            f"{volume.device.name}: read-write access to {volume.version_string} is not supported (VMFS5 only)"
        )
    host = host if host is not None else HostIdentity()
    volume.host = host  # type: ignore[attr-defined]
    volume.allocators = Allocators(volume)
    volume.flush_hooks = []  # type: ignore[attr-defined]
    hb = HeartbeatManager(volume, host)
    volume.heartbeat = hb
    identity = IdentityLock.acquire(volume, host.uuid)  # BusyError while another process writes as us
    volume.identity_lock = identity  # type: ignore[attr-defined]
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
    geo = volume.geometry
    codec = geo.codec
    from vmfs.cluster.locks import LockManager

    volume.locks = LockManager(volume)
    hb.reaper = volume.locks.reap
    try:
        journal_addr = 0
        if previous is not None and previous.hb.journalAddr:
            journal_addr = previous.hb.journalAddr
            area = JournalArea(previous.journal_vol_addr, geo.block_size)
            found = decode_transaction(volume.device.read(area.offset, area.size), area.size)
            applied = replay_area(volume.device, area)
            if applied:
                log.warning("replayed %d records of our own journal after an unclean stop", applied)
                volume.invalidate_caches()
                _release_leftover_locks(volume, found[2] if found is not None else [])
        if journal_addr:
            block = codec.fb_block(journal_addr)
            area = JournalArea(block * geo.block_size, geo.block_size)
            volume.device.write(area.offset, bytes(JOURNAL_HEADER_SIZE))
            hb.set_journal(journal_addr, area.offset)
        else:
            # Under the FB cluster's lock: pick the block, empty it, name it in our slot, and only
            # then mark it used.  A crash in between leaves a slot naming a free block (recovery
            # frees only what is used), never a used block nobody names.
            tx = Transaction(volume.device, None, volume.locks)
            ((c, r),) = volume.allocators[R.RES_FB].allocate(tx, 1)
            journal_addr = codec.make_fb(c * volume.resources[R.RES_FB].rpc + r)
            block = codec.fb_block(journal_addr)
            area = JournalArea(block * geo.block_size, geo.block_size)
            try:
                volume.device.write(area.offset, bytes(JOURNAL_HEADER_SIZE))
                hb.set_journal(journal_addr, area.offset)
                tx.commit()
            finally:
                tx.release_locks()
        volume.journal = Journal(volume.device, area, host.uuid)
        volume.journal_addr = journal_addr  # type: ignore[attr-defined]
        hb.start()
    except BaseException as exc:
        try:
            hb.release()
        finally:
            if identity is not None:
                identity.release(f"failed to open: {exc}", slot_released=hb.slot is None)
        raise


def _release_leftover_locks(volume: Volume, offsets: list[int]) -> None:
    """The replayed transaction's locks are still held by our previous incarnation: take each
    (the old generation counts as gone) and let it go, so no stale lock outlives the replay."""
    from vmfs.errors import BusyError

    assert volume.locks is not None
    for offset in offsets:
        try:
            volume.locks.acquire(offset, wait=0)
        except BusyError:
            continue  # another host broke and took it meanwhile: it is not ours any more
        volume.locks.release(offset)


def detach_writer(volume: Volume) -> None:
    hb = volume.heartbeat
    identity = getattr(volume, "identity_lock", None)
    outcome = "failed"
    try:
        try:
            for hook in list(getattr(volume, "flush_hooks", [])):
                hook()
        finally:
            if hb is not None:
                lost = hb.lost
                _release(volume, hb)
                outcome = "clean" if lost is None else f"lost: {lost}"
    except BaseException as exc:
        outcome = f"failed: {exc}"
        raise
    finally:
        # last: whoever waits for this lock (vmfs-umount) may rely on everything being on disk
        if identity is not None:
            identity.release(outcome, slot_released=outcome == "clean")


def _release(volume: Volume, hb: HeartbeatManager) -> None:
    """Empty the journal; under the FB cluster's lock free the journal block, then give back the
    slot.  A crash in between leaves a slot naming a free block, which recovery handles; nobody
    can take the block meanwhile because the cluster stays locked until the slot is free."""
    lost = hb.lost
    if volume.locks is not None:
        volume.locks.release_all()
    if volume.journal is not None and lost is None:
        volume.journal.clear()
    hb.stop()
    journal_addr = getattr(volume, "journal_addr", 0)
    tx = None
    try:
        if journal_addr and lost is None:
            tx = Transaction(volume.device, None, volume.locks)
            rpc = volume.resources[R.RES_FB].rpc
            volume.allocators[R.RES_FB].free(tx, [divmod(volume.geometry.codec.fb_block(journal_addr), rpc)])
            tx.commit(release=False)
        hb.release()
    finally:
        if tx is not None:
            tx.release_locks()
    volume.device.flush()
