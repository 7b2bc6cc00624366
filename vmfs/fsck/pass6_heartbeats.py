"""Pass 6: heartbeats, journals and locks.

This pass has two entry points, because a journal must be replayed before anything else looks
at the metadata it rewrites (e2fsck replays its journal before pass 1 for the same reason):

:func:`recover`, run right after pass 1: the hosts that are gone
    For every heartbeat slot pass 1 found stale, a journal in pyvmfs's format
    (vmfs/ondisk/journal.py) holding a committed transaction is replayed with
    :func:`vmfs.cluster.journal.replay_area` and then emptied, so it is never replayed twice.  In the
    check phase the replay goes to the in-memory overlay, so that the check sees the volume as
    the repair will.  A journal without our magic (ESXi's VMFS5 journal, as in the real sample's
    slot 984 at FB 13: its record format is not known, vmfs-format.md 10) is never replayed.
    Then the slot is cleared (an ATS write of the free image, generation + 1, as the library
    releases its own slot) and its journal block freed through the allocator in a transaction.
    Clearing early means the library's lock manager, during the repairs of passes 2-5, sees
    that host's locks as what they are: held by nobody.

:func:`run`, after pass 5
    Reports in-use slots of live or unwatched hosts as notes ("in use by host X, journal at
    FB 13"), which is not an error.  Every lock held (mode != 0: FDs from pass 2, cluster
    headers from pass 5) is judged by its holder's heartbeat: held by a host whose slot is
    free, has another generation or owner, or is stale, it is released (mode 0, no owner; the
    holder's slot address, generation and token stay, as an unlock by ESXi leaves them).

Needs
    ``state.slots`` (pass 1), ``state.fds`` (pass 2), ``state.cluster_locks`` (pass 5).
"""

from __future__ import annotations

from construct import Container

from vmfs.cluster.journal import JournalArea, replay_area
from vmfs.errors import VmfsError
from vmfs.fsck.context import Context, SlotRecord
from vmfs.fsck.pass1_volume import describe_slot
from vmfs.fsck.problems import Code
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import NULL_UUID, decode_name
from vmfs.ondisk.heartbeat import HB_FREE, HEARTBEAT_REGION_OFFSET, Heartbeat
from vmfs.ondisk.journal import JOURNAL_HEADER_SIZE

LABEL = "Pass 6: Checking heartbeats, journals and locks"
RECOVER_LABEL = "Replaying journals of hosts that are gone"


def recover(ctx: Context) -> None:
    for rec in ctx.state.slots:
        if rec.liveness == "stale":
            _replay(ctx, rec)
            _stale_slot(ctx, rec)


def _replay(ctx: Context, rec: SlotRecord) -> None:
    st = ctx.state
    vol = ctx.volume
    if rec.journal_state != "committed" or rec.journal_offset is None:
        return
    area = JournalArea(rec.journal_offset, rec.journal_size)
    answer = ctx.problem(Code.JOURNAL_REPLAY, subject=f"slot {rec.slot}", slot=rec.slot, owner=rec.hb.owner,
                         journal=rec.journal, records=rec.journal_records)
    if ctx.repairing:
        if answer:
            with ctx.repair():
                replay_area(vol.device, area)
                vol.device.write(rec.journal_offset, bytes(JOURNAL_HEADER_SIZE))  # never replayed twice
                vol.device.flush()
            rec.journal_state = "empty"
    else:
        # the check looks at the volume as the replay leaves it (in memory only)
        replay_area(st.raw, area)
        ctx.note(f"checking the volume as the replay of slot {rec.slot}'s journal leaves it (in memory)")
    vol.invalidate_caches()


def run(ctx: Context) -> None:
    for rec in ctx.state.slots:
        if rec.in_use and rec.liveness in ("in use", "live"):
            why = f" ({rec.reason})" if rec.reason else ""
            ctx.note(describe_slot(rec) + why)
    _locks(ctx)


