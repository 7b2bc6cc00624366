"""Compute where everything of a new VMFS6 volume goes, without touching a device.

What ESXi 6.7 left on the real VMFS6 sample (vmfs-format.md 6, 9.2, 12), reproduced rule by rule:

* ``.vh.sf`` covers [0, 7 MiB): the FS descriptor and 1024 heartbeat slots of 4 KiB.
* Blocks are taken in the order ESXi took them: the first block of ``.fdc.sf`` (where readers
  bootstrap FD cluster 0), the root directory, ``.fbb.sf``, the rest of ``.fdc.sf``, ``.pbc.sf``,
  ``.sbc.sf`` as far as an FD's 320 direct pointers reach, ``.pb2.sf``, ``.sdd.sf``, ``.jbc.sf``,
  and then the rest of ``.sbc.sf``.  On the sample the last step happened one second after the
  format (``.sbc.sf`` ctime, the PB2 cluster's change time): ESXi formats ``.sbc.sf`` directly
  mapped and grows it at once through one secondary pointer block (ZLA 5).  mkfs does both steps;
  the lock serials say which clusters the second step made.
* Resource counts: 16384 FDs (ESXi's published "min(16384, per-TB estimate)"; the sample has
  16384 at 768 MiB), 128 journal blocks of 2 MiB, no pointer blocks, one PB2, and sub-blocks
  up to 16384 or as many as the space left holds (the sample's 5916 is "what was left").
* Every 512-MiB large file block is converted into a cluster of 512 small ones at format time
  (the sample's two LFBs are); mkfs never leaves an LFB free, so no unknown LFB state is written.

Values marked [O] in vmfs-format.md (lock serials from 401, the affinity bookkeeping) are
reproduced as observed; ``tests/mkfs/test_vs_sample6.py`` compares a format of the sample's
device size with the sample field by field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmfs.errors import InvalidArgumentError, NoSpaceError
from vmfs.format import address as A
from vmfs.format.geometry import Geometry
from vmfs.mkfs.layout import (
    MAX_EXTENTS,
    ExtentLayout,
    Layout,
    ResourceLayout,
    SystemFileLayout,
    _ceil,
    system_file_kind,
)
from vmfs.mkfs.options import MIB, MkfsOptions
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import lvm as L
from vmfs.ondisk import resource as R

DATA_OFFSET = 0x1100000
LVM_MAJOR, LVM_MINOR = 6, 21
FS_MAJOR, FS_MINOR = 24, 82
MD_ALIGNMENT = 0x1000
BLOCK_SIZE = MIB
SUB_BLOCK_SIZE = 64 << 10
LFB_SHIFT = 9  # 512 MiB large file blocks
CLUSTER_GROUP_OFFSET = 0x10000
CLUSTERS_PER_GROUP = 8
JB_CLUSTERS_PER_GROUP = 4
#: 31-bit SFB cluster numbers of 512 blocks (7.2): far beyond 64 TiB, the published maximum.
MAX_VOLUME = 64 << 40
LOCK_SERIAL_BASE = 401

# Resource geometry as ESXi formats VMFS6 (6.6): resources per cluster, resource size
FD_RPC, FD_COUNT = 256, 16384
SB_RPC, SB_TARGET = 256, 16384
PB_RPC = 0
PB2_RPC, PB2_COUNT = 32, 1
JB_RPC, JB_COUNT, JB_SIZE = 8, 128, 2 << 20
LFB_RPC = 16
SFB_RPC = 512

# FD slots in cluster 0 (6.1)
SYSTEM_FD_INDEX = {"/": 0, ".fbb.sf": 1, ".fdc.sf": 2, ".pbc.sf": 3, ".sbc.sf": 4, ".vh.sf": 5,
                   ".pb2.sf": 6, ".sdd.sf": 7, ".jbc.sf": 8}
#: Root directory entries after '.' and '..', slots 0..7 of dirent block 1 (12.3).
ROOT_ENTRIES = (".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf", ".jbc.sf")
#: Lock creation order (the serials of the sample's untouched objects).
CREATION_ORDER = ("/", ".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf", ".jbc.sf")
#: Hashed directories: 64 KiB header, then the allocation-map block and one dirent block (9.2).
ROOT_LENGTH = 0x10000 + 2 * MD_ALIGNMENT
SDD_LENGTH = 0x10000 + MD_ALIGNMENT


@dataclass(frozen=True)
class Plan6:
    """What the VMFS6 content needs beyond :class:`Layout`: the two halves of ``.sbc.sf``."""

    sbc_initial: int  # sub-blocks of the format proper (directly mapped)
    sbc_initial_blocks: int
    growth_serial: int  # lock serial of the first cluster the growth adds
    lfbs: int


def vmfs6_geometry() -> Geometry:
    return Geometry(version=6, block_size=BLOCK_SIZE, sub_block_size=SUB_BLOCK_SIZE, md_size=MD_ALIGNMENT,
                    fdc_cgo=CLUSTER_GROUP_OFFSET, fdc_cpg=CLUSTERS_PER_GROUP, lfb_shift=LFB_SHIFT)


def plan6(device_sizes: Sequence[int], options: MkfsOptions | None = None) -> Layout:
    """The layout of a VMFS6 volume over devices of ``device_sizes`` bytes (extents in order)."""
    options = options or MkfsOptions(version=6)
    n = len(device_sizes)
    if not 1 <= n <= MAX_EXTENTS:
        raise InvalidArgumentError(f"a volume has 1 to {MAX_EXTENTS} extents, not {n}")
    if n != 1:
        raise InvalidArgumentError(
            "vmfs6: spanned volumes are not made yet; give one device, or make a spanned VMFS5 volume with -t vmfs5"
        )
    opts = options.resolved(n)
    geo = vmfs6_geometry()
    extents = _plan_extents(device_sizes, opts)
    volume_size = sum(e.length for e in extents)
    resources, files, extra = _plan_files(volume_size, opts, geo)
    layout = Layout(opts, geo, volume_size, extents, files, resources, version=6)
    layout.extra = extra
    return layout


def _plan_extents(sizes: Sequence[int], opts: MkfsOptions) -> tuple[ExtentLayout, ...]:
    assert opts.device_uuids is not None and opts.extent_names is not None
    size = sizes[0]
    segments = min(max(size - DATA_OFFSET, 0) // L.SEGMENT_SIZE, MAX_VOLUME // L.SEGMENT_SIZE)
    if segments < 2:
        need = DATA_OFFSET + 2 * L.SEGMENT_SIZE
        raise InvalidArgumentError(
            f"device of {size} bytes is too small: a VMFS6 volume needs at least {need} bytes "
            f"({need >> 20} MiB: 17 MiB of LVM metadata and two 256 MiB segments for its system files)"
        )
    # LVM6 describes an extent with one PE table entry (the sample: one entry of 768 MiB)
    return (ExtentLayout(0, size, opts.device_uuids[0], opts.extent_names[0], 0, segments, segments),)


def _res(kind: int, name: str, rpc: int, rsz: int, count: int, cpg: int = CLUSTERS_PER_GROUP,
         used: tuple[int, ...] = (), serial: int = 0) -> ResourceLayout:
    return ResourceLayout(kind, name, rpc, cpg, CLUSTER_GROUP_OFFSET, rsz, 2 * MD_ALIGNMENT, count,
                          used=used, first_lock_serial=serial)


def _fitting(rpc: int, rsz: int, blocks: int) -> int:
    """Most resources of a file of at most ``blocks`` file blocks."""
    lo, hi = 0, blocks * BLOCK_SIZE // rsz + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _blocks(_res(0, "", rpc, rsz, mid)) <= blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _blocks(res: ResourceLayout) -> int:
    if res.count == 0:
        return 1
    return _ceil(res.file_length, BLOCK_SIZE)


def _plan_files(
    volume_size: int, opts: MkfsOptions, geo: Geometry
) -> tuple[tuple[ResourceLayout, ...], tuple[SystemFileLayout, ...], Plan6]:
    num_blocks = volume_size // BLOCK_SIZE
    lfbs = _ceil(num_blocks, SFB_RPC)
    fds = opts.num_fds if opts.num_fds is not None else FD_COUNT
    if not len(SYSTEM_FD_INDEX) < fds <= 1 << 20:
        raise InvalidArgumentError(f"file descriptors: {fds} is out of range ({len(SYSTEM_FD_INDEX) + 1}..{1 << 20})")
    fdc = _res(R.RES_FD, ".fdc.sf", FD_RPC, geo.fd_size, fds)
    lfb = _res(R.RES_LFB, ".fbb.sf", LFB_RPC, 2 * MD_ALIGNMENT, lfbs)
    pbc = _res(R.RES_PB, ".pbc.sf", PB_RPC, geo.pb_size, 0)
    # .fbb.sf beyond an FD's direct pointers (above ~18 TiB) is mapped through PB2s of its own,
    # taken before the one the grown .sbc.sf uses [U: no sample that large]
    fbb_pb2 = _ceil(_blocks(lfb), geo.ptrs_per_pb) if _blocks(lfb) > geo.ptr_count else 0
    pb2 = _res(R.RES_PB2, ".pb2.sf", PB2_RPC, geo.pb_size, PB2_COUNT + fbb_pb2)
    jbc = _res(R.RES_JB, ".jbc.sf", JB_RPC, JB_SIZE, JB_COUNT, cpg=JB_CLUSTERS_PER_GROUP)

    fixed = {"/": 1, ".fbb.sf": _blocks(lfb), ".fdc.sf": _blocks(fdc), ".pbc.sf": 1, ".pb2.sf": _blocks(pb2),
             ".sdd.sf": 1, ".jbc.sf": _blocks(jbc), ".vh.sf": geo.fdc_start // BLOCK_SIZE}
    left = num_blocks - sum(fixed.values())
    sb_target = opts.num_sub_blocks if opts.num_sub_blocks is not None else SB_TARGET
    sb_blocks = min(_blocks(_res(0, "", SB_RPC, SUB_BLOCK_SIZE, sb_target)), left)
    if sb_blocks < 1 or _fitting(SB_RPC, SUB_BLOCK_SIZE, sb_blocks) < 1:
        raise NoSpaceError(f"a volume of {volume_size} bytes cannot hold the {sum(fixed.values())} blocks "
                           "of VMFS6 system files and a sub-block")
    sbs = min(sb_target, _fitting(SB_RPC, SUB_BLOCK_SIZE, sb_blocks))
    if opts.num_sub_blocks is not None and sbs < opts.num_sub_blocks:
        raise InvalidArgumentError(f"sub-blocks: {opts.num_sub_blocks} do not fit; at most {sbs} on this volume")
    sb_blocks = _blocks(_res(0, "", SB_RPC, SUB_BLOCK_SIZE, sbs))
    initial_blocks = min(sb_blocks, geo.ptr_count)
    sbs_initial = sbs if initial_blocks == sb_blocks else _fitting(SB_RPC, SUB_BLOCK_SIZE, initial_blocks)
    grows = sb_blocks > initial_blocks

    # block runs, in the order ESXi allocated them
    runs: dict[str, list[tuple[int, int]]] = {}
    nxt = 0

    def take(name: str, count: int) -> None:
        nonlocal nxt
        if count <= 0:
            return
        runs.setdefault(name, []).append((nxt, count))
        nxt += count

    take(".vh.sf", fixed[".vh.sf"])
    take(".fdc.sf", 1)
    take("/", 1)
    take(".fbb.sf", fixed[".fbb.sf"])
    take(".fdc.sf", fixed[".fdc.sf"] - 1)
    take(".pbc.sf", 1)
    take(".sbc.sf", initial_blocks)
    take(".pb2.sf", fixed[".pb2.sf"])
    take(".sdd.sf", 1)
    take(".jbc.sf", fixed[".jbc.sf"])
    take(".sbc.sf", sb_blocks - initial_blocks)
    if nxt > num_blocks:  # pragma: no cover - bounded by `left` above
        raise AssertionError("system files overflow the volume")

    # lock serials in creation order; the growth's clusters come last
    sfb = _res(R.RES_FB, ".fbb.sf", SFB_RPC, 0, num_blocks)
    counts = {"/": 0, ".fbb.sf": lfb.num_clusters + sfb.num_clusters, ".fdc.sf": fdc.num_clusters,
              ".pbc.sf": 0, ".sbc.sf": _ceil(sbs_initial, SB_RPC), ".vh.sf": 0, ".pb2.sf": pb2.num_clusters,
              ".sdd.sf": 0, ".jbc.sf": jbc.num_clusters}
    serial = LOCK_SERIAL_BASE
    serials: dict[str, int] = {}
    cluster_serials: dict[str, int] = {}
    for name in CREATION_ORDER:
        serials[name] = serial
        cluster_serials[name] = serial + 1
        serial += 1 + counts[name]
    used_blocks = tuple(sorted(b for rs in runs.values() for first, count in rs for b in range(first, first + count)))
    resources = (
        # every LFB is converted into an SFB cluster, so none is free
        ResourceLayout(**{**_fields(lfb), "used": tuple(range(lfbs)), "first_lock_serial": cluster_serials[".fbb.sf"]}),
        ResourceLayout(**{**_fields(sfb), "used": used_blocks,
                          "first_lock_serial": cluster_serials[".fbb.sf"] + lfb.num_clusters}),
        ResourceLayout(**{**_fields(fdc), "used": tuple(range(len(SYSTEM_FD_INDEX))),
                          "first_lock_serial": cluster_serials[".fdc.sf"]}),
        pbc,
        ResourceLayout(**{**_fields(_res(R.RES_SB, ".sbc.sf", SB_RPC, SUB_BLOCK_SIZE, sbs)),
                          "first_lock_serial": cluster_serials[".sbc.sf"]}),
        ResourceLayout(**{**_fields(pb2), "used": tuple(range(fbb_pb2 + (1 if grows else 0))),
                          "first_lock_serial": cluster_serials[".pb2.sf"]}),
        ResourceLayout(**{**_fields(jbc), "first_lock_serial": cluster_serials[".jbc.sf"]}),
    )
    lengths = {r.file: r.file_length for r in resources if r.kind not in (R.RES_FB, R.RES_PB)}
    lengths[".pbc.sf"] = CLUSTER_GROUP_OFFSET
    lengths[".vh.sf"] = geo.fdc_start
    lengths["/"] = ROOT_LENGTH
    lengths[".sdd.sf"] = SDD_LENGTH
    fdc_base = runs[".fdc.sf"][0][0] * BLOCK_SIZE
    if fdc_base != geo.fdc_start:  # pragma: no cover - fixed by the order above
        raise AssertionError("the FDC does not start where readers bootstrap it")
    files = []
    for name in CREATION_ORDER:
        index = SYSTEM_FD_INDEX[name]
        ftype, mode, links = system_file_kind(name)
        rs = tuple(runs[name])
        if name == ".sbc.sf" and grows:
            zla, pbs = F.ZLA_POINTER2_BLOCKS, (fbb_pb2,)
        elif name == ".fbb.sf" and fbb_pb2:
            zla, pbs = F.ZLA_POINTER2_BLOCKS, tuple(range(fbb_pb2))
        else:
            zla, pbs = F.ZLA_FILE_BLOCKS, ()
        files.append(
            SystemFileLayout(
                name=name, fd_index=index, fd_address=A.make_fd(0, index),
                fd_offset=fdc_base + fdc.resource_offset(0, index),
                first_block=rs[0][0], num_blocks=sum(c for _, c in rs), file_length=lengths[name],
                zla=zla, ftype=ftype, mode=mode, links=links, lock_serial=serials[name],
                pointer_blocks=pbs, runs=rs,
            )
        )
    extra = Plan6(sbs_initial, initial_blocks, serial, lfbs)
    return resources, tuple(files), extra


def _fields(r: ResourceLayout) -> dict[str, object]:
    return {k: getattr(r, k) for k in ("kind", "file", "rpc", "cpg", "cgo", "rsz", "ch", "count", "used",
                                       "first_lock_serial", "round_to_block")}
