"""VMFS6 hashed directories: header, blocks, entries, link groups (section 9.2)."""

from __future__ import annotations

from construct import Array, Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import IntArray

DIR6_VERSION = 0x00F50001
DIR6_VERSION_DEBUG = 0x00FDC001
DIR6_HEADER_SIZE = 0x10000
DIRENT6_SIZE = 0x120
DIRENT6_NAME_SIZE = 256
DIR6_BLOCK_HEADER_SIZE = 64
DIR6_HASH_ENTRIES = 16001
DIR6_ROOT_HASH_ENTRIES = 15973  # 28 entries reserved for system files
DIR6_MAX_MAP_BLOCKS = 128
LINK_GROUP_SIZE = 0x54
LINKS_PER_GROUP = 12

# Block types (block header `type`, 2-bit allocation-map entries, location words)
BLOCK_EMPTY = 0
BLOCK_DIRENT = 1
BLOCK_LINK = 2
BLOCK_ALLOCMAP = 3
# Allocation-map nibble flags
MAP_HAS_FREE = 0x4
MAP_NOT_WRITTEN = 0x8

Dirent6 = Struct(
    "type" / Int32ul,  # 0x00
    "address" / Int32ul,  # 0x04 FD address
    "generation" / Int32ul,  # 0x08
    "hash32" / Int32ul,  # 0x0C low 32 bits of the name hash
    "offset" / Int64ul,  # 0x10 own file offset in the directory
    "name" / Bytes(DIRENT6_NAME_SIZE),  # 0x18
    "unknown118" / Int64ul,  # 0x118
)

Dir6Header = Struct(
    "version" / Int32ul,  # 0x000
    "numEntries" / Int32ul,  # 0x004 incl. . and ..
    "numAllocated" / Int32ul,  # 0x008
    "numAllocationMapBlocks" / Int32ul,  # 0x00C
    "allocationMapBlocks" / IntArray(DIR6_MAX_MAP_BLOCKS, 4),  # 0x010
    "unknown210" / Bytes(0x3A8 - 0x210),  # 0x210
    "checksum" / Int64ul,  # 0x3A8
    "checksumGen" / Int64ul,  # 0x3B0
    "selfEntry" / Dirent6,  # 0x3B8
    "parentEntry" / Dirent6,  # 0x4D8
    "hashTable" / IntArray(DIR6_HASH_ENTRIES, 4),  # 0x5F8
    "tail" / Bytes(DIR6_HEADER_SIZE - 0xFFFC),  # 0xFFFC
)

Dir6BlockHeader = Struct(
    "version" / Int16ul,  # 0x00
    "type" / Int16ul,  # 0x02 1 dirent, 2 link, 3 allocation map
    "totalSlots" / Int16ul,  # 0x04
    "freeSlots" / Int16ul,  # 0x06
    "bitmap" / Bytes(56),  # 0x08 1 = free, LSB first
)

LinkEntry = Struct(
    "location" / Int32ul,
    "hash" / Int16ul,
)

LinkGroup = Struct(
    "hashIndex" / Int16ul,  # 0x00
    "totalLinks" / Int8ul,  # 0x02
    "freeLinks" / Int8ul,  # 0x03
    "nextFreeIdx" / Int8ul,  # 0x04
    "pad05" / Int8ul,  # 0x05
    "links" / Array(LINKS_PER_GROUP, LinkEntry),  # 0x06
    "nextGroup" / Int32ul,  # 0x4E location word
    "pad52" / Int16ul,  # 0x52
)

# Fixed hash-table indexes of the system files in the VMFS6 root directory (section 9.2 step 7).
ROOT_SYSTEM_HASH_INDEX = {
    ".fbb.sf": 0x3E66,
    ".fdc.sf": 0x3E67,
    ".pbc.sf": 0x3E68,
    ".sbc.sf": 0x3E69,
    ".vh.sf": 0x3E6A,
    ".pb2.sf": 0x3E6B,
    ".sdd.sf": 0x3E6C,
    ".jbc.sf": 0x3E6D,
    ".unmap.sf": 0x3E6E,
    ".dfd.sf": 0x3E6F,
}


def location_word(kind: int, block: int, slot: int) -> int:
    """Hash-table entry: bits 0-1 type, 2-23 block, 24-31 slot."""
    return (kind & 3) | ((block & 0x3FFFFF) << 2) | ((slot & 0xFF) << 24)


def split_location(word: int) -> tuple[int, int, int]:
    return word & 3, (word >> 2) & 0x3FFFFF, (word >> 24) & 0xFF
