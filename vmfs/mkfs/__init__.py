"""Make a VMFS5 volume: LVM headers, FS descriptor, heartbeats, system files, resources.

``plan(device_sizes, options)`` only computes the :class:`Layout` (a dry run prints it);
``format_volume(devices, options)`` checks the devices, writes, and returns the same layout with
the number of bytes written.  The library never prints.

What is written is what ESXi 5 writes on a fresh volume, as far as the real VMFS5 sample shows it
(vmfs-format.md 2, 3, 4, 6, 8, 9.1, 12): same offsets, same resource geometry, every FD and every
cluster header fully initialised with its own address, all 2048 heartbeat slots free with their
own address, block order ``.vh.sf``, ``.fdc.sf``, root, ``.fbb.sf``, ``.pbc.sf``, ``.sbc.sf``,
``.pb2.sf``, ``.sdd.sf``.  ``tests/mkfs/test_vs_sample.py`` compares a 256 MiB volume with the
sample field by field.

Block size is 1 MiB and sub-block size 8 KiB, the only VMFS5 values (11.1).

Logical volume
    LVM5 uses whole 256-MiB segments only (2.5): an extent of S bytes contributes
    ``(S - 17 MiB) // 256 MiB`` segments; the rest of the device is left alone.  The volume is
    capped at 2^26 file blocks = 64 TiB (26-bit FB numbers, 7.1).  Each extent has its own LVM
    header; ``firstPE``/``lastPE``/``numPEs`` count 256-MiB segments (vmfs-tools maps by them and
    ignores the PE table) and only the first extent (devZero) carries the SD table of names.
    PE entries are 256 MiB each while an extent has at most 8192 segments (2 TiB), exactly as ESXi
    writes them; a larger extent uses entries of ``k`` segments, ``k = ceil(segments / 8192)``, so
    one PE map always suffices (no extended metadata regions, whose placement no source shows).
    dissect.vmfs and our reader take any entry length from the PE table; vmfs-tools never reads
    it.  Data starts at device 0x1100000 on every extent, which vmfs-tools assumes.

Resource sizing (counts at format time; the files never grow on VMFS5)
    * file blocks: one per MiB of the volume (FB rpc 200, cpg 64);
    * file descriptors: one per 4 MiB, at least 64 (the sample), at most 129024;
    * sub-blocks: one per MiB, at least 256 (the sample), at most 32000 (ESXi's published maximum);
    * pointer blocks: one per GiB, at least 1 (the sample), at most 64512 (published maximum);
    * secondary pointer blocks: 1 (the sample).
    Any count can be overridden.  ``.fdc.sf``, ``.pbc.sf``, ``.sbc.sf`` and ``.pb2.sf`` must stay
    within 256 file blocks so that their FDs map them directly (ZLA 1): a 4.06-MiB cluster group
    holds 2048 FDs or 1024 PBs, so 63 whole groups fit, i.e. 129024 FDs and 64512 PBs; the latter
    is exactly the "Ptr Blocks 64512" ESXi publishes, so ESXi applies the same bound (the
    published "Files 130000" would need 258 blocks).  ``.fbb.sf`` cannot be bounded that way: above
    about 50 TiB its cluster groups need more than 256 blocks, so it is written single-indirect
    (ZLA 3) through pointer blocks taken from ``.pbc.sf`` (cluster 0 onwards, marked used).  Real
    ESXi volumes of that size do the same: vmfs-tools crashes on them for the same reason it
    crashes on ours (it opens ``.fbb.sf`` before ``.pbc.sf``).

Guesses, all marked [O] in vmfs-format.md: lock ``mtime`` of every fresh object is a creation
counter starting at 512 in the order root, ``.fbb.sf``, its clusters, ``.fdc.sf``, its clusters,
``.pbc.sf``..., which reproduces every untouched value of the sample; fresh locks have token 1;
the device header's ``totalBytes`` is the device size - 1 MiB + 512.  The root directory starts
with 3 links (its ``.``, ``..`` and ``.sdd.sf/..``), the rule of vmfs-format.md 11.3; the
sample's 4 includes ``/directory/..``.
"""

from vmfs.mkfs.errors import ExistingDataError
from vmfs.mkfs.format import format_volume
from vmfs.mkfs.layout import (
    ExtentLayout,
    Layout,
    Region,
    ResourceLayout,
    SystemFileLayout,
)
from vmfs.mkfs.options import MkfsOptions
from vmfs.mkfs.planner import plan
from vmfs.mkfs.signatures import Signature, detect_signature

__all__ = [
    "ExistingDataError",
    "ExtentLayout",
    "Layout",
    "MkfsOptions",
    "Region",
    "ResourceLayout",
    "Signature",
    "SystemFileLayout",
    "detect_signature",
    "format_volume",
    "plan",
]
