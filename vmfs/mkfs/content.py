"""The bytes of a new VMFS5 volume, as (offset, bytes) pieces in increasing offsets.

Nothing here writes: :mod:`vmfs.mkfs.format` sends the pieces to the devices.  Pieces are
generated lazily, so a 64 TiB volume (328 MiB of ``.fbb.sf`` cluster headers) never sits in
memory at once.  Repeated records (cluster headers, heartbeat slots) are built once through their
construct declarations and only the fields that differ are stamped in
(:func:`vmfs.format.builders.repeat_record`).
"""

from __future__ import annotations

from collections.abc import Iterator

from construct import Container

from vmfs.format import address as A
from vmfs.format.builders import (
    cluster_header5_with_lock,
    dirent5_bytes,
    fd_bytes,
    field_span,
    file_metadata,
    lock_fields,
    pointer_array_bytes,
    repeat_record,
    resource_header5,
)
from vmfs.mkfs.layout import (
    CLUSTER_GROUP_OFFSET,
    CLUSTERS_PER_GROUP,
    FS_MAJOR,
    FS_MINOR,
    ROOT_ENTRIES,
    Layout,
    ResourceLayout,
    SystemFileLayout,
)
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import NULL_UUID, SECTOR, IntArray, encode_name
from vmfs.ondisk.fsdesc import CONFIG_DENSE_SBPC, CONFIG_PUBLIC, FS_DESCRIPTOR_OFFSET, FS_MAGIC, FsDescriptor
from vmfs.ondisk.heartbeat import HB_FREE, HEARTBEAT_REGION_OFFSET
from vmfs.ondisk.lock import LOCK_TYPE_BASE, LOCK_TYPE_FD

#: config 0x6 = "public" + DENSE_SBPC, as on both samples (3.2).
FS_CONFIG = CONFIG_PUBLIC | CONFIG_DENSE_SBPC
FS_SNAP_ID = 1
MAX_JOURNAL_SLOTS_PER_TXN = 8
GBL_GENERATION = 1
#: A fresh lock: token 1 and no holder, as every untouched object of the sample (5).
FRESH_TOKEN = 1
SYSTEM_GENERATION = 1
#: Cluster headers per write when headers are contiguous across groups (.fbb.sf): 4 MiB.
RUN_CLUSTERS = 4096

Piece = tuple[int, bytes]


# --- FS descriptor and heartbeats -----------------------------------------------------------------


def fs_descriptor(layout: Layout, major: int = FS_MAJOR, minor: int = FS_MINOR, **v6: int) -> bytes:
    """The FS descriptor sector at volume 0x200000 (3.1); ``v6``: the VMFS6 fields (zero on VMFS5)
    and the values that differ there (``maxJournalSlotsPerTxn``, ``unmapPriority``)."""
    o = layout.options
    geo = layout.geometry
    pb2 = layout.system_file(".pb2.sf")
    sdd = layout.system_file(".sdd.sf")
    fields = Container(
        magic=FS_MAGIC,
        majorVersion=major,
        minorVersion=minor,
        uuid=o.fs_uuid,
        config=FS_CONFIG,
        fsLabel=encode_name(o.label, 128),
        diskBlockSize=SECTOR,
        fileBlockSize=geo.block_size,
        creationTime=o.creation_time_us // 1_000_000,
        snapId=FS_SNAP_ID,
        volInfo=Container(lvId=o.lv_uuid, lvSnapId=FS_SNAP_ID, reserved=bytes(12)),
        fdcClusterGroupOffset=CLUSTER_GROUP_OFFSET,
        fdcClustersPerGroup=CLUSTERS_PER_GROUP,
        subBlockSize=geo.sub_block_size,
        maxJournalSlotsPerTxn=MAX_JOURNAL_SLOTS_PER_TXN,
        pb2VolAddr=pb2.fd_offset,
        pb2FdAddr=pb2.fd_address,
        hostUuid=o.host_uuid,
        gblGeneration=GBL_GENERATION,
        sddVolAddr=sdd.fd_offset,
        sddFdAddr=sdd.fd_address,
        checksumType=0,
        unmapPriority=0,
        reserved114=bytes(4),
        checksumGen=0,
        checksum=bytes(16),
        physDiskBlockSize=0,
        mdAlignment=0,
        sfbToLfbShift=0,
        reserved13A=bytes(4),
        ptrBlockShift=0,
        sfbAddrBits=0,
        reserved142=bytes(2),
        tbzGranularity=0,
        journalBlockSize=0,
        leaseIntervalMs=0,
        reclaimWindowMs=0,
        localStampUS=0,
        localMountOwnerMac=bytes(6),
        unmapMethod=0,
        unmapBandwidth=0,
        unmapBandwidthMin=0,
        unmapBandwidthMax=0,
        reserved16F=bytes(0x200 - 0x16F),
    )
    fields.update(v6)
    return FsDescriptor.build(fields)


