"""Recognise what a device already holds, so that a format never destroys it by accident.

A table of magic strings at fixed offsets, the same places ``blkid``/``wipefs`` look: VMFS (LVM
header at 1 MiB, or a bare FS descriptor at 2 MiB), Linux file systems, swap, LVM2, LUKS, and the
MBR/GPT partition tables.  Only what can be told from these bytes is reported; the first match
wins, so file systems (which may carry a boot-sector 0x55AA) come before the plain MBR.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmfs.device.base import BlockDevice
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FS_MAGIC, FSL_MAGIC
from vmfs.ondisk.lvm import LVM_HEADER_OFFSET, LVM_MAGIC


@dataclass(frozen=True)
class Signature:
    """``magic`` at byte ``offset`` means the device holds ``what``."""

    what: str
    offset: int
    magic: bytes


def _le32(value: int) -> bytes:
    return value.to_bytes(4, "little")


SIGNATURES: tuple[Signature, ...] = (
    Signature("a VMFS volume (LVM header at 1 MiB)", LVM_HEADER_OFFSET, _le32(LVM_MAGIC)),
    Signature("a VMFS file system (FS descriptor at 2 MiB)", FS_DESCRIPTOR_OFFSET, _le32(FS_MAGIC)),
    Signature("a VMFS-L file system (FS descriptor at 2 MiB)", FS_DESCRIPTOR_OFFSET, _le32(FSL_MAGIC)),
    Signature("an ext2/ext3/ext4 file system", 0x438, b"\x53\xef"),
    Signature("an XFS file system", 0, b"XFSB"),
    Signature("a btrfs file system", 0x10040, b"_BHRfS_M"),
    Signature("an NTFS file system", 3, b"NTFS    "),
    Signature("an exFAT file system", 3, b"EXFAT   "),
    Signature("a FAT32 file system", 0x52, b"FAT32   "),
    Signature("a FAT12/16 file system", 0x36, b"FAT1"),
    Signature("a LUKS encrypted volume", 0, b"LUKS\xba\xbe"),
    Signature("an LVM2 physical volume", 0x218, b"LVM2 001"),
    Signature("an LVM2 physical volume", 0x018, b"LVM2 001"),
    Signature("a swap area", 4096 - 10, b"SWAPSPACE2"),
    Signature("a swap area", 4096 - 10, b"SWAP-SPACE"),
    Signature("a swap area", 65536 - 10, b"SWAPSPACE2"),
    Signature("an ISO 9660 file system", 0x8001, b"CD001"),
    Signature("a GPT partition table", 512, b"EFI PART"),
    Signature("a GPT partition table", 4096, b"EFI PART"),
    Signature("an MBR partition table", 510, b"\x55\xaa"),
)


def detect_signature(device: BlockDevice) -> Signature | None:
    """The first signature of :data:`SIGNATURES` found on ``device``, or None."""
    head_size = min(device.size, 0x10100)
    head = device.read(0, head_size) if head_size else b""
    for sig in SIGNATURES:
        end = sig.offset + len(sig.magic)
        if end <= head_size:
            found = head[sig.offset : end] == sig.magic
        elif end <= device.size:
            found = device.read(sig.offset, len(sig.magic)) == sig.magic
        else:
            found = False
        if found:
            return sig
    return None
