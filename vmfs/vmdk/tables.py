"""Grain directories and tables of u32 sector numbers, shared by KDMV and COWD extents.

Hosted sparse (section 3.4) and ESX COWD deltas (section 4.2) store the same thing: a directory of
u32 sectors of grain tables, each table a run of u32 entries where 0 is "not here", 1 reads as zeros
(KDMV with flag 0x4; COWD always, because sector 1 lies inside the COWD header) and anything else
is the sector of the grain.  Only the header, the table size and whether a redundant directory
exists differ, so the table logic lives here once and each format fills in the parameters.

Every table is checked when it is first loaded: it must lie inside the file and none of its entries
may point at or past the end of the file (``qemu-img check``'s rule).  Tables are loaded before the
first byte of a write is written, so a corrupt table stops the write with nothing changed.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from construct import Int32ul

from vmfs.ondisk.common import IntArray
from vmfs.vmdk.errors import CorruptError, InvalidArgumentError, NoSpaceError
from vmfs.vmdk.extent import SECTOR, GrainedExtent, GrainState, check_entry_target, read_exact


def sectors_for(nbytes: int) -> int:
    return -(-nbytes // SECTOR)


def roundup(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class U32TableExtent(GrainedExtent):
    """Grain lookup and allocation over u32 directories.  Subclasses set, before use:

    ``gtes`` entries per table, ``gd``/``rgd`` the directories (``rgd`` may be None) at sectors
    ``gd_sector``/``rgd_sector``, ``file_sectors``, ``_next`` (first free sector),
    ``one_reads_as_zero``, ``supports_zero_grain``, ``compressed``, ``max_file_sectors``.
    """

    gtes: int
    gd: array
    rgd: array | None = None
    gd_sector: int = 0
    rgd_sector: int = 0
    file_sectors: int
    _next: int
    one_reads_as_zero: bool = False
    compressed: bool = False
    #: sector numbers are u32: nothing may be allocated at or past this sector
    max_file_sectors: int = 1 << 32
    #: align the next grain after a newly allocated table (KDMV keeps grains grain-aligned)
    align_after_table: bool = True

    def _init_tables(self) -> None:
        self._gt_struct = IntArray(self.gtes, 4)
        self._gt_sectors = sectors_for(self.gtes * 4)
        self._gts: dict[int, array] = {}

    def _read_directory(self, sector: int, entries: int, what: str) -> array:
        struct = IntArray(entries, 4)
        end = sector + sectors_for(struct.sizeof())
        if sector == 0 or end > self.file_sectors:
            raise CorruptError(self.name, what, f"{entries} entries at sector {sector} run past the end of the file")
        return struct.parse(read_exact(self.fh, sector * SECTOR, struct.sizeof(), self.name, what))

    def _load_gt(self, gdi: int) -> array | None:
        gt = self._gts.get(gdi)
        if gt is not None:
            return gt
        sector = self.gd[gdi]
        if sector == 0:
            return None
        what = f"grain table {gdi}"
        if sector + self._gt_sectors > self.file_sectors:
            raise CorruptError(
                self.name,
                what,
                f"table at sector {sector} is truncated by the end of the file ({self.file_sectors} sectors)",
                offset=sector * SECTOR,
            )
        raw = read_exact(self.fh, sector * SECTOR, self._gt_struct.sizeof(), self.name, what)
        gt = self._gt_struct.parse(raw)
        if gt and max(gt) >= self.file_sectors:
            for i, value in enumerate(gt):
                check_entry_target(self.name, what, gdi * self.gtes + i, value, self.file_sectors)
        self._gts[gdi] = gt
        return gt

    def _state(self, value: int) -> tuple[GrainState, int]:
        if value == 0:
            return GrainState.UNALLOCATED, 0
        if value == 1 and self.one_reads_as_zero:
            return GrainState.ZERO, 0
        return (GrainState.COMPRESSED if self.compressed else GrainState.DATA), value

    def _entries(self, first_grain: int, count: int) -> list[tuple[GrainState, int]]:
        out: list[tuple[GrainState, int]] = []
        gtes = self.gtes
        g = first_grain
        end = first_grain + count
        state = self._state
        while g < end:
            gdi, idx = divmod(g, gtes)
            n = min(gtes - idx, end - g)
            if gdi >= len(self.gd):
                raise CorruptError(self.name, "grain directory", f"no entry for grain {g}")
            gt = self._load_gt(gdi)
            if gt is None:
                out += [(GrainState.UNALLOCATED, 0)] * n
            else:
                out += [state(v) for v in gt[idx : idx + n]]
            g += n
        return out

    def _iter_entries(self) -> Iterator[tuple[int, GrainState, int]]:
        for gdi in range(len(self.gd)):
            gt = self._load_gt(gdi)
            if gt is None:
                continue
            base = gdi * self.gtes
            for idx, value in enumerate(gt):
                if value:
                    state, target = self._state(value)
                    yield base + idx, state, target

    def _reserve(self, sectors: int) -> int:
        start = self._next
        end = start + sectors
        if end > self.max_file_sectors:
            raise NoSpaceError(f"{self.name}: extent cannot grow past sector {self.max_file_sectors} (u32 pointers)")
        self._next = end
        self.file_sectors = max(self.file_sectors, end)
        return start

    def _allocate(self, grains: int) -> int:
        return self._reserve(grains * self.grain_size)

    def _allocate_table(self) -> int:
        start = self._reserve(self._gt_sectors)
        if self.align_after_table:
            self._next = roundup(self._next, self.grain_size)
        return start

    def _encode(self, state: GrainState, target: int) -> int:
        if state == GrainState.ZERO and self.supports_zero_grain:
            return 1
        if state == GrainState.DATA and target > 1:
            return target
        raise InvalidArgumentError(f"{self.name}: cannot store grain state {state.name} ({target})")

    def _commit(self, updates: list[tuple[int, GrainState, int]]) -> None:
        by_gt: dict[int, list[tuple[int, int]]] = {}
        for grain, state, target in updates:
            gdi, idx = divmod(grain, self.gtes)
            by_gt.setdefault(gdi, []).append((idx, self._encode(state, target)))
        for gdi, items in by_gt.items():
            gt = self._load_gt(gdi)
            if gt is None:
                self._new_table(gdi, items)
                continue
            for idx, value in items:
                gt[idx] = value
            lo = min(i for i, _ in items)
            hi = max(i for i, _ in items) + 1
            piece = IntArray(hi - lo, 4).build(gt[lo:hi])
            for directory in (self.gd, self.rgd):
                if directory is not None and directory[gdi]:
                    self.fh.seek(directory[gdi] * SECTOR + lo * 4)
                    self.fh.write(piece)

    def _new_table(self, gdi: int, items: list[tuple[int, int]]) -> None:
        """A table for a range whose directory entry is 0: table first, directory entry last."""
        gt = array("I", bytes(self._gt_struct.sizeof()))
        for idx, value in items:
            gt[idx] = value
        raw = self._gt_struct.build(gt)
        for directory, where in ((self.gd, self.gd_sector), (self.rgd, self.rgd_sector)):
            if directory is None:
                continue
            sector = self._allocate_table()
            self.fh.seek(sector * SECTOR)
            self.fh.write(raw)
            directory[gdi] = sector
            self.fh.seek(where * SECTOR + gdi * 4)
            self.fh.write(Int32ul.build(sector))
        self._gts[gdi] = gt
