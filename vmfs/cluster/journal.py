"""Metadata transactions and the write-ahead journal (redo log).

Every metadata change of one operation (an FD, a directory block, cluster headers of the
resource bitmaps, a pointer block) is collected in a :class:`Transaction`.  Commit writes the
whole transaction to the host's journal in one write, makes it durable, then writes each record
to its home location and makes those durable too (before the next transaction may overwrite
the journal, and before the transaction's locks go back to other hosts).  A crash before the
journal write completes leaves the home locations untouched; a crash after it is repaired by
replaying the journal, which rewrites the same bytes (idempotent).  The journal holds at most
one transaction: the next commit overwrites it.  Replay happens only while the transaction's
host still holds every lock the transaction took: once they are released its home writes were
durable, and replaying it then could undo changes other hosts made since.

File *data* is not journaled: it is written to its blocks before the transaction that makes the
blocks part of the file (or a length that covers them) commits, and made durable before the
journal record is written (ordered mode, as ext4's jbd2 flushes before its commit block): a write
cache may destage the record before the data, and a replay would then map blocks that still hold
what they held before, a deleted file's bytes.  Writers say that data is waiting
(:attr:`Journal.data_unflushed`); the next commit then flushes first.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from construct import Container

from vmfs.device.base import BlockDevice
from vmfs.errors import CorruptError, VmfsError
from vmfs.ondisk.common import fast, pack_ints, unpack_ints
from vmfs.ondisk.journal import (
    JOURNAL_HEADER_SIZE,
    JOURNAL_MAGIC,
    RECORD_HEADER_SIZE,
    JournalHeader,
    RecordHeader,
)


class TransactionTooLarge(VmfsError):
    """The operation touches more metadata than one journal block holds; callers split it."""


@dataclass
class JournalArea:
    """Where a host's journal lives on the volume."""

    offset: int  # volume offset
    size: int


def _crc(header: Container, payload: bytes) -> int:
    raw = fast(JournalHeader).build({**header, "crc32": 0})
    return zlib.crc32(payload, zlib.crc32(raw)) & 0xFFFFFFFF


def encode_transaction(
    sequence: int, host: str, writes: list[tuple[int, bytes]], locks: list[int] | None = None
) -> bytes:
    locks = sorted(set(locks or ()))
    payload = bytearray(pack_ints(locks, 8))
    for offset, data in writes:
        payload += fast(RecordHeader).build(Container(volumeOffset=offset, length=len(data), reserved=0))
        payload += data
    header = Container(
        magic=JOURNAL_MAGIC,
        sequence=sequence,
        numRecords=len(writes),
        payloadLength=len(payload),
        crc32=0,
        flags=0,
        host=host,
        timeUS=int(time.time() * 1e6),
        numLocks=len(locks),
        reserved=bytes(JOURNAL_HEADER_SIZE - 0x3C),
    )
    header.crc32 = _crc(header, bytes(payload))
    return fast(JournalHeader).build(header) + bytes(payload)


def decode_transaction(
    raw: bytes, area_size: int
) -> tuple[Container, list[tuple[int, bytes]], list[int]] | None:
    """The committed transaction at the start of ``raw`` as (header, records, lock offsets), or
    None (empty, foreign or torn)."""
    if len(raw) < JOURNAL_HEADER_SIZE:
        return None
    header = JournalHeader.parse(raw[:JOURNAL_HEADER_SIZE])
    if header.magic != JOURNAL_MAGIC:
        return None
    end = JOURNAL_HEADER_SIZE + header.payloadLength
    if end > min(len(raw), area_size):
        return None
    payload = raw[JOURNAL_HEADER_SIZE:end]
    if _crc(header, payload) != header.crc32:
        return None
    records = []
    pos = header.numLocks * 8
    if pos > len(payload):
        raise CorruptError("journal", None, "lock list past the payload")
    locks = list(unpack_ints(payload[:pos], 8))
    for _ in range(header.numRecords):
        if pos + RECORD_HEADER_SIZE > len(payload):
            raise CorruptError("journal", None, "record header past the payload")
        rec = RecordHeader.parse(payload[pos : pos + RECORD_HEADER_SIZE])
        pos += RECORD_HEADER_SIZE
        if pos + rec.length > len(payload):
            raise CorruptError("journal", None, "record data past the payload")
        records.append((rec.volumeOffset, payload[pos : pos + rec.length]))
        pos += rec.length
    return header, records, locks


