"""Hosted sparse extents, magic ``KDMV`` (vmdk-format.md section 3).

Used by monolithicSparse (descriptor embedded in the extent), the ``-sNNN`` files of
twoGbMaxExtentSparse and hosted snapshot children.  A grain directory (GD) of u32 sector numbers
points at grain tables (GT) of ``numGTEsPerGT`` u32 entries; an entry is 0 (unallocated: read the
parent), 1 (zeroed grain, only with flag 0x4) or the sector of the grain's data.

Writing follows qemu, whose files every other reader accepts (section 3.6): new grains are
appended at the end of the file on a grain boundary, data is written before the entry that points
at it, and the entry is written to the primary GT *and* the same slot of the redundant GT.  New
files use the section 3.5 layout with every GT preallocated, because qemu cannot allocate a GT
itself and would destroy a file whose GD has zero entries (section 3.4).
"""

from __future__ import annotations

from array import array
from typing import Any, BinaryIO

from construct import Bytes, ConstructError, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import IntArray
from vmfs.vmdk.errors import (
    CorruptError,
    InvalidArgumentError,
    NoSpaceError,
    NotVmdkError,
    ReadOnlyError,
    UnsupportedError,
)
from vmfs.vmdk.extent import SECTOR, read_exact
from vmfs.vmdk.storage import DiskStorage
from vmfs.vmdk.tables import U32TableExtent, roundup, sectors_for

MAGIC = b"KDMV"
#: gdOffset of a stream whose real header is the footer at the end of the file (section 3.11).
GD_AT_END = 0xFFFFFFFFFFFFFFFF

FLAG_NEWLINE_VALID = 0x00000001
FLAG_REDUNDANT_GD = 0x00000002
FLAG_ZEROED_GRAIN = 0x00000004
FLAG_COMPRESSED = 0x00010000
FLAG_MARKERS = 0x00020000
#: Bits a reader must understand; any other bit in this mask makes the file unreadable.
INCOMPATIBLE_MASK = 0xFFFF0000
KNOWN_INCOMPATIBLE = FLAG_COMPRESSED | FLAG_MARKERS

COMPRESS_NONE = 0
COMPRESS_DEFLATE = 1

#: Newline-detection bytes at offsets 73..76: a text-mode transfer would rewrite them.
NEWLINE_BYTES = (0x0A, 0x20, 0x0D, 0x0A)

#: qemu refuses larger grains (section 3.10).
MAX_GRAIN_SIZE = 0x200000
#: Grain pointers are u32 sectors, so no grain may start at or beyond sector 2^32 (2 TiB).
MAX_FILE_SECTORS = 1 << 32
DEFAULT_GRAIN_SIZE = 128
DEFAULT_GTES_PER_GT = 512
#: qemu's embedded-descriptor area: sectors 1..20.
DEFAULT_DESCRIPTOR_SECTORS = 20

# Section 3.1.  One sector; field offsets in the comments.
SparseHeader = Struct(
    "magic" / Bytes(4),  # 0   "KDMV"
    "version" / Int32ul,  # 4   1, 2 (zeroed-grain GTE) or 3 (CBT / stream)
    "flags" / Int32ul,  # 8   FLAG_*
    "capacity" / Int64ul,  # 12  sectors of virtual disk in this extent
    "grain_size" / Int64ul,  # 20  sectors per grain, power of two
    "descriptor_offset" / Int64ul,  # 28  sector of the embedded descriptor, 0 if none
    "descriptor_size" / Int64ul,  # 36  sectors reserved for it
    "num_gtes_per_gt" / Int32ul,  # 44  512
    "rgd_offset" / Int64ul,  # 48  redundant grain directory (sector)
    "gd_offset" / Int64ul,  # 56  grain directory (sector) or GD_AT_END
    "overhead" / Int64ul,  # 64  sectors before the first grain
    "unclean_shutdown" / Int8ul,  # 72  non-zero while open for writing
    "single_end_line_char" / Int8ul,  # 73  0x0A
    "non_end_line_char" / Int8ul,  # 74  0x20
    "double_end_line_char1" / Int8ul,  # 75  0x0D
    "double_end_line_char2" / Int8ul,  # 76  0x0A
    "compress_algorithm" / Int16ul,  # 77  0 none, 1 deflate
    "pad" / Bytes(433),  # 79  zero in every sample; kept as read
)


