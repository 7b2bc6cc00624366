"""A metadata transaction: sector images collected in memory, committed through the journal.

Readers inside the transaction see its pending writes (``read`` overlays them on the device), so
an operation can read-modify-write the same sector several times before anything reaches disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmfs.journal import Journal

if TYPE_CHECKING:
    from vmfs.device.base import BlockDevice

SECTOR = 512


class Transaction:
    def __init__(self, device: BlockDevice, journal: Journal | None) -> None:
        self.device = device
        self.journal = journal
        self._sectors: dict[int, bytes] = {}
        #: callbacks run after a successful commit (e.g. freeing in-memory reservations)
        self.after_commit: list = []

    def __len__(self) -> int:
        return len(self._sectors)

    @property
    def pending_bytes(self) -> int:
        return len(self._sectors) * SECTOR

    def read(self, offset: int, length: int) -> bytes:
        if not self._sectors:
            return self.device.read(offset, length)
        first = offset // SECTOR
        last = (offset + length - 1) // SECTOR
        if not any(s in self._sectors for s in range(first, last + 1)):
            return self.device.read(offset, length)
        base = bytearray(self.device.read(first * SECTOR, (last - first + 1) * SECTOR))
        for s in range(first, last + 1):
            img = self._sectors.get(s)
            if img is not None:
                base[(s - first) * SECTOR : (s - first + 1) * SECTOR] = img
        start = offset - first * SECTOR
        return bytes(base[start : start + length])

    def write(self, offset: int, data: bytes) -> None:
        """Record ``data`` for ``offset``; partial sectors are completed from the current image."""
        if not data:
            return
        end = offset + len(data)
        first = offset // SECTOR
        last = (end - 1) // SECTOR
        if offset % SECTOR or end % SECTOR:
            image = bytearray(self.read(first * SECTOR, (last - first + 1) * SECTOR))
            image[offset - first * SECTOR : end - first * SECTOR] = data
        else:
            image = data
        for i, s in enumerate(range(first, last + 1)):
            self._sectors[s] = bytes(image[i * SECTOR : (i + 1) * SECTOR])

    def records(self) -> list[tuple[int, bytes]]:
        """Pending sectors coalesced into (offset, bytes) runs."""
        runs: list[tuple[int, bytes]] = []
        start = None
        buf = bytearray()
        prev = None
        for s in sorted(self._sectors):
            if prev is not None and s == prev + 1:
                buf += self._sectors[s]
            else:
                if start is not None:
                    runs.append((start * SECTOR, bytes(buf)))
                start, buf = s, bytearray(self._sectors[s])
            prev = s
        if start is not None:
            runs.append((start * SECTOR, bytes(buf)))
        return runs

    def commit(self) -> None:
        records = self.records()
        if records:
            if self.journal is not None:
                self.journal.commit(records)
            else:
                for offset, data in records:
                    self.device.write(offset, data)
        self._sectors.clear()
        for callback in self.after_commit:
            callback()
        self.after_commit.clear()
