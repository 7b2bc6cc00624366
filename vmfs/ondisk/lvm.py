"""LVM structures: device header, volume descriptor, PE table (vmfs-format.md section 2).

Declarations only.  Offsets are relative to the start of each structure.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import Uuid

LVM_MAGIC = 0xC001D00D
#: Device offset of the LVM device header (section 2.1).
LVM_HEADER_OFFSET = 0x100000
#: Bytes of one PE table entry slot and how many slots a PE map holds (section 2.3).
PE_ENTRY_SIZE = 128
PES_PER_MAP = 8192
#: SD table: 32 device names of 256 bytes each.
SD_ENTRIES = 32
SD_ENTRY_SIZE = 256
#: Volume table: 512-byte descriptors; LVM3/5 hold 512 of them, LVM6 one.
VOLUME_DESCRIPTOR_SIZE = 512
#: LVM5 segments (and the unit of numPEs counts) are 256 MiB.
SEGMENT_SIZE = 256 << 20

# Volume descriptor `state`
VOLUME_STATE_INVALID = 0
VOLUME_STATE_NORMAL = 1

ScsiDiskId = Struct(
    "type" / Int8ul,  # 0x00
    "len" / Int8ul,  # 0x01 bytes used in `id`
    "lun" / Int16ul,  # 0x02
    "deviceType" / Int8ul,  # 0x04
    "scsiLevel" / Int8ul,  # 0x05
    "vendor" / Bytes(8),  # 0x06
    "model" / Bytes(16),  # 0x0E
    "revision" / Bytes(4),  # 0x1E
    "id" / Bytes(44),  # 0x22
)  # 0x4E = 78 bytes

LvmDeviceHeader = Struct(
    "magic" / Int32ul,  # 0x00 0xC001D00D
    "majorVersion" / Int32ul,  # 0x04 3, 5, 6
    "minorVersion" / Int32ul,  # 0x08
    "diskId" / ScsiDiskId,  # 0x0C
    "diskBlockSize" / Int32ul,  # 0x5A
    "totalBytes" / Int64ul,  # 0x5E
    "numVolumes" / Int32ul,  # 0x66
    "numPEs" / Int32ul,  # 0x6A PE table entries on this device
    "lastPEIndex" / Int32ul,  # 0x6E
    "generation" / Int64ul,  # 0x72
    "dataOffset" / Int64ul,  # 0x7A device offset of the first PE data
    "devId" / Uuid,  # 0x82
    "initTimeUS" / Int64ul,  # 0x92
    "modTimeUS" / Int64ul,  # 0x9A
    "lockedBy" / Uuid,  # 0xA2
    "lockedWhenUS" / Int64ul,  # 0xB2
    "unknownBA" / Int32ul,  # 0xBA
    "numPEMaps" / Int32ul,  # 0xBE 0 means 1
    "extDevMetadataOffset" / Int64ul,  # 0xC2 0 = none
    "mdAlignment" / Int32ul,  # 0xCA LVM6 only
    "numPEs6" / Int32ul,  # 0xCE LVM6 only: 256-MiB segments
    "flags" / Int32ul,  # 0xD2 1 = VMFS-L
    "reserved" / Bytes(0x200 - 0xD6),  # 0xD6 zero in every sample
)

LvmVolumeDescriptor = Struct(
    "logicalSize" / Int64ul,  # 0x00
    "generation" / Int64ul,  # 0x08
    "state" / Int32ul,  # 0x10
    "name" / Bytes(64),  # 0x14 LV UUID as text
    "lvId" / Uuid,  # 0x54
    "snapId" / Int32ul,  # 0x64
    "creationTimeUS" / Int64ul,  # 0x68
    "volumeId" / Int32ul,  # 0x70
    "numPEs" / Int32ul,  # 0x74 segments of this volume on this device
    "firstPE" / Int64ul,  # 0x78
    "lastPE" / Int64ul,  # 0x80
    "modTimeUS" / Int64ul,  # 0x88
    "numDevs" / Int32ul,  # 0x90 extents of the volume
    "reserved94" / Bytes(0x110 - 0x94),  # 0x94
    "consumedPEs" / Int32ul,  # 0x110
    "reserved114" / Bytes(0x200 - 0x114),  # 0x114
)

LvmPeEntry = Struct(
    "used" / Int8ul,  # 0x00
    "peId" / Int32ul,  # 0x01
    "volumeId" / Int32ul,  # 0x05
    "pOffset" / Int64ul,  # 0x09 device offset
    "lOffset" / Int64ul,  # 0x11 volume offset
    "length" / Int64ul,  # 0x19
    "version" / Int32ul,  # 0x21
    "reserved" / Bytes(PE_ENTRY_SIZE - 0x25),  # 0x25
)

LvmExtDevMetadata = Struct(
    "magic" / Int32ul,  # 0x00
    "numPEMaps" / Int32ul,  # 0x04
    "dataOffset" / Int64ul,  # 0x08
    "nextOffset" / Int64ul,  # 0x10 0 ends the chain
    "reserved" / Bytes(0x200 - 0x18),
)

SdEntry = Bytes(SD_ENTRY_SIZE)
