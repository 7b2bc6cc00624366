"""ESX sparse delta extents, magic ``COWD`` (``vmfsSparse``, ``-delta.vmdk``; section 4).

A 2048-byte header, a grain directory at ``gdOffset`` (sector 4), grain tables of 4096 u32 entries
(2 MiB of disk each at the usual one-sector grain) allocated when their range is first written,
and one-sector grains appended at the end of the file.

Two ESX-vs-qemu disagreements decide the write rules.  An entry of 1 reads as zeros (ESX-side
readers) but qemu reads header sector 1 instead, so we never *write* 1: zeroing a range over a
parent stores real zero sectors.  qemu cannot create a missing GT and overwrites the header when
asked to, so every GT we need is created here before its entry is used.  ``freeSector`` is kept at
the end of the file, as ESX expects (qemu ignores it).
"""

from __future__ import annotations

from typing import Any

from construct import Bytes, ConstructError, Int32ul, Struct

from vmfs.ondisk.common import IntArray
from vmfs.vmdk.errors import CorruptError, InvalidArgumentError, NotVmdkError, UnsupportedError
from vmfs.vmdk.extent import SECTOR, read_exact
from vmfs.vmdk.geometry import Geometry
from vmfs.vmdk.storage import DiskStorage
from vmfs.vmdk.tables import U32TableExtent, sectors_for

MAGIC = b"COWD"
VERSION = 1
#: ``flags`` on every ESX delta seen; the bits' meaning is not known.
FLAGS = 3
#: entries per GT in version 1 (Workstation 3's version-3 "COWD" files use 512).
GTES_PER_GT = 4096
HEADER_SECTORS = 4
#: numSectors is a u32.
MAX_CAPACITY = (1 << 32) - 1

# Section 4.1: 2048 bytes.
CowdHeader = Struct(
    "magic" / Bytes(4),  # 0     "COWD"
    "version" / Int32ul,  # 4     1
    "flags" / Int32ul,  # 8     3
    "num_sectors" / Int32ul,  # 12    capacity in sectors
    "grain_size" / Int32ul,  # 16    sectors per grain (1)
    "gd_offset" / Int32ul,  # 20    sector of the GD (4)
    "num_gd_entries" / Int32ul,  # 24    ceil(numSectors / (4096 * grainSize))
    "free_sector" / Int32ul,  # 28    next free sector = file length in sectors
    "parent_or_geometry" / Bytes(1024),  # 32    root: CowdRootGeometry; child: parentFileName (NUL-terminated)
    "parent_generation" / Int32ul,  # 1056
    "generation" / Int32ul,  # 1060
    "name" / Bytes(60),  # 1064
    "description" / Bytes(512),  # 1124
    "saved_generation" / Int32ul,  # 1636
    "reserved" / Bytes(8),  # 1640
    "unclean_shutdown" / Int32ul,  # 1648
    "padding" / Bytes(396),  # 1652
)

# The root-disk reading of ``parent_or_geometry``.
CowdRootGeometry = Struct(
    "cylinders" / Int32ul,  # 0
    "heads" / Int32ul,  # 4
    "sectors" / Int32ul,  # 8
    "rest" / Bytes(1012),  # 12
)