def heartbeat_region(layout: Layout) -> bytes:
    """Every slot free and carrying its own address, as a formatter leaves them (4.1)."""
    geo = layout.geometry
    slot = geo.structs.heartbeat_slot
    hb_struct = slot.subcons[0].subcon
    template = slot.build(
        Container(
            hb=Container(
                state=HB_FREE, addr=0, hbGen=0, stamp=0, owner=NULL_UUID,
                journalAddr=0, driverMajor=0, driverMinor=0, lockImpl=0, ip=bytes(46), journalVolAddr=0,
                replayHost=NULL_UUID, unknown7C=bytes(24), replayHostHb=0,
                replayHostHbGen=0, reserved=bytes(hb_struct.sizeof() - 0xA4),
            ),
            extra=bytes(slot.subcons[1].sizeof()),
        )
    )
    offset, decl = field_span(slot, "hb", "addr")
    addrs = [geo.hb_slot_addr(i) for i in range(geo.hb_slots)]
    return bytes(repeat_record(template, geo.hb_slots, [(offset, decl, addrs)]))


# --- file descriptors -------------------------------------------------------------------------------


def _fd(layout: Layout, f: SystemFileLayout, data: bytes) -> bytes:
    geo = layout.geometry
    now = layout.options.creation_time_us // 1_000_000
    meta = file_metadata(
        geo,
        address=f.fd_address,
        generation=SYSTEM_GENERATION,
        ftype=f.ftype,
        mode=f.mode,
        now=now,
        links=f.links,
        zla=f.zla,
        block_size=geo.block_size,
    )
    meta.fileLength = f.file_length
    meta.numBlocks = f.num_blocks
    meta.newSinceEpochLo = f.num_blocks  # = numBlocks on every system FD of the sample (8.3)
    meta.numPointerBlocks = len(f.pointer_blocks)
    lock = lock_fields(LOCK_TYPE_FD, f.fd_offset, token=FRESH_TOKEN, mtime=f.lock_serial)
    return fd_bytes(geo, f.fd_offset, meta, data, lock=lock)


def _block_addresses(layout: Layout, f: SystemFileLayout) -> list[int]:
    codec = layout.geometry.codec
    return [codec.make_fb(b) for b in range(f.first_block, f.first_block + f.num_blocks)]


def _pointer_array(layout: Layout, f: SystemFileLayout) -> bytes:
    geo = layout.geometry
    if f.zla == F.ZLA_FILE_BLOCKS:
        return pointer_array_bytes(geo, _block_addresses(layout, f))
    pbc = layout.resource(R.RES_PB)
    return pointer_array_bytes(geo, [geo.codec.make(A.ADDR_PB, *divmod(n, pbc.rpc)) for n in f.pointer_blocks])


def pointer_block_contents(layout: Layout) -> dict[int, bytes]:
    """PB resource number -> the 4 KiB pointer block mapping part of ``.fbb.sf`` (ZLA 3)."""
    geo = layout.geometry
    fbb = layout.system_file(".fbb.sf")
    addrs = _block_addresses(layout, fbb)
    n = geo.ptrs_per_pb
    out = {}
    for i, pb in enumerate(fbb.pointer_blocks):
        chunk = addrs[i * n : (i + 1) * n]
        out[pb] = IntArray(n, geo.addr_width).build(chunk + [0] * (n - len(chunk)))
    return out


# --- resource files ----------------------------------------------------------------------------------


def _lock_type(kind: int) -> int:
    return LOCK_TYPE_BASE + kind + 1