def _stale_slot(ctx: Context, rec: SlotRecord) -> None:
    vol = ctx.volume
    note = ""
    if rec.journal_state == "foreign":
        note = " (its journal is not in pyvmfs format and is not replayed)"
    elif rec.journal_state == "committed":
        note = " (after replaying its journal)"
    if not ctx.problem(Code.HB_STALE, subject=f"slot {rec.slot}", slot=rec.slot, owner=rec.hb.owner,
                       ip=decode_name(rec.hb.ip) or "no IP", reason=rec.reason, journal=rec.journal,
                       journal_note=note):
        return
    with ctx.repair():
        hb = Container(rec.hb)
        hb.state = HB_FREE
        hb.hbGen = rec.hb.hbGen + 1
        hb.owner = NULL_UUID
        hb.journalAddr = 0
        hb.journalVolAddr = 0
        image = Heartbeat.build(hb)
        if not vol.device.compare_and_write(rec.addr, rec.raw, image):
            raise _Changed(f"heartbeat slot {rec.slot} changed while being cleared")
        rec.in_use = False
        rec.liveness = "free"
        if rec.journal_block is not None or rec.journal_jb is not None:
            if rec.journal_jb is not None:  # VMFS6: a journal block of .jbc.sf
                kind, (c, r) = R.RES_JB, rec.journal_jb
            else:
                kind, (c, r) = R.RES_FB, divmod(rec.journal_block, vol.resources[R.RES_FB].rpc)
            alloc = ctx.attachment.allocators[kind]
            with ctx.attachment.transaction() as tx:
                if not alloc.is_free(tx, c, r):
                    alloc.free(tx, [(c, r)])


class _Changed(VmfsError):
    pass


def _holder(ctx: Context, hb_addr: int, hb_gen: int, owner: str) -> tuple[str, str]:
    """("live" | "ours" | "gone", why) for a lock holder."""
    st = ctx.state
    geo = ctx.geometry
    index, rest = divmod(hb_addr - HEARTBEAT_REGION_OFFSET, geo.hb_slot_size)
    if hb_addr < HEARTBEAT_REGION_OFFSET or rest or index >= len(st.slots):
        return "gone", f"its heartbeat address 0x{hb_addr:x} is no slot"
    slot = st.slots[index]
    hb = st.attachment.heartbeat if st.attachment is not None else None
    if hb is not None and index == hb.slot and hb_gen == hb.generation and owner == slot.hb.owner:
        return "ours", ""
    if not slot.in_use:
        return "gone", f"heartbeat slot {index} is free"
    if slot.hb.hbGen != hb_gen:
        return "gone", f"heartbeat slot {index} has generation {slot.hb.hbGen}, the lock was taken at {hb_gen}"
    if slot.hb.owner != owner:
        return "gone", f"heartbeat slot {index} belongs to host {slot.hb.owner}"
    if slot.liveness == "stale":
        return "gone", f"heartbeat slot {index} is stale ({slot.reason})"
    return "live", f"held through heartbeat slot {index}"


def _locks(ctx: Context) -> None:
    st = ctx.state
    vol = ctx.volume
    geo = vol.geometry
    held = [(f"FD {r.address:#x}" + (f" ({st.paths[r.address]})" if r.address in st.paths else ""), r.vol_offset,
             r.lock_mode, r.lock_owner, r.lock_hb_addr, r.lock_hb_gen) for r in st.fds.values() if r.lock_mode]
    held += [(label, off, mode, owner, hba, hbg) for _, off, mode, owner, hba, hbg, label in st.cluster_locks]
    for label, offset, mode, owner, hb_addr, hb_gen in held:
        verdict, why = _holder(ctx, hb_addr, hb_gen, owner)
        if verdict == "ours":
            continue
        if verdict == "live":
            ctx.note(f"{label} is locked (mode {mode}) by live host {owner}, {why}")
            continue
        if ctx.problem(Code.LOCK_STALE, subject=label, object=label, mode=mode, owner=owner, reason=why):
            with ctx.repair(), ctx.attachment.transaction() as tx:
                block = geo.structs.lock.parse(tx.read(offset, geo.md_size))
                block.lock.mode = 0
                block.lock.owner = NULL_UUID
                block.lock.numHolders = 0
                tx.write(offset, geo.structs.lock.build(block))
            vol.invalidate_caches()
