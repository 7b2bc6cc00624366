"""Pass 5: resource bitmaps and counts against what is in use.

Checks
    Every cluster header of every resource file, read straight from the disk one cluster group
    at a time (not through the repair's guarded view): lock type and own address, cluster
    number, resource count; every bitmap bit against the resources in use (pass 2's owners: FD
    maps, pointer blocks, the FDs themselves, the journal blocks of in-use heartbeat slots):
    in use but marked free (a block two files may get), marked used but not in use (leaked);
    bits past the cluster's last resource; the free count against the cluster's own bitmap.
    VMFS6: 1-bit resources as VMFS5; SFB clusters (2 bits per block) per block too, free being
    state 3 as the library allocates (vmfs-format.md 6.4); LFB clusters are not checked (the
    library does not allocate large file blocks).

Needs
    ``state.owners`` (pass 2, after pass 4's clears and links), ``state.fds``, ``state.slots``.

Leaves
    ``state.guards`` (check phase: per cluster metadata, resources in use that its
    bitmap calls free, for the repair's device), ``state.cluster_locks`` for pass 6,
    ``state.usage`` for the summary.  Repairs: each cluster's metadata rewritten with the
    right bitmap, count, number and first-free index (the library's rule) in transactions of up
    to 256 clusters; a wrong lock type or address in its lock sector.
"""

from __future__ import annotations

from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from construct import Struct

from vmfs.cluster.alloc import bitmap_mark, cluster_meta_bytes
from vmfs.errors import CorruptError
from vmfs.format import address as A
from vmfs.fsck.context import Context
from vmfs.fsck.maps import RESOURCE_LABEL, key_label, read_raw, run_offset
from vmfs.fsck.problems import Code
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import fast
from vmfs.ondisk.lock import LockFields
from vmfs.volume.resources import RESOURCE_NAMES, Cluster, ResourceFile

LABEL = "Pass 5: Checking resource bitmaps and counts"
#: the lock fields up to the owner and the VMFS5 cluster metadata, compiled (see pass 2)
_LOCK_HEAD = fast(Struct(*LockFields.subcons[:7]))
_META5 = fast(R.ClusterMeta5)
#: parsed values as named tuples (attribute access on a construct Container costs ~0.5 us)
_Lock = namedtuple("_Lock", [c.name for c in LockFields.subcons[:7]])  # type: ignore[misc]
_Meta5 = namedtuple("_Meta5", [c.name for c in R.ClusterMeta5.subcons])  # type: ignore[misc]
#: the VMFS6 cluster metadata up to its body (bitmap and affinity data), compiled the same way
_META6_HEAD_STRUCT = R.cluster_meta6_head()
_META6_HEAD = fast(_META6_HEAD_STRUCT)
_Meta6 = namedtuple("_Meta6", [c.name for c in _META6_HEAD_STRUCT.subcons])  # type: ignore[misc]
BATCH = 256
#: cluster headers of a child resource read at once (128 SFB headers of 8 KiB: 1 MiB)
_RUN = 128


@dataclass
class _Fix:
    """What to change in one cluster header."""

    res: ResourceFile
    cluster: Cluster
    offset: int  # volume offset of the header
    set_used: set[int] = field(default_factory=set)
    set_free: set[int] = field(default_factory=set)
    meta: dict[str, int] = field(default_factory=dict)
    lock: dict[str, int] = field(default_factory=dict)
    clear_tail: bool = False
    recount: bool = False
    findings: list[Any] = field(default_factory=list)


def _in_use(ctx: Context) -> dict[int, dict[int, set[int]]]:
    st = ctx.state
    vol = ctx.volume
    used: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for (kind, c, r), owner in st.owners.items():
        if isinstance(owner, int) and owner in st.fds:
            used[kind][c].add(r)
    for a in st.fds:
        c, r = A.fd_split(a)
        used[R.RES_FD][c].add(r)
    fb_rpc = vol.resources[R.RES_FB].rpc
    for rec in st.slots:
        if not rec.in_use:
            continue
        if rec.journal_block is not None:
            c, r = divmod(rec.journal_block, fb_rpc)
            used[R.RES_FB][c].add(r)
        elif rec.journal_jb is not None:  # VMFS6: a journal block of .jbc.sf
            c, r = rec.journal_jb
            used[R.RES_JB][c].add(r)
    return used