def cluster_headers(layout: Layout, res: ResourceLayout, vol_base: int) -> Iterator[Piece]:
    """Every existing cluster header of ``res`` as runs of contiguous headers (file offsets).

    One all-free header is built through the declarations; per run only the lock's own address,
    its creation serial and ``clusterNum`` vary.  Clusters holding format-time allocations and a
    short last cluster are built whole.
    """
    geo = layout.geometry
    ch = res.ch
    template = cluster_header5_with_lock(geo, lock_fields(_lock_type(res.kind), 0, token=FRESH_TOKEN), 0,
                                         res.rpc, ())
    addr_at, addr_decl = field_span(geo.structs.lock, "lock", "addr")
    mtime_at, mtime_decl = field_span(geo.structs.lock, "lock", "mtime")
    num_at, num_decl = field_span(R.ClusterMeta5, "clusterNum")
    num_at += geo.md_size
    special = {n // res.rpc for n in res.used}
    if res.cluster_total(res.num_clusters - 1) != res.rpc:
        special.add(res.num_clusters - 1)
    contiguous = res.cgs == res.cpg * ch
    step = RUN_CLUSTERS if contiguous else res.cpg
    first = 0
    while first < res.num_clusters:
        count = min(step - first % step if contiguous else res.cpg, res.num_clusters - first)
        clusters = range(first, first + count)
        offsets = [res.header_offset(c) for c in clusters]
        buf = repeat_record(
            template,
            count,
            [
                (addr_at, addr_decl, [vol_base + o for o in offsets]),
                (mtime_at, mtime_decl, [res.first_lock_serial + c for c in clusters]),
                (num_at, num_decl, list(clusters)),
            ],
        )
        for c in special.intersection(clusters):
            lock = lock_fields(_lock_type(res.kind), vol_base + res.header_offset(c), token=FRESH_TOKEN,
                               mtime=res.first_lock_serial + c)
            at = (c - first) * ch
            buf[at : at + ch] = cluster_header5_with_lock(geo, lock, c, res.cluster_total(c), res.used_in(c))
        yield offsets[0], bytes(buf)
        first += count


def resource_file(
    layout: Layout, res: ResourceLayout, vol_base: int, resources: dict[int, bytes] | None = None
) -> Iterator[Piece]:
    """Header, cluster headers and the given resources' contents of one resource file."""
    header = R.ResourceHeader.build(
        resource_header5(rpc=res.rpc, cpg=res.cpg, cgo=res.cgo, rsz=res.rsz, cgs=res.cgs,
                         num_resources=res.count, num_groups=res.num_groups)
    )
    yield 0, header
    contents = dict(resources or {})
    for offset, run in cluster_headers(layout, res, vol_base):
        # resource data of the group(s) just passed, before the next headers
        for n in sorted(k for k in contents if res.resource_offset(*divmod(k, res.rpc)) < offset):
            yield res.resource_offset(*divmod(n, res.rpc)), contents.pop(n)
        yield offset, run
    for n in sorted(contents):
        yield res.resource_offset(*divmod(n, res.rpc)), contents[n]


# --- per system file -------------------------------------------------------------------------------


def system_file_pieces(layout: Layout, f: SystemFileLayout) -> Iterator[Piece]:
    """Pieces of ``f``'s blocks, offsets relative to the file start.  ``.fdc.sf`` also carries
    the eight system FDs (cluster 0, resources 0..7); the FS descriptor is written apart, last."""
    bs = layout.block_size
    vol_base = f.first_block * bs
    if f.name == ".vh.sf":
        yield HEARTBEAT_REGION_OFFSET, heartbeat_region(layout)
    elif f.name == "/":
        entries = [(F.TYPE_DIRECTORY, f.fd_address, "."), (F.TYPE_DIRECTORY, f.fd_address, "..")]
        entries += [(F.TYPE_SYSFILE, layout.system_file(n).fd_address, n) for n in ROOT_ENTRIES]
        yield 0, b"".join(dirent5_bytes(t, a, SYSTEM_GENERATION, n) for t, a, n in entries)
    elif f.name == ".sdd.sf":
        root = layout.system_file("/")
        yield 0, dirent5_bytes(F.TYPE_SYSFILE, f.fd_address, SYSTEM_GENERATION, ".") + dirent5_bytes(
            F.TYPE_DIRECTORY, root.fd_address, SYSTEM_GENERATION, ".."
        )
    elif f.name == ".fdc.sf":
        res = layout.resource(R.RES_FD)
        fds = {s.fd_index: _fd(layout, s, _pointer_array(layout, s)) for s in layout.system_files}
        yield from resource_file(layout, res, vol_base, fds)
    elif f.name == ".pbc.sf":
        yield from resource_file(layout, layout.resource(R.RES_PB), vol_base, pointer_block_contents(layout))
    else:
        kind = {".fbb.sf": R.RES_FB, ".sbc.sf": R.RES_SB, ".pb2.sf": R.RES_PB2}[f.name]
        yield from resource_file(layout, layout.resource(kind), vol_base)


def fs_descriptor_piece(layout: Layout) -> Piece:
    return FS_DESCRIPTOR_OFFSET, fs_descriptor(layout)
