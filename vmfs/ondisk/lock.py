"""The metadata lock block that starts every FD and resource cluster (vmfs-format.md section 5)."""

from __future__ import annotations

from construct import Array, Bytes, Container, Int32ul, Int64ul, Struct

from vmfs.ondisk.common import SECTOR, Uuid, fast

LOCK_TYPE_BASE = 0x10C00000
LOCK_TYPE_FD = 0x10C00001

# Lock modes (esx-design.md 1.4, 1.6)
LOCK_FREE = 0
LOCK_EXCLUSIVE = 1
LOCK_READ_ONLY = 2
LOCK_MULTI_WRITER = 3

MAX_HOLDERS = 8

LockHolder = Struct(
    "hbAddr" / Int64ul,
    "hbGen" / Int64ul,
    "owner" / Uuid,
)

LockHolders = Array(MAX_HOLDERS, LockHolder)
NO_HOLDERS = bytes(MAX_HOLDERS * 32)

LockFields = Struct(
    "type" / Int32ul,  # 0x00 0x10C00000 + resource type + 1, 0x10C00001 for an FD
    "addr" / Int64ul,  # 0x04 own volume offset
    "hbAddr" / Int64ul,  # 0x0C heartbeat slot of the (last) holder
    "hbGen" / Int64ul,  # 0x14 holder's heartbeat generation
    "token" / Int64ul,  # 0x1C bumped on every acquisition
    "mode" / Int32ul,  # 0x24
    "owner" / Uuid,  # 0x28
    "mtime" / Int64ul,  # 0x38
    "numHolders" / Int32ul,  # 0x40
    # 0x44: MAX_HOLDERS x LockHolder, kept as bytes here (parsed by LockHolders only for shared
    # locks: every lock operation parses this block, and the holders are rarely needed)
    "holders" / Bytes(MAX_HOLDERS * 32),  # 0x44
    "unknown144" / Bytes(32),  # 0x144
    "gblNumHolders" / Int32ul,  # 0x164
    "gblGen" / Int64ul,  # 0x168
    "gblBrk" / Int32ul,  # 0x170
)  # 0x174

LOCK_FIELDS_SIZE = 0x174


def lock_block(size: int = SECTOR) -> Struct:
    """The lock block in a metadata unit of ``size`` bytes (512 on VMFS3/5, mdAlignment on VMFS6);
    bytes after the defined fields are kept as they are (a VMFS6 SFB cluster stores extra data)."""
    return Struct("lock" / LockFields, "extra" / Bytes(size - LOCK_FIELDS_SIZE))


LockBlock = lock_block(SECTOR)


def parse_lock(raw: bytes) -> Container:
    """The lock fields of a sector that starts with a lock block."""
    return fast(LockBlock).parse(raw[:SECTOR]).lock


def build_lock(lock: Container, raw: bytes) -> bytes:
    """The sector ``raw`` with its lock fields replaced by ``lock`` (the rest kept)."""
    return fast(LockBlock).build(Container(lock=lock, extra=raw[LOCK_FIELDS_SIZE:SECTOR]))