def gd_entries(capacity: int, grain_size: int = 1) -> int:
    return -(-capacity // (GTES_PER_GT * grain_size))


class CowdExtent(U32TableExtent):
    """A COWD delta opened for reading or writing."""

    one_reads_as_zero = True
    supports_zero_grain = False  # never write 1: qemu would read header sector 1
    align_after_table = False
    header: Any

    def _load(self) -> None:
        self.file_sectors = sectors_for(self.fh.seek(0, 2))
        raw = read_exact(self.fh, 0, CowdHeader.sizeof(), self.name, "COWD header")
        try:
            h = CowdHeader.parse(raw)
        except ConstructError as exc:
            raise CorruptError(self.name, "COWD header", str(exc)) from None
        if h.magic != MAGIC:
            raise NotVmdkError(f"{self.name}: not a COWD delta (magic {h.magic!r})")
        if h.version != VERSION:
            raise UnsupportedError(f"{self.name}: COWD version {h.version} (only ESX version 1 deltas)")
        if h.grain_size < 1 or h.grain_size & (h.grain_size - 1):
            raise CorruptError(self.name, "COWD header", f"grain size {h.grain_size} is not a power of two")
        needed = gd_entries(h.num_sectors, h.grain_size)
        if h.num_gd_entries < needed:
            raise CorruptError(
                self.name,
                "COWD header",
                f"{h.num_gd_entries} directory entries, {needed} needed for the capacity",
            )
        if h.gd_offset < HEADER_SECTORS:
            raise CorruptError(self.name, "COWD header", f"grain directory at sector {h.gd_offset}, inside the header")
        self.header = h
        self.capacity = h.num_sectors
        self.grain_size = h.grain_size
        self.gtes = GTES_PER_GT
        self.max_file_sectors = 1 << 32
        self._init_tables()
        self.gd_sector = h.gd_offset
        self.gd = self._read_directory(h.gd_offset, h.num_gd_entries, "grain directory")
        self.rgd = None
        self._next = self._opened_end = self.file_sectors

    # -- header fields -----------------------------------------------------------------------------

    @property
    def root_geometry(self) -> Geometry:
        g = CowdRootGeometry.parse(self.header.parent_or_geometry)
        return Geometry(g.cylinders, g.heads, g.sectors)

    def write_header(self) -> None:
        self.fh.seek(0)
        self.fh.write(CowdHeader.build(self.header))

    @property
    def unclean(self) -> bool:
        return bool(self.header.unclean_shutdown)

    def set_unclean(self, unclean: bool) -> None:
        if self.writable and bool(self.header.unclean_shutdown) != unclean:
            self.header.unclean_shutdown = int(unclean)
            self._sync_free_sector()
            self.write_header()

    def _sync_free_sector(self) -> bool:
        # Only a delta we grew gets its freeSector rewritten: a file we merely opened (perhaps a
        # damaged one) must stay byte for byte as it was.
        if self._next != self._opened_end and self.header.free_sector != self._next:
            self.header.free_sector = self._next
            return True
        return False

    def flush(self) -> None:
        if self.writable and not self.fh.closed and self._sync_free_sector():
            self.write_header()
        self.fh.flush()

    def close(self) -> None:
        if not self.fh.closed:
            self.flush()
            self.fh.close()


def create_cowd(
    storage: DiskStorage,
    name: str,
    capacity: int,
    *,
    geometry: Geometry | None = None,
) -> None:
    """Create an empty COWD delta: header, then a zeroed GD at sector 4; no GTs yet.  Root disks
    (no parent) carry their geometry in the header union; children leave it zero, as recent ESX
    deltas do (the parent is found through the descriptor)."""
    if not 0 < capacity <= MAX_CAPACITY:
        raise InvalidArgumentError(f"{name}: COWD capacity must be 1..{MAX_CAPACITY} sectors (use seSparse)")
    n = gd_entries(capacity)
    free = HEADER_SECTORS + sectors_for(n * 4)
    union = bytes(1024)
    if geometry is not None:
        union = CowdRootGeometry.build({**geometry._asdict(), "rest": bytes(1012)})
    header = {
        "magic": MAGIC,
        "version": VERSION,
        "flags": FLAGS,
        "num_sectors": capacity,
        "grain_size": 1,
        "gd_offset": HEADER_SECTORS,
        "num_gd_entries": n,
        "free_sector": free,
        "parent_or_geometry": union,
        "parent_generation": 0,
        "generation": 0,
        "name": bytes(60),
        "description": bytes(512),
        "saved_generation": 0,
        "reserved": bytes(8),
        "unclean_shutdown": 0,
        "padding": bytes(396),
    }
    storage.create(name, free * SECTOR, "thin")
    with storage.open(name, "r+b") as fh:
        fh.write(CowdHeader.build(header))
        fh.write(IntArray(n, 4).build([0] * n))
