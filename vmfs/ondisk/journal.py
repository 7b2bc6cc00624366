"""Our metadata journal format (a host's journal block; docs/SPEC.md "Journal").

ESXi's own VMFS5 journal record format is only partly known (vmfs-format.md 10), so pyvmfs writes
its own, recognisable by its magic, and empties the journal on every clean unmount so that no
other implementation ever meets a record of ours.  One transaction is one contiguous write:

    header (512 bytes) | lock offsets (u64 each) | record | record | ...
    record = RecordHeader (16 bytes) + data

The header's CRC32 covers the header (with the CRC field zero), the lock list and every record,
so a torn or partial journal write is never replayed.  The lock list names the on-disk locks the
transaction held: a transaction is replayed only while its host still holds all of them, i.e.
only if it may not have reached home (its locks are released after its home writes are durable).
"""

from __future__ import annotations

from construct import Bytes, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import Uuid

JOURNAL_MAGIC = 0x314A53464D565950  # "PYVMFSJ1" little-endian
JOURNAL_HEADER_SIZE = 512

JournalHeader = Struct(
    "magic" / Int64ul,  # 0x00
    "sequence" / Int64ul,  # 0x08 transaction sequence number of this host
    "numRecords" / Int32ul,  # 0x10
    "payloadLength" / Int32ul,  # 0x14 bytes of records after the header
    "crc32" / Int32ul,  # 0x18 over header (crc32 = 0) and payload
    "flags" / Int32ul,  # 0x1C
    "host" / Uuid,  # 0x20 the host that wrote it
    "timeUS" / Int64ul,  # 0x30
    "numLocks" / Int32ul,  # 0x38 lock offsets (u64) at the start of the payload
    "reserved" / Bytes(JOURNAL_HEADER_SIZE - 0x3C),  # 0x3C
)

RecordHeader = Struct(
    "volumeOffset" / Int64ul,  # 0x00 home location
    "length" / Int32ul,  # 0x08 bytes of data that follow
    "reserved" / Int32ul,  # 0x0C
)

RECORD_HEADER_SIZE = 16
