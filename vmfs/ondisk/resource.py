"""Resource files: file header and cluster metadata (vmfs-format.md section 6)."""

from __future__ import annotations

from construct import Bytes, Int16ul, Int32ul, Int64ul, Struct

# Resource type ids (the lock type of a cluster is LOCK_TYPE_BASE + type + 1)
RES_FB = 1  # file blocks (VMFS6: small file blocks)
RES_SB = 2
RES_PB = 3
RES_FD = 4
RES_PB2 = 5
RES_JB = 6
RES_LFB = 7

RES_SIGNATURE = 0x72666D64  # "dmfr": VMFS6 resource file header
CLUSTER_SIGNATURE = 0x72636D64  # "dmcr": VMFS6 cluster metadata
RES_FLAG_HAS_PARENT = 0x2

#: Bytes of the resource header as declared (the header area reaches clusterGroupOffset).
RES_HEADER_SIZE = 0x200

ResourceHeader = Struct(
    "resourcesPerCluster" / Int32ul,  # 0x00 rpc
    "clustersPerGroup" / Int32ul,  # 0x04 cpg
    "clusterGroupOffset" / Int32ul,  # 0x08 cgo
    "resourceSize" / Int32ul,  # 0x0C rsz, 0 = no data in the file
    "clusterGroupSize" / Int32ul,  # 0x10 cgs
    "numResourcesLo" / Int32ul,  # 0x14
    "numClusterGroups" / Int32ul,  # 0x18
    "numResourcesHi" / Int32ul,  # 0x1C
    "signature" / Int32ul,  # 0x20 VMFS6 0x72666D64, VMFS5 0
    "version" / Int32ul,  # 0x24
    "flags" / Int32ul,  # 0x28
    "affinityPerCluster" / Int16ul,  # 0x2C
    "affinityPerResource" / Int16ul,  # 0x2E
    "bitsPerResource" / Int32ul,  # 0x30 VMFS6; 0 on VMFS5 means 1
    "childMetaOffset" / Int32ul,  # 0x34
    "parentResourcesPerCluster" / Int32ul,  # 0x38
    "parentClustersPerGroup" / Int32ul,  # 0x3C
    "parentClusterGroupSize" / Int32ul,  # 0x40
    "unknown44" / Bytes(16),  # 0x44
    "convertedClusters" / Int32ul,  # 0x54
    "reserved" / Bytes(RES_HEADER_SIZE - 0x58),  # 0x58
)

#: VMFS5 bitmap bytes in the cluster metadata (512 resources at most, dissect's layout).
CLUSTER5_BITMAP_SIZE = 64

ClusterMeta5 = Struct(
    "clusterNum" / Int32ul,  # 0x00
    "totalResources" / Int32ul,  # 0x04
    "freeResources" / Int32ul,  # 0x08
    "nextFreeIdx" / Int32ul,  # 0x0C
    "bitmap" / Bytes(CLUSTER5_BITMAP_SIZE),  # 0x10 1 = free, LSB first
    # 0x50: FD clusters count the FDs ever created in them; a new FD's generation is the new
    # count (VMFS5 sample: 7 = generations 1..7 of /directory and its six entries) [O]
    "createCounter" / Int32ul,  # 0x50
    "typeData" / Bytes(12),  # 0x54
    "priority" / Int32ul,  # 0x60
    "reserved" / Bytes(0x200 - 0x64),  # 0x64
)

#: Offset of the allocation bitmap inside VMFS6 cluster metadata.
CLUSTER6_BITMAP_OFFSET = 0x80
#: State of a free resource: 1-bit resources 1 (vmfs-format.md 6.3, 6.4); 2-bit small file
#: blocks 3 ("all ones").  [U] for SFBs: every SFB of the real sample is in use (state 0); our
#: formatter and allocator use 3, and readers use the u16 free counts.
FREE_STATE = {1: 1, 2: 3}


def cluster_meta6_head() -> Struct:
    """The VMFS6 cluster metadata up to its body (bitmap and affinity data): what a reader of
    counts and numbers needs, without the metadata unit's size."""
    return Struct(*cluster_meta6(0x1000).subcons[:-1])


def cluster_meta6(md_size: int) -> Struct:
    """VMFS6 cluster metadata: one metadata unit of ``md_size`` (mdAlignment) bytes."""
    return Struct(
        "reserved00" / Bytes(16),  # 0x00
        "signature" / Int32ul,  # 0x10 0x72636D64
        "priority" / Int32ul,  # 0x14
        "clusterNum" / Int64ul,  # 0x18
        "totalResources" / Int16ul,  # 0x20
        "freeResources" / Int16ul,  # 0x22
        "unknown24" / Int16ul,  # 0x24
        "affinityCount" / Int16ul,  # 0x26
        "unknown28" / Bytes(8),  # 0x28
        "unknown30" / Int32ul,  # 0x30 1 in every cluster seen
        "unknown34" / Bytes(0x24),  # 0x34
        "counter" / Int32ul,  # 0x58
        "mac" / Bytes(6),  # 0x5C
        "changeTime" / Int32ul,  # 0x62
        "unknown66" / Bytes(2),  # 0x66
        # FD clusters count the FDs created in them; a new FD's generation is the new count
        # (VMFS6 sample: 7 = /directory and its six entries, as VMFS5's +0x50) [O]
        "createCounter" / Int32ul,  # 0x68
        "unknown6C" / Bytes(0x10),  # 0x6C
        "firstFree" / Int32ul,  # 0x7C
        "body" / Bytes(md_size - CLUSTER6_BITMAP_OFFSET),  # 0x80 bitmap, then affinity data
    )
