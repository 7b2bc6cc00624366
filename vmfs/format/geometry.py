"""Sizes derived from the FS descriptor, computed once per volume.

Every VMFS3/5/6 difference in sizes and offsets is settled here (vmfs-format.md sections 4.1, 6,
8.1, 8.2); the rest of the library asks the geometry instead of testing the version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmfs.errors import CorruptError, UnsupportedError
from vmfs.format.address import AddressCodec5, AddressCodec6
from vmfs.ondisk.common import SECTOR
from vmfs.ondisk.fsdesc import CONFIG_DENSE_SBPC, FS_DESCRIPTOR_OFFSET, VMFS6_MIN_MAJOR
from vmfs.ondisk.heartbeat import HB_SLOTS_VMFS5, HB_SLOTS_VMFS6, HEARTBEAT_REGION_OFFSET
from vmfs.ondisk.structset import StructSet, structset

MIB = 1 << 20
#: LFB size that sets the VMFS6 SFB resources-per-cluster (section 6.5).
LFB_SPAN = 512 * MIB


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class Geometry:
    version: int  # 3, 5 or 6
    block_size: int  # file block (VMFS6: SFB) size
    sub_block_size: int
    md_size: int  # metadata unit: 512 or mdAlignment
    fdc_cgo: int  # bootstrap clusterGroupOffset of .fdc.sf
    fdc_cpg: int  # bootstrap clustersPerGroup of .fdc.sf
    lfb_shift: int = 0
    dense_sbpc: bool = True
    block_shift: int = field(init=False)
    fd_size: int = field(init=False)
    fd_meta_offset: int = field(init=False)
    fd_data_offset: int = field(init=False)
    resident_capacity: int = field(init=False)
    ptr_array_offset: int = field(init=False)  # within the FD
    ptr_count: int = field(init=False)
    addr_width: int = field(init=False)
    pb_size: int = field(init=False)
    ptrs_per_pb: int = field(init=False)
    cluster_header_size: int = field(init=False)
    hb_slot_size: int = field(init=False)
    hb_slots: int = field(init=False)
    fdc_start: int = field(init=False)
    sfb_rpc: int = field(init=False)
    lfb_size: int = field(init=False)
    structs: StructSet = field(init=False)
    codec: AddressCodec5 | AddressCodec6 = field(init=False)

    def __post_init__(self) -> None:
        if not _is_pow2(self.block_size) or not _is_pow2(self.sub_block_size):
            raise CorruptError("FS descriptor", FS_DESCRIPTOR_OFFSET, "block sizes are not powers of two")
        if not (_is_pow2(self.md_size) and SECTOR <= self.md_size <= 1 << 16):
            raise CorruptError("FS descriptor", FS_DESCRIPTOR_OFFSET, f"bad metadata alignment {self.md_size}")
        if not (4096 <= self.block_size <= 1 << 30) or self.sub_block_size > self.block_size:
            raise CorruptError(
                "FS descriptor", FS_DESCRIPTOR_OFFSET, f"implausible block size {self.block_size}"
            )
        self.block_shift = self.block_size.bit_length() - 1
        vmfs6 = self.version == 6
        m = self.md_size
        if vmfs6:
            self.fd_size = 2 * m
            self.fd_meta_offset = m
            self.fd_data_offset = m + SECTOR
            self.resident_capacity = m - SECTOR
            ptr_bytes = 2560 if m <= 4096 else m // 2
            self.ptr_array_offset = self.fd_size - ptr_bytes
            self.addr_width = 8
            self.ptr_count = ptr_bytes // 8
            self.pb_size = 0x10000 if m < 0x10000 else m
            self.ptrs_per_pb = self.pb_size // 8
            self.cluster_header_size = 2 * m
            self.hb_slot_size = m
            self.hb_slots = HB_SLOTS_VMFS6
            self.fdc_start = _round_up(HEARTBEAT_REGION_OFFSET + HB_SLOTS_VMFS6 * m, MIB)
            self.sfb_rpc = min(8192, LFB_SPAN // self.block_size)
            self.lfb_size = self.block_size << self.lfb_shift
            self.codec = AddressCodec6(self.sfb_rpc, self.lfb_shift)
        else:
            self.fd_size = 0x800
            self.fd_meta_offset = SECTOR
            self.fd_data_offset = 2 * SECTOR
            self.resident_capacity = 0x400 if self.version >= 5 else 0
            self.ptr_array_offset = 2 * SECTOR
            self.addr_width = 4
            self.ptr_count = 256
            self.pb_size = 0x1000
            self.ptrs_per_pb = 1024
            self.cluster_header_size = 2 * SECTOR
            self.hb_slot_size = SECTOR
            self.hb_slots = HB_SLOTS_VMFS5
            bs = self.block_size
            self.fdc_start = bs * ((bs + 0x3FFFFF) // bs)
            self.sfb_rpc = 0
            self.lfb_size = 0
            self.codec = AddressCodec5(self.dense_sbpc)
        self.structs = structset(vmfs6, self.md_size)

    @property
    def vmfs6(self) -> bool:
        return self.version == 6

    @property
    def sub_block_file_max(self) -> int:
        """Largest file kept in sub-blocks (ZLA 2).  VMFS3/5: one sub-block, beyond it a file
        moves to file blocks.  VMFS6: up to one file block of sub-blocks; the real sample keeps
        a 0x12000-byte directory in two 64 KiB sub-blocks [V6], the one-file-block bound is [U]."""
        return self.block_size if self.version == 6 else self.sub_block_size

    @property
    def heartbeat_region_size(self) -> int:
        return self.hb_slots * self.hb_slot_size

    def hb_slot_addr(self, slot: int) -> int:
        return HEARTBEAT_REGION_OFFSET + slot * self.hb_slot_size

    def bootstrap_fd_addr(self, resource: int) -> int:
        """Volume offset of FD (cluster 0, ``resource``) without reading ``.fdc.sf`` (section 8.2)."""
        return (
            self.fdc_start
            + self.fdc_cgo
            + self.fdc_cpg * self.cluster_header_size
            + resource * self.fd_size
        )

    @property
    def max_file_size(self) -> int:
        """Largest file the address modes can map (before the published per-version cap)."""
        direct = self.ptr_count * self.block_size
        if self.version == 3:
            return self.ptr_count * self.ptrs_per_pb * self.block_size
        double = self.ptr_count * self.ptrs_per_pb * self.ptrs_per_pb * self.block_size
        return max(direct, min(double, MAX_FILE_SIZE[self.version]))

    @classmethod
    def from_descriptor(cls, desc: object, lvm_major: int | None) -> Geometry:
        major = desc.majorVersion  # type: ignore[attr-defined]
        if major >= VMFS6_MIN_MAJOR:
            version = 6
        elif lvm_major == 3 or (lvm_major is None and major < 14):
            version = 3
        else:
            version = 5
        if version == 6:
            md = desc.mdAlignment  # type: ignore[attr-defined]
            if md == 0:
                raise CorruptError("FS descriptor", FS_DESCRIPTOR_OFFSET, "VMFS6 volume without mdAlignment")
        else:
            md = SECTOR
        if major > 24 + 10:
            raise UnsupportedError(f"unknown VMFS major version {major}")
        return cls(
            version=version,
            block_size=desc.fileBlockSize,  # type: ignore[attr-defined]
            sub_block_size=desc.subBlockSize,  # type: ignore[attr-defined]
            md_size=md,
            fdc_cgo=desc.fdcClusterGroupOffset,  # type: ignore[attr-defined]
            fdc_cpg=desc.fdcClustersPerGroup,  # type: ignore[attr-defined]
            lfb_shift=desc.sfbToLfbShift if version == 6 else 0,  # type: ignore[attr-defined]
            dense_sbpc=bool(desc.config & CONFIG_DENSE_SBPC),  # type: ignore[attr-defined]
        )


#: Published maximum file sizes (vmfs-format.md 11.1): VMFS5 62 TB as vmkfstools prints it,
#: VMFS6 64 TiB; VMFS3 is bounded by its single-indirect mapping.
MAX_FILE_SIZE = {3: 1 << 62, 5: 69201586814976, 6: 70368744177664}


def _round_up(value: int, unit: int) -> int:
    return (value + unit - 1) // unit * unit
