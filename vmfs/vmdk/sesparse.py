"""seSparse (space-efficient sparse) extents, ``SESPARSE`` / ``-sesparse.vmdk`` (section 5).

A const header, a volatile header, then regions addressed by (offset, size) pairs: journal,
grain directory, a pool of grain tables, free bitmap, back map and the grains.  GD entries are
u64 ``0x10000000_<GT index>`` into the pool; GT entries are u64 with the type in the top nibble
(0 unallocated, 1 unmapped, 2 zero, 3 allocated with a 48+12-bit split grain index).

The journal, free bitmap and back map formats are not public, so files written here leave those
regions empty (size 0), which qemu and dissect accept (section 5.1).  Type-1 ("unmapped") entries
read as zeros, as qemu and xen-orchestra read them (dissect reads the parent); zeroing a grain
writes type 2, which every reader agrees on.  A set ``replay_journal`` flag means ESX left
unfinished work: such a file is refused, as qemu does.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

from construct import Bytes, ConstructError, Int64ul, Struct

from vmfs.ondisk.common import IntArray
from vmfs.vmdk.errors import CorruptError, InvalidArgumentError, NotVmdkError, UnsupportedError
from vmfs.vmdk.extent import SECTOR, GrainedExtent, GrainState, read_exact
from vmfs.vmdk.storage import DiskStorage
from vmfs.vmdk.tables import roundup, sectors_for

MAGIC = 0x00000000CAFEBABE
VOLATILE_MAGIC = 0x00000000CAFECAFE
VERSION = 0x0000000200000001
GRAIN_SIZE = 8  # sectors (4 KiB)
GT_SECTORS = 64  # 32 KiB: 4096 u64 entries
GTES_PER_GT = GT_SECTORS * SECTOR // 8

GD_ALLOCATED = 0x1000000000000000
GD_TYPE_MASK = 0xFFFFFFFF00000000
GTE_TYPE_SHIFT = 60
GTE_UNALLOCATED = 0x0
GTE_UNMAPPED = 0x1
GTE_ZERO = 0x2
GTE_ALLOCATED = 0x3

# Section 5.1: 26 u64 then padding, one sector.
SeSparseConstHeader = Struct(
    "magic" / Int64ul,  # 0   CAFEBABE
    "version" / Int64ul,  # 8   0x200000001
    "capacity" / Int64ul,  # 16  sectors
    "grain_size" / Int64ul,  # 24  8
    "grain_table_size" / Int64ul,  # 32  64 sectors
    "flags" / Int64ul,  # 40  0
    "reserved1" / Int64ul,  # 48
    "reserved2" / Int64ul,  # 56
    "reserved3" / Int64ul,  # 64
    "reserved4" / Int64ul,  # 72
    "volatile_header_offset" / Int64ul,  # 80
    "volatile_header_size" / Int64ul,  # 88
    "journal_header_offset" / Int64ul,  # 96
    "journal_header_size" / Int64ul,  # 104
    "journal_offset" / Int64ul,  # 112
    "journal_size" / Int64ul,  # 120
    "grain_dir_offset" / Int64ul,  # 128
    "grain_dir_size" / Int64ul,  # 136 sectors; entries = size * 64
    "grain_tables_offset" / Int64ul,  # 144
    "grain_tables_size" / Int64ul,  # 152
    "free_bitmap_offset" / Int64ul,  # 160
    "free_bitmap_size" / Int64ul,  # 168
    "backmap_offset" / Int64ul,  # 176
    "backmap_size" / Int64ul,  # 184
    "grains_offset" / Int64ul,  # 192
    "grains_size" / Int64ul,  # 200
    "pad" / Bytes(304),  # 208 zero (qemu checks)
)

# Section 5.2, one sector at volatile_header_offset.
SeSparseVolatileHeader = Struct(
    "magic" / Int64ul,  # 0   CAFECAFE
    "free_gt_number" / Int64ul,  # 8   here: grain tables in use
    "next_txn_seq_number" / Int64ul,  # 16
    "replay_journal" / Int64ul,  # 24  non-zero: journal needs replay
    "pad" / Bytes(480),  # 32
)


def encode_grain_index(index: int) -> int:
    """GT entry of an allocated grain: low 12 bits of the index in bits 48..59, the rest in 0..47."""
    return (GTE_ALLOCATED << GTE_TYPE_SHIFT) | ((index & 0xFFF) << 48) | (index >> 12)


def decode_grain_index(entry: int) -> int:
    return ((entry >> 48) & 0xFFF) | ((entry & 0x0000FFFFFFFFFFFF) << 12)


class SeSparseExtent(GrainedExtent):
    """An seSparse delta opened for reading or writing."""

    grain_size = GRAIN_SIZE
    supports_zero_grain = True
    header: Any
    volatile: Any

    def _load(self) -> None:
        self.file_sectors = sectors_for(self.fh.seek(0, 2))
        raw = read_exact(self.fh, 0, SECTOR, self.name, "seSparse const header")
        try:
            h = SeSparseConstHeader.parse(raw)
        except ConstructError as exc:
            raise CorruptError(self.name, "seSparse const header", str(exc)) from None
        if h.magic != MAGIC:
            raise NotVmdkError(f"{self.name}: not an seSparse extent (magic 0x{h.magic:x})")
        what = "seSparse const header"
        if h.version != VERSION:
            raise UnsupportedError(f"{self.name}: seSparse version 0x{h.version:x}")
        if h.grain_size != GRAIN_SIZE or h.grain_table_size != GT_SECTORS:
            raise UnsupportedError(
                f"{self.name}: seSparse grain/table {h.grain_size}/{h.grain_table_size} sectors (not 8/64)"
            )
        if h.flags:
            raise UnsupportedError(f"{self.name}: seSparse flags 0x{h.flags:x}")
        if h.reserved1 or h.reserved2 or h.reserved3 or h.reserved4 or any(h.pad):
            raise CorruptError(self.name, what, "reserved fields are not zero")
        gd_count = h.grain_dir_size * SECTOR // 8
        needed = -(-h.capacity // (GTES_PER_GT * GRAIN_SIZE))
        if gd_count < needed:
            raise CorruptError(self.name, what, f"{gd_count} directory entries, {needed} needed for the capacity")
        raw = read_exact(self.fh, h.volatile_header_offset * SECTOR, SECTOR, self.name, "seSparse volatile header")
        v = SeSparseVolatileHeader.parse(raw)
        if v.magic != VOLATILE_MAGIC:
            raise CorruptError(
                self.name,
                "seSparse volatile header",
                f"magic 0x{v.magic:x}",
                offset=h.volatile_header_offset * SECTOR,
            )
        if v.replay_journal:
            raise UnsupportedError(f"{self.name}: seSparse journal needs replaying (not supported)")
        self.header, self.volatile = h, v
        self.capacity = h.capacity
        self._gd_struct = IntArray(gd_count, 8)
        self._gt_struct = IntArray(GTES_PER_GT, 8)
        end = h.grain_dir_offset + h.grain_dir_size
        if end > self.file_sectors:
            raise CorruptError(self.name, "seSparse grain directory", "runs past the end of the file")
        self.gd = self._gd_struct.parse(
            read_exact(self.fh, h.grain_dir_offset * SECTOR, self._gd_struct.sizeof(), self.name, "seSparse GD")
        )
        self._gts: dict[int, array] = {}
        self._gt_pool = h.grain_tables_size // GT_SECTORS if h.grain_tables_size else 0
        used = [self._gt_index(i, e) for i, e in enumerate(self.gd) if e]
        self._next_gt = self._opened_gts = max(used) + 1 if used else 0
        self._next_grain = max(0, -(-(self.file_sectors - h.grains_offset) // GRAIN_SIZE))

    # -- tables --------------------------------------------------------------------------------------

    def _gt_index(self, gdi: int, entry: int) -> int:
        if entry & GD_TYPE_MASK != GD_ALLOCATED:
            raise CorruptError(self.name, "seSparse grain directory", f"entry {gdi} = 0x{entry:016x} is malformed")
        return entry & 0xFFFFFFFF

    def _load_gt(self, gdi: int) -> array | None:
        gt = self._gts.get(gdi)
        if gt is not None:
            return gt
        entry = self.gd[gdi]
        if entry == 0:
            return None
        index = self._gt_index(gdi, entry)
        sector = self.header.grain_tables_offset + index * GT_SECTORS
        what = f"seSparse grain table {gdi}"
        if sector + GT_SECTORS > self.file_sectors:
            raise CorruptError(self.name, what, "table is truncated by the end of the file", offset=sector * SECTOR)
        gt = self._gt_struct.parse(read_exact(self.fh, sector * SECTOR, self._gt_struct.sizeof(), self.name, what))
        for i, value in enumerate(gt):
            if value:
                self._decode(gdi * GTES_PER_GT + i, value, what)
        self._gts[gdi] = gt
        return gt

    def _decode(self, grain: int, value: int, what: str = "seSparse grain table") -> tuple[GrainState, int]:
        kind = value >> GTE_TYPE_SHIFT
        if value == 0:
            return GrainState.UNALLOCATED, 0
        if kind in (GTE_UNMAPPED, GTE_ZERO):
            return GrainState.ZERO, 0
        if kind == GTE_ALLOCATED:
            sector = self.header.grains_offset + decode_grain_index(value) * GRAIN_SIZE
            if sector >= self.file_sectors:
                raise CorruptError(
                    self.name,
                    what,
                    f"grain {grain} points to sector {sector}, past the file end ({self.file_sectors})",
                )
            return GrainState.DATA, sector
        raise CorruptError(self.name, what, f"grain {grain} has a malformed entry 0x{value:016x}")

    def _entries(self, first_grain: int, count: int) -> list[tuple[GrainState, int]]:
        out: list[tuple[GrainState, int]] = []
        g = first_grain
        end = first_grain + count
        while g < end:
            gdi, idx = divmod(g, GTES_PER_GT)
            n = min(GTES_PER_GT - idx, end - g)
            gt = self._load_gt(gdi)
            if gt is None:
                out += [(GrainState.UNALLOCATED, 0)] * n
            else:
                out += [self._decode(g + k, v) for k, v in enumerate(gt[idx : idx + n])]
            g += n
        return out

    def _iter_entries(self) -> Iterator[tuple[int, GrainState, int]]:
        for gdi in range(len(self.gd)):
            gt = self._load_gt(gdi)
            if gt is None:
                continue
            for idx, value in enumerate(gt):
                if value:
                    grain = gdi * GTES_PER_GT + idx
                    state, target = self._decode(grain, value)
                    yield grain, state, target

    def _allocate(self, grains: int) -> int:
        index = self._next_grain
        self._next_grain += grains
        sector = self.header.grains_offset + index * GRAIN_SIZE
        self.file_sectors = max(self.file_sectors, sector + grains * GRAIN_SIZE)
        return sector

    def _encode(self, state: GrainState, target: int) -> int:
        if state == GrainState.ZERO:
            return GTE_ZERO << GTE_TYPE_SHIFT
        if state == GrainState.DATA:
            return encode_grain_index((target - self.header.grains_offset) // GRAIN_SIZE)
        raise InvalidArgumentError(f"{self.name}: cannot store grain state {state.name}")

    def _commit(self, updates: list[tuple[int, GrainState, int]]) -> None:
        h = self.header
        by_gt: dict[int, list[tuple[int, int]]] = {}
        for grain, state, target in updates:
            gdi, idx = divmod(grain, GTES_PER_GT)
            by_gt.setdefault(gdi, []).append((idx, self._encode(state, target)))
        for gdi, items in by_gt.items():
            gt = self._load_gt(gdi)
            if gt is None:
                index = self._next_gt
                if self._gt_pool and index >= self._gt_pool:
                    raise CorruptError(
                        self.name, "seSparse grain table pool", f"no free table for directory entry {gdi}"
                    )
                gt = array("Q", bytes(self._gt_struct.sizeof()))
                for idx, value in items:
                    gt[idx] = value
                sector = h.grain_tables_offset + index * GT_SECTORS
                self.fh.seek(sector * SECTOR)
                self.fh.write(self._gt_struct.build(gt))
                self.fh.seek(h.grain_dir_offset * SECTOR + gdi * 8)
                self.fh.write(Int64ul.build(GD_ALLOCATED | index))
                self.gd[gdi] = GD_ALLOCATED | index
                self._gts[gdi] = gt
                self._next_gt = index + 1
                self.file_sectors = max(self.file_sectors, sector + GT_SECTORS)
                continue
            for idx, value in items:
                gt[idx] = value
            lo = min(i for i, _ in items)
            hi = max(i for i, _ in items) + 1
            sector = h.grain_tables_offset + self._gt_index(gdi, self.gd[gdi]) * GT_SECTORS
            self.fh.seek(sector * SECTOR + lo * 8)
            self.fh.write(IntArray(hi - lo, 8).build(gt[lo:hi]))

    # -- lifecycle -----------------------------------------------------------------------------------

    def flush(self) -> None:
        grew = self._next_gt != self._opened_gts
        if self.writable and not self.fh.closed and grew and self.volatile.free_gt_number != self._next_gt:
            self.volatile.free_gt_number = self._next_gt
            self.fh.seek(self.header.volatile_header_offset * SECTOR)
            self.fh.write(SeSparseVolatileHeader.build(self.volatile))
        self.fh.flush()

    def close(self) -> None:
        if not self.fh.closed:
            self.flush()
            self.fh.close()


def create_sesparse(storage: DiskStorage, name: str, capacity: int) -> None:
    """Create an empty seSparse extent: const header (0), volatile header (1), GD (2..), a GT pool
    sized for the whole capacity (left sparse until tables are used), then the grains.  Journal,
    free bitmap and back map are empty regions."""
    if capacity <= 0:
        raise InvalidArgumentError(f"{name}: capacity must be positive")
    tables = -(-capacity // (GTES_PER_GT * GRAIN_SIZE))
    gd_sectors = max(1, sectors_for(tables * 8))
    gd_offset = 2
    gt_offset = gd_offset + gd_sectors
    gt_size = tables * GT_SECTORS
    grains_offset = roundup(gt_offset + gt_size, GRAIN_SIZE)
    header = {
        "magic": MAGIC,
        "version": VERSION,
        "capacity": capacity,
        "grain_size": GRAIN_SIZE,
        "grain_table_size": GT_SECTORS,
        "flags": 0,
        "reserved1": 0,
        "reserved2": 0,
        "reserved3": 0,
        "reserved4": 0,
        "volatile_header_offset": 1,
        "volatile_header_size": 1,
        "journal_header_offset": 0,
        "journal_header_size": 0,
        "journal_offset": 0,
        "journal_size": 0,
        "grain_dir_offset": gd_offset,
        "grain_dir_size": gd_sectors,
        "grain_tables_offset": gt_offset,
        "grain_tables_size": gt_size,
        "free_bitmap_offset": 0,
        "free_bitmap_size": 0,
        "backmap_offset": 0,
        "backmap_size": 0,
        "grains_offset": grains_offset,
        "grains_size": roundup(capacity, GRAIN_SIZE),
        "pad": bytes(304),
    }
    volatile = {
        "magic": VOLATILE_MAGIC,
        "free_gt_number": 0,
        "next_txn_seq_number": 0,
        "replay_journal": 0,
        "pad": bytes(480),
    }
    storage.create(name, (gt_offset) * SECTOR, "thin")
    with storage.open(name, "r+b") as fh:
        fh.write(SeSparseConstHeader.build(header))
        fh.write(SeSparseVolatileHeader.build(volatile))
