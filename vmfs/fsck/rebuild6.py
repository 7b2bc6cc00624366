"""VMFS6 resource file headers rebuilt from their cluster headers, when the library refuses them.

A VMFS6 resource header (vmfs-format.md 6.2) is checked by the library when it opens the volume
(:func:`vmfs.volume.resources.header_problem`); one it refuses leaves the volume unopenable.  Its
geometry is also written all over the file: every cluster header carries a 'dmcr' metadata unit
with the cluster's number and resource count, and a lock block with the type of the resource and
its own volume offset, at the places the geometry gives.  ESXi and vmfs-mkfs lay out every VMFS6
resource file but ``.fbb.sf`` the same way (6.6): clusterGroupOffset 0x10000, 8 clusters per group
(4 in ``.jbc.sf``), one resource size per type.  What is left to find is resources per cluster
and the count, and the walk over the cluster headers tells both.

A header is rebuilt only when the library's own checks refuse it *and* the walk proves a
geometry: a cluster header (right signature and number, and a right lock type or own address) at
every place, every cluster full but the last, the file long enough for the last resource.
Otherwise nothing is patched and the volume stays unopenable (fatal, nothing written).
``.fbb.sf`` (an LFB parent with an SFB child, 6.5) is not rebuilt.
"""

from __future__ import annotations

from construct import Container

from vmfs.format.geometry import Geometry
from vmfs.fsck.rebuild import ClusterProbe, Shape
from vmfs.mkfs import layout6
from vmfs.mkfs.content6 import CHILD_META_OFFSET, HEADER6
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import fast
from vmfs.ondisk.lock import LOCK_TYPE_BASE

#: resources per cluster as ESXi formats them: the first guess when cluster 0 is not full
DEFAULT_RPC = {R.RES_FD: layout6.FD_RPC, R.RES_SB: layout6.SB_RPC, R.RES_PB: layout6.PB_RPC,
               R.RES_PB2: layout6.PB2_RPC, R.RES_JB: layout6.JB_RPC}
#: a walk that long is no resource file of a volume (a 64 TiB volume has 64 groups of FDs)
MAX_CLUSTERS = 1 << 20
_META_HEAD = fast(R.cluster_meta6_head())


def resource_size(geo: Geometry, kind: int) -> int:
    return {R.RES_FD: geo.fd_size, R.RES_SB: geo.sub_block_size, R.RES_PB: geo.pb_size, R.RES_PB2: geo.pb_size,
            R.RES_JB: layout6.JB_SIZE}[kind]


def clusters_per_group(kind: int) -> int:
    return layout6.JB_CLUSTERS_PER_GROUP if kind == R.RES_JB else layout6.CLUSTERS_PER_GROUP


class ClusterProbe6(ClusterProbe):
    """Reads the cluster headers of one VMFS6 resource file by file offset."""

    def header(self, offset: int) -> tuple[int, int] | None:
        """(clusterNum, totalResources) of a sound cluster header at file ``offset``: 'dmcr'
        signature, and its lock block's type or own address right (either witness will do: a
        damaged lock field is pass 5's to fix)."""
        if offset + self.ch > self.file_size:
            return None
        raw = self.read_at(offset, self.ch)
        where = self.vol_offset(offset)
        if raw is None or where is None:
            return None
        md = self.ch // 2
        lock = self.geo.structs.lock.parse(raw[:md]).lock
        meta = _META_HEAD.parse(raw[md:])
        if meta.signature != R.CLUSTER_SIGNATURE:
            return None
        if lock.type != LOCK_TYPE_BASE + self.kind + 1 and lock.addr != where:
            return None
        return meta.clusterNum, meta.totalResources


def rebuild_header(geo: Geometry, kind: int, old: Container, probe: ClusterProbe6) -> Shape | None:
    """The geometry the cluster headers prove (None: they do not prove one)."""
    rsz = resource_size(geo, kind)
    cpg = clusters_per_group(kind)
    cgo = layout6.CLUSTER_GROUP_OFFSET
    ch = probe.ch
    first = probe.header(cgo)
    if first is None or first[0] != 0:
        if kind == R.RES_PB and probe.file_size == cgo:
            # ESXi's .pbc.sf holds no pointer block and no cluster (pointer blocks are sub-blocks)
            return Shape(0, cpg, cgo, rsz, cpg * ch, 0, 0)
        return None
    candidates = []
    # ESXi's value first: a lone cluster that is not full (.pb2.sf's one PB2) proves any rpc
    # from its count up, and of those that tie, the first is kept
    for rpc in dict.fromkeys((DEFAULT_RPC[kind], first[1], old.resourcesPerCluster)):
        if not 0 < rpc <= 0xFFFF:
            continue
        cgs = cpg * ch + cpg * rpc * rsz
        totals = []
        for c in range(MAX_CLUSTERS):
            got = probe.header(cgo + (c // cpg) * cgs + (c % cpg) * ch)
            if got is None or got[0] != c:
                break
            totals.append(got[1])
        if not totals or any(t != rpc for t in totals[:-1]) or not 0 < totals[-1] <= rpc:
            continue
        n = (len(totals) - 1) * rpc + totals[-1]
        c, r = divmod(n - 1, rpc)
        end = cgo + (c // cpg) * cgs + cpg * ch + ((c % cpg) * rpc + r + 1) * rsz
        if end > probe.file_size:
            continue
        candidates.append(Shape(rpc, cpg, cgo, rsz, cgs, n, -(-len(totals) // cpg)))
    return candidates[0] if len(candidates) == 1 else _closest(candidates, old)


def _closest(candidates: list[Shape], old: Container) -> Shape | None:
    """Of several proven geometries, the one that keeps most of the damaged header's values
    (the first of those that keep as many)."""
    if not candidates:
        return None

    def kept(s: Shape) -> int:
        return sum((s.rpc == old.resourcesPerCluster, s.cpg == old.clustersPerGroup, s.cgs == old.clusterGroupSize,
                    s.num_resources == (old.numResourcesLo | old.numResourcesHi << 32)))

    return max(candidates, key=kept)


def header_bytes(kind: int, shape: Shape) -> bytes:
    """The VMFS6 resource header of ``shape``, with the per-type fields ESXi formats (6.2)."""
    flags, apc, apr, bits = HEADER6[kind]
    return R.ResourceHeader.build(Container(
        resourcesPerCluster=shape.rpc, clustersPerGroup=shape.cpg, clusterGroupOffset=shape.cgo,
        resourceSize=shape.rsz, clusterGroupSize=shape.cgs, numResourcesLo=shape.num_resources & 0xFFFFFFFF,
        numClusterGroups=shape.num_groups, numResourcesHi=shape.num_resources >> 32,
        signature=R.RES_SIGNATURE, version=1, flags=flags,
        affinityPerCluster=shape.rpc if apc is None else apc, affinityPerResource=apr, bitsPerResource=bits,
        childMetaOffset=CHILD_META_OFFSET if kind == R.RES_LFB else 0,
        parentResourcesPerCluster=0, parentClustersPerGroup=0, parentClusterGroupSize=0,
        unknown44=bytes(16), convertedClusters=0, reserved=bytes(R.RES_HEADER_SIZE - 0x58),
    ))
