"""Builds the structures whose sizes depend on the metadata unit of a volume.

VMFS3/5 metadata units are 512-byte sectors; VMFS6 units are ``mdAlignment`` bytes (4 KiB in
every known volume).  Lock blocks, FDs, cluster headers and heartbeat slots are one or two units,
so they are declared here once per unit size (the pyelftools ``ELFStructs`` pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from construct import Bytes, Struct

from vmfs.ondisk.common import SECTOR
from vmfs.ondisk.filedesc import FILE_METADATA_SIZE, FileMetadata
from vmfs.ondisk.heartbeat import Heartbeat
from vmfs.ondisk.lock import lock_block
from vmfs.ondisk.resource import ClusterMeta5, cluster_meta6


@dataclass(frozen=True)
class StructSet:
    md_size: int
    lock: Struct  # one metadata unit: lock fields + kept bytes
    file_descriptor: Struct  # lock unit, metadata, data area
    cluster_meta: Struct  # metadata unit of a resource cluster header
    heartbeat_slot: Struct



@cache
def structset(vmfs6: bool, md_size: int) -> StructSet:
    lock = lock_block(md_size)
    if vmfs6:
        fd_size = 2 * md_size
        data_size = fd_size - md_size - FILE_METADATA_SIZE
        cluster_meta = cluster_meta6(md_size)
    else:
        fd_size = 0x800
        data_size = fd_size - 2 * SECTOR
        cluster_meta = ClusterMeta5
    fd = Struct(
        "lockBlock" / lock,  # 0x000 lock unit
        "meta" / FileMetadata,  # +md_size
        "data" / Bytes(data_size),  # resident data or pointer array (ZLA decides)
    )
    heartbeat = Struct("hb" / Heartbeat, "extra" / Bytes(md_size - SECTOR))
    return StructSet(md_size, lock, fd, cluster_meta, heartbeat)
