"""The FS descriptor (superblock) at volume offset 0x200000 (vmfs-format.md section 3)."""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import Uuid

FS_MAGIC = 0x2FABF15E
FSL_MAGIC = 0x2FABF15F  # VMFS-L
FS_DESCRIPTOR_OFFSET = 0x200000

#: FS major versions seen: 14 = VMFS5; >= 24 = VMFS6.  VMFS3's value is not in any source.
VMFS6_MIN_MAJOR = 24

# config flags (section 3.2)
CONFIG_MODE_MASK = 0x3  # 0 private, 1/3 shared, 2 public
CONFIG_PUBLIC = 0x2
CONFIG_DENSE_SBPC = 0x4
CONFIG_MAINTENANCE = 0x8
CONFIG_LOCAL = 0x100

FsVolInfo = Struct(
    "lvId" / Uuid,  # 0x00 must equal the LVM volume's lvId
    "lvSnapId" / Int32ul,  # 0x10
    "reserved" / Bytes(12),  # 0x14
)

FsDescriptor = Struct(
    "magic" / Int32ul,  # 0x000
    "majorVersion" / Int32ul,  # 0x004
    "minorVersion" / Int8ul,  # 0x008
    "uuid" / Uuid,  # 0x009
    "config" / Int32ul,  # 0x019
    "fsLabel" / Bytes(128),  # 0x01D NUL-padded
    "diskBlockSize" / Int32ul,  # 0x09D
    "fileBlockSize" / Int64ul,  # 0x0A1
    "creationTime" / Int32ul,  # 0x0A9
    "snapId" / Int32ul,  # 0x0AD
    "volInfo" / FsVolInfo,  # 0x0B1
    "fdcClusterGroupOffset" / Int32ul,  # 0x0D1
    "fdcClustersPerGroup" / Int32ul,  # 0x0D5
    "subBlockSize" / Int32ul,  # 0x0D9
    "maxJournalSlotsPerTxn" / Int32ul,  # 0x0DD
    "pb2VolAddr" / Int64ul,  # 0x0E1
    "pb2FdAddr" / Int32ul,  # 0x0E9
    "hostUuid" / Uuid,  # 0x0ED
    "gblGeneration" / Int64ul,  # 0x0FD
    "sddVolAddr" / Int64ul,  # 0x105
    "sddFdAddr" / Int32ul,  # 0x10D
    "checksumType" / Int8ul,  # 0x111
    "unmapPriority" / Int16ul,  # 0x112
    "reserved114" / Bytes(4),  # 0x114
    "checksumGen" / Int64ul,  # 0x118
    "checksum" / Bytes(16),  # 0x120
    "physDiskBlockSize" / Int32ul,  # 0x130
    "mdAlignment" / Int32ul,  # 0x134 0 on VMFS5 (512 implicit)
    "sfbToLfbShift" / Int16ul,  # 0x138
    "reserved13A" / Bytes(4),  # 0x13A
    "ptrBlockShift" / Int16ul,  # 0x13E
    "sfbAddrBits" / Int16ul,  # 0x140
    "reserved142" / Bytes(2),  # 0x142
    "tbzGranularity" / Int32ul,  # 0x144
    "journalBlockSize" / Int32ul,  # 0x148
    "leaseIntervalMs" / Int32ul,  # 0x14C
    "reclaimWindowMs" / Int32ul,  # 0x150
    "localStampUS" / Int64ul,  # 0x154
    "localMountOwnerMac" / Bytes(6),  # 0x15C
    "unmapMethod" / Int8ul,  # 0x162
    "unmapBandwidth" / Int32ul,  # 0x163
    "unmapBandwidthMin" / Int32ul,  # 0x167
    "unmapBandwidthMax" / Int32ul,  # 0x16B
    "reserved16F" / Bytes(0x200 - 0x16F),  # 0x16F zero in both samples
)
