"""Flat extents: ``FLAT``, ``VMFS``, ``VMFSRDM`` and ``VMFSRAW`` lines (vmdk-format.md 2.3, 7.1).

The virtual byte at ``o`` is the file byte at ``OFFSET*512 + o``.  There is no metadata, so there is
nothing to validate beyond the file existing; a file shorter than the extent (a thin host file that
was truncated, a flat file copied in part) reads as zeros past its end, as a sparse file would.
Thin VMFS files and RDM mapping files use the same code: allocation is the storage's business.
"""

from __future__ import annotations

from collections.abc import Iterator

from vmfs.vmdk.extent import SECTOR, Extent, Filler, Hole
from vmfs.vmdk.storage import DiskStorage, ThinStorage


class FlatExtent(Extent):
    """Raw data in a file, starting ``offset`` sectors into it."""

    def __init__(
        self, storage: DiskStorage, name: str, capacity: int, *, offset: int = 0, writable: bool = False
    ) -> None:
        self.storage = storage
        self.name = name
        self.capacity = capacity
        self.offset = offset
        self.writable = writable
        self.fh = storage.open(name, "r+b" if writable else "rb")

    def read(self, sector: int, count: int) -> tuple[bytearray, list[Hole]]:
        self._check_range(sector, count)
        self.fh.seek((self.offset + sector) * SECTOR)
        data = self.fh.read(count * SECTOR) or b""
        buf = bytearray(data)
        if len(buf) < count * SECTOR:
            buf += bytes(count * SECTOR - len(buf))
        return buf, []

    def write(self, sector: int, data: bytes, fill: Filler) -> None:
        count = len(data) // SECTOR
        self._check_range(sector, count)
        if not data:
            return
        self._modifying()
        self.fh.seek((self.offset + sector) * SECTOR)
        self.fh.write(data)

    def allocated(self) -> Iterator[tuple[int, int, bool]]:
        """The whole extent, or only the allocated ranges when the storage can tell (thin files)."""
        if not self.capacity:
            return
        if not isinstance(self.storage, ThinStorage):
            yield (0, self.capacity, False)
            return
        base = self.offset * SECTOR
        end = base + self.capacity * SECTOR
        for start, length in self.storage.allocated_ranges(self.name):
            lo, hi = max(start, base), min(start + length, end)
            if lo >= hi:
                continue
            first = (lo - base) // SECTOR
            last = -(-(hi - base) // SECTOR)
            yield (first, last - first, False)

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
