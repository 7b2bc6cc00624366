"""VMFS3/5 directory entries: a directory file is a packed array of them (section 9.1)."""

from __future__ import annotations

from construct import Bytes, Int32ul, Struct

DIRENT5_SIZE = 0x8C
DIRENT5_NAME_SIZE = 128

Dirent5 = Struct(
    "type" / Int32ul,  # 0x00 descriptor type
    "descAddr" / Int32ul,  # 0x04 FD address, 0 = unused
    "generation" / Int32ul,  # 0x08 = FD generation
    "name" / Bytes(DIRENT5_NAME_SIZE),  # 0x0C NUL-padded
)