class Journal:
    """One host's journal area on a device."""

    def __init__(self, device: BlockDevice, area: JournalArea, host: str, *, barriers: bool = True) -> None:
        self.device = device
        self.area = area
        self.host = host
        self.barriers = barriers
        self.sequence = 1
        #: True from the moment a commit starts writing its record until its home writes are
        #: durable: a failure in between (the device went away) leaves a transaction that may be
        #: committed and not home; it must be redone (:meth:`replay`) before anything else is written
        self.pending = False
        #: data went to the device outside the journal since the last flush: the next commit
        #: flushes before its record, so no record can be durable before the data it publishes
        self.data_unflushed = False
        #: called with the byte count of every journal write (statistics, fault injection)
        self.on_write: Callable[[int], None] | None = None
        #: called as ``(i, n)`` after home write i (1-based) of a commit's n: a simulated host
        #: panics there on request, so a crash test can stop a host with a transaction half home
        self.on_home_write: Callable[[int, int], None] | None = None

    @property
    def capacity(self) -> int:
        return self.area.size - JOURNAL_HEADER_SIZE

    def commit(self, writes: list[tuple[int, bytes]], locks: list[int] | None = None) -> None:
        if not writes:
            return
        blob = encode_transaction(self.sequence, self.host, writes, locks)
        if len(blob) > self.area.size:
            raise TransactionTooLarge(f"transaction of {len(blob)} bytes exceeds the journal ({self.area.size})")
        # pad to whole sectors so the write is sector-aligned
        pad = (-len(blob)) % 512
        if self.barriers and self.data_unflushed:
            self.device.flush()  # ordered mode: the data before the record that publishes it
        self.data_unflushed = False
        self.pending = True  # a write that fails may still have reached the disk
        self.device.write(self.area.offset, blob + bytes(pad))
        if self.barriers:
            self.device.flush()
        hook = self.on_home_write
        for i, (offset, data) in enumerate(writes, 1):
            self.device.write(offset, data)
            if hook is not None:
                hook(i, len(writes))
        if self.barriers:
            # The home copies must be durable before the next transaction overwrites this one in
            # the journal, and before our locks are released to another host.
            self.device.flush()
        self.pending = False
        self.sequence += 1

    def replay(self) -> int:
        """Apply a committed transaction found in the area (none when its locks were let go: it
        reached home); returns the records applied.  Clears :attr:`pending` once done."""
        applied = replay_area(self.device, self.area)
        self.pending = False
        return applied

    def clear(self) -> None:
        """Empty the journal (clean unmount): no record of ours is ever left for another reader."""
        self.device.write(self.area.offset, bytes(JOURNAL_HEADER_SIZE))
        if self.barriers:
            self.device.flush()


def _still_held(device: BlockDevice, locks: list[int], owner: str) -> bool:
    """Whether every lock of a journaled transaction is still held by the journal's host."""
    from vmfs.ondisk.lock import LOCK_FREE, parse_lock

    for offset in locks:
        if offset + 512 > device.size:
            raise CorruptError("journal", offset, "lock offset beyond the volume")
        lock = parse_lock(device.read(offset, 512))
        if lock.mode == LOCK_FREE or lock.owner != owner:
            return False
    return True


def replay_area(device: BlockDevice, area: JournalArea) -> int:
    head = device.read(area.offset, JOURNAL_HEADER_SIZE)
    header = JournalHeader.parse(head)
    if header.magic != JOURNAL_MAGIC or header.payloadLength > area.size - JOURNAL_HEADER_SIZE:
        return 0
    raw = device.read(area.offset, JOURNAL_HEADER_SIZE + header.payloadLength)
    found = decode_transaction(raw, area.size)
    if found is None:
        return 0
    header, records, locks = found
    if locks and not _still_held(device, locks, header.host):
        return 0  # the transaction released its locks, so it had reached home: nothing to redo
    for offset, data in records:
        if offset + len(data) > device.size:
            raise CorruptError("journal", area.offset, f"record home 0x{offset:x} beyond the volume")
        device.write(offset, data)
    device.flush()
    return len(records)
