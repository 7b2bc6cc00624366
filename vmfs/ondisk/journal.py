"""Our metadata journal format (a host's journal block; docs/SPEC.md "Journal").

ESXi's own VMFS5 journal record format is only partly known (vmfs-format.md 10), so pyvmfs writes
its own, recognisable by its magic, and empties the journal on every clean unmount so that no
other implementation ever meets a record of ours.  One transaction is one contiguous write:

    header (512 bytes) | record | record | ...      record = RecordHeader (16 bytes) + data

The header's CRC32 covers the header (with the CRC field zero) and every record, so a torn or
partial journal write is never replayed.
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
    "reserved" / Bytes(JOURNAL_HEADER_SIZE - 0x38),  # 0x38
)

RecordHeader = Struct(
    "volumeOffset" / Int64ul,  # 0x00 home location
    "length" / Int32ul,  # 0x08 bytes of data that follow
    "reserved" / Int32ul,  # 0x0C
)

RECORD_HEADER_SIZE = 16
