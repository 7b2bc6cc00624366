"""Pass 2: every file descriptor and its block map.

Checks
    Every FD slot of ``.fdc.sf``, read one cluster group at a time (4 MiB on VMFS5) in one read.
    A slot holds a file descriptor when its content says so (lock type 0x10C00001, the lock's own
    address, ``descAddr``), whatever the bitmap says, as e2fsck decides inode use from the inode:
    two of the three are enough to salvage it; none or one and a non-zero slot is garbage.  For
    each descriptor: known type and address mode (ZLA), mode bits, block size for its mode,
    size against what its mode can map, every address of its map (right kind for its level,
    naming an existing resource), pointer blocks that point back up their own chain (a cycle),
    blocks past the end of file, the block / pointer-block / to-be-zeroed counts, and every
    resource claimed twice (by two files, by one file twice, or by a file and a live journal).

Needs
    Pass 1's heartbeat slots: the journal blocks of in-use slots are claimed before any file, so
    a file that shares one gets the copy.  System files are in FD cluster 0 and so are claimed
    first too.

Leaves
    ``state.fds`` (every FD in use, with its lock fields for pass 6) and ``state.owners``
    (resource -> first owner) for passes 3-5.  Repairs (VMFS5): salvage a damaged FD header,
    zero garbage slots, clear FDs of unknown type or address mode (their blocks go back in pass 5),
    clear bad or cyclic addresses, clone shared blocks, fix sizes and counts.  A symbolic link
    whose target holds a NUL is cleared as an FD of unknown type is (e2fsck clears such a link
    too): every reader would cut the target at the NUL and so follow another path than the one
    stored; pass 3 then drops its entry.
"""

from __future__ import annotations

import stat as _stat
from collections import namedtuple
from typing import Any

import numpy as np
from construct import Struct

from vmfs.errors import VmfsError
from vmfs.format import address as A
from vmfs.fsck import bulk as bulk_records
from vmfs.fsck.context import Context, FdRecord
from vmfs.fsck.maps import DATA, POINTERS, MapRules, key_label, read_raw
from vmfs.fsck.problems import Code
from vmfs.fsck.repair import FdEdit, apply_fd_edit
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import fast, unpack_ints
from vmfs.ondisk.filedesc import FILE_METADATA_SIZE, FileMetadata
from vmfs.ondisk.lock import LOCK_TYPE_FD, LockFields
from vmfs.volume.filereader import FileReader

LABEL = "Pass 2: Checking file descriptors and their block maps"

#: The lock fields up to the mode (type, addr, hbAddr, hbGen, token, mode), the owner only when
#: the lock is held, and the metadata fields up to numPointerBlocks: declarations cut from the
#: ondisk ones and compiled (construct's code generation), because a volume has 100,000s of FDs.
_LOCK_HEAD = fast(Struct(*LockFields.subcons[:6]))
_LOCK_OWNER = fast(Struct(*LockFields.subcons[:7]))
_META_FIELDS = FileMetadata.subcons[: [c.name for c in FileMetadata.subcons].index("numPointerBlocks") + 1]
_META = fast(Struct(*_META_FIELDS))
_META_SIZE = _META.sizeof()
#: parsed values as named tuples: attribute access on a construct Container costs ~0.5 us
_Head = namedtuple("_Head", [c.name for c in LockFields.subcons[:6]])  # type: ignore[misc]
_Meta = namedtuple("_Meta", [c.name for c in _META_FIELDS])  # type: ignore[misc]

KNOWN_TYPES = {F.TYPE_DIRECTORY, F.TYPE_REGFILE, F.TYPE_SYMLINK, F.TYPE_SYSFILE, F.TYPE_RDM}
KNOWN_ZLA = {F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS, F.ZLA_POINTER_BLOCKS, F.ZLA_POINTER2_BLOCKS,
             F.ZLA_DOUBLE_INDIRECT, F.ZLA_RESIDENT}
TYPE_BITS = {F.TYPE_DIRECTORY: _stat.S_IFDIR, F.TYPE_REGFILE: _stat.S_IFREG, F.TYPE_SYMLINK: _stat.S_IFLNK,
             F.TYPE_RDM: _stat.S_IFREG}