def _clusters(ctx: Context, res: ResourceFile):  # type: ignore[no-untyped-def]
    """(cluster, header volume offset) of every cluster, read from the raw disk in large reads."""
    raw_dev = ctx.state.raw
    ch = res.ch

    def read(offset: int, length: int) -> tuple[bytes, list[int]]:
        data, runs = read_raw(res.reader, raw_dev, offset, length)
        where = [run_offset(runs, offset + i * ch) for i in range(length // ch)]
        return data, [-1 if w is None else w for w in where]

    if res.parent is not None:
        # headers in the parent's resource slots (VMFS6 SFB clusters in LFB slots): read a run
        # of evenly spaced headers at once
        c = 0
        while c < res.num_clusters:
            start = res.cluster_header_offset(c)
            step = res.cluster_header_offset(c + 1) - start if c + 1 < res.num_clusters else ch
            n = 1
            while (c + n < res.num_clusters and n < _RUN and step >= ch
                   and res.cluster_header_offset(c + n) == start + n * step):
                n += 1
            raw, runs = read_raw(res.reader, raw_dev, start, (n - 1) * step + ch)
            for i in range(n):
                chunk = raw[i * step : i * step + ch]
                where = run_offset(runs, start + i * step)
                yield _cluster6(res, c + i, chunk), -1 if where is None else where
            c += n
            ctx.progress(f"{LABEL} ({res.name})", c, res.num_clusters)
        return
    vmfs5 = not ctx.geometry.vmfs6
    md = ch // 2
    groups = -(-res.num_clusters // res.cpg) if res.cpg else 0
    for g in range(groups):
        first = g * res.cpg
        count = min(res.cpg, res.num_clusters - first)
        raw, offs = read(res.cluster_header_offset(first), count * ch)
        for i in range(count):
            chunk = raw[i * ch : (i + 1) * ch]
            if vmfs5:  # compiled parsers: a 64 TiB volume has 335,545 file-block clusters
                lock = _Lock._make(_LOCK_HEAD.parse(chunk).values())
                meta = _Meta5._make(_META5.parse(chunk[md:]).values())
                yield Cluster(first + i, 0, lock, meta, meta.totalResources, meta.freeResources,
                              bytes(meta.bitmap), 1), offs[i]
            else:
                yield _cluster6(res, first + i, chunk), offs[i]
        ctx.progress(f"{LABEL} ({res.name})", g + 1, groups)


def _cluster6(res: ResourceFile, number: int, chunk: bytes) -> Cluster:
    """A VMFS6 cluster header, parsed by the compiled head of its metadata (what pass 5 needs:
    lock, number, counts, bitmap); repairs parse it whole again (:func:`_write`)."""
    md = res.ch // 2
    if len(chunk) < res.ch:
        raise CorruptError(f"{res.name} cluster {number} header", None, "beyond the end of the resource file")
    lock = _Lock._make(_LOCK_HEAD.parse(chunk).values())
    meta = _Meta6._make(_META6_HEAD.parse(chunk[md:]).values())
    at = md + R.CLUSTER6_BITMAP_OFFSET
    bitmap = chunk[at : at + res.bitmap_size]
    return Cluster(number, 0, lock, meta, meta.totalResources, meta.freeResources, bitmap, res.bits)


def run(ctx: Context) -> None:
    st = ctx.state
    vol = ctx.volume
    used = _in_use(ctx)
    fixes: list[_Fix] = []
    fb_rpc = vol.resources[R.RES_FB].rpc
    for kind, res in sorted(vol.resources.items()):
        if kind == R.RES_LFB:
            continue
        name = RESOURCE_NAMES[kind]
        missing: list[tuple[_Fix, int]] = []
        leaked: list[tuple[_Fix, int]] = []
        fixes_of_kind: list[tuple[_Fix, bool]] = []
        in_use_total = 0
        vmfs6 = vol.geometry.vmfs6
        lock_type = res.lock_type
        empty: set[int] = set()
        for cl, offset in _clusters(ctx, res):
            want = used[kind].get(cl.number, empty)
            in_use_total += len(want)
            total = min(res.rpc, res.num_resources - cl.number * res.rpc)
            lock, meta = cl.lock, cl.meta
            # bit arithmetic on the whole bitmap, a bit per resource (1 = free), LSB first; a
            # 2-bit SFB bitmap is first turned into that form (free = state 3)
            bits = int.from_bytes(cl.bitmap, "little") if res.bits == 1 else _free_mask(cl.bitmap, res.bits)
            everything = (1 << total) - 1
            free_mask = bits & everything
            want_mask = 0
            for r in want:
                want_mask |= 1 << r
            if (not lock.mode and lock.type == lock_type and lock.addr == offset and meta.clusterNum == cl.number
                    and meta.totalResources == total and free_mask == everything & ~want_mask
                    and cl.free == free_mask.bit_count() and (vmfs6 or not bits >> total)):
                continue  # the common case, decided without a _Fix
            fix = _Fix(res, cl, offset)
            _check_header(ctx, fix)
            if lock.mode:
                st.cluster_locks.append((lock_type, offset, lock.mode, lock.owner, lock.hbAddr, lock.hbGen,
                                         f"{res.name} cluster {cl.number}"))
            missing_mask = want_mask & free_mask
            leaked_mask = ~free_mask & everything & ~want_mask
            missing += [(fix, r) for r in _set_bits(missing_mask)]
            leaked += [(fix, r) for r in _set_bits(leaked_mask)]
            ones = free_mask.bit_count()
            tail = bool(bits >> total) and not vmfs6
            if tail and ctx.problem(Code.CLUSTER_HEADER_BAD, subject=f"{res.name} {cl.number} tail", file=res.name,
                                    cluster=cl.number, field="bitmap", value="bits set past the last resource",
                                    expected="clear"):
                fix.clear_tail = True
                fix.findings.append(ctx.last)
            if cl.free != ones and ctx.problem(Code.CLUSTER_FREE_COUNT, subject=f"{res.name} {cl.number}",
                                               file=res.name, cluster=cl.number, value=cl.free, counted=ones):
                fix.recount = True
                fix.findings.append(ctx.last)
            fixes.append(fix)
            odd = tail or cl.free != ones or cl.meta.clusterNum != cl.number or cl.meta.totalResources != total
            fixes_of_kind.append((fix, odd))
        st.usage[kind] = (res.num_resources, in_use_total)
        _bitmap_problems(ctx, kind, name, missing, leaked, fb_rpc)
        if not ctx.repairing and res.parent is None:
            _guards(ctx, res, fixes_of_kind, missing)
    if ctx.repairing:
        _apply(ctx, [f for f in fixes if f.set_used or f.set_free or f.meta or f.lock or f.clear_tail or f.recount])


def _guards(ctx: Context, res: ResourceFile, fixes: list[tuple[_Fix, bool]], missing: list[tuple[_Fix, int]]) -> None:
    """What the repair's device must show of this resource's clusters (see vmfs.fsck.device):
    resources in use as allocated, and a sound cluster number, resource count and free count,
    so that the library's allocators neither hand out a used block nor refuse a cluster."""
    st = ctx.state
    md = res.ch // 2
    used_free: dict[int, set[int]] = {}
    for fix, r in missing:
        used_free.setdefault(fix.offset, set()).add(r)
    for fix, odd in fixes:
        if fix.offset < 0 or not (odd or fix.offset in used_free):
            continue
        total = min(res.rpc, res.num_resources - fix.cluster.number * res.rpc)
        st.guards[fix.offset + md] = (used_free.get(fix.offset, set()),
                                     {"clusterNum": fix.cluster.number, "totalResources": total}, res)


def _set_bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _check_header(ctx: Context, fix: _Fix) -> None:
    res, cl = fix.res, fix.cluster
    total = min(res.rpc, res.num_resources - cl.number * res.rpc)
    checks = (
        ("lock type", cl.lock.type, res.lock_type, "lock", "type"),
        ("lock address", cl.lock.addr, fix.offset, "lock", "addr"),
        ("cluster number", cl.meta.clusterNum, cl.number, "meta", "clusterNum"),
        ("resource count", cl.meta.totalResources, total, "meta", "totalResources"),
    )
    lock_fix = {}
    for label, value, want, part, key in checks:
        if value == want:
            continue
        if part == "lock":
            lock_fix[key] = want
        if ctx.problem(Code.CLUSTER_HEADER_BAD, subject=f"{res.name} {cl.number} {label}", file=res.name,
                       cluster=cl.number, field=label, value=f"{value:#x}", expected=f"{want:#x}"):
            getattr(fix, part)[key] = want
            fix.findings.append(ctx.last)
    if lock_fix and fix.offset >= 0:
        # the library locks clusters it allocates from: show it a valid lock block from now on
        geo = ctx.geometry
        block = geo.structs.lock.parse(ctx.state.raw.read(fix.offset, geo.md_size))
        for k, v in lock_fix.items():
            block.lock[k] = v
        ctx.state.patch(fix.offset, geo.structs.lock.build(block))


def _bitmap_problems(ctx: Context, kind: int, name: str, missing: list[tuple[_Fix, int]],
                     leaked: list[tuple[_Fix, int]], fb_rpc: int) -> None:
    for code, items, attr in ((Code.BITMAP_USED_MARKED_FREE, missing, "set_used"),
                              (Code.BITMAP_FREE_MARKED_USED, leaked, "set_free")):
        if not items:
            continue
        labels = [key_label((kind, fix.cluster.number, r), fb_rpc) for fix, r in items[:10]]
        text = ", ".join(labels) + (", ..." if len(items) > 10 else "")
        if ctx.problem(code, subject=f"{RESOURCE_LABEL[kind]} {code.name}", resource=name, count=len(items),
                       items=text):
            for fix, r in items:
                getattr(fix, attr).add(r)
                if ctx.last not in fix.findings:
                    fix.findings.append(ctx.last)


def _apply(ctx: Context, fixes: list[_Fix]) -> None:
    vol = ctx.volume
    for start in range(0, len(fixes), BATCH):
        batch = fixes[start : start + BATCH]
        findings = list({id(f): f for fix in batch for f in fix.findings}.values())
        with ctx.repair(*findings), ctx.attachment.transaction() as tx:
            for fix in batch:
                _write(vol, tx, fix)
        vol.invalidate_caches()


def _write(vol: Any, tx: Any, fix: _Fix) -> None:
    res, cl = fix.res, fix.cluster
    md = res.ch // 2
    raw = tx.read(fix.offset, res.ch)
    cur = res.read_cluster(cl.number, raw)
    if fix.lock:
        block = vol.geometry.structs.lock.parse(raw[:md])
        for k, v in fix.lock.items():
            block.lock[k] = v
        tx.write(fix.offset, vol.geometry.structs.lock.build(block))
    meta = cur.meta
    for k, v in fix.meta.items():
        meta[k] = v
    total = min(meta.totalResources, res.rpc)
    bitmap = bytearray(cur.bitmap)
    for r in fix.set_used:
        bitmap_mark(bitmap, r, res.bits, free=False)
    for r in fix.set_free:
        bitmap_mark(bitmap, r, res.bits, free=True)
    if fix.clear_tail:  # VMFS5 only (pass 5 flags no tail on VMFS6)
        for r in range(total, len(bitmap) * 8):
            bitmap[r >> 3] &= ~(1 << (r & 7))
    tx.write(fix.offset + md, cluster_meta_bytes(res, meta, bitmap, total))


def _free_mask(bitmap: bytes, bits: int) -> int:
    """A ``bits``-per-resource bitmap as an int with bit r set where resource r is free."""
    if not bitmap.strip(b"\x00"):
        return 0  # every resource in state 0: all used (a full SFB cluster)
    if R.FREE_STATE[bits] == (1 << bits) - 1 and not bitmap.strip(b"\xff"):
        return (1 << (len(bitmap) * 8 // bits)) - 1  # all in the all-ones free state
    states = np.frombuffer(bitmap, np.uint8)
    per_byte = 8 // bits
    unpacked = np.stack([(states >> (i * bits)) & ((1 << bits) - 1) for i in range(per_byte)], axis=1).ravel()
    free = unpacked == R.FREE_STATE[bits]
    return int.from_bytes(np.packbits(free, bitorder="little").tobytes(), "little")
