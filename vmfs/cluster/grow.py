"""Growing a VMFS6 resource file when it runs out (vmfs-format.md 6.6: VMFS6 formats 16384
objects of each kind and "extends the resource file when it runs out").

One growth adds one cluster group (``clustersPerGroup`` full clusters) at the end of the file,
inside the caller's transaction, under the resource file's own FD lock, so hosts grow a file one
at a time and a host that waited sees the other's growth (its FD reloads) and uses it:

1. file blocks for the new bytes are allocated (in the transaction) and written directly, zeros
   then the new cluster headers (fresh blocks nobody references: nothing journaled, as file data),
   and flushed;
2. in the transaction: the FD's block map and length, the header's counts, a short last cluster
   made full;
3. the volume's resource object is replaced by one that sees the grown file, so the caller
   allocates from it at once; if the transaction is abandoned the volume re-opens its resource
   files from disk (``Volume.invalidate_caches``), and the allocated blocks were never committed.

A crash before the commit leaves nothing (the blocks are unallocated on disk); after it, a
consistent larger file.  A file is grown while its map has room: the FD's 320 direct pointers
(``.fdc.sf``: about 50,000 FDs), or the PB2s it is mapped through (``.sbc.sf`` as mkfs leaves it:
8192 blocks per PB2); past that ENOSPC.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from construct import Container

from vmfs.errors import NoSpaceError
from vmfs.format.builders import cluster_header6_free
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import fast
from vmfs.volume.resources import ResourceFile

if TYPE_CHECKING:
    from vmfs.cluster.alloc import Allocators
    from vmfs.cluster.transaction import Transaction
    from vmfs.volume.filedesc import FileDescriptor
    from vmfs.volume.volume import Volume

#: resource files a VMFS6 writer grows (file blocks and LFBs cover the volume from the start;
#: pointer blocks are sub-blocks on VMFS6, so ``.pbc.sf`` stays empty as ESXi leaves it)
GROWABLE = frozenset({R.RES_FD, R.RES_SB, R.RES_PB2, R.RES_JB})
#: lock serial of clusters made by a growth: ESXi's fresh serials count from 401 at format; a
#: grown cluster's lock is stamped by its host anyway at first use [U]
GROWN_SERIAL = 0


def grow(
    volume: Volume,
    allocators: Allocators,
    tx: Transaction,
    kind: int,
    lock_fd: Callable[[Transaction, FileDescriptor], FileDescriptor],
    put_fd: Callable[[Transaction, FileDescriptor], None],
) -> bool:
    """Add one cluster group to resource file ``kind``; False when another host grew it while we
    waited for its lock (its new resources are then ours to use too)."""
    geo = volume.geometry
    old = volume.resources[kind]
    fd = lock_fd(tx, old.fd)
    res = ResourceFile(volume, kind, fd)  # as the file is now (another host may have grown it)
    if res.num_resources != old.num_resources:
        volume.resources[kind] = res
        return False
    rpc = res.rpc
    if not rpc:
        raise NoSpaceError(f"no space left: {res.name} has no clusters to grow from")
    cpg = res.cpg
    ch = res.ch
    cgs = cpg * ch + cpg * rpc * res.rsz
    groups = -(-res.num_clusters // cpg)
    new_count = (groups + 1) * cpg * rpc
    new_length = res.cgo + (groups + 1) * cgs
    bs = geo.block_size
    have = fd.meta.numBlocks
    need = -(-new_length // bs)
    zla = fd.meta.zla
    per_pb = geo.ptrs_per_pb
    if zla == F.ZLA_FILE_BLOCKS:
        room = geo.ptr_count
    elif zla == F.ZLA_POINTER2_BLOCKS:  # mapped through PB2s, as mkfs leaves .sbc.sf
        room = per_pb * sum(1 for p in fd.pointers if p)
    else:
        room = 0
    if need > room:
        raise NoSpaceError(f"no space left: {res.name} cannot grow past {room} blocks (ZLA {zla})")
    fbs = allocators[R.RES_FB]
    got = fbs.allocate(tx, need - have)
    addrs = [geo.codec.make_fb(c * fbs.res.rpc + r) for c, r in got]
    # 1. the new blocks: zeros, then the new clusters' headers, straight to the device
    zeros = bytes(bs)
    for a in addrs:
        volume.device.write(geo.codec.fb_block(a) * bs, zeros)
    ptrs = fd.pointers
    pb2_writes: list[tuple[int, bytes]] = []
    changed: dict[int, list[int]] = {}  # PB2 address -> its entries as the transaction has them
    for i, a in enumerate(addrs):
        index = have + i
        if zla == F.ZLA_FILE_BLOCKS:
            ptrs[index] = a
        else:
            pb = ptrs[index // per_pb]
            entries = changed.setdefault(pb, list(volume.pointer_block(pb, fd)))
            entries[index % per_pb] = a
            _, c, r = geo.codec.split(pb)
            pb2_writes.append((volume.resources[R.RES_PB2].volume_offset(c, r) + 8 * (index % per_pb),
                               a.to_bytes(8, "little")))
    for pb, entries in changed.items():  # readers of the grown file see its new blocks at once
        volume.remember_pointer_block(pb, array("Q", entries))
    fd.meta.fileLength = new_length
    fd.meta.numBlocks = need
    fd.meta.newSinceEpochLo += len(addrs)
    grown_header = _header(res, rpc, cgs, new_count, groups + 1)
    grown = ResourceFile(volume, kind, fd, res.header_offset, raw_header=grown_header)
    first_new = res.num_clusters
    for c in range(first_new, grown.num_clusters):
        off = grown.reader.volume_offset(grown.cluster_header_offset(c))
        volume.device.write(off, cluster_header6_free(geo, kind, off, c, rpc, mtime=GROWN_SERIAL))
    volume.device.flush()
    # 2. the metadata, in the transaction
    put_fd(tx, fd)
    for off, raw in pb2_writes:
        tx.write(off, raw)
    tx.write(grown.reader.volume_offset(res.header_offset), grown_header)
    if res.num_clusters and res.read_cluster(res.num_clusters - 1).total < rpc:
        _fill_last_cluster(tx, grown, res.num_clusters - 1)
    # 3. allocate from the grown file from now on
    volume.resources[kind] = grown
    allocators.forget(kind)
    return True


def _header(res: ResourceFile, rpc: int, cgs: int, count: int, groups: int) -> bytes:
    h = Container(res.header)
    h.resourcesPerCluster = rpc
    h.clusterGroupSize = cgs
    h.numResourcesLo = count & 0xFFFFFFFF
    h.numResourcesHi = count >> 32
    h.numClusterGroups = groups
    h.affinityPerCluster = rpc
    return fast(R.ResourceHeader).build(h)


def _fill_last_cluster(tx: Transaction, res: ResourceFile, cluster: int) -> None:
    """The formerly last cluster held fewer than rpc resources: the new ones in it are free."""
    off = res.reader.volume_offset(res.cluster_header_offset(cluster))
    md = res.ch // 2
    cl = res.read_cluster(cluster, tx.read(off, res.ch))
    body = bytearray(cl.meta.body)
    for i in range(cl.total, res.rpc):
        body[i >> 3] |= 1 << (i & 7)
    added = res.rpc - cl.total
    cl.meta.body = bytes(body)
    if cl.meta.freeResources == 0:
        cl.meta.firstFree = cl.total
    cl.meta.totalResources = res.rpc
    cl.meta.freeResources += added
    if cl.meta.freeResources == res.rpc:
        cl.meta.firstFree = 0
    tx.write(off + md, fast(res.meta_struct).build(cl.meta))
