"""Heartbeat region slots (vmfs-format.md section 4)."""

from __future__ import annotations

from construct import Bytes, Int8ul, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import Uuid

HEARTBEAT_REGION_OFFSET = 0x300000
HB_FREE = 0xABCDEF01
HB_IN_USE = 0xABCDEF02
HB_SLOTS_VMFS5 = 2048
HB_SLOTS_VMFS6 = 1024

Heartbeat = Struct(
    "state" / Int32ul,  # 0x00 HB_FREE / HB_IN_USE
    "addr" / Int64ul,  # 0x04 own volume offset
    "hbGen" / Int64ul,  # 0x0C
    "stamp" / Int64ul,  # 0x14 owner uptime, microseconds
    "owner" / Uuid,  # 0x1C host UUID
    "journalAddr" / Int32ul,  # 0x2C VMFS5: FB address of the journal block
    "driverMajor" / Int32ul,  # 0x30 = FS majorVersion
    "driverMinor" / Int8ul,  # 0x34
    "lockImpl" / Int8ul,  # 0x35
    "ip" / Bytes(46),  # 0x36 owner IP as text
    "journalVolAddr" / Int64ul,  # 0x64
    "replayHost" / Uuid,  # 0x6C
    "unknown7C" / Bytes(24),  # 0x7C
    "replayHostHb" / Int64ul,  # 0x94
    "replayHostHbGen" / Int64ul,  # 0x9C
    "reserved" / Bytes(0x200 - 0xA4),  # 0xA4
)
