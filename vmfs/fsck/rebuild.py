"""Resource file headers checked against their cluster headers, and rebuilt from them.

A resource file header (vmfs-format.md 6.2) is the only place that states a resource file's
geometry; if it is damaged the library cannot open the volume at all.  But the geometry is also
written all over the file: every cluster header carries its lock block (type 0x10C00000 + type + 1,
its own volume offset) and its number and resource count, at the offsets the geometry gives
(``cgo + (c div cpg) × cgs + (c mod cpg) × CH``).  So a candidate geometry can be *proved* by
walking the cluster headers it predicts, and the header rebuilt from the candidate that explains
them while keeping most of the damaged header's values.

Candidates come from the damaged header itself, from what the cluster headers show (cluster 0's
resource count, the run of headers in the first group), from the FS descriptor (the bootstrap
``.fdc.sf`` geometry) and from the values ESXi and vmfs-mkfs format with (section 6.6).
VMFS5 (VMFS6: vmfs.fsck.rebuild6).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from construct import Container

from vmfs.format import builders
from vmfs.format.geometry import Geometry
from vmfs.mkfs import layout as mkfs_layout
from vmfs.ondisk import resource as R
from vmfs.ondisk.lock import LOCK_TYPE_BASE

#: What ESXi 5 (and vmfs-mkfs) format with: resources per cluster by type, clusters per group, cgo.
DEFAULT_RPC = {
    R.RES_FB: mkfs_layout.FB_RPC,
    R.RES_SB: mkfs_layout.SB_RPC,
    R.RES_PB: mkfs_layout.PB_RPC,
    R.RES_FD: mkfs_layout.FD_RPC,
    R.RES_PB2: mkfs_layout.PB2_RPC,
}
DEFAULT_CPG = mkfs_layout.CLUSTERS_PER_GROUP
DEFAULT_CGO = mkfs_layout.CLUSTER_GROUP_OFFSET
#: Address formats bound the counts (vmfs-format.md 7.1): resource bits per cluster.
RPC_LIMIT = {R.RES_FB: 1 << 26, R.RES_SB: 64, R.RES_PB: 16, R.RES_FD: 1024, R.RES_PB2: 16}
#: Give up walking after this many cluster headers (a 64 TiB volume has 335,545 FB clusters).
MAX_CLUSTERS = 1 << 22

ReadAt = Callable[[int, int], "bytes | None"]
VolOffset = Callable[[int], "int | None"]


@dataclass(frozen=True)
class Shape:
    rpc: int
    cpg: int
    cgo: int
    rsz: int
    cgs: int
    num_resources: int
    num_groups: int


def resource_size(geo: Geometry, kind: int) -> int:
    return {
        R.RES_FB: 0,
        R.RES_SB: geo.sub_block_size,
        R.RES_PB: geo.pb_size,
        R.RES_PB2: geo.pb_size,
        R.RES_FD: geo.fd_size,
    }[kind]


class ClusterProbe:
    """Reads cluster headers of one VMFS5 resource file by file offset, for the rebuild."""

    def __init__(self, geo: Geometry, kind: int, read_at: ReadAt, vol_offset: VolOffset, file_size: int) -> None:
        self.geo = geo
        self.kind = kind
        self.read_at = read_at
        self.vol_offset = vol_offset
        self.file_size = file_size
        self.ch = geo.cluster_header_size
        self._cache: dict[int, tuple[int, int] | None] = {}
        #: offsets whose lock block is entirely right (type and own address), or partly (either)
        self.sound: set[int] = set()
        self.partly: set[int] = set()

    def header(self, offset: int) -> tuple[int, int] | None:
        """(clusterNum, totalResources) of the cluster header at file ``offset`` (None: beyond the
        file or not readable); :attr:`sound` / :attr:`partly` say how much its lock block agrees."""
        if offset in self._cache:
            return self._cache[offset]
        found = None
        if offset + self.ch <= self.file_size:
            raw = self.read_at(offset, self.ch)
            where = self.vol_offset(offset)
            if raw is not None and where is not None:
                md = self.ch // 2
                lock = self.geo.structs.lock.parse(raw[:md]).lock
                meta = R.ClusterMeta5.parse(raw[md : md + R.ClusterMeta5.sizeof()])
                # either witness will do: a damaged lock field is pass 5's to fix, not a reason to
                # doubt the file header
                type_ok, addr_ok = lock.type == LOCK_TYPE_BASE + self.kind + 1, lock.addr == where
                found = (meta.clusterNum, meta.totalResources)
                if type_ok or addr_ok:
                    self.partly.add(offset)
                if type_ok and addr_ok:
                    self.sound.add(offset)
        self._cache[offset] = found
        return found

    def walk(self, shape: Shape) -> list[int]:
        """Resource counts of the clusters at the places ``shape`` gives: a place counts when
        its header carries the right number and part of a right lock block, or a wholly right
        lock block (then its counts may be damaged: -1 stands for "unknown")."""
        totals: list[int] = []
        c = 0
        while c < MAX_CLUSTERS:
            group, index = divmod(c, shape.cpg)
            off = shape.cgo + group * shape.cgs + index * self.ch
            got = self.header(off)
            if got is None or not ((got[0] == c and off in self.partly) or off in self.sound):
                break
            totals.append(got[1] if got[0] == c and 0 < got[1] <= shape.rpc else -1)
            c += 1
        return totals


def counts(geo: Geometry, kind: int, shape: Shape, totals: list[int], file_size: int, volume_blocks: int) -> list[int]:
    """Resource counts that fit ``totals`` (full clusters, then the last one): from the cluster
    headers when they all tell it, else from the witness of :func:`witness`."""
    out = []
    rpc, n = shape.rpc, len(totals)
    if not n or not all(t in (rpc, -1) for t in totals[:-1]):
        return []
    if totals[-1] > 0:  # clusters before the last are full; an unknown count there is rpc
        out.append((n - 1) * rpc + totals[-1])
    if kind == R.RES_FB:
        out.append(volume_blocks)
    elif kind != R.RES_FD and shape.rsz:
        # the file ends right after the last resource: solve for the count
        for num in range((n - 1) * rpc + 1, n * rpc + 1):
            if witness(geo, kind, Shape(rpc, shape.cpg, shape.cgo, shape.rsz, shape.cgs, num, 0), file_size,
                       volume_blocks):
                out.append(num)
                break
    out.append(n * rpc)  # the last resort: the last cluster full too
    return [m for m in _unique(out) if -(-m // rpc) == n]


def witness(geo: Geometry, kind: int, shape: Shape, file_size: int, volume_blocks: int) -> bool | None:
    """Does an independent fact agree with ``shape``'s resource count?  None: nothing to ask.

    File blocks: one per block of the volume.  Sub-blocks and pointer blocks: the file ends
    exactly after its last resource (vmfs-format.md 6.2); ``.fdc.sf`` has no such rule."""
    if kind == R.RES_FB:
        return shape.num_resources == volume_blocks
    if kind == R.RES_FD or shape.num_resources == 0:
        return None
    c, r = divmod(shape.num_resources - 1, shape.rpc)
    end = shape.cgo + (c // shape.cpg) * shape.cgs + shape.cpg * geo.cluster_header_size
    return end + ((c % shape.cpg) * shape.rpc + r + 1) * shape.rsz == file_size


def header_shape(h: Container) -> Shape:
    return Shape(h.resourcesPerCluster, h.clustersPerGroup, h.clusterGroupOffset, h.resourceSize,
                 h.clusterGroupSize, h.numResourcesLo | h.numResourcesHi << 32, h.numClusterGroups)


def check_header(
    geo: Geometry, kind: int, h: Container, probe: ClusterProbe, *, fdc: tuple[int, int] | None, volume_blocks: int
) -> list[str]:
    """What is wrong with a VMFS5 resource header (empty when nothing is).

    A damaged *cluster* header is not blamed on the file header: the walk stops there and pass 5
    reports that cluster.  Where the cluster headers and the file header disagree on the resource
    count only, an independent witness (see :func:`witness`) decides."""
    bad = []
    shape = header_shape(h)
    rpc, cpg, cgo, rsz, cgs, num = shape.rpc, shape.cpg, shape.cgo, shape.rsz, shape.cgs, shape.num_resources
    ch = geo.cluster_header_size
    want_rsz = resource_size(geo, kind)
    if rsz != want_rsz:
        bad.append(f"resourceSize 0x{rsz:x}, expected 0x{want_rsz:x}")
    if num == 0:
        bad.append("no resources")
    if not 0 < rpc <= RPC_LIMIT[kind] or cpg == 0:
        bad.append(f"resourcesPerCluster {rpc} / clustersPerGroup {cpg}")
    if fdc is not None and (cgo, cpg) != fdc:
        bad.append(f"clusterGroupOffset 0x{cgo:x} / clustersPerGroup {cpg} differ from the FS descriptor's "
                   f"0x{fdc[0]:x} / {fdc[1]}")
    if cgo < R.RES_HEADER_SIZE:
        bad.append(f"clusterGroupOffset 0x{cgo:x}")
    if h.bitsPerResource not in (0, 1) or h.signature or h.childMetaOffset:
        # VMFS5 uses the first 0x20 bytes only (vmfs-format.md 6.2); the library reads these
        bad.append(f"VMFS6 fields set (bitsPerResource {h.bitsPerResource}, signature 0x{h.signature:x}, "
                   f"childMetaOffset 0x{h.childMetaOffset:x})")
    if bad:
        return bad
    if cgs != cpg * ch + cpg * rpc * rsz:
        return [f"clusterGroupSize 0x{cgs:x}, expected 0x{cpg * ch + cpg * rpc * rsz:x}"]
    clusters = -(-num // rpc)
    groups = -(-clusters // cpg)
    if h.numClusterGroups != groups:
        bad.append(f"numClusterGroups {h.numClusterGroups} for {clusters} clusters of {cpg} per group")
    c, r = divmod(num - 1, rpc)
    end = cgo + (c // cpg) * cgs + (cpg * ch if rsz else (c % cpg + 1) * ch) + ((c % cpg) * rpc + r + 1) * rsz
    if end > probe.file_size:
        bad.append(f"{num} resources need {end} bytes, the file has {probe.file_size}")
        return bad
    def place(c: int) -> int:
        group, index = divmod(c, cpg)
        return cgo + group * cgs + index * ch

    def at(c: int) -> tuple[int, int] | None:
        return probe.header(place(c))

    last = clusters - 1
    sample = sorted({0, 1, last - 1, last} & set(range(clusters)))
    # a place holds a cluster header when its number is right or its lock block is wholly right
    # (a damaged number is pass 5's to fix)
    if not any((got := at(c)) is not None and ((got[0] == c and 0 < got[1] <= rpc) or place(c) in probe.sound)
               for c in sample):
        bad.append(f"no cluster header where this geometry places clusters {', '.join(map(str, sample))}")
        return bad
    if (after := at(clusters)) is not None and after[0] == clusters and place(clusters) in probe.partly:
        bad.append(f"{num} resources in {clusters} clusters, but cluster {clusters} exists too")
        return bad
    tail = at(last)
    if tail is None or tail[0] != last:
        if witness(geo, kind, shape, probe.file_size, volume_blocks) is False:
            bad.append(f"{num} resources, but cluster {last} does not exist")
    elif tail[1] != num - last * rpc:
        found = Shape(rpc, cpg, cgo, rsz, cgs, last * rpc + tail[1], groups)
        if witness(geo, kind, shape, probe.file_size, volume_blocks) is False and witness(
            geo, kind, found, probe.file_size, volume_blocks
        ):
            bad.append(f"{num} resources, the cluster headers hold {found.num_resources}")
    return bad


def rebuild_header(
    geo: Geometry, kind: int, h: Container, probe: ClusterProbe, *, fdc: tuple[int, int] | None, volume_blocks: int
) -> Shape | None:
    """The geometry that the cluster headers prove, closest to the damaged header ``h``."""
    rsz = resource_size(geo, kind)
    ch = geo.cluster_header_size
    limit = RPC_LIMIT[kind]
    cgos = _unique([fdc[0]] if fdc else [h.clusterGroupOffset, DEFAULT_CGO])
    best: tuple[int, Shape] | None = None
    old = (h.resourcesPerCluster, h.clustersPerGroup, h.clusterGroupOffset, h.resourceSize, h.clusterGroupSize,
           h.numResourcesLo | h.numResourcesHi << 32, h.numClusterGroups)
    for cgo in cgos:
        if cgo < R.RES_HEADER_SIZE or probe.header(cgo) is None or cgo not in probe.partly | probe.sound:
            continue
        run = 0
        while (run < MAX_CLUSTERS and (got := probe.header(cgo + run * ch)) is not None
               and ((got[0] == run and cgo + run * ch in probe.partly) or cgo + run * ch in probe.sound)):
            run += 1
        first_total = probe.header(cgo)[1]  # type: ignore[index]
        rpcs = _unique([r for r in (h.resourcesPerCluster, first_total, DEFAULT_RPC[kind]) if 0 < r <= limit])
        cpgs = _unique([fdc[1]] if fdc else [h.clustersPerGroup, DEFAULT_CPG, run])
        for rpc, cpg in itertools.product(rpcs, cpgs):
            if not 0 < rpc <= limit or cpg <= 0 or (rsz and run > cpg):
                continue
            cgs = cpg * ch + cpg * rpc * rsz
            trial = Shape(rpc, cpg, cgo, rsz, cgs, 0, 0)
            totals = probe.walk(trial)
            for num in counts(geo, kind, trial, totals, probe.file_size, volume_blocks):
                shape = Shape(rpc, cpg, cgo, rsz, cgs, num, -(-len(totals) // cpg))
                last = divmod(num - 1, rpc)
                end = cgo + (last[0] // cpg) * cgs + cpg * ch + ((last[0] % cpg) * rpc + last[1]) * rsz + rsz
                if max(end, cgo + (len(totals) - 1) // cpg * cgs + cpg * ch) > probe.file_size:
                    continue
                new = (rpc, cpg, cgo, rsz, cgs, num, shape.num_groups)
                score = sum(a == b for a, b in zip(old, new, strict=True)) * 2 + (rpc == DEFAULT_RPC[kind])
                if witness(geo, kind, shape, probe.file_size, volume_blocks):
                    score += 100
                if best is None or score > best[0]:
                    best = (score, shape)
    return best[1] if best else None


def header_bytes(shape: Shape) -> bytes:
    """A VMFS5 resource header for ``shape`` (fields from 0x20 on are zero, as ESXi writes them)."""
    return R.ResourceHeader.build(
        builders.resource_header5(
            rpc=shape.rpc, cpg=shape.cpg, cgo=shape.cgo, rsz=shape.rsz, cgs=shape.cgs,
            num_resources=shape.num_resources, num_groups=shape.num_groups,
        )
    )


def describe_change(h: Container, shape: Shape) -> str:
    names = [
        ("resourcesPerCluster", h.resourcesPerCluster, shape.rpc),
        ("clustersPerGroup", h.clustersPerGroup, shape.cpg),
        ("clusterGroupOffset", h.clusterGroupOffset, shape.cgo),
        ("resourceSize", h.resourceSize, shape.rsz),
        ("clusterGroupSize", h.clusterGroupSize, shape.cgs),
        ("numResources", h.numResourcesLo | h.numResourcesHi << 32, shape.num_resources),
        ("numClusterGroups", h.numClusterGroups, shape.num_groups),
    ]
    changed = [f"{n} {a:#x} -> {b:#x}" for n, a, b in names if a != b]
    return ", ".join(changed) or "fields beyond the geometry cleared"


def _unique(values: list[int]) -> list[int]:
    out: list[int] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out
