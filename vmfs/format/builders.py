"""Fresh on-disk objects, built through the construct declarations.

mkfs and the write path both create lock blocks, file descriptors and cluster headers; this is the
one place that knows what a new one holds (vmfs-format.md 11.3: every "own address" field set,
type magic present, VMFS6 signatures, counters consistent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from construct import Construct, Container

from vmfs.format.geometry import Geometry
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import NULL_UUID, IntArray, encode_name, fast, pack_ints
from vmfs.ondisk.dirent5 import DIRENT5_NAME_SIZE, Dirent5
from vmfs.ondisk.lock import LOCK_FREE, LOCK_TYPE_FD, NO_HOLDERS


def lock_fields(lock_type: int, addr: int, **overrides: Any) -> Container:
    lock = Container(
        type=lock_type,
        addr=addr,
        hbAddr=0,
        hbGen=0,
        token=0,
        mode=LOCK_FREE,
        owner=NULL_UUID,
        mtime=0,
        numHolders=0,
        holders=NO_HOLDERS,
        unknown144=bytes(32),
        gblNumHolders=0,
        gblGen=0,
        gblBrk=0,
    )
    lock.update(overrides)
    return lock


def lock_block_bytes(geo: Geometry, lock_type: int, addr: int, **overrides: Any) -> bytes:
    struct = geo.structs.lock
    extra = struct.subcons[1].sizeof()
    return struct.build(Container(lock=lock_fields(lock_type, addr, **overrides), extra=bytes(extra)))


def file_metadata(
    geo: Geometry,
    *,
    address: int,
    generation: int,
    ftype: int,
    mode: int,
    now: int,
    uid: int = 0,
    gid: int = 0,
    links: int = 1,
    zla: int = F.ZLA_RESIDENT,
    block_size: int | None = None,
    parent: int = 0,
    tbz_shift: int | None = None,
) -> Container:
    """Metadata of a new FD.  Files start resident with blockSize = sub-block size, as ESXi makes
    them (vmfs-format.md 8.5); directories and system files pass their own ZLA and block size."""
    bs = block_size if block_size is not None else geo.sub_block_size
    return Container(
        descAddr=address,
        generation=generation,
        linkCount=links,
        type=ftype,
        flags=0,
        fileLength=0,
        blockSize=bs,
        numBlocks=0,
        mtime=now,
        ctime=now,
        atime=now,
        uid=uid,
        gid=gid,
        mode=mode,
        zla=zla,
        numTBZBlocksLo=0,
        numCOWBlocksLo=0,
        newSinceEpochLo=0,
        numTBZBlocksHi=0,
        numCOWBlocksHi=0,
        numPointerBlocks=0,
        newSinceEpochHi=0,
        signature=F.FD_SIGNATURE if geo.vmfs6 else 0,
        affinityFD=address,
        # ESXi writes 20 (1 MiB) everywhere but in VMFS5 sub-block directories (13); section 8.3
        tbzGranularityShift=geo.block_shift if tbz_shift is None else tbz_shift,
        parentFD=parent if geo.vmfs6 else 0,
        lastSFBClusterNum=0,
        unknown78=0,
        unknown7C=0,
        affinityBitmap=0,
        numPreAllocBlocks=0,
        unknown85=bytes(4),
        blockOffsetShift=bs.bit_length() - 1,
        numTracked=0,
        unknown8B=0,
        numLFB=0,
        unknown90=bytes(0x168 - 0x90),
        lastFreeSFBC=0,
        reserved16C=bytes(0x200 - 0x16C),
    )


def fd_bytes(
    geo: Geometry, vol_offset: int, meta: Container, data: bytes = b"", lock: Container | None = None
) -> bytes:
    """A whole FD: lock block (own volume offset), metadata, data area (zero padded)."""
    struct = geo.structs.file_descriptor
    lock_struct = geo.structs.lock
    data_size = struct.subcons[2].sizeof()
    if len(data) > data_size:
        raise ValueError("FD data area overflow")
    return fast(struct).build(
        Container(
            lockBlock=Container(
                lock=lock if lock is not None else lock_fields(LOCK_TYPE_FD, vol_offset),
                extra=bytes(lock_struct.subcons[1].sizeof()),
            ),
            meta=meta,
            data=data + bytes(data_size - len(data)),
        )
    )


def pointer_array_bytes(geo: Geometry, pointers: list[int]) -> bytes:
    """The FD data area holding a pointer array (zero before it on VMFS6, section 8.1)."""
    lead = geo.ptr_array_offset - geo.fd_data_offset
    values = list(pointers) + [0] * (geo.ptr_count - len(pointers))
    return bytes(lead) + pack_ints(values, geo.addr_width)


def bitmap_bytes(total: int, used: set[int] | range, size: int) -> bytes:
    """A 1-bit-per-resource bitmap, 1 = free (section 6.3), padded to ``size`` bytes."""
    bits = bytearray(size)
    for i in range(total):
        if i not in used:
            bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def cluster_meta5(cluster: int, total: int, used: set[int] | range) -> Container:
    free = total - len([u for u in used if u < total])
    next_free = next((i for i in range(total) if i not in used), 0) if free else 0
    if free == total:
        next_free = 0
    return Container(
        clusterNum=cluster,
        totalResources=total,
        freeResources=free,
        nextFreeIdx=next_free,
        bitmap=bitmap_bytes(total, used, R.CLUSTER5_BITMAP_SIZE),
        createCounter=0,
        typeData=bytes(12),
        priority=0,
        reserved=bytes(0x200 - 0x64),
    )


def cluster_header5(
    geo: Geometry, kind: int, vol_offset: int, cluster: int, total: int, used: set[int] | range
) -> bytes:
    """A VMFS3/5 cluster header: lock block (type 0x10C00000 + kind + 1) + metadata."""
    lock = lock_block_bytes(geo, 0x10C00000 + kind + 1, vol_offset)
    return lock + R.ClusterMeta5.build(cluster_meta5(cluster, total, used))


# --- repeated records: one construct build, then only the varying fields -----------------------


def field_span(struct: Construct, *path: str) -> tuple[int, Construct]:
    """Byte offset and declaration of the fixed-size field ``path`` inside ``struct``.

    ``field_span(geo.structs.lock, "lock", "addr")`` is where a lock block keeps its own address;
    the offset comes from the sizes of the declared fields before it, so it follows the
    declaration instead of a copied constant.
    """
    offset = 0
    current: Construct = struct
    for name in path:
        for sub in current.subcons:  # type: ignore[attr-defined]
            if sub.name == name:
                current = sub.subcon if hasattr(sub, "subcon") else sub
                break
            offset += sub.sizeof()
        else:
            raise KeyError(f"no field {name!r} in {path}")
    return offset, current


def stamp_column(buf: bytearray, offset: int, stride: int, field: Construct, values: Sequence[int]) -> None:
    """Write ``values[i]`` into field ``field`` of record ``i`` of ``buf`` (records of ``stride``
    bytes, the field at ``offset`` in each).

    The values are encoded at once through an :class:`IntArray` of the field's width and spread
    with one strided slice assignment per byte, so a run of thousands of cluster headers costs a
    few C-level copies.  The first value is also built through ``field`` itself, which proves the
    declaration and the array agree on the encoding (little-endian unsigned).
    """
    count = len(values)
    if not count:
        return
    width = field.sizeof()
    if len(buf) != count * stride or not 0 <= offset <= stride - width:
        raise ValueError("column does not fit the records")
    packed = IntArray(count, width).build(values)
    if packed[:width] != field.build(values[0]):
        raise ValueError(f"field of {width} bytes is not a little-endian unsigned integer")
    for k in range(width):
        buf[offset + k :: stride] = packed[k::width]


def repeat_record(template: bytes, count: int, columns: Sequence[tuple[int, Construct, Sequence[int]]]) -> bytearray:
    """``count`` copies of a built record with the varying fields stamped in (see
    :func:`stamp_column`); ``columns`` holds (offset, field declaration, one value per record)."""
    buf = bytearray(template * count)
    for offset, field, values in columns:
        stamp_column(buf, offset, len(template), field, values)
    return buf


# --- resource files, cluster headers, directory entries (VMFS3/5) ---------------------------------


def resource_header5(
    *, rpc: int, cpg: int, cgo: int, rsz: int, cgs: int, num_resources: int, num_groups: int
) -> Container:
    """A VMFS3/5 resource file header: only the first 0x20 bytes are used, the rest is zero on
    every ESXi-made file (vmfs-format.md 6.2)."""
    return Container(
        resourcesPerCluster=rpc,
        clustersPerGroup=cpg,
        clusterGroupOffset=cgo,
        resourceSize=rsz,
        clusterGroupSize=cgs,
        numResourcesLo=num_resources & 0xFFFFFFFF,
        numClusterGroups=num_groups,
        numResourcesHi=num_resources >> 32,
        signature=0,
        version=0,
        flags=0,
        affinityPerCluster=0,
        affinityPerResource=0,
        bitsPerResource=0,
        childMetaOffset=0,
        parentResourcesPerCluster=0,
        parentClustersPerGroup=0,
        parentClusterGroupSize=0,
        unknown44=bytes(16),
        convertedClusters=0,
        reserved=bytes(R.RES_HEADER_SIZE - 0x58),
    )


def cluster_header5_with_lock(
    geo: Geometry, lock: Container, cluster: int, total: int, used: set[int] | range
) -> bytes:
    """A VMFS3/5 cluster header whose lock fields the caller chose (``lock_fields(...)``)."""
    struct = geo.structs.lock
    extra = struct.subcons[1].sizeof()
    return struct.build(Container(lock=lock, extra=bytes(extra))) + R.ClusterMeta5.build(
        cluster_meta5(cluster, total, used)
    )


def dirent5_bytes(ftype: int, address: int, generation: int, name: str) -> bytes:
    """One VMFS3/5 directory entry (vmfs-format.md 9.1)."""
    return Dirent5.build(
        Container(type=ftype, descAddr=address, generation=generation, name=encode_name(name, DIRENT5_NAME_SIZE))
    )


# --- VMFS6 cluster headers ---------------------------------------------------------------------------


def cluster_header6_free(geo: Geometry, kind: int, vol_offset: int, cluster: int, total: int, *,
                         mtime: int = 0) -> bytes:
    """A fresh VMFS6 cluster header of a 1-bit resource, every resource free: lock block (type
    0x10C00000 + kind + 1, its own volume offset, token 1) and a ``dmcr`` metadata unit
    (vmfs-format.md 6.4; the fields the real sample's untouched clusters hold)."""
    md = geo.md_size
    bits = bytearray(md - R.CLUSTER6_BITMAP_OFFSET)
    for i in range(total):
        bits[i >> 3] |= 1 << (i & 7)
    meta = R.cluster_meta6(md).build(Container(
        reserved00=bytes(16), signature=R.CLUSTER_SIGNATURE, priority=0, clusterNum=cluster,
        totalResources=total, freeResources=total, unknown24=0, affinityCount=0, unknown28=bytes(8),
        unknown30=1, unknown34=bytes(0x24), counter=0, mac=bytes(6), changeTime=0, unknown66=bytes(2),
        createCounter=0, unknown6C=bytes(0x10), firstFree=0, body=bytes(bits),
    ))
    return lock_block_bytes(geo, 0x10C00000 + kind + 1, vol_offset, token=1, mtime=mtime) + meta
