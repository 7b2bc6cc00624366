"""The bytes of a new VMFS6 volume, as (file offset, bytes) pieces per system file.

Everything is built through the construct declarations of :mod:`vmfs.ondisk`; the layout comes
from :mod:`vmfs.mkfs.layout6`.  Values that only the sample shows ([O] in vmfs-format.md 6.4,
8.3) are named constants here, each with where it was seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from construct import Container

from vmfs.format import address as A
from vmfs.format.builders import (
    fd_bytes,
    field_span,
    file_metadata,
    lock_block_bytes,
    lock_fields,
    pointer_array_bytes,
    repeat_record,
)
from vmfs.mkfs import content as content5
from vmfs.mkfs.content import heartbeat_region
from vmfs.mkfs.layout import Layout, ResourceLayout, SystemFileLayout
from vmfs.mkfs.layout6 import (
    CLUSTERS_PER_GROUP,
    FS_MAJOR,
    FS_MINOR,
    JB_SIZE,
    LFB_SHIFT,
    MD_ALIGNMENT,
    ROOT_ENTRIES,
    SB_RPC,
    Plan6,
)
from vmfs.ondisk import dirent6 as D
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import SECTOR, encode_name, parse_uuid
from vmfs.ondisk.fsdesc import CONFIG_DENSE_SBPC, CONFIG_PUBLIC, FS_DESCRIPTOR_OFFSET
from vmfs.ondisk.heartbeat import HEARTBEAT_REGION_OFFSET
from vmfs.ondisk.lock import LOCK_TYPE_BASE, LOCK_TYPE_FD

Piece = tuple[int, bytes]

FS_CONFIG = CONFIG_PUBLIC | CONFIG_DENSE_SBPC
FRESH_TOKEN = 1
SYSTEM_GENERATION = 1
# FS descriptor values of the sample (12.1) that no rule derives
MAX_JOURNAL_SLOTS_PER_TXN = 64
UNMAP_PRIORITY = 1
PTR_BLOCK_SHIFT = 16
SFB_ADDR_BITS = 44
LEASE_INTERVAL_MS = 16000
RECLAIM_WINDOW_MS = 4000

# Resource file headers (6.2), per type: flags, affinityPerCluster, affinityPerResource, bitsPerResource
HEADER6 = {
    R.RES_FD: (0x4, None, 1, 1),
    R.RES_SB: (0x4, None, 1, 1),
    R.RES_PB: (0x4, None, 1, 1),
    R.RES_PB2: (0x4, None, 1, 1),
    R.RES_JB: (0x0, None, 1, 1),
    R.RES_LFB: (0x35, 840, 52, 3),
    R.RES_FB: (0x2A, 216, 1, 2),
}
#: the SFB child header's file offset inside .fbb.sf (6.5)
CHILD_META_OFFSET = 0x1000

# Cluster metadata (6.4): offsets inside the metadata unit
UNKNOWN30 = 1  # 1 in every cluster of the sample [O]
AFFINITY_AT = {R.RES_FD: 0x8E0, R.RES_SB: 0x8E0, R.RES_PB2: 0x2E0}  # u32 owner FD per resource [O]
SFB_OWNERS_AT = 0x948  # (u32 FD, u32 blocks) per owner of blocks in an SFB cluster [O]
LFB_SLOT_AT = 0xE0  # u64 per LFB, 0xFF once converted into an SFB cluster [O]
LFB_CONVERTED_MARK = 0xFF
LFB_CONVERTED = 4  # 3-bit LFB value of a converted LFB [V6]
#: unknown28 bytes: LFB clusters hold 7 at +0x2A, SFB clusters 1 at +0x2B [O]
UNKNOWN28 = {R.RES_LFB: bytes([0, 0, 7, 0, 0, 0, 0, 0]), R.RES_FB: bytes([0, 0, 0, 1, 0, 0, 0, 0])}
#: 2-bit value of a free SFB (see :data:`vmfs.ondisk.resource.FREE_STATE`, [U])
SFB_FREE = R.FREE_STATE[2]
#: The data area of an FD mapped through a PB2 starts with 2 (the sample's .sbc.sf) [O]
PB2_DATA_MARK = 2


def _lock_type(kind: int) -> int:
    return LOCK_TYPE_BASE + kind + 1


def _mac(layout: Layout) -> bytes:
    return parse_uuid(layout.options.host_uuid or "")[10:16]


def _now(layout: Layout) -> int:
    return (layout.options.creation_time_us or 0) // 1_000_000


def _extra(layout: Layout) -> Plan6:
    assert isinstance(layout.extra, Plan6)
    return layout.extra


# --- FS descriptor ---------------------------------------------------------------------------------


def fs_descriptor(layout: Layout) -> bytes:
    geo = layout.geometry
    return content5.fs_descriptor(
        layout, FS_MAJOR, FS_MINOR, fdcClustersPerGroup=CLUSTERS_PER_GROUP,
        maxJournalSlotsPerTxn=MAX_JOURNAL_SLOTS_PER_TXN, unmapPriority=UNMAP_PRIORITY,
        physDiskBlockSize=SECTOR, mdAlignment=MD_ALIGNMENT, sfbToLfbShift=LFB_SHIFT, ptrBlockShift=PTR_BLOCK_SHIFT,
        sfbAddrBits=SFB_ADDR_BITS, tbzGranularity=geo.block_size, journalBlockSize=JB_SIZE,
        leaseIntervalMs=LEASE_INTERVAL_MS, reclaimWindowMs=RECLAIM_WINDOW_MS,
    )


def fs_descriptor_piece(layout: Layout) -> Piece:
    return FS_DESCRIPTOR_OFFSET, fs_descriptor(layout)


# --- file descriptors -------------------------------------------------------------------------------


def block_numbers(f: SystemFileLayout) -> list[int]:
    return [b for first, count in f.block_runs for b in range(first, first + count)]


def _grows(layout: Layout) -> bool:
    return layout.system_file(".sbc.sf").zla == F.ZLA_POINTER2_BLOCKS


def _fd(layout: Layout, f: SystemFileLayout) -> bytes:
    geo = layout.geometry
    meta = file_metadata(geo, address=f.fd_address, generation=SYSTEM_GENERATION, ftype=f.ftype, mode=f.mode,
                         now=_now(layout), links=f.links, zla=f.zla, block_size=geo.block_size)
    meta.fileLength = f.file_length
    meta.numBlocks = f.num_blocks
    # newSinceEpoch: the blocks of the file's first allocation; .fdc.sf got one at bootstrap and
    # the rest when it grew, .sbc.sf counts its growth (sample: 1 of 129, 370 of 370) [O]
    meta.newSinceEpochLo = 1 if f.name == ".fdc.sf" else f.num_blocks
    codec = geo.codec
    if f.zla == F.ZLA_POINTER2_BLOCKS:
        meta.numPointerBlocks = len(f.pointer_blocks)
        if f.name == ".sbc.sf":  # [O] what the growth left in the sample's .sbc.sf
            meta.flags = 0x8
            meta.lastSFBClusterNum = block_numbers(f)[-1] // geo.sfb_rpc
            meta.unknown7C = 1
            meta.affinityBitmap = 1
        pb2 = layout.resource(R.RES_PB2)
        ptrs = [codec.make(A.ADDR_PB2, *divmod(n, pb2.rpc)) for n in f.pointer_blocks]
        data = bytearray(pointer_array_bytes(geo, ptrs))
        data[0] = PB2_DATA_MARK
        data = bytes(data)
    else:
        data = pointer_array_bytes(geo, [codec.make_fb(b) for b in block_numbers(f)])
    lock = lock_fields(LOCK_TYPE_FD, f.fd_offset, token=FRESH_TOKEN, mtime=f.lock_serial)
    return fd_bytes(geo, f.fd_offset, meta, data, lock=lock)


# --- resource files ----------------------------------------------------------------------------------


def resource_header(res: ResourceLayout, *, child: bool = False, parent: ResourceLayout | None = None,
                    converted: int = 0) -> bytes:
    flags, apc, apr, bits = HEADER6[res.kind]
    return R.ResourceHeader.build(Container(
        resourcesPerCluster=res.rpc, clustersPerGroup=res.cpg, clusterGroupOffset=res.cgo, resourceSize=res.rsz,
        clusterGroupSize=res.cgs, numResourcesLo=res.count & 0xFFFFFFFF,
        numClusterGroups=res.num_groups if res.rpc else 0, numResourcesHi=res.count >> 32,
        signature=R.RES_SIGNATURE, version=1, flags=flags,
        affinityPerCluster=res.rpc if apc is None else apc, affinityPerResource=apr, bitsPerResource=bits,
        childMetaOffset=CHILD_META_OFFSET if res.kind == R.RES_LFB else 0,
        parentResourcesPerCluster=parent.rpc if parent else 0,
        parentClustersPerGroup=parent.cpg if parent else 0,
        parentClusterGroupSize=parent.cgs if parent else 0,
        unknown44=bytes(16), convertedClusters=converted, reserved=bytes(R.RES_HEADER_SIZE - 0x58),
    ))


def _pack(values: list[int], bits: int, size: int) -> bytearray:
    """``bits``-bit values LSB-first from bit 0 (6.4)."""
    acc = 0
    for i, v in enumerate(values):
        acc |= v << (i * bits)
    return bytearray(acc.to_bytes(size, "little"))


def cluster_header(layout: Layout, res: ResourceLayout, cluster: int, vol_offset: int, serial: int, *,
                   owners: dict[int, int] | None = None, touched: bool = False,
                   used: set[int] | None = None) -> bytes:
    """Lock block + metadata unit of one VMFS6 cluster.  ``owners``: FD address -> resources it
    holds here (the affinity data); ``touched``: changed by the host after the format proper (the
    counter, MAC and time of the change are set, as the growth of .sbc.sf left them)."""
    geo = layout.geometry
    md = geo.md_size
    total = res.cluster_total(cluster)
    if used is None:
        used = res.used_in(cluster)
    body_size = md - R.CLUSTER6_BITMAP_OFFSET
    if res.kind == R.RES_FB:
        body = _pack([0 if i in used else SFB_FREE for i in range(total)], 2, body_size)
        pairs = sorted((owners or {}).items())
        at = SFB_OWNERS_AT - R.CLUSTER6_BITMAP_OFFSET
        for i, (fd, count) in enumerate(pairs):
            body[at + 8 * i : at + 8 * i + 8] = fd.to_bytes(4, "little") + count.to_bytes(4, "little")
        affinity_count = len(pairs) + 1 if pairs else 0
    elif res.kind == R.RES_LFB:
        body = _pack([LFB_CONVERTED] * total, 3, body_size)
        at = LFB_SLOT_AT - R.CLUSTER6_BITMAP_OFFSET
        for i in range(total):
            body[at + 8 * i] = LFB_CONVERTED_MARK
        affinity_count = 0
    else:
        body = _pack([0 if i in used else 1 for i in range(total)], 1, body_size)
        if owners and res.kind in AFFINITY_AT:
            at = AFFINITY_AT[res.kind] - R.CLUSTER6_BITMAP_OFFSET
            for r, fd in owners.items():
                body[at + 4 * r : at + 4 * r + 4] = fd.to_bytes(4, "little")
        affinity_count = 0
    free = [i for i in range(total) if i not in used]
    meta = R.cluster_meta6(md).build(Container(
        reserved00=bytes(16), signature=R.CLUSTER_SIGNATURE, priority=0, clusterNum=cluster,
        totalResources=total, freeResources=len(free), unknown24=0, affinityCount=affinity_count,
        unknown28=UNKNOWN28.get(res.kind, bytes(8)), unknown30=UNKNOWN30, unknown34=bytes(0x24),
        counter=1 if touched else 0, mac=_mac(layout) if touched else bytes(6),
        changeTime=_now(layout) if touched else 0, unknown66=bytes(2), createCounter=0, unknown6C=bytes(0x10),
        firstFree=free[0] if free and len(free) != total else 0, body=bytes(body),
    ))
    lock = lock_block_bytes(geo, _lock_type(res.kind), vol_offset, token=FRESH_TOKEN, mtime=serial)
    return lock + meta


def _file_offsets(f: SystemFileLayout, bs: int) -> list[tuple[int, int, int]]:
    """(file offset, volume offset, length) of each block run of ``f``."""
    out = []
    pos = 0
    for first, count in f.block_runs:
        out.append((pos, first * bs, count * bs))
        pos += count * bs
    return out


def volume_offset(layout: Layout, f: SystemFileLayout, file_offset: int) -> int:
    for start, vol, length in _file_offsets(f, layout.block_size):
        if start <= file_offset < start + length:
            return vol + file_offset - start
    raise AssertionError(f"{f.name}: offset 0x{file_offset:x} beyond its blocks")


def _cluster_serial(layout: Layout, res: ResourceLayout, cluster: int) -> int:
    if res.kind == R.RES_SB:
        initial = -(-_extra(layout).sbc_initial // SB_RPC)
        if cluster >= initial:
            return _extra(layout).growth_serial + cluster - initial
    return res.first_lock_serial + cluster


def _plain_resource(layout: Layout, f: SystemFileLayout, res: ResourceLayout,
                    contents: dict[int, bytes], owners: dict[int, dict[int, int]],
                    touched: set[int]) -> Iterator[Piece]:
    yield 0, resource_header(res)
    for group in range(res.num_groups if res.rpc else 0):
        first = group * res.cpg
        for c in range(first, min(first + res.cpg, res.num_clusters)):
            off = res.header_offset(c)
            yield off, cluster_header(layout, res, c, volume_offset(layout, f, off), _cluster_serial(layout, res, c),
                                      owners=owners.get(c), touched=c in touched)
        for n in sorted(k for k in contents if k // (res.rpc * res.cpg) == group):
            yield res.resource_offset(*divmod(n, res.rpc)), contents[n]


def _fbb(layout: Layout, f: SystemFileLayout) -> Iterator[Piece]:
    lfb = layout.resource(R.RES_LFB)
    sfb = next(r for r in layout.resources if r.kind == R.RES_FB)
    yield 0, resource_header(lfb)
    yield CHILD_META_OFFSET, resource_header(sfb, parent=lfb, converted=lfb.count)
    owners = _sfb_owners(layout)
    touched = _sfb_touched(layout)
    used: dict[int, set[int]] = {}
    for b in sfb.used:
        used.setdefault(b // sfb.rpc, set()).add(b % sfb.rpc)
    geo = layout.geometry
    ch = lfb.rsz
    # one free, full SFB cluster header built through the declarations; the rest are copies with
    # their own lock address, lock serial and cluster number stamped in (a 64 TiB volume has 131072)
    template = cluster_header(layout, replace(sfb, used=()), 0, 0, 0)
    addr_at, addr_decl = field_span(geo.structs.lock, "lock", "addr")
    mtime_at, mtime_decl = field_span(geo.structs.lock, "lock", "mtime")
    num_at, num_decl = field_span(R.cluster_meta6(geo.md_size), "clusterNum")
    num_at += geo.md_size
    for group in range(lfb.num_groups):
        first = group * lfb.cpg
        clusters = range(first, min(first + lfb.cpg, lfb.num_clusters))
        for c in clusters:
            off = lfb.header_offset(c)
            yield off, cluster_header(layout, lfb, c, volume_offset(layout, f, off), lfb.first_lock_serial + c,
                                      used=set(range(lfb.cluster_total(c))))  # every LFB converted
        # LFB n holds the header of SFB cluster n (6.5); a group's LFB slots are contiguous
        numbers = [c * lfb.rpc + r for c in clusters for r in range(lfb.cluster_total(c))]
        start = lfb.resource_offset(first, 0)
        offsets = [volume_offset(layout, f, start + i * ch) for i in range(len(numbers))]
        buf = repeat_record(template, len(numbers), [
            (addr_at, addr_decl, offsets),
            (mtime_at, mtime_decl, [sfb.first_lock_serial + n for n in numbers]),
            (num_at, num_decl, numbers),
        ])
        for i, n in enumerate(numbers):
            if n in owners or n in touched or n in used or sfb.cluster_total(n) != sfb.rpc:
                buf[i * ch : (i + 1) * ch] = cluster_header(
                    layout, sfb, n, offsets[i], sfb.first_lock_serial + n, owners=owners.get(n),
                    touched=n in touched, used=used.get(n, set()))
        yield start, bytes(buf)


def _sfb_owners(layout: Layout) -> dict[int, dict[int, int]]:
    rpc = layout.geometry.sfb_rpc
    out: dict[int, dict[int, int]] = {}
    for f in layout.system_files:
        for b in block_numbers(f):
            per = out.setdefault(b // rpc, {})
            per[f.fd_address] = per.get(f.fd_address, 0) + 1
    return out


def _growth_blocks(layout: Layout) -> list[int]:
    if not _grows(layout):
        return []
    return block_numbers(layout.system_file(".sbc.sf"))[_extra(layout).sbc_initial_blocks :]


def _sfb_touched(layout: Layout) -> set[int]:
    return {b // layout.geometry.sfb_rpc for b in _growth_blocks(layout)}


def pb2_contents(layout: Layout) -> tuple[dict[int, bytes], dict[int, int]]:
    """The secondary pointer blocks mapping system files of ZLA 5 (one level, SFB addresses), and
    the owner FD of each."""
    geo = layout.geometry
    n = geo.ptrs_per_pb
    contents: dict[int, bytes] = {}
    owners: dict[int, int] = {}
    for f in layout.system_files:
        if f.zla != F.ZLA_POINTER2_BLOCKS:
            continue
        ptrs = [geo.codec.make_fb(b) for b in block_numbers(f)]
        for i, pb in enumerate(f.pointer_blocks):
            chunk = ptrs[i * n : (i + 1) * n]
            contents[pb] = b"".join(p.to_bytes(8, "little") for p in chunk) + bytes(8 * (n - len(chunk)))
            owners[pb] = f.fd_address
    return contents, owners


# --- directories ----------------------------------------------------------------------------------------


def _dirent(ftype: int, address: int, offset: int, name: str, hash32: int = 0) -> Container:
    return Container(type=ftype, address=address, generation=SYSTEM_GENERATION, hash32=hash32, offset=offset,
                     name=encode_name(name, D.DIRENT6_NAME_SIZE), unknown118=0)


def _map_block(blocks: list[int]) -> bytes:
    """Allocation-map block: 4-bit entries, high nibble first; 8 = not written (9.2)."""
    header = D.Dir6BlockHeader.build(Container(version=0, type=D.BLOCK_ALLOCMAP, totalSlots=0, freeSlots=0,
                                               bitmap=bytes(56)))
    nibbles = blocks + [D.MAP_NOT_WRITTEN] * (2 * (MD_ALIGNMENT - D.DIR6_BLOCK_HEADER_SIZE) - len(blocks))
    body = bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))
    return header + body


def directory(self_entry: tuple[int, int], parent: tuple[int, int],
              entries: list[tuple[int, int, str, int | None]]) -> bytes:
    """A hashed directory: header, allocation map, and (with entries) one dirent block.  Entries
    are (type, FD address, name, hash-table index)."""
    slots = (MD_ALIGNMENT - D.DIR6_BLOCK_HEADER_SIZE) // D.DIRENT6_SIZE
    if len(entries) > slots:  # pragma: no cover - mkfs makes at most 8
        raise AssertionError("one dirent block only")
    block1 = D.DIR6_HEADER_SIZE + MD_ALIGNMENT
    table = [0] * D.DIR6_HASH_ENTRIES
    for slot, (_, _, _, index) in enumerate(entries):
        if index is not None:
            table[index] = D.location_word(D.BLOCK_DIRENT, 1, slot)
    header = D.Dir6Header.build(Container(
        version=D.DIR6_VERSION, numEntries=2 + len(entries), numAllocated=2 + len(entries),
        numAllocationMapBlocks=1, allocationMapBlocks=[0] * D.DIR6_MAX_MAP_BLOCKS,
        unknown210=bytes(0x3A8 - 0x210), checksum=0, checksumGen=0,
        selfEntry=_dirent(self_entry[0], self_entry[1], 0x3B8, "."),
        parentEntry=_dirent(parent[0], parent[1], 0x4D8, ".."),
        hashTable=table, tail=bytes(D.DIR6_HEADER_SIZE - 0xFFFC),
    ))
    if not entries:
        return header + _map_block([D.BLOCK_ALLOCMAP])
    out = header + _map_block([D.BLOCK_ALLOCMAP, D.BLOCK_DIRENT | D.MAP_HAS_FREE])
    bitmap = _pack([0] * len(entries) + [1] * (slots - len(entries)), 1, 56)
    out += D.Dir6BlockHeader.build(Container(version=1, type=D.BLOCK_DIRENT, totalSlots=slots,
                                             freeSlots=slots - len(entries), bitmap=bytes(bitmap)))
    for slot, (ftype, address, name, _) in enumerate(entries):
        out += D.Dirent6.build(_dirent(ftype, address, block1 + D.DIR6_BLOCK_HEADER_SIZE + slot * D.DIRENT6_SIZE,
                                       name))
    return out + bytes(MD_ALIGNMENT - D.DIR6_BLOCK_HEADER_SIZE - slots * D.DIRENT6_SIZE)


# --- per system file -------------------------------------------------------------------------------


def system_file_pieces(layout: Layout, f: SystemFileLayout) -> Iterator[Piece]:
    """Pieces of ``f`` in increasing file offsets; the FS descriptor is written apart, last."""
    root = layout.system_file("/")
    if f.name == ".vh.sf":
        yield HEARTBEAT_REGION_OFFSET, heartbeat_region(layout)
    elif f.name == "/":
        entries = [(F.TYPE_SYSFILE, layout.system_file(n).fd_address, n, D.ROOT_SYSTEM_HASH_INDEX[n])
                   for n in ROOT_ENTRIES]
        yield 0, directory((F.TYPE_DIRECTORY, root.fd_address), (F.TYPE_DIRECTORY, root.fd_address), entries)
    elif f.name == ".sdd.sf":
        yield 0, directory((F.TYPE_SYSFILE, f.fd_address), (F.TYPE_DIRECTORY, root.fd_address), [])
    elif f.name == ".fbb.sf":
        yield from _fbb(layout, f)
    else:
        kind = {".fdc.sf": R.RES_FD, ".pbc.sf": R.RES_PB, ".sbc.sf": R.RES_SB, ".pb2.sf": R.RES_PB2,
                ".jbc.sf": R.RES_JB}[f.name]
        res = layout.resource(kind)
        contents: dict[int, bytes] = {}
        owners: dict[int, dict[int, int]] = {}
        touched: set[int] = set()
        if kind == R.RES_FD:
            contents = {s.fd_index: _fd(layout, s) for s in layout.system_files}
        elif kind == R.RES_PB2:
            contents, pb_owner = pb2_contents(layout)
            for pb, fd in pb_owner.items():
                owners.setdefault(pb // res.rpc, {})[pb % res.rpc] = fd
            if _grows(layout):  # the growth of .sbc.sf changed the PB2 cluster it took from
                touched = {layout.system_file(".sbc.sf").pointer_blocks[0] // res.rpc}
        yield from _plain_resource(layout, f, res, contents, owners, touched)
