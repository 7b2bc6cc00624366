"""Resource files (.fbb .fdc .pbc .sbc .pb2 .jbc): cluster maths and cluster headers (section 6).

A resource file holds a header, then cluster groups; each group holds ``cpg`` cluster headers
(lock block + metadata with the allocation bitmap) followed by the resources' data.  VMFS6 keeps
small-file-block (SFB) clusters as a *child* of the large-file-block resource: the header of SFB
cluster ``c`` sits in the data slot of LFB ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmfs.errors import CorruptError
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import fast
from vmfs.ondisk.lock import LOCK_TYPE_BASE
from vmfs.volume.filereader import FileReader

if TYPE_CHECKING:
    from construct import Container

    from vmfs.volume.filedesc import FileDescriptor, VolumeBlocks

RESOURCE_NAMES = {
    R.RES_FB: "file blocks",
    R.RES_SB: "sub-blocks",
    R.RES_PB: "pointer blocks",
    R.RES_FD: "file descriptors",
    R.RES_PB2: "pointer blocks 2",
    R.RES_JB: "journal blocks",
    R.RES_LFB: "large file blocks",
}

SYSTEM_FILE_OF = {
    R.RES_FB: ".fbb.sf",
    R.RES_SB: ".sbc.sf",
    R.RES_PB: ".pbc.sf",
    R.RES_FD: ".fdc.sf",
    R.RES_PB2: ".pb2.sf",
    R.RES_JB: ".jbc.sf",
    R.RES_LFB: ".fbb.sf",
}


@dataclass
class Cluster:
    """A parsed cluster header."""

    number: int
    file_offset: int
    lock: object
    meta: object
    total: int
    free: int
    bitmap: bytes  # allocation bits, `bits` per resource, LSB first
    bits: int

    def state(self, resource: int) -> int:
        bit = resource * self.bits
        word = int.from_bytes(self.bitmap[bit >> 3 : (bit >> 3) + 2], "little")
        return (word >> (bit & 7)) & ((1 << self.bits) - 1)

    def is_free(self, resource: int) -> bool:
        """A set bit means free (vmfs-format.md 6.3, 6.4); 2-bit small file blocks are free in
        state 3 (:data:`vmfs.ondisk.resource.FREE_STATE`, [U])."""
        return self.state(resource) == R.FREE_STATE.get(self.bits, 1)

    def used_resources(self) -> list[int]:
        return [r for r in range(self.total) if not self.is_free(r)]


def header_problem(h: Container, *, vmfs6: bool, ch: int, file_size: int, child: bool) -> str | None:
    """Why a resource header cannot be used (None: it can): what the library checks before it
    trusts a header's geometry, and vmfs-fsck's VMFS6 rebuild asks the same question."""
    rpc, cpg, cgo, rsz, cgs = (h.resourcesPerCluster, h.clustersPerGroup, h.clusterGroupOffset, h.resourceSize,
                               h.clusterGroupSize)
    num = h.numResourcesLo | (h.numResourcesHi << 32)
    if vmfs6 and h.signature != R.RES_SIGNATURE:
        return f"bad signature 0x{h.signature:08x}"
    if num and (rpc == 0 or cpg == 0):
        return "resources without clusters (rpc or cpg is 0)"
    if (h.bitsPerResource or 1) not in (1, 2, 3, 4, 8):
        return f"{h.bitsPerResource} bits per resource"
    if child or not num:
        return None
    expect = cpg * ch + cpg * rpc * rsz
    if cgs != expect:
        return f"cluster group size 0x{cgs:x}, expected 0x{expect:x}"
    if cgo < R.RES_HEADER_SIZE:
        return f"cluster group offset 0x{cgo:x}"
    clusters = -(-num // rpc)
    groups = -(-clusters // cpg)
    if h.numClusterGroups < groups:
        return f"{h.numClusterGroups} cluster groups for {groups}"
    last = clusters - 1
    if cgo + (last // cpg) * cgs + (last % cpg) * ch + ch > file_size:
        return "cluster headers extend beyond the end of the file"
    c, r = divmod(num - 1, rpc)
    if rsz and cgo + (c // cpg) * cgs + cpg * ch + ((c % cpg) * rpc + r) * rsz + rsz > file_size:
        return "resources extend beyond the end of the file"
    return None


class ResourceFile:
    def __init__(
        self,
        volume: VolumeBlocks,
        kind: int,
        fd: FileDescriptor,
        header_offset: int = 0,
        parent: ResourceFile | None = None,
        raw_header: bytes | None = None,
    ) -> None:
        """``raw_header``: the header as a transaction that grows the file has it (not yet on
        disk); otherwise it is read from the file."""
        self.volume = volume
        self.kind = kind
        self.fd = fd
        self.name = SYSTEM_FILE_OF[kind]
        self.parent = parent
        self.header_offset = header_offset
        self.reader = FileReader(fd)
        raw = raw_header if raw_header is not None else self.reader.read(header_offset, R.RES_HEADER_SIZE)
        where = f"{self.name} resource header"
        if len(raw) < R.RES_HEADER_SIZE:
            raise CorruptError(where, fd.vol_offset, f"file of {fd.size} bytes is too short")
        self.header = h = R.ResourceHeader.parse(raw)
        geo = volume.geometry
        self.rpc = h.resourcesPerCluster
        self.cpg = h.clustersPerGroup
        self.cgo = h.clusterGroupOffset
        self.rsz = h.resourceSize
        self.cgs = h.clusterGroupSize
        self.num_resources = h.numResourcesLo | (h.numResourcesHi << 32)
        self.bits = h.bitsPerResource or 1
        self.ch = geo.cluster_header_size
        self.num_clusters = -(-self.num_resources // self.rpc) if self.rpc else 0
        problem = header_problem(h, vmfs6=geo.vmfs6, ch=self.ch, file_size=fd.size, child=parent is not None)
        if problem is not None:
            raise CorruptError(where, fd.vol_offset, problem)
        if geo.vmfs6:
            self.meta_struct = geo.structs.cluster_meta
        else:
            self.meta_struct = R.ClusterMeta5
        #: its size, asked for every cluster read (construct computes it anew each time)
        self.meta_size = self.meta_struct.sizeof()
        #: bytes of a cluster's allocation bitmap (VMFS6: the start of the metadata body)
        self.bitmap_size = -(-self.rpc * self.bits // 8)

    @property
    def lock_type(self) -> int:
        return LOCK_TYPE_BASE + self.kind + 1

    # -- cluster maths (section 6.2) --------------------------------------------------------------

    def cluster_header_offset(self, cluster: int) -> int:
        if self.parent is not None:
            return self.parent.resource_offset(*divmod(cluster, self.parent.rpc))
        group, index = divmod(cluster, self.cpg)
        return self.cgo + group * self.cgs + index * self.ch

    def resource_offset(self, cluster: int, resource: int) -> int:
        group, index = divmod(cluster, self.cpg)
        return self.cgo + group * self.cgs + self.cpg * self.ch + (index * self.rpc + resource) * self.rsz

    def check(self, cluster: int, resource: int, address: int | None = None) -> None:
        """Raise CorruptError unless (cluster, resource) names an existing resource."""
        if cluster >= self.num_clusters or resource >= self.rpc or cluster * self.rpc + resource >= self.num_resources:
            what = f"address 0x{address:x}" if address is not None else "resource"
            raise CorruptError(
                f"{self.name} {what}",
                None,
                f"c{cluster} r{resource} is out of range ({self.num_resources} resources, rpc {self.rpc})",
            )

    def volume_offset(self, cluster: int, resource: int) -> int:
        return self.reader.volume_offset(self.resource_offset(cluster, resource))

    def read_resource(self, cluster: int, resource: int, length: int | None = None) -> bytes:
        n = self.rsz if length is None else length
        data = self.reader.read(self.resource_offset(cluster, resource), n)
        if len(data) != n:
            raise CorruptError(f"{self.name} resource", None, f"c{cluster} r{resource} is past the end of the file")
        return data

    # -- cluster headers ----------------------------------------------------------------------------

    def read_cluster(self, cluster: int, raw: bytes | None = None) -> Cluster:
        offset = self.cluster_header_offset(cluster)
        if raw is None:
            raw = self.reader.read(offset, self.ch)
        geo = self.volume.geometry
        md = self.ch // 2
        where = f"{self.name} cluster {cluster} header"
        if len(raw) < self.ch:
            raise CorruptError(where, None, "beyond the end of the resource file")
        lock = fast(geo.structs.lock).parse(raw[:md]).lock
        meta = fast(self.meta_struct).parse(raw[md : md + self.meta_size])
        bitmap = bytes(meta.body[: self.bitmap_size]) if geo.vmfs6 else bytes(meta.bitmap)
        return Cluster(
            cluster, offset, lock, meta, meta.totalResources, meta.freeResources, bitmap, self.bits
        )

    def iter_clusters(self):  # type: ignore[no-untyped-def]
        """Every existing cluster, reading each group's headers with one read."""
        if self.parent is not None:
            for c in range(self.num_clusters):
                yield self.read_cluster(c)
            return
        for g in range(-(-self.num_clusters // self.cpg) if self.cpg else 0):
            first = g * self.cpg
            count = min(self.cpg, self.num_clusters - first)
            raw = self.reader.read(self.cluster_header_offset(first), count * self.ch)
            for i in range(count):
                yield self.read_cluster(first + i, raw[i * self.ch : (i + 1) * self.ch])

    def usage(self) -> tuple[int, int]:
        """(total, free) resources from the cluster headers' counts."""
        total = free = 0
        for cl in self.iter_clusters():
            total += cl.total
            free += cl.free
        return total, free