def run(ctx: Context) -> None:
    st = ctx.state
    vol = ctx.volume
    rules = MapRules(vol)
    for rec in st.slots:
        if rec.in_use and rec.journal_block is not None:
            key = (R.RES_FB, *divmod(rec.journal_block, vol.resources[R.RES_FB].rpc))
            st.owners.setdefault(key, f"the journal of heartbeat slot {rec.slot}")
    fdc = vol.resources[R.RES_FD]
    ch = fdc.ch
    groups = -(-fdc.num_clusters // fdc.cpg) if fdc.cpg else 0
    dtype = _fd_dtype(vol.geometry.md_size, fdc.rsz)
    for g in range(groups):
        first = g * fdc.cpg
        count = min(fdc.cpg, fdc.num_clusters - first)
        base = fdc.cluster_header_offset(first)
        raw, runs = read_raw(fdc.reader, st.raw, base, fdc.cpg * ch + count * fdc.rpc * fdc.rsz)
        start = fdc.cpg * ch
        bulk = _Bulk(raw, start, count * fdc.rpc, fdc.rsz, dtype, base, runs, vol.geometry.resident_capacity)
        for i in range(count):
            c = first + i
            cluster = fdc.read_cluster(c, raw[i * ch : (i + 1) * ch])
            slots = min(fdc.rpc, fdc.num_resources - c * fdc.rpc)
            for r in range(slots):
                k = i * fdc.rpc + r
                if k >= bulk.count or not bulk.used[k]:
                    continue  # an all-zero slot, or one cut short by the end of the file
                where = bulk.where[k]
                if where < 0:
                    continue  # a hole of .fdc.sf
                marked = r < cluster.total and not cluster.is_free(r)
                address = A.make_fd(c, r)
                rec = bulk.clean_record(k, address, where, marked)
                if rec is not None:
                    st.fds[address] = rec
                else:
                    off = start + k * fdc.rsz
                    _examine(ctx, rules, address, where, raw[off : off + fdc.rsz], marked)
        ctx.progress(LABEL, g + 1, groups)


#: FD fields the bulk pre-check reads: part 0 the lock, part 1 the metadata (at the md offset)
_BULK_LOCK = ["type", "addr", "hbAddr", "hbGen", "mode"]
_BULK_META = ["descAddr", "generation", "linkCount", "type", "fileLength", "blockSize", "numBlocks", "mode", "zla",
              "numPointerBlocks"]


def _fd_dtype(md: int, rsz: int) -> Any:
    return bulk_records.dtype_of([(LockFields, 0, _BULK_LOCK), (FileMetadata, md, _BULK_META)], rsz)


class _Bulk:
    """One cluster group's FD slots decoded at once, and which of them are plainly healthy.

    Most FDs of a big volume are small files and directories with resident data and no lock held.
    For those, every check :func:`_examine` makes (header signals, known type and address mode,
    mode bits, resident size and counts) is one array operation here, and the record it would
    keep is built from the decoded fields; an FD failing any of them, and every FD with a block
    map, a symbolic link, a system file or a held lock, goes through :func:`_examine` as before,
    so what is reported and repaired is unchanged."""

    def __init__(self, raw: bytes, start: int, count: int, rsz: int, dtype: Any, base: int, runs: Any,
                 capacity: int) -> None:
        rec = bulk_records.records(raw, start, count, dtype)
        self.count = len(rec)
        self.used = bulk_records.nonzero_rows(raw, start, self.count, rsz).tolist()
        pos = base + start + np.arange(self.count, dtype=np.int64) * rsz
        where = np.full(self.count, -1, dtype=np.int64)
        for first, length, loc in runs:
            inside = (pos >= first) & (pos < first + length)
            if loc is not None:
                where[inside] = loc + pos[inside] - first
        self.where = where.tolist()
        kind = rec["1.type"]
        mode = rec["1.mode"]
        fmt = mode & 0o170000  # S_IFMT's bits
        healthy = (
            (rec["0.type"] == LOCK_TYPE_FD) & (rec["0.mode"] == 0) & (rec["1.zla"] == F.ZLA_RESIDENT)
            & (((kind == F.TYPE_DIRECTORY) & ((fmt == 0) | (fmt == _stat.S_IFDIR)))
               | ((kind == F.TYPE_REGFILE) & ((fmt == 0) | (fmt == _stat.S_IFREG))))
            & ((mode >> 16) == 0) & (rec["1.fileLength"] <= capacity) & (rec["1.numBlocks"] == 0)
            & (rec["1.numPointerBlocks"] == 0)
        )
        self.healthy = healthy.tolist()
        self.columns = {name: rec[name].tolist() for name in rec.dtype.names}

    def clean_record(self, k: int, address: int, where: int, marked: bool) -> FdRecord | None:
        """The record of slot ``k`` if it is plainly healthy at ``address`` / volume offset
        ``where`` (the two signals the arrays cannot know), else None: look closer."""
        col = self.columns
        if not self.healthy[k] or col["0.addr"][k] != where or col["1.descAddr"][k] != address:
            return None
        kind = col["1.type"][k]
        return FdRecord(
            address, where, kind, F.ZLA_RESIDENT, col["1.fileLength"][k], col["1.blockSize"][k],
            col["1.generation"][k], col["1.linkCount"][k], col["1.mode"][k], kind == F.TYPE_DIRECTORY, marked,
            0, "", col["0.hbAddr"][k], col["0.hbGen"][k],
        )


def _examine(ctx: Context, rules: MapRules, address: int, vol_offset: int, slot: bytes, marked: bool) -> None:
    st = ctx.state
    geo = rules.geo
    md = geo.md_size
    head = _Head._make(_LOCK_HEAD.parse(slot).values())
    meta = _Meta._make(_META.parse(slot[md : md + _META_SIZE]).values())
    fd = f"{address:#x}"
    edit = FdEdit(address, vol_offset)
    if head.type != LOCK_TYPE_FD or head.addr != vol_offset or meta.descAddr != address:
        signals = {
            "lock type": (head.type, LOCK_TYPE_FD),
            "lock address": (head.addr, vol_offset),
            "descAddr": (meta.descAddr, address),
        }
        wrong = [(k, v, e) for k, (v, e) in signals.items() if v != e]
        if len(wrong) >= 2:
            if ctx.problem(Code.FD_SLOT_GARBAGE, subject=fd, fd=fd, bit="marked in use" if marked else "free"):
                apply_fd_edit(ctx, FdEdit(address, vol_offset, zero=True, findings=[ctx.last]))
            return
        for name, value, expected in wrong:
            if ctx.problem(Code.FD_HEADER_DAMAGED, subject=fd, fd=fd, field=name, value=f"{value:#x}",
                           expected=f"{expected:#x}"):
                edit.findings.append(ctx.last)
                if name == "descAddr":
                    edit.meta["descAddr"] = address
                else:
                    edit.lock["type" if name == "lock type" else "addr"] = expected
        st.patch(vol_offset, salvaged(geo, slot, address, vol_offset))
    for name, value, known in (("type", meta.type, KNOWN_TYPES), ("address mode (ZLA)", meta.zla, KNOWN_ZLA)):
        if value not in known:
            if ctx.problem(Code.FD_BAD_KIND, subject=fd, fd=fd, field=name, value=value):
                apply_fd_edit(ctx, FdEdit(address, vol_offset, zero=True, findings=[ctx.last]))
            return
    owner = _LOCK_OWNER.parse(slot).owner if head.mode else ""
    rec = FdRecord(
        address, vol_offset, meta.type, meta.zla, meta.fileLength, meta.blockSize, meta.generation, meta.linkCount,
        meta.mode, meta.type == F.TYPE_DIRECTORY or (meta.type == F.TYPE_SYSFILE and _stat.S_ISDIR(meta.mode)),
        marked, head.mode, owner, head.hbAddr, head.hbGen,
    )
    _check_fields(ctx, rec, meta, edit)
    if meta.type == F.TYPE_SYMLINK and _bad_symlink(ctx, address, meta.fileLength):
        apply_fd_edit(ctx, FdEdit(address, vol_offset, zero=True, findings=[ctx.last]))
        return
    if meta.zla == F.ZLA_RESIDENT:
        _check_resident(ctx, rec, meta, edit)
    else:
        start = geo.ptr_array_offset
        ptrs = unpack_ints(slot[start : start + geo.ptr_count * geo.addr_width], geo.addr_width)
        _check_map(ctx, rules, rec, meta, ptrs, edit)
    if edit:
        apply_fd_edit(ctx, edit, rules)
    st.fds[address] = rec


def _bad_symlink(ctx: Context, address: int, size: int) -> bool:
    """Report a symbolic link whose target holds a NUL; True when it is to be cleared now.  Read
    before the map walk claims its blocks (a cleared FD must claim none: pass 5 frees them)."""
    try:
        target = FileReader(ctx.volume.read_fd(address)).read(0, min(size, 1 << 16))
    except VmfsError:
        return False  # the map checks say what is wrong with it
    if b"\x00" not in target:
        return False
    fd = f"{address:#x}"
    shown = repr(target[:80].decode("utf-8", "surrogateescape"))
    return ctx.problem(Code.SYMLINK_BAD_TARGET, subject=fd, fd=fd, target=shown, offset=target.index(0))


def salvaged(geo: Any, slot: bytes, address: int, vol_offset: int) -> bytes:
    """An FD's lock and metadata sectors with its type, own address and ``descAddr`` put right:
    what the library is shown (it validates all three) until the repair writes them."""
    fd = geo.structs.file_descriptor.parse(slot)
    fd.lockBlock.lock.type = LOCK_TYPE_FD
    fd.lockBlock.lock.addr = vol_offset
    fd.meta.descAddr = address
    return geo.structs.file_descriptor.build(fd)[: geo.md_size + FILE_METADATA_SIZE]


def _check_fields(ctx: Context, rec: FdRecord, meta: Any, edit: FdEdit) -> None:
    geo = ctx.geometry
    fd = f"{rec.address:#x}"
    fmt = _stat.S_IFMT(meta.mode)
    allowed = {0, TYPE_BITS.get(rec.type, -1)}
    if rec.type == F.TYPE_SYSFILE:
        allowed |= {_stat.S_IFDIR, _stat.S_IFREG}
    if meta.mode >> 16 or fmt not in allowed:
        fixed = meta.mode & 0o7777 | (fmt if fmt in allowed else 0)
        if ctx.problem(Code.FD_BAD_FIELD, subject=fd, fd=fd, field="mode", value=f"0{meta.mode:o}",
                       expected=f"0{fixed:o}"):
            edit.meta["mode"] = fixed
            edit.findings.append(ctx.last)
            rec.mode = fixed
    if rec.zla == F.ZLA_RESIDENT:
        return
    want = geo.sub_block_size if rec.zla == F.ZLA_SUB_BLOCKS else geo.block_size
    ok = meta.blockSize == want or (geo.vmfs6 and rec.zla != F.ZLA_SUB_BLOCKS and meta.blockSize == geo.lfb_size)
    if not ok and ctx.problem(Code.FD_BAD_FIELD, subject=fd, fd=fd, field="block size", value=meta.blockSize,
                   expected=want):
        edit.meta["blockSize"] = want
        edit.meta["blockOffsetShift"] = want.bit_length() - 1
        edit.findings.append(ctx.last)
        rec.block_size = want


def _check_resident(ctx: Context, rec: FdRecord, meta: Any, edit: FdEdit) -> None:
    geo = ctx.geometry
    fd = f"{rec.address:#x}"
    cap = geo.resident_capacity
    if meta.fileLength > cap and ctx.problem(
        Code.FD_SIZE_BEYOND_MAP, subject=fd, fd=fd, size=meta.fileLength, mode="resident", capacity=cap, new_size=cap
    ):
        edit.meta["fileLength"] = cap
        edit.findings.append(ctx.last)
        rec.size = cap
    for name, value in (("numBlocks", meta.numBlocks), ("numPointerBlocks", meta.numPointerBlocks)):
        if value and ctx.problem(Code.FD_COUNT_WRONG, subject=f"{fd} {name}", fd=fd, field=name, value=value,
                                 counted=0):
            edit.meta[name] = 0
            edit.findings.append(ctx.last)


class _Walk:
    """One FD's map walked: counts, bad and cyclic addresses, claims."""

    def __init__(self, ctx: Context, rules: MapRules, rec: FdRecord, eof_index: int) -> None:
        self.ctx = ctx
        self.rules = rules
        self.rec = rec
        self.owners = ctx.state.owners
        self.eof_index = eof_index
        self.blocks = 0
        self.pbs = 0
        self.tbz = 0
        self.last = -1
        self.past_eof: list[tuple[tuple[Any, ...], int]] = []  # (location, address)
        self.bad: list[tuple[tuple[Any, ...], int, str]] = []
        self.cycles: list[tuple[tuple[Any, ...], int]] = []
        self.shared: dict[Any, list[Any]] = {}  # other owner -> keys
        self.unreadable = False

    def walk(self, ptrs: Any, zla: int) -> None:
        levels = self.rules.levels[zla]
        self._level(list(ptrs), 0, levels, lambda i: ("fd", i), (), 0)

    def _claim(self, key: Any) -> None:
        first = self.owners.get(key)
        if first is None:
            self.owners[key] = self.rec.address
        else:
            self.shared.setdefault(first, []).append(key)

    def _level(self, entries: list[int], level: int, levels: Any, loc, ancestors: tuple[int, ...], base: int) -> None:  # type: ignore[no-untyped-def]
        rules = self.rules
        role = levels.roles[level]
        kinds = levels.kinds[level]
        span = levels.spans[level]
        for i, a in enumerate(entries):
            if not a:
                continue
            where = loc(i)
            if a in ancestors:
                self.cycles.append((where, a))
                continue
            if a & 7 not in kinds:
                self.bad.append((where, a, f"a {A.KIND_NAMES[a & 7]} address where {_kinds(kinds)} belongs"))
                continue
            key = rules.key(a)
            if key is None:
                self.bad.append((where, a, "no such resource on this volume"))
                continue
            self._claim(key)
            if role == POINTERS:
                self.pbs += 1
                try:
                    children = rules.read_pb(a)
                except VmfsError:  # a pointer block that cannot be read stops the count checks only
                    self.unreadable = True
                    continue
                self._level(children, level + 1, levels, lambda j, a=a: ("pb", a, j), (*ancestors, a),
                            base + i * span)
            else:
                assert role == DATA
                index = base + i
                self.blocks += 1
                if rules.is_tbz(a):
                    self.tbz += 1
                self.last = max(self.last, index)
                if index >= self.eof_index:
                    self.past_eof.append((where, a))


def _preallocated(rules: MapRules, rec: FdRecord) -> int:
    """Blocks the FD says it preallocated past its end (``numPreAllocBlocks``, FD +0x84): those
    are not a problem.  Read only when blocks past the end are found (rarely)."""
    geo = rules.geo
    raw = rules.volume.device.read(rec.vol_offset + geo.md_size, FILE_METADATA_SIZE)
    return FileMetadata.parse(raw).numPreAllocBlocks


def _kinds(kinds: frozenset[int]) -> str:
    return "/".join(A.KIND_NAMES[k] for k in sorted(kinds))


def _where(rules: MapRules, location: tuple[Any, ...]) -> str:
    if location[0] == "fd":
        return f"pointer {location[1]}"
    return f"entry {location[2]} of pointer block {rules.describe(location[1])}"


def _clear(edit: FdEdit, location: tuple[Any, ...]) -> None:
    if location[0] == "fd":
        edit.clear_top.add(location[1])
    else:
        edit.clear_pb.setdefault(location[1], set()).add(location[2])


def _check_map(ctx: Context, rules: MapRules, rec: FdRecord, meta: Any, ptrs: Any, edit: FdEdit) -> None:
    geo = rules.geo
    fd = f"{rec.address:#x}"
    bs = rec.block_size
    per_slot = {F.ZLA_FILE_BLOCKS: 1, F.ZLA_SUB_BLOCKS: 1, F.ZLA_POINTER_BLOCKS: geo.ptrs_per_pb,
                F.ZLA_POINTER2_BLOCKS: geo.ptrs_per_pb, F.ZLA_DOUBLE_INDIRECT: geo.ptrs_per_pb**2}[rec.zla]
    capacity = geo.ptr_count * per_slot * bs
    size = meta.fileLength
    walk = _Walk(ctx, rules, rec, -(-min(size, capacity) // bs) if bs else 0)
    walk.walk(ptrs, rec.zla)
    cleared_blocks = 0
    for where, a in walk.cycles:
        if ctx.problem(Code.FD_PB_CYCLE, subject=f"{fd} {where}", fd=fd, pb=rules.describe(a),
                       where=_where(rules, where)):
            _clear(edit, where)
            edit.findings.append(ctx.last)
    for where, a, detail in walk.bad:
        if ctx.problem(Code.FD_BAD_ADDRESS, subject=f"{fd} {where}", fd=fd, where=_where(rules, where),
                       address=f"{a:#x}", detail=detail):
            _clear(edit, where)
            edit.findings.append(ctx.last)
    if walk.shared:
        keys = [k for ks in walk.shared.values() for k in ks]
        fb_rpc = ctx.volume.resources[R.RES_FB].rpc
        others = ", ".join(sorted(f"FD {o:#x}" if isinstance(o, int) else str(o) for o in walk.shared))
        items = ", ".join(key_label(k, fb_rpc) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        if ctx.problem(Code.FD_SHARED_BLOCKS, subject=fd, fd=fd, count=len(keys), others=others, items=items):
            edit.clone = True
            edit.findings.append(ctx.last)
    if size > capacity:
        new_size = min((walk.last + 1) * bs, capacity) if walk.last >= 0 else 0
        if ctx.problem(Code.FD_SIZE_BEYOND_MAP, subject=fd, fd=fd, size=size, mode=rec.zla, capacity=capacity,
                       new_size=new_size):
            edit.meta["fileLength"] = new_size
            edit.findings.append(ctx.last)
            rec.size = size = new_size
    if walk.past_eof and size <= capacity and len(walk.past_eof) > _preallocated(rules, rec):
        end = (walk.last + 1) * bs
        extend = rec.type in (F.TYPE_REGFILE, F.TYPE_RDM)
        action = f"Set the size to {end}" if extend else "Free the blocks past the end"
        if ctx.problem(Code.FD_BLOCKS_PAST_EOF, subject=fd, fd=fd, count=len(walk.past_eof), size=size, end=end,
                       action=action):
            edit.findings.append(ctx.last)
            if extend:
                edit.meta["fileLength"] = end
                rec.size = end
            else:
                for where, _ in walk.past_eof:
                    _clear(edit, where)
                cleared_blocks += len(walk.past_eof)
    # bad and cyclic entries were never counted; blocks freed past the end are
    past = walk.past_eof if cleared_blocks else []
    counted = {
        "numBlocks": walk.blocks - len(past),
        "numPointerBlocks": walk.pbs,
        "TBZ blocks": walk.tbz - sum(1 for _, a in past if rules.is_tbz(a)),
    }
    values = {
        "numBlocks": meta.numBlocks,
        "numPointerBlocks": meta.numPointerBlocks,
        "TBZ blocks": meta.numTBZBlocksLo | meta.numTBZBlocksHi << 32,
    }
    if walk.unreadable:
        return
    for name, want in counted.items():
        if values[name] == want or not ctx.problem(
            Code.FD_COUNT_WRONG, subject=f"{fd} {name}", fd=fd, field=name, value=values[name], counted=want
        ):
            continue
        edit.findings.append(ctx.last)
        if name == "numBlocks":
            edit.meta["numBlocks"] = want
            edit.meta["newSinceEpochLo"] = want & 0xFFFFFFFF
            edit.meta["newSinceEpochHi"] = want >> 32
        elif name == "numPointerBlocks":
            edit.meta["numPointerBlocks"] = want
        else:
            edit.meta["numTBZBlocksLo"] = want & 0xFFFFFFFF
            edit.meta["numTBZBlocksHi"] = want >> 32
