"""Pass 1: the volume itself: FS descriptor, system files, resource file headers, heartbeat region.

Checks
    * the FS descriptor (magic, version, block sizes, LV UUID against the LVM) — vmfs-format.md 3;
    * the system file descriptors at their fixed places in FD cluster 0 (lock type and own
      address, ``descAddr``, type, block size) — 6.1, 8.2;
    * every resource file header against its cluster headers (geometry formulas of 6.2; the
      cluster headers at the places the geometry gives; the resource count against an
      independent witness) and rebuilds a damaged one from them (:mod:`vmfs.fsck.rebuild`);
      VMFS6: a header the library would refuse, rebuilt when its cluster headers prove the
      geometry (:mod:`vmfs.fsck.rebuild6`; ``.sbc.sf`` of address mode 5 read through its PB2);
    * every heartbeat slot: state, own address, owner and journal fields — 4.2.
      For in-use slots it decides whether the owner is alive: a slot of vmfs-fsck's own identity
      is a leftover of an interrupted run (the library's own rule when it mounts); ``--stale-host``
      declares hosts gone; ``--watch`` watches the stamps for the lease (16 s, or the descriptor's
      ``leaseIntervalMs``): unchanged = gone, changed = live; otherwise the owner is "in use",
      which is not an error, but the repair refuses to run beside it.

Needs
    :func:`prepare` needs only the logical volume; it runs before the library opens the volume,
    because a damaged resource header would stop that.  :func:`run` needs the open volume.

Leaves
    ``state.descriptor``, ``state.geometry``, ``state.header_patches`` (rebuilt headers the
    library is shown), ``state.slots`` with each in-use slot's liveness and journal facts (pass 6
    replays and clears; pass 5 counts the journal blocks of in-use slots as used; pass 6 judges
    locks by them).  Fatal damage (descriptor, system files, an unrecoverable resource header)
    sets ``state.fatal`` and ends the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from construct import ConstructError, Container

from vmfs.cluster.journal import decode_transaction
from vmfs.errors import DeviceError, VmfsError
from vmfs.format import address as A
from vmfs.format.geometry import Geometry
from vmfs.fsck import rebuild, rebuild6
from vmfs.fsck.context import Context, SlotRecord, fsck_identity
from vmfs.fsck.problems import Code
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import NULL_UUID, SECTOR, decode_name, unpack_ints
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FS_MAGIC, FSL_MAGIC, FsDescriptor
from vmfs.ondisk.heartbeat import HB_FREE, HB_IN_USE, HEARTBEAT_REGION_OFFSET, Heartbeat
from vmfs.ondisk.journal import JOURNAL_HEADER_SIZE, JOURNAL_MAGIC, JournalHeader
from vmfs.ondisk.lock import LOCK_TYPE_FD
from vmfs.volume.journalblock import journal_area
from vmfs.volume.resources import header_problem
from vmfs.volume.volume import ROOT_FD, system_fds

if TYPE_CHECKING:
    from vmfs.device.base import BlockDevice

LABEL = "Pass 1: Checking the FS descriptor, system files, resource file headers and heartbeat region"

#: Resource files in the order the library opens them (vmfs-format.md 1.1 step 5).
#: VMFS6 resource files whose header vmfs-fsck rebuilds (.fbb.sf, an LFB parent with an SFB child, is not)
RESOURCE_FILES6 = ((R.RES_PB2, ".pb2.sf"), (R.RES_PB, ".pbc.sf"), (R.RES_FD, ".fdc.sf"), (R.RES_SB, ".sbc.sf"),
                   (R.RES_JB, ".jbc.sf"))
RESOURCE_FILES = ((R.RES_PB2, ".pb2.sf"), (R.RES_PB, ".pbc.sf"), (R.RES_FD, ".fdc.sf"), (R.RES_FB, ".fbb.sf"),
                  (R.RES_SB, ".sbc.sf"))
DEFAULT_LEASE = 16.0


# -- before the volume is open ----------------------------------------------------------------------


def prepare(ctx: Context) -> None:
    st = ctx.state
    raw = st.raw
    try:
        d = FsDescriptor.parse(raw.read(FS_DESCRIPTOR_OFFSET, SECTOR))
    except (DeviceError, ConstructError) as exc:
        ctx.problem(Code.FS_DESCRIPTOR_BAD, detail=f"unreadable ({exc})")
        return
    if d.magic not in (FS_MAGIC, FSL_MAGIC):
        ctx.problem(Code.FS_DESCRIPTOR_BAD, detail=f"magic 0x{d.magic:08x} is not a VMFS magic")
        return
    lvm = st.lv
    lvm_major = lvm.devices[0].major if lvm.devices else None
    try:
        geo = Geometry.from_descriptor(d, lvm_major)
    except VmfsError as exc:
        ctx.problem(Code.FS_DESCRIPTOR_BAD, detail=str(exc))
        return
    if lvm.devices and d.volInfo.lvId != lvm.devices[0].volume.lvId:  # type: ignore[attr-defined]
        ctx.problem(Code.FS_DESCRIPTOR_BAD, detail=f"belongs to logical volume {d.volInfo.lvId}, not to this one")
        return
    st.descriptor = d
    st.geometry = geo
    system = _system_fds(ctx)
    if st.fatal:
        return
    if geo.vmfs6:
        _check_resource_headers6(ctx, system)
        return
    present = system_fds(geo.version)
    for kind, name in RESOURCE_FILES:
        if name not in present:
            continue  # VMFS3 has no .pb2.sf
        meta, pointers = system[name]
        _check_resource_header(ctx, kind, name, meta, pointers)
        if st.fatal:
            return


def _system_fds(ctx: Context) -> dict[str, tuple[Container, list[int]]]:
    """Every system FD read from its fixed place (section 8.2) and checked as the library needs it."""
    st = ctx.state
    geo = st.geometry
    assert geo is not None
    names = [("/", ROOT_FD), *system_fds(geo.version).items()]
    out = {}
    for name, address in names:
        offset = geo.bootstrap_fd_addr(A.fd_split(address)[1])
        try:
            fd = geo.structs.file_descriptor.parse(st.raw.read(offset, geo.fd_size))
        except (DeviceError, ConstructError) as exc:
            ctx.problem(Code.SYSTEM_FD_BAD, name=name, fd=f"{address:#x}", detail=f"unreadable ({exc})")
            continue
        meta = fd.meta
        lock = fd.lockBlock.lock
        want_type = F.TYPE_DIRECTORY if address == ROOT_FD else F.TYPE_SYSFILE
        problems = []
        signals = (lock.type == LOCK_TYPE_FD, lock.addr == offset, meta.descAddr == address)
        if sum(signals) < 2:
            problems.append(f"lock type 0x{lock.type:08x}, lock address 0x{lock.addr:x}, descAddr 0x{meta.descAddr:x}")
        elif not all(signals):
            # one of the three damaged: salvageable (pass 2 repairs it); show the library the fix
            from vmfs.fsck.pass2_descriptors import salvaged

            st.patch(offset, salvaged(geo, st.raw.read(offset, geo.fd_size), address, offset))
        if meta.type != want_type:
            problems.append(f"type {meta.type}, expected {want_type}")
        if meta.zla == F.ZLA_RESIDENT or meta.blockSize not in (geo.block_size, geo.sub_block_size):
            problems.append(f"address mode {meta.zla} with block size {meta.blockSize}")
        if problems:
            ctx.problem(Code.SYSTEM_FD_BAD, name=name, fd=f"{address:#x}", detail="; ".join(problems))
            continue
        start = geo.ptr_array_offset - geo.fd_data_offset
        pointers = list(unpack_ints(fd.data[start : start + geo.ptr_count * geo.addr_width], geo.addr_width))
        out[name] = (meta, pointers)
    return out


class RawFile:
    """A system file mapped through its FD's direct pointer array (ZLA 1) only: enough to read a
    resource file's header and cluster headers before the library can open anything."""

    def __init__(self, geo: Geometry, device: BlockDevice, meta: Container, pointers: list[int],
                 pb2: Callable[[int], int | None] | None = None) -> None:
        self.geo = geo
        self.device = device
        self.size = meta.fileLength
        self.bs = meta.blockSize
        self.pointers = pointers
        self.direct = meta.zla == F.ZLA_FILE_BLOCKS and self.bs == geo.block_size
        #: VMFS6 ZLA 5 (.sbc.sf grown through a PB2): the volume offset of a PB2 address
        self.pb2 = pb2 if geo.vmfs6 and meta.zla == F.ZLA_POINTER2_BLOCKS and self.bs == geo.block_size else None
        self._pb2_entries: dict[int, list[int]] = {}

    def _address(self, index: int) -> int | None:
        if self.direct:
            return self.pointers[index] if index < len(self.pointers) else None
        if self.pb2 is None:
            return None
        top, entry = divmod(index, self.geo.ptrs_per_pb)
        if top >= len(self.pointers) or A.kind(self.pointers[top]) != A.ADDR_PB2:
            return None
        if top not in self._pb2_entries:
            where = self.pb2(self.pointers[top])
            if where is None or where + self.geo.pb_size > self.device.size:
                return None
            raw = self.device.read(where, self.geo.pb_size)
            self._pb2_entries[top] = list(unpack_ints(raw, self.geo.addr_width))
        return self._pb2_entries[top][entry]

    def volume_offset(self, offset: int) -> int | None:
        index, within = divmod(offset, self.bs)
        a = self._address(index)
        if a is None:
            return None
        if a & 7 != A.ADDR_FB or self.geo.codec.fb_tbz(a):
            return None
        start = self.geo.codec.fb_block(a) * self.geo.block_size
        if start + self.bs > self.device.size:
            return None
        return start + within

    def read(self, offset: int, length: int) -> bytes | None:
        if offset + length > self.size:
            return None
        out = bytearray()
        pos = offset
        while pos < offset + length:
            loc = self.volume_offset(pos)
            if loc is None:
                return None
            n = min(self.bs - pos % self.bs, offset + length - pos)
            out += self.device.read(loc, n)
            pos += n
        return bytes(out)


