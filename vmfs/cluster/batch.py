"""Group commit: metadata transactions nobody asked to make durable share one journal commit.

A transaction that completes is *absorbed* into the host's open batch instead of being committed
on its own: its sector images join the batch's, its locks stay held (they guard the batch's
replay, :mod:`vmfs.cluster.journal`), its in-memory effects are already visible.  The batch is
committed as one journal transaction (one record, two flushes) when it is full (it would no
longer fit the journal), when it is ``interval`` seconds old, when a caller asks for durability
(fsync, fdatasync, O_SYNC writes, unmount), or when anything else must see its effects on disk
first.  So every committed state is one a sequence of whole operations leads to: a crash loses
the uncommitted batch, never part of an operation, and never an operation whose durability a
caller was promised (ext4's jbd2 commits its running transaction the same way).

Until it commits, the batch's sectors are *pending*: the volume's device returns them on reads
(:class:`PendingSectors`, the device's ``pending`` hook, :class:`vmfs.device.base.BlockDevice`),
so this host's caches and every re-read see the state the batch makes, while other hosts, which
see only the disk, see the state before it (they cannot change what it changed: the batch still
holds those locks).  Three rules keep this exact:

- an ATS or a write to a pending sector from outside the batch's commit (a lock taken on an FD
  created in the batch, recovery of another host) commits the batch first (:meth:`settle`), so
  nothing on disk is ever compared with, or written under, bytes only memory has;
- resources freed in the batch are not allocated again until it commits
  (:attr:`vmfs.cluster.alloc.Allocators.held_back`): a freed block handed to a new file and
  written with its data before the free is durable would, after a crash, be back in the old file
  with the new file's bytes (jbd2 keeps freed blocks out of use until commit for the same reason);
  an allocation that finds only held-back resources commits the batch and tries again;
- the batch is committed whole or not at all; a device failure under its commit is handled as a
  failed single transaction's (its locks kept for the redo, caches dropped).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections.abc import Callable

from vmfs.ondisk.journal import JOURNAL_HEADER_SIZE, RECORD_HEADER_SIZE

SECTOR = 512


class PendingSectors:
    """Sector images absorbed into the open batch and not yet home: what reads of the volume's
    device see over the disk (``BlockDevice.pending``)."""

    def __init__(self, settle: Callable[[], None]) -> None:
        self._images: dict[int, bytes] = {}
        self._order: list[int] = []  # the sector numbers, sorted (range checks by bisection)
        #: a reader's raw read and its patching are atomic against the commit's final clear
        self.lock = threading.RLock()
        #: commits the batch (set by the attachment); what a conflicting ATS or write calls first
        self._settle = settle
        #: True while the batch's own home writes go out: those writes are the pending images
        self.committing = False

    def __len__(self) -> int:
        return len(self._images)

    def add(self, images: dict[int, bytes]) -> None:
        with self.lock:
            known = self._images
            for sector, image in images.items():
                if sector not in known:
                    insort(self._order, sector)
                known[sector] = image

    def clear(self) -> None:
        with self.lock:
            self._images.clear()
            self._order.clear()

    def overlaps(self, offset: int, length: int) -> bool:
        order = self._order
        i = bisect_left(order, offset // SECTOR)
        return i < len(order) and order[i] * SECTOR < offset + length

    def overlay(self, offset: int, data: bytes) -> bytes:
        """``data`` (read from the disk at ``offset``) with the pending sectors laid over it."""
        order = self._order
        end = offset + len(data)
        i = bisect_left(order, offset // SECTOR)
        if i >= len(order) or order[i] * SECTOR >= end:
            return data
        out = bytearray(data)
        images = self._images
        while i < len(order) and order[i] * SECTOR < end:
            sector = order[i]
            start = sector * SECTOR
            image = images[sector]
            lo = max(start, offset)
            hi = min(start + SECTOR, end)
            out[lo - offset : hi - offset] = image[lo - start : hi - start]
            i += 1
        return bytes(out)

    def settle(self, offset: int, length: int) -> None:
        """Something outside the batch is about to test or write ``offset``: commit first if the
        range is pending (not while the batch's own commit writes it)."""
        if self._images and not self.committing and self.overlaps(offset, length):
            self._settle()


def size_bound(sectors: int, locks: int) -> int:
    """Bytes a journal record of ``sectors`` pending sectors and ``locks`` lock offsets takes at
    most (every sector its own run)."""
    return JOURNAL_HEADER_SIZE + 8 * locks + sectors * (SECTOR + RECORD_HEADER_SIZE)


__all__ = ["PendingSectors", "size_bound"]