def gd_entries(capacity: int, grain_size: int, gtes_per_gt: int) -> int:
    """Number of GD entries: one per GT, each GT covering ``gtes_per_gt`` grains."""
    span = grain_size * gtes_per_gt
    return -(-capacity // span)


def parse_header(raw: bytes, file: str) -> Any:
    """Parse a KDMV header, turning construct's errors into ours."""
    try:
        header = SparseHeader.parse(raw)
    except ConstructError as exc:
        raise CorruptError(file, "sparse header", str(exc)) from None
    if header.magic != MAGIC:
        raise NotVmdkError(f"{file}: not a hosted sparse extent (magic {header.magic!r})")
    return header


def new_header(
    *,
    capacity: int,
    grain_size: int,
    descriptor_offset: int,
    descriptor_size: int,
    rgd_offset: int,
    gd_offset: int,
    overhead: int,
    version: int = 1,
    flags: int = FLAG_NEWLINE_VALID | FLAG_REDUNDANT_GD,
    compress_algorithm: int = COMPRESS_NONE,
    gtes_per_gt: int = DEFAULT_GTES_PER_GT,
) -> dict[str, object]:
    """Header fields for a new extent, newline-detection bytes included."""
    return {
        "magic": MAGIC,
        "version": version,
        "flags": flags,
        "capacity": capacity,
        "grain_size": grain_size,
        "descriptor_offset": descriptor_offset,
        "descriptor_size": descriptor_size,
        "num_gtes_per_gt": gtes_per_gt,
        "rgd_offset": rgd_offset,
        "gd_offset": gd_offset,
        "overhead": overhead,
        "unclean_shutdown": 0,
        "single_end_line_char": NEWLINE_BYTES[0],
        "non_end_line_char": NEWLINE_BYTES[1],
        "double_end_line_char1": NEWLINE_BYTES[2],
        "double_end_line_char2": NEWLINE_BYTES[3],
        "compress_algorithm": compress_algorithm,
        "pad": bytes(433),
    }


def validate_header(header: Any, file: str) -> None:
    """Refuse headers this code cannot read correctly (section 3.1 to 3.3, 3.10)."""
    h = header
    if h.version not in (1, 2, 3):
        raise UnsupportedError(f"{file}: unsupported hosted sparse version {h.version}")
    unknown = h.flags & INCOMPATIBLE_MASK & ~KNOWN_INCOMPATIBLE
    if unknown:
        raise UnsupportedError(f"{file}: unknown incompatible flags 0x{unknown:08x}")
    gs = h.grain_size
    if gs < 1 or gs > MAX_GRAIN_SIZE or gs & (gs - 1):
        raise CorruptError(file, "sparse header", f"grain size {gs} is not a power of two up to {MAX_GRAIN_SIZE}")
    if not 1 <= h.num_gtes_per_gt <= 65536:
        raise CorruptError(file, "sparse header", f"{h.num_gtes_per_gt} entries per grain table")
    if gd_entries(h.capacity, gs, h.num_gtes_per_gt) > 32 * 1024 * 1024:
        raise CorruptError(file, "sparse header", f"capacity {h.capacity} needs a grain directory over 32 Mi entries")


class SparseExtent(U32TableExtent):
    """A KDMV extent opened for reading or writing."""

    header: Any  # a construct Container of SparseHeader

    def _read_header(self) -> Any:
        header = parse_header(read_exact(self.fh, 0, SECTOR, self.name, "sparse header"), self.name)
        if header.gd_offset == GD_AT_END:
            raise UnsupportedError(f"{self.name}: grain directory at the end (a stream: open it as streamOptimized)")
        return header

    def _load(self) -> None:
        self.file_sectors = sectors_for(self.fh.seek(0, 2))
        h = self.header = self._read_header()
        validate_header(h, self.name)
        if self.writable:
            if h.flags & FLAG_COMPRESSED:
                raise ReadOnlyError(f"{self.name}: compressed (stream-optimized) extents are read-only")
            if h.version == 3:
                raise ReadOnlyError(f"{self.name}: version 3 sparse extents (change tracking) are read-only")
        self.capacity = h.capacity
        self.grain_size = h.grain_size
        self.gtes = h.num_gtes_per_gt
        self.supports_zero_grain = self.one_reads_as_zero = bool(h.flags & FLAG_ZEROED_GRAIN) and h.version >= 2
        self.compressed = bool(h.flags & FLAG_COMPRESSED)
        self._init_tables()
        n = gd_entries(self.capacity, self.grain_size, self.gtes)
        self.gd_sector = h.gd_offset
        self.gd = self._read_directory(h.gd_offset, n, "grain directory")
        self.rgd = None
        if h.flags & FLAG_REDUNDANT_GD and h.rgd_offset:
            self.rgd_sector = h.rgd_offset
            self.rgd = self._read_directory(h.rgd_offset, n, "redundant grain directory")
        self._next = max(roundup(self.file_sectors, self.grain_size), h.overhead)

    # -- header, descriptor, lifecycle --------------------------------------------------------------

    def write_header(self) -> None:
        self.fh.seek(0)
        self.fh.write(SparseHeader.build(self.header))

    @property
    def unclean(self) -> bool:
        return bool(self.header.unclean_shutdown)

    def set_unclean(self, unclean: bool) -> None:
        if self.writable and bool(self.header.unclean_shutdown) != unclean:
            self.header.unclean_shutdown = int(unclean)
            self.write_header()

    def read_descriptor(self) -> bytes | None:
        """The embedded descriptor area (NULs included), or None when there is none."""
        h = self.header
        if not h.descriptor_offset or not h.descriptor_size:
            return None
        return read_exact(
            self.fh,
            h.descriptor_offset * SECTOR,
            h.descriptor_size * SECTOR,
            self.name,
            "embedded descriptor",
        )

    def write_descriptor(self, data: bytes) -> None:
        """Rewrite the embedded descriptor in place (section 2.7), NUL-padded to its area."""
        _write_descriptor_area(self.fh, self.header, data, self.name)

    def grow(self, capacity: int) -> None:
        """Enlarge the extent.  When more GTs are needed, a new GD pair and the new GTs are
        appended at the end of the file and the header is switched over last, so a crash leaves
        the old, valid layout (the old directories leak a few sectors)."""
        if capacity < self.capacity:
            raise InvalidArgumentError(f"{self.name}: cannot shrink a sparse extent")
        old_n = len(self.gd)
        new_n = gd_entries(capacity, self.grain_size, self.gtes)
        h = self.header
        if new_n > old_n:
            self._modifying()
            gds = sectors_for(new_n * 4)
            extra = new_n - old_n
            pos = self._next
            layout = []
            for directory in (self.rgd, self.gd):
                if directory is None:
                    continue
                gd_sector = pos
                first_gt = gd_sector + gds
                pos = first_gt + extra * self._gt_sectors
                entries = array("I", directory) + array("I", (first_gt + i * self._gt_sectors for i in range(extra)))
                layout.append((gd_sector, entries))
            end = roundup(pos, self.grain_size)
            for gd_sector, entries in layout:
                self.fh.seek(gd_sector * SECTOR)
                self.fh.write(IntArray(new_n, 4).build(entries))
            self.fh.truncate(end * SECTOR)
            self.fh.flush()
            if self.rgd is not None:
                self.rgd_sector, self.rgd = layout[0]
                h.rgd_offset = self.rgd_sector
            self.gd_sector, self.gd = layout[-1]
            h.gd_offset = self.gd_sector
            self._next = end
            self.file_sectors = end
        elif capacity != self.capacity:
            self._modifying()
        h.capacity = capacity
        self.capacity = capacity
        self.write_header()

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.flush()
            self.fh.close()


def _write_descriptor_area(fh: BinaryIO, header: Any, data: bytes, name: str) -> None:
    area = header.descriptor_size * SECTOR
    if not header.descriptor_offset or not area:
        raise UnsupportedError(f"{name}: extent has no embedded descriptor area")
    text = data.split(b"\x00", 1)[0]
    if len(text) > area:
        raise NoSpaceError(f"{name}: descriptor of {len(text)} bytes does not fit its {area}-byte area")
    fh.seek(header.descriptor_offset * SECTOR)
    fh.write(text + bytes(area - len(text)))


def write_embedded_descriptor(storage: DiskStorage, name: str, data: bytes) -> None:
    """Rewrite the descriptor embedded in the KDMV file ``name`` without opening it as an extent
    (works for read-only kinds such as stream-optimized files; only the descriptor area changes)."""
    with storage.open(name, "r+b") as fh:
        header = parse_header(read_exact(fh, 0, SECTOR, name, "sparse header"), name)
        _write_descriptor_area(fh, header, data, name)


def create_sparse(
    storage: DiskStorage,
    name: str,
    capacity: int,
    *,
    grain_size: int = DEFAULT_GRAIN_SIZE,
    descriptor: bytes | None = None,
    descriptor_sectors: int = DEFAULT_DESCRIPTOR_SECTORS,
    zeroed_grain: bool = False,
) -> None:
    """Create an empty KDMV extent in qemu's layout (section 3.5): header, descriptor area
    (reserved even when empty, as qemu does for ``-sNNN`` files), redundant GD and its GTs,
    primary GD and its GTs, first grain at ``overHead``.  GTs are all-zero (a sparse region)."""
    if capacity <= 0:
        raise InvalidArgumentError(f"{name}: capacity must be positive")
    if grain_size < 1 or grain_size > MAX_GRAIN_SIZE or grain_size & (grain_size - 1):
        raise InvalidArgumentError(f"grain size {grain_size} is not a power of two up to {MAX_GRAIN_SIZE}")
    if descriptor is not None and len(descriptor) > descriptor_sectors * SECTOR:
        descriptor_sectors = sectors_for(len(descriptor))
    n = gd_entries(capacity, grain_size, DEFAULT_GTES_PER_GT)
    gds = sectors_for(n * 4)
    gt_sectors = sectors_for(DEFAULT_GTES_PER_GT * 4)
    rgd = 1 + descriptor_sectors
    gd = rgd + gds + n * gt_sectors
    overhead = roundup(gd + gds + n * gt_sectors, grain_size)
    if overhead >= MAX_FILE_SECTORS:
        raise NoSpaceError(f"{name}: capacity {capacity} is too large for a hosted sparse extent")
    header = new_header(
        capacity=capacity,
        grain_size=grain_size,
        descriptor_offset=1,
        descriptor_size=descriptor_sectors,
        rgd_offset=rgd,
        gd_offset=gd,
        overhead=overhead,
        version=2 if zeroed_grain else 1,
        flags=FLAG_NEWLINE_VALID | FLAG_REDUNDANT_GD | (FLAG_ZEROED_GRAIN if zeroed_grain else 0),
    )
    directory = IntArray(n, 4)
    storage.create(name, overhead * SECTOR, "thin")
    with storage.open(name, "r+b") as fh:
        fh.write(SparseHeader.build(header))
        if descriptor is not None:
            fh.seek(SECTOR)
            fh.write(descriptor.split(b"\x00", 1)[0])
        for gd_sector in (rgd, gd):
            fh.seek(gd_sector * SECTOR)
            fh.write(directory.build([gd_sector + gds + i * gt_sectors for i in range(n)]))
