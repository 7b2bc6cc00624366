"""File descriptors (inodes), vmfs-format.md section 8.

An FD is a lock block, a 512-byte metadata block, then a data area that holds either resident
file data or the block pointer array (the ZLA says which).  Sizes depend on the version, so
the full FD structure is built by :mod:`vmfs.ondisk.structset`.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int32ul, Int64ul, Struct

# Descriptor types (FD +0x0C and directory entry type), section 8.4
TYPE_INVALID = 0
TYPE_VOLUME = 1
TYPE_DIRECTORY = 2
TYPE_REGFILE = 3
TYPE_SYMLINK = 4
TYPE_SYSFILE = 5
TYPE_RDM = 6

# Zero-level address types (FD +0x44), section 8.5
ZLA_FILE_BLOCKS = 1
ZLA_SUB_BLOCKS = 2
ZLA_POINTER_BLOCKS = 3
ZLA_POINTER2_BLOCKS = 5
ZLA_DOUBLE_INDIRECT = 4304
ZLA_RESIDENT = 4305

FD_SIGNATURE = 0x66646D64  # "dmdf", VMFS6

FileMetadata = Struct(
    "descAddr" / Int32ul,  # 0x00 own FD address
    "generation" / Int32ul,  # 0x04
    "linkCount" / Int32ul,  # 0x08
    "type" / Int32ul,  # 0x0C
    "flags" / Int32ul,  # 0x10
    "fileLength" / Int64ul,  # 0x14
    "blockSize" / Int64ul,  # 0x1C
    "numBlocks" / Int64ul,  # 0x24
    "mtime" / Int32ul,  # 0x2C
    "ctime" / Int32ul,  # 0x30
    "atime" / Int32ul,  # 0x34
    "uid" / Int32ul,  # 0x38
    "gid" / Int32ul,  # 0x3C
    "mode" / Int32ul,  # 0x40
    "zla" / Int32ul,  # 0x44
    "numTBZBlocksLo" / Int32ul,  # 0x48
    "numCOWBlocksLo" / Int32ul,  # 0x4C
    "newSinceEpochLo" / Int32ul,  # 0x50
    "numTBZBlocksHi" / Int32ul,  # 0x54
    "numCOWBlocksHi" / Int32ul,  # 0x58
    "numPointerBlocks" / Int32ul,  # 0x5C
    "newSinceEpochHi" / Int32ul,  # 0x60
    "signature" / Int32ul,  # 0x64 VMFS6 0x66646D64
    "affinityFD" / Int32ul,  # 0x68
    "tbzGranularityShift" / Int32ul,  # 0x6C
    "parentFD" / Int32ul,  # 0x70 VMFS6 parent directory
    "lastSFBClusterNum" / Int32ul,  # 0x74
    "unknown78" / Int32ul,  # 0x78
    "unknown7C" / Int32ul,  # 0x7C
    "affinityBitmap" / Int32ul,  # 0x80
    "numPreAllocBlocks" / Int8ul,  # 0x84
    "unknown85" / Bytes(4),  # 0x85
    "blockOffsetShift" / Int8ul,  # 0x89 log2(blockSize)
    "numTracked" / Int8ul,  # 0x8A
    "unknown8B" / Int8ul,  # 0x8B
    "numLFB" / Int32ul,  # 0x8C
    "unknown90" / Bytes(0x168 - 0x90),  # 0x90
    "lastFreeSFBC" / Int32ul,  # 0x168
    "reserved16C" / Bytes(0x200 - 0x16C),  # 0x16C
)

FILE_METADATA_SIZE = 0x200
