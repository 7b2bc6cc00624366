"""Compute where everything of a new VMFS5 volume goes, without touching a device.

The numbers follow the package docstring's policy; every size and offset that the reader also
needs comes from :class:`vmfs.format.geometry.Geometry` and :class:`vmfs.device.lvm.LvmLayout`, so writer and
reader share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vmfs.errors import InvalidArgumentError, NoSpaceError
from vmfs.format import address as A
from vmfs.format.geometry import Geometry
from vmfs.mkfs.options import MIB, MkfsOptions
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import lvm as L
from vmfs.ondisk import resource as R
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET
from vmfs.ondisk.heartbeat import HEARTBEAT_REGION_OFFSET

#: Device offset of the first PE data on every extent (vmfs-format.md 2.1, 2.3).
DATA_OFFSET = 0x1100000
#: LVM major/minor and FS major/minor written by ESXi 5 (2.2, 3.1).
LVM_MAJOR, LVM_MINOR = 5, 21
FS_MAJOR, FS_MINOR = 14, 81
#: Extents per volume (SD table entries; vmfs-tools' limit).
MAX_EXTENTS = L.SD_ENTRIES
#: 26-bit FB numbers (7.1): 2^26 blocks of 1 MiB = 64 TiB.
MAX_FILE_BLOCKS = 1 << 26
#: A system file mapped directly (ZLA 1) has at most this many blocks (8.6).
DIRECT_BLOCKS = 256
#: FD cluster-group offset and clusters per group of every resource file (6.6; FS desc. 0xD1/0xD5).
CLUSTER_GROUP_OFFSET = 0x10000
CLUSTERS_PER_GROUP = 64
#: The first value of the lock creation counter (see the package docstring).
LOCK_SERIAL_BASE = 512

# Resource geometry as ESXi formats VMFS5 (6.6): type -> (resources per cluster, resource size).
FB_RPC = 200
SB_RPC = 32
PB_RPC = 16
FD_RPC = 32
PB2_RPC = 16

# Sizing policy (package docstring): bytes of volume per resource, minimum, published maximum.
FD_PER_BYTES, FD_MIN, FD_MAX = 4 * MIB, 64, 130000
SB_PER_BYTES, SB_MIN, SB_MAX = MIB, 256, 32000
PB_PER_BYTES, PB_MIN, PB_MAX = 1 << 30, 1, 64512
PB2_DEFAULT = 1

# FD slots in cluster 0 (6.1)
ROOT_R, FBB_R, FDC_R, PBC_R, SBC_R, VH_R, PB2_R, SDD_R = range(8)
#: Root directory entries after '.' and '..', in the sample's order (12.3).
ROOT_ENTRIES = (".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf")
SYSTEM_FD_INDEX = {
    "/": ROOT_R,
    ".fbb.sf": FBB_R,
    ".fdc.sf": FDC_R,
    ".pbc.sf": PBC_R,
    ".sbc.sf": SBC_R,
    ".vh.sf": VH_R,
    ".pb2.sf": PB2_R,
    ".sdd.sf": SDD_R,
}
#: Block order on the volume (12.2).
BLOCK_ORDER = (".vh.sf", ".fdc.sf", "/", ".fbb.sf", ".pbc.sf", ".sbc.sf", ".pb2.sf", ".sdd.sf")
RESOURCE_OF_FILE = {".fbb.sf": R.RES_FB, ".fdc.sf": R.RES_FD, ".pbc.sf": R.RES_PB, ".sbc.sf": R.RES_SB,
                    ".pb2.sf": R.RES_PB2}
#: Link counts: one per directory entry naming the FD (11.3): root = '.', '..', '.sdd.sf/..'.
ROOT_LINKS = 3
SDD_LINKS = 2
#: Modes (8.3): root 01755, system files 0400, .sdd.sf stores 040700.
ROOT_MODE = 0o1755
SYSFILE_MODE = 0o400
SDD_MODE = 0o40700
DIRENT_SIZE = 140


def system_file_kind(name: str) -> tuple[int, int, int]:
    """(FD type, mode, links) of a system file or the root, as both samples have them (8.3, 11.3)."""
    if name == "/":
        return F.TYPE_DIRECTORY, ROOT_MODE, ROOT_LINKS
    if name == ".sdd.sf":
        return F.TYPE_SYSFILE, SDD_MODE, SDD_LINKS
    return F.TYPE_SYSFILE, SYSFILE_MODE, 1


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class ExtentLayout:
    """One device of the volume and the 256-MiB segments it holds."""

    index: int
    device_size: int
    device_uuid: str
    name: str
    first_segment: int
    segments: int
    pe_segments: int  # segments per PE table entry (1 up to 2 TiB)

    data_offset: int = DATA_OFFSET

    @property
    def last_segment(self) -> int:
        return self.first_segment + self.segments - 1

    @property
    def volume_offset(self) -> int:
        return self.first_segment * L.SEGMENT_SIZE

    @property
    def length(self) -> int:
        return self.segments * L.SEGMENT_SIZE

    @property
    def pe_count(self) -> int:
        return _ceil(self.segments, self.pe_segments)

    @property
    def unused_bytes(self) -> int:
        return self.device_size - self.data_offset - self.length

    def pe_entries(self) -> list[tuple[int, int, int]]:
        """(device offset, volume offset, length) of each PE table entry."""
        step = self.pe_segments * L.SEGMENT_SIZE
        return [
            (self.data_offset + i * step, self.volume_offset + i * step, min(step, self.length - i * step))
            for i in range(self.pe_count)
        ]


@dataclass(frozen=True)
class ResourceLayout:
    """Geometry of one resource file and what is allocated in it at format time (6.2)."""

    kind: int
    file: str
    rpc: int
    cpg: int
    cgo: int
    rsz: int
    ch: int  # cluster header size
    count: int
    used: tuple[int, ...] = ()  # resource numbers allocated at format time
    first_lock_serial: int = 0
    round_to_block: int = 0  # .fdc.sf is a whole number of blocks (12.3: 1 MiB for 64 FDs)

    @property
    def cgs(self) -> int:
        return self.cpg * self.ch + self.cpg * self.rpc * self.rsz

    @property
    def num_clusters(self) -> int:
        return _ceil(self.count, self.rpc) if self.rpc else 0  # VMFS6 .pbc.sf: rpc 0, no clusters

    @property
    def num_groups(self) -> int:
        return _ceil(self.num_clusters, self.cpg)

    def cluster_total(self, cluster: int) -> int:
        return min(self.rpc, self.count - cluster * self.rpc)

    def header_offset(self, cluster: int) -> int:
        group, index = divmod(cluster, self.cpg)
        return self.cgo + group * self.cgs + index * self.ch

    def resource_offset(self, cluster: int, resource: int) -> int:
        group, index = divmod(cluster, self.cpg)
        return self.cgo + group * self.cgs + self.cpg * self.ch + (index * self.rpc + resource) * self.rsz

    @property
    def file_length(self) -> int:
        """Files end after the last resource, or after the last cluster group when resources
        carry no data (6.2); ``.fdc.sf`` is rounded up to whole blocks; a file without resources
        is its header alone (VMFS6 ``.pbc.sf``)."""
        if self.count == 0:
            return self.cgo
        if self.rsz == 0:
            end = self.cgo + self.num_groups * self.cgs
        else:
            end = self.resource_offset(*divmod(self.count - 1, self.rpc)) + self.rsz
        if self.round_to_block:
            end = _ceil(end, self.round_to_block) * self.round_to_block
        return end

    def used_in(self, cluster: int) -> set[int]:
        return {n - cluster * self.rpc for n in self.used if n // self.rpc == cluster}

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "type": self.kind,
            "resourcesPerCluster": self.rpc,
            "clustersPerGroup": self.cpg,
            "clusterGroupOffset": self.cgo,
            "resourceSize": self.rsz,
            "clusterGroupSize": self.cgs,
            "resources": self.count,
            "clusters": self.num_clusters,
            "clusterGroups": self.num_groups,
            "fileLength": self.file_length,
            "used": len(self.used),
        }


@dataclass(frozen=True)
class SystemFileLayout:
    """One system file (or the root directory): its FD and its contiguous run of blocks."""

    name: str
    fd_index: int
    fd_address: int
    fd_offset: int  # volume offset of the FD
    first_block: int
    num_blocks: int
    file_length: int
    zla: int
    ftype: int
    mode: int
    links: int
    lock_serial: int
    pointer_blocks: tuple[int, ...] = ()  # PB resource numbers holding the block map (ZLA 3)
    #: (first block, blocks) runs when the file is not one contiguous run (VMFS6 .fdc.sf, .sbc.sf)
    runs: tuple[tuple[int, int], ...] = ()

    @property
    def block_runs(self) -> tuple[tuple[int, int], ...]:
        return self.runs or ((self.first_block, self.num_blocks),)

    def to_dict(self, block_size: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "fdAddress": self.fd_address,
            "fdVolumeOffset": self.fd_offset,
            "firstBlock": self.first_block,
            "blocks": self.num_blocks,
            "volumeOffset": self.first_block * block_size,
            "fileLength": self.file_length,
            "zla": self.zla,
            "mode": self.mode,
            "links": self.links,
            "pointerBlocks": list(self.pointer_blocks),
            "runs": [[first, count] for first, count in self.block_runs],
        }


@dataclass(frozen=True)
class Region:
    """A byte range of the logical volume and what it holds."""

    name: str
    offset: int
    length: int


@dataclass
class Layout:
    """Everything a format writes, computed by :func:`plan`."""

    options: MkfsOptions  # resolved: every UUID and time set
    geometry: Geometry
    volume_size: int
    extents: tuple[ExtentLayout, ...]
    system_files: tuple[SystemFileLayout, ...]
    resources: tuple[ResourceLayout, ...]
    #: set by format_volume
    bytes_written: int = field(default=0)
    version: int = 5
    #: version-specific planning results (VMFS6: :class:`vmfs.mkfs.layout6.Plan6`)
    extra: Any = None

    @property
    def block_size(self) -> int:
        return self.geometry.block_size

    @property
    def num_blocks(self) -> int:
        return self.volume_size // self.geometry.block_size

    @property
    def used_blocks(self) -> int:
        return sum(f.num_blocks for f in self.system_files)

    def system_file(self, name: str) -> SystemFileLayout:
        return next(f for f in self.system_files if f.name == name)

    def resource(self, kind: int) -> ResourceLayout:
        return next(r for r in self.resources if r.kind == kind)

    @property
    def regions(self) -> list[Region]:
        """The volume from offset 0 to the end of the last system file, region by region."""
        bs = self.block_size
        geo = self.geometry
        out = [
            Region("zero", 0, FS_DESCRIPTOR_OFFSET),
            Region("FS descriptor", FS_DESCRIPTOR_OFFSET, 512),
            Region("zero", FS_DESCRIPTOR_OFFSET + 512, HEARTBEAT_REGION_OFFSET - FS_DESCRIPTOR_OFFSET - 512),
            Region(f"heartbeats ({geo.hb_slots} x {geo.hb_slot_size})", HEARTBEAT_REGION_OFFSET,
                   geo.heartbeat_region_size),
        ]
        end_hb = HEARTBEAT_REGION_OFFSET + geo.heartbeat_region_size
        if end_hb < geo.fdc_start:
            out.append(Region("zero", end_hb, geo.fdc_start - end_hb))
        runs = sorted((first, count, f.name) for f in self.system_files for first, count in f.block_runs
                      if f.name != ".vh.sf")
        for first, count, name in runs:
            out.append(Region(name, first * bs, count * bs))
        last = max(first + count for f in self.system_files for first, count in f.block_runs) * bs
        out.append(Region("free file blocks", last, self.volume_size - last))
        return out

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        geo = self.geometry
        return {
            "version": f"VMFS-{self.version}.{FS_MINOR if self.version == 5 else 82}",
            "label": o.label,
            "fsUuid": o.fs_uuid,
            "lvUuid": o.lv_uuid,
            "hostUuid": o.host_uuid,
            "creationTimeUS": o.creation_time_us,
            "blockSize": geo.block_size,
            "subBlockSize": geo.sub_block_size,
            "volumeSize": self.volume_size,
            "fileBlocks": self.num_blocks,
            "usedFileBlocks": self.used_blocks,
            "fdcStart": geo.fdc_start,
            "heartbeatSlots": geo.hb_slots,
            "extents": [
                {
                    "index": e.index,
                    "deviceSize": e.device_size,
                    "deviceUuid": e.device_uuid,
                    "name": e.name,
                    "dataOffset": e.data_offset,
                    "firstSegment": e.first_segment,
                    "lastSegment": e.last_segment,
                    "volumeOffset": e.volume_offset,
                    "length": e.length,
                    "peEntries": e.pe_count,
                    "peLength": e.pe_segments * L.SEGMENT_SIZE,
                    "unusedBytes": e.unused_bytes,
                }
                for e in self.extents
            ],
            "regions": [{"name": r.name, "offset": r.offset, "length": r.length} for r in self.regions],
            "systemFiles": [f.to_dict(geo.block_size) for f in self.system_files],
            "resources": [r.to_dict() for r in self.resources],
            "bytesWritten": self.bytes_written,
        }


def vmfs5_geometry(options: MkfsOptions) -> Geometry:
    return Geometry(
        version=5,
        block_size=options.block_size,
        sub_block_size=options.sub_block_size,
        md_size=512,
        fdc_cgo=CLUSTER_GROUP_OFFSET,
        fdc_cpg=CLUSTERS_PER_GROUP,
    )


def plan(device_sizes: Sequence[int], options: MkfsOptions | None = None) -> Layout:
    """The layout of a VMFS5 volume over devices of ``device_sizes`` bytes (extents in order)."""
    options = options or MkfsOptions()
    if options.version != 5:
        raise InvalidArgumentError(f"vmfs.mkfs.layout plans VMFS5 only, not VMFS{options.version}")
    n = len(device_sizes)
    if not 1 <= n <= MAX_EXTENTS:
        raise InvalidArgumentError(f"a volume has 1 to {MAX_EXTENTS} extents, not {n}")
    opts = options.resolved(n)
    geo = vmfs5_geometry(opts)
    extents = _plan_extents(device_sizes, opts, geo.block_size)
    volume_size = sum(e.length for e in extents)
    resources, files = _plan_files(volume_size, opts, geo)
    return Layout(opts, geo, volume_size, extents, files, resources)


def _plan_extents(sizes: Sequence[int], opts: MkfsOptions, block_size: int) -> tuple[ExtentLayout, ...]:
    assert opts.device_uuids is not None and opts.extent_names is not None
    budget = MAX_FILE_BLOCKS * block_size // L.SEGMENT_SIZE
    extents = []
    first = 0
    for i, size in enumerate(sizes):
        segments = max(size - DATA_OFFSET, 0) // L.SEGMENT_SIZE
        if segments == 0:
            need = DATA_OFFSET + L.SEGMENT_SIZE
            raise InvalidArgumentError(
                f"extent {i} of {size} bytes is too small: a VMFS5 extent needs at least {need} bytes "
                f"({need >> 20} MiB: 17 MiB of LVM metadata and one 256 MiB segment)"
            )
        segments = min(segments, budget - first)
        if segments <= 0:
            raise InvalidArgumentError(f"extent {i} is not needed: a VMFS5 volume holds at most 64 TiB")
        per_entry = _ceil(segments, L.PES_PER_MAP)
        extents.append(
            ExtentLayout(i, size, opts.device_uuids[i], opts.extent_names[i], first, segments, per_entry)
        )
        first += segments
    return tuple(extents)


def _count(override: int | None, policy: int, low: int, high: int, cap: int, what: str) -> int:
    if override is None:
        return min(max(policy, low), high, cap)
    if not 1 <= override <= cap:
        raise InvalidArgumentError(f"{what}: {override} is out of range (1..{cap} on this volume)")
    return override


def _direct_cap(rpc: int, rsz: int, ch: int, block_size: int, *, rounded: bool, whole_groups: bool) -> int:
    """Most resources (in whole clusters, or whole cluster groups) whose file still fits
    DIRECT_BLOCKS blocks, i.e. stays mapped directly (ZLA 1)."""
    limit = DIRECT_BLOCKS * block_size
    best = 0
    clusters = 1
    while True:
        probe = ResourceLayout(0, "", rpc, CLUSTERS_PER_GROUP, CLUSTER_GROUP_OFFSET, rsz, ch, clusters * rpc,
                               round_to_block=block_size if rounded else 0)
        if probe.file_length > limit:
            return best
        if not whole_groups or clusters % CLUSTERS_PER_GROUP == 0:
            best = clusters * rpc
        clusters += 1


def _plan_files(
    volume_size: int, opts: MkfsOptions, geo: Geometry
) -> tuple[tuple[ResourceLayout, ...], tuple[SystemFileLayout, ...]]:
    bs = geo.block_size
    ch = geo.cluster_header_size
    num_blocks = volume_size // bs
    # FDs and PBs: whole cluster groups (ESXi's published 64512 PBs is 63 whole groups);
    # sub-blocks: ESXi's published maximum, which fits in whole clusters
    fd_cap = _direct_cap(FD_RPC, geo.fd_size, ch, bs, rounded=True, whole_groups=True)
    sb_cap = _direct_cap(SB_RPC, geo.sub_block_size, ch, bs, rounded=False, whole_groups=False)
    pb_cap = _direct_cap(PB_RPC, geo.pb_size, ch, bs, rounded=False, whole_groups=True)
    fds = _count(opts.num_fds, volume_size // FD_PER_BYTES, FD_MIN, FD_MAX, fd_cap, "file descriptors")
    if fds <= len(SYSTEM_FD_INDEX):
        raise InvalidArgumentError(f"file descriptors: {fds} leaves none after the {len(SYSTEM_FD_INDEX)} system FDs")
    sbs = _count(opts.num_sub_blocks, volume_size // SB_PER_BYTES, SB_MIN, SB_MAX, sb_cap, "sub-blocks")
    pbs = _count(opts.num_pointer_blocks, volume_size // PB_PER_BYTES, PB_MIN, PB_MAX, pb_cap, "pointer blocks")
    pb2s = _count(opts.num_pointer2_blocks, PB2_DEFAULT, 1, PB_MAX, pb_cap, "secondary pointer blocks")

    def res(kind: int, name: str, rpc: int, rsz: int, count: int, rounded: bool = False) -> ResourceLayout:
        return ResourceLayout(kind, name, rpc, CLUSTERS_PER_GROUP, CLUSTER_GROUP_OFFSET, rsz, ch, count,
                              round_to_block=bs if rounded else 0)

    fbb = res(R.RES_FB, ".fbb.sf", FB_RPC, 0, num_blocks)
    fbb_blocks = _ceil(fbb.file_length, bs)
    fbb_pbs = 0 if fbb_blocks <= DIRECT_BLOCKS else _ceil(fbb_blocks, geo.ptrs_per_pb)
    if fbb_pbs > pbs:
        raise InvalidArgumentError(f"pointer blocks: .fbb.sf needs {fbb_pbs}, only {pbs} requested")
    sizes = {
        ".fdc.sf": res(R.RES_FD, ".fdc.sf", FD_RPC, geo.fd_size, fds, rounded=True),
        ".fbb.sf": fbb,
        ".pbc.sf": res(R.RES_PB, ".pbc.sf", PB_RPC, geo.pb_size, pbs),
        ".sbc.sf": res(R.RES_SB, ".sbc.sf", SB_RPC, geo.sub_block_size, sbs),
        ".pb2.sf": res(R.RES_PB2, ".pb2.sf", PB2_RPC, geo.pb_size, pb2s),
    }
    lengths = {name: r.file_length for name, r in sizes.items()}
    lengths[".vh.sf"] = geo.fdc_start
    lengths["/"] = len(ROOT_ENTRIES) * DIRENT_SIZE + 2 * DIRENT_SIZE
    lengths[".sdd.sf"] = 2 * DIRENT_SIZE

    # blocks in the sample's order; lock serials in ESXi's creation order (package docstring)
    first_block: dict[str, int] = {}
    blocks: dict[str, int] = {}
    nxt = 0
    for name in BLOCK_ORDER:
        blocks[name] = max(_ceil(lengths[name], bs), 1)
        first_block[name] = nxt
        nxt += blocks[name]
    if nxt >= num_blocks:
        raise NoSpaceError(f"a volume of {volume_size} bytes cannot hold its {nxt} blocks of metadata")
    serial = LOCK_SERIAL_BASE
    serials: dict[str, int] = {}
    cluster_serials: dict[str, int] = {}
    for name in ("/", ".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf"):
        serials[name] = serial
        serial += 1
        if name in sizes:
            cluster_serials[name] = serial
            serial += sizes[name].num_clusters

    used = {
        ".fbb.sf": tuple(range(nxt)),
        ".fdc.sf": tuple(range(len(SYSTEM_FD_INDEX))),
        ".pbc.sf": tuple(range(fbb_pbs)),
    }
    resources = tuple(
        ResourceLayout(
            r.kind, r.file, r.rpc, r.cpg, r.cgo, r.rsz, r.ch, r.count,
            used=used.get(name, ()), first_lock_serial=cluster_serials[name], round_to_block=r.round_to_block,
        )
        for name, r in sizes.items()
    )
    files = []
    fdc = sizes[".fdc.sf"]
    fdc_base = first_block[".fdc.sf"] * bs
    if fdc_base != geo.fdc_start:  # pragma: no cover - fixed by BLOCK_ORDER and .vh.sf's length
        raise AssertionError("the FDC does not start where readers bootstrap it")
    for name in BLOCK_ORDER:
        index = SYSTEM_FD_INDEX[name]
        ftype, mode, links = system_file_kind(name)
        pointer_blocks = tuple(range(fbb_pbs)) if name == ".fbb.sf" else ()
        files.append(
            SystemFileLayout(
                name=name,
                fd_index=index,
                fd_address=A.make_fd(0, index),
                fd_offset=fdc_base + fdc.resource_offset(0, index),
                first_block=first_block[name],
                num_blocks=blocks[name],
                file_length=lengths[name],
                zla=F.ZLA_POINTER_BLOCKS if pointer_blocks else F.ZLA_FILE_BLOCKS,
                ftype=ftype,
                mode=mode,
                links=links,
                lock_serial=serials[name],
                pointer_blocks=pointer_blocks,
            )
        )
    return resources, tuple(files)

