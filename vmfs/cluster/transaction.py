"""A metadata transaction: sector images collected in memory, committed through the journal.

Readers inside the transaction see its pending writes (``read`` overlays them on the device), so
an operation can read-modify-write the same sector several times before anything reaches disk.
"""

from __future__ import annotations

from typing import Any, Protocol

from vmfs.cluster.journal import Journal
from vmfs.device.base import BlockDevice
from vmfs.errors import VmfsError
from vmfs.ondisk.lock import LOCK_EXCLUSIVE

SECTOR = 512


class LockTaker(Protocol):
    """What a transaction needs of the host's lock manager (:class:`vmfs.cluster.locks.LockManager`,
    which itself runs transactions when it recovers a dead host)."""

    def acquire(self, offset: int, mode: int = ..., *, wait: float | None = None) -> tuple[Any, int]: ...

    def release(self, offset: int) -> None: ...

    def forget(self, offset: int) -> None: ...


class Transaction:
    def __init__(self, device: BlockDevice, journal: Journal | None, locks: LockTaker | None = None) -> None:
        self.device = device
        self.journal = journal
        self.locks = locks
        self._locked: list[int] = []
        #: lock offsets given up by :meth:`forget_lock` (a batch absorbing this one drops them too)
        self._forgotten: list[int] = []
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

    @property
    def lock_count(self) -> int:
        return len(set(self._locked))

    def absorb(self, other: Transaction) -> None:
        """Take over ``other``, a completed transaction (group commit, :mod:`vmfs.cluster.batch`):
        its sector images over ours, its locks (held until this one commits; a lock it forgot,
        whose block it rewrote, is no longer listed, since a replay tells by the listed locks
        whether the transaction is still ours to redo), its after-commit callbacks run now, as
        its effects are visible from now on."""
        self._sectors.update(other._sectors)
        for offset in other._forgotten:
            while offset in self._locked:
                self._locked.remove(offset)
        self._forgotten.extend(other._forgotten)
        self._locked.extend(other._locked)
        other._locked = []
        other._sectors = {}
        callbacks, other.after_commit = other.after_commit, []
        for callback in callbacks:
            callback()

    # -- on-disk locks held for the life of the transaction -----------------------------------------------

    def lock(self, offset: int, mode: int = LOCK_EXCLUSIVE, *, wait: float | None = None):  # type: ignore[no-untyped-def]
        """Take the on-disk lock at ``offset`` until the transaction ends.  Returns (held lock,
        token seen before), or None when no lock manager is in use (single-host tools)."""
        if self.locks is None:
            return None
        held, previous = self.locks.acquire(offset, mode, wait=wait)
        self._locked.append(offset)
        return held, previous

    def forget_lock(self, offset: int) -> None:
        """The locked object was freed and its lock block overwritten: nothing to release."""
        self._forgotten.append(offset)
        if self.locks is not None:
            while offset in self._locked:
                self._locked.remove(offset)
                self.locks.forget(offset)

    def release_locks(self) -> None:
        """Give back every lock of the transaction; when the device fails, the others are still
        tried and the first error is raised (the lock manager retries the failed ones)."""
        if self.locks is None:
            return
        first: BaseException | None = None
        for offset in reversed(self._locked):
            try:
                self.locks.release(offset)
            except VmfsError as exc:
                first = first or exc
        self._locked.clear()
        if first is not None:
            raise first

    def commit(self, *, release: bool = True) -> None:
        """Journal, then home writes; then give back the locks (unless the caller still needs
        them to order a following step, in which case it calls :meth:`release_locks`)."""
        self._commit()  # on failure the caller decides: a commit cut after its journal record keeps them
        if release:
            self.release_locks()

    def _commit(self) -> None:
        records = self.records()
        if records:
            if self.journal is not None:
                # a lock whose block the transaction itself writes (an object it creates or
                # frees) cannot tell a replay whether the record is still ours to redo
                witnesses = [o for o in self._locked if o // SECTOR not in self._sectors]
                self.journal.commit(records, witnesses)
            else:
                for offset, data in records:
                    self.device.write(offset, data)
        self._sectors.clear()
        for callback in self.after_commit:
            callback()
        self.after_commit.clear()