def _check_resource_headers6(ctx: Context, system: dict[str, tuple[Container, list[int]]]) -> None:
    """VMFS6: each resource header the library would refuse, rebuilt from its cluster headers
    when they prove its geometry (vmfs.fsck.rebuild6); the rest is the library's to judge."""
    st = ctx.state
    geo = st.geometry
    assert geo is not None
    pb2_file = RawFile(geo, st.raw, *system[".pb2.sf"]) if ".pb2.sf" in system else None
    raw = pb2_file.read(0, R.RES_HEADER_SIZE) if pb2_file is not None else None
    pb2_head = R.ResourceHeader.parse(raw) if raw is not None else None
    if pb2_head is not None and header_problem(pb2_head, vmfs6=True, ch=geo.cluster_header_size,
                                               file_size=pb2_file.size, child=False):  # type: ignore[union-attr]
        pb2_head = None  # .pb2.sf's own header is the one to rebuild first: no PB2 can be found

    def pb2(address: int) -> int | None:
        """Volume offset of a PB2 resource, through .pb2.sf's own header (read once, above)."""
        h = pb2_head
        if h is None or pb2_file is None:
            return None
        _, c, r = geo.codec.split(address)
        if not h.resourcesPerCluster or c * h.resourcesPerCluster + r >= (h.numResourcesLo | h.numResourcesHi << 32):
            return None
        cpg, rpc = h.clustersPerGroup, h.resourcesPerCluster
        at = (h.clusterGroupOffset + (c // cpg) * h.clusterGroupSize + cpg * geo.cluster_header_size
              + ((c % cpg) * rpc + r) * h.resourceSize)
        return pb2_file.volume_offset(at)

    for kind, name in RESOURCE_FILES6:
        if name not in system:
            continue
        meta, pointers = system[name]
        f = RawFile(geo, st.raw, meta, pointers, pb2=pb2)
        raw = f.read(0, R.RES_HEADER_SIZE)
        where = f.volume_offset(0)
        if raw is None or where is None:
            continue  # the library says what is wrong when it opens the volume
        h = R.ResourceHeader.parse(raw)
        bad = header_problem(h, vmfs6=True, ch=geo.cluster_header_size, file_size=f.size, child=False)
        if bad is None:
            continue
        shape = rebuild6.rebuild_header(geo, kind, h, rebuild6.ClusterProbe6(geo, kind, f.read, f.volume_offset,
                                                                            f.size))
        if shape is None:
            continue  # fatal when the library refuses it (RESOURCE_HEADER_LOST)
        image = rebuild6.header_bytes(kind, shape)
        st.header_patches[where] = image
        st.header_findings.append(
            {"file": name, "offset": where, "detail": bad,
             "rebuilt": rebuild.describe_change(h, shape), "image": image}
        )


def _check_resource_header(ctx: Context, kind: int, name: str, meta: Container, pointers: list[int]) -> None:
    st = ctx.state
    geo = st.geometry
    assert geo is not None
    f = RawFile(geo, st.raw, meta, pointers)
    if not f.direct:
        return  # mapped through pointer blocks (huge .fbb.sf): the library checks it on open
    raw = f.read(0, R.RES_HEADER_SIZE)
    where = f.volume_offset(0)
    if raw is None or where is None:
        ctx.problem(Code.RESOURCE_HEADER_LOST, file=f"{name} resource header",
                    detail="the file's first block is not readable")
        return
    h = R.ResourceHeader.parse(raw)
    probe = rebuild.ClusterProbe(geo, kind, f.read, f.volume_offset, f.size)
    d = st.descriptor
    fdc = (d.fdcClusterGroupOffset, d.fdcClustersPerGroup) if kind == R.RES_FD else None
    blocks = st.lv.size // geo.block_size
    bad = rebuild.check_header(geo, kind, h, probe, fdc=fdc, volume_blocks=blocks)
    if not bad:
        return
    shape = rebuild.rebuild_header(geo, kind, h, probe, fdc=fdc, volume_blocks=blocks)
    if shape is None:
        ctx.problem(Code.RESOURCE_HEADER_LOST, file=f"{name} resource header",
                    detail="; ".join(bad) + "; the cluster headers do not tell its geometry either")
        return
    image = rebuild.header_bytes(shape)
    st.header_patches[where] = image
    st.header_findings.append(
        {"file": name, "offset": where, "detail": "; ".join(bad), "rebuilt": rebuild.describe_change(h, shape),
         "image": image}
    )


# -- with the volume open -------------------------------------------------------------------------


def run(ctx: Context) -> None:
    st = ctx.state
    for item in st.header_findings:
        if ctx.problem(Code.RESOURCE_HEADER_BAD, subject=item["file"], file=item["file"], detail=item["detail"],
                       rebuilt=item["rebuilt"]):
            with ctx.repair(), ctx.attachment.transaction() as tx:
                tx.write(item["offset"], item["image"])
    _heartbeats(ctx)


def lease_seconds(ctx: Context) -> float:
    if ctx.options.lease is not None:
        return ctx.options.lease
    ms = ctx.state.descriptor.leaseIntervalMs
    return ms / 1000 if ms else DEFAULT_LEASE


def _read_region(ctx: Context) -> list[tuple[int, int, bytes, Container]]:
    geo = ctx.geometry
    region = ctx.volume.device.read(HEARTBEAT_REGION_OFFSET, geo.heartbeat_region_size)
    out = []
    for i in range(geo.hb_slots):
        raw = region[i * geo.hb_slot_size : i * geo.hb_slot_size + SECTOR]
        out.append((i, geo.hb_slot_addr(i), raw, Heartbeat.parse(raw)))
    return out


def _heartbeats(ctx: Context) -> None:
    st = ctx.state
    vol = ctx.volume
    own = (ctx.options.host or fsck_identity()).uuid
    writer = st.attachment.heartbeat.slot if st.attachment is not None else None
    carried_stale = st.carried_stale
    records: list[SlotRecord] = []
    for i, addr, raw, hb in _read_region(ctx):
        rec = SlotRecord(i, addr, raw, hb, in_use=hb.state == HB_IN_USE)
        fixes = _slot_defects(hb, addr)
        if fixes:
            detail = "; ".join(d for d, _ in fixes)
            action = ", ".join(a for _, a in fixes)
            if ctx.problem(Code.HB_SLOT_BAD, subject=f"slot {i}", slot=i, addr=f"{addr:#x}", detail=detail,
                           action=action):
                new = Container(hb)
                for _, act in fixes:
                    _apply_slot_fix(new, addr, act)
                image = Heartbeat.build(new)
                with ctx.repair():
                    if not vol.device.compare_and_write(addr, raw, image):
                        raise _SlotChanged(f"heartbeat slot {i} changed while being repaired")
                    rec = SlotRecord(i, addr, image, Heartbeat.parse(image), in_use=new.state == HB_IN_USE)
        if rec.in_use:
            _journal_facts(ctx, rec)
            if i == writer:
                rec.liveness = "ours"
            elif rec.hb.owner == own:
                rec.liveness, rec.reason = "stale", "left by an interrupted vmfs-fsck of this host"
            elif rec.hb.owner in ctx.options.stale_hosts or "all" in ctx.options.stale_hosts:
                rec.liveness, rec.reason = "stale", "declared gone with --stale-host"
            else:
                rec.liveness = "in use"
            if carried_stale is not None and rec.liveness == "in use":
                # the repair trusts the check's watch while the slot is still exactly as watched
                if (i, rec.hb.hbGen, rec.hb.stamp) in carried_stale:
                    rec.liveness, rec.reason = "stale", carried_stale[(i, rec.hb.hbGen, rec.hb.stamp)]
                else:
                    rec.liveness = "live"
        records.append(rec)
    st.slots = records
    if ctx.options.watch and carried_stale is None:
        _watch(ctx, records)


class _SlotChanged(VmfsError):
    pass


def _slot_defects(hb: Container, addr: int) -> list[tuple[str, str]]:
    """(what is wrong, fix action) pairs for one heartbeat slot."""
    out = []
    if hb.state not in (HB_FREE, HB_IN_USE):
        out.append((f"state 0x{hb.state:08x} is neither free nor in use", "mark it free"))
    if hb.addr != addr:
        out.append((f"records address 0x{hb.addr:x}", "set its address"))
    if hb.state == HB_IN_USE and hb.owner == NULL_UUID:
        out.append(("in use without an owner", "mark it free"))
    if hb.state == HB_FREE and (hb.owner != NULL_UUID or hb.journalAddr or hb.journalVolAddr):
        out.append(("free but still names an owner or a journal", "clear its owner and journal"))
    return out


def _apply_slot_fix(hb: Container, addr: int, action: str) -> None:
    if action == "set its address":
        hb.addr = addr
    elif action in ("mark it free", "clear its owner and journal"):
        if hb.state != HB_FREE:
            hb.hbGen += 1
        hb.state = HB_FREE
        hb.owner = NULL_UUID
        hb.journalAddr = 0
        hb.journalVolAddr = 0


def _journal_facts(ctx: Context, rec: SlotRecord) -> None:
    """Where an in-use slot's journal is and what it holds (vmfs-format.md 10; our format:
    vmfs/ondisk/journal.py): a file block on VMFS5, a journal block of .jbc.sf on VMFS6.
    Anything without our magic is foreign: ESXi's own journal format is not known, so it is
    never replayed."""
    geo = ctx.geometry
    vol = ctx.volume
    a = rec.hb.journalAddr
    if not a:
        rec.journal, rec.journal_state = "none", ""
        return
    if geo.vmfs6:  # a journal block of .jbc.sf (vmfs.volume.journalblock)
        jbc = vol.resources.get(R.RES_JB)
        c, r = A.jb_split(a)
        if a & 7 != A.ADDR_JB or jbc is None or c >= jbc.num_clusters or r >= jbc.rpc \
                or c * jbc.rpc + r >= jbc.num_resources:
            rec.journal, rec.journal_state = f"0x{a:x} (not a journal block of this volume)", "invalid"
            return
        rec.journal, rec.journal_jb = f"JB {c}/{r}", (c, r)
        rec.journal_offset, size = journal_area(vol, a)
    else:
        fb = vol.resources[R.RES_FB]
        block = geo.codec.fb_block(a)
        if a & 7 != A.ADDR_FB or block >= fb.num_resources:
            rec.journal, rec.journal_state = f"0x{a:x} (not a file block of this volume)", "invalid"
            return
        rec.journal, rec.journal_block, rec.journal_offset = f"FB {block}", block, block * geo.block_size
        size = geo.block_size
    rec.journal_size = size
    if rec.hb.journalVolAddr != rec.journal_offset:
        rec.journal += f" (the slot's volume address 0x{rec.hb.journalVolAddr:x} disagrees)"
    head = JournalHeader.parse(vol.device.read(rec.journal_offset, JOURNAL_HEADER_SIZE))
    if head.magic == JOURNAL_MAGIC:
        n = min(JOURNAL_HEADER_SIZE + head.payloadLength, size)
        try:
            found = decode_transaction(vol.device.read(rec.journal_offset, n), size)
        except VmfsError:
            found = None
        if found is None:
            rec.journal_state = "torn"
        else:
            rec.journal_state, rec.journal_records = "committed", len(found[1])
        return
    body = vol.device.read(rec.journal_offset, size)
    rec.journal_state = "empty" if body.count(0) == len(body) else "foreign"


def _watch(ctx: Context, records: list[SlotRecord]) -> None:
    """Watch the in-use slots of other hosts over the lease: a stamp that does not move means
    the host is gone (esx-design.md 1.3)."""
    watched = [r for r in records if r.liveness == "in use"]
    if not watched:
        return
    lease = lease_seconds(ctx)
    ctx.note(f"watching {len(watched)} heartbeat slot(s) in use for {lease:g} s")
    time.sleep(lease)
    now = {i: hb for i, _, _, hb in _read_region(ctx)}
    for r in watched:
        hb = now[r.slot]
        if (hb.state, hb.hbGen, hb.stamp, hb.owner) == (r.hb.state, r.hb.hbGen, r.hb.stamp, r.hb.owner):
            r.liveness, r.reason = "stale", f"its stamp did not change in {lease:g} s"
        else:
            r.liveness, r.reason = "live", f"its stamp moved within {lease:g} s"


def describe_slot(rec: SlotRecord) -> str:
    """One line about an in-use slot, e.g. for the real VMFS5 sample's slot 984."""
    ip = decode_name(rec.hb.ip) or "no IP"
    what = {
        "committed": f", {rec.journal_records} records committed in pyvmfs journal format",
        "torn": ", a torn pyvmfs journal transaction (nothing to replay)",
        "empty": ", empty",
        "foreign": ", not in pyvmfs journal format (e.g. ESXi's): not replayed",
        "invalid": "",
    }.get(rec.journal_state, "")
    return (f"heartbeat slot {rec.slot}: in use by host {rec.hb.owner} ({ip}), generation {rec.hb.hbGen}, "
            f"journal at {rec.journal}{what}")
