"""Thin-disk operations on flat (VMFS-style) disks: inflate (``-j``), eager-zero (``-k``) and
punch zeros (``-K``), sections 7.1 and 7.2.

They change how a disk's file is *allocated*, never what it reads, so they work at the storage
level: a backend that can change provisioning natively (:class:`ProvisioningStorage`; VMFS clears
to-be-zeroed flags, allocates blocks) is asked to; otherwise holes are filled with written zeros.
Punching needs :class:`ThinStorage`.  None of them changes the CID: the content is the same.
"""

from __future__ import annotations

from typing import BinaryIO

from vmfs.vmdk.descriptor import Descriptor
from vmfs.vmdk.errors import InvalidArgumentError, UnsupportedError
from vmfs.vmdk.extent import SECTOR
from vmfs.vmdk.flat import FlatExtent
from vmfs.vmdk.layer import Layer, open_layer
from vmfs.vmdk.storage import DiskStorage, ProvisioningStorage, ThinStorage

#: granularity of zero detection for ``punch_zero`` (a host file system block)
PUNCH_BLOCK = 4096


def single_layer(storage: DiskStorage, name: str, *, writable: bool) -> Layer:
    """Open a disk that must not be a snapshot delta (these operations act on one layer)."""
    layer = open_layer(storage, name, writable=writable)
    if layer.descriptor.has_parent:
        layer.close()
        raise UnsupportedError(f"{name}: disk is a snapshot delta (consolidate its snapshots first)")
    return layer


def provisioning_of(desc: Descriptor) -> str:
    """The allocation a disk's descriptor asks for: thin, zeroedthick or eagerzeroedthick."""
    if desc.thin_provisioned or desc.create_type == "vmfsThin":
        return "thin"
    if desc.create_type == "vmfsEagerZeroedThick":
        return "eagerzeroedthick"
    return "zeroedthick"


def _flat_extents(layer: Layer, what: str) -> list[FlatExtent]:
    exts = [e for e in layer.extents if isinstance(e, FlatExtent)]
    if len(exts) != len(layer.extents) or layer.descriptor.create_type.startswith("vmfsRaw"):
        raise UnsupportedError(f"{layer.name}: {what} applies to flat (VMFS) disks only")
    return exts


def _fill_holes(storage: DiskStorage, ext: FlatExtent, provisioning: str) -> None:
    if isinstance(storage, ProvisioningStorage):
        storage.set_provisioning(ext.name, provisioning)
        return
    if not isinstance(storage, ThinStorage):
        return  # nothing is known to be unallocated
    end = (ext.offset + ext.capacity) * SECTOR
    pos = ext.offset * SECTOR
    holes = []
    for start, length in storage.allocated_ranges(ext.name):
        if start > pos:
            holes.append((pos, min(start, end) - pos))
        pos = max(pos, start + length)
    if pos < end:
        holes.append((pos, end - pos))
    with storage.open(ext.name, "r+b") as fh:
        for start, length in holes:
            fh.seek(start)
            while length > 0:
                n = min(length, 1 << 20)
                fh.write(bytes(n))
                length -= n


def inflate_disk(storage: DiskStorage, name: str) -> None:
    """Allocate every block of a thin disk; it becomes eager-zeroed thick (``vmkfstools -j``)."""
    layer = single_layer(storage, name, writable=True)
    try:
        desc = layer.descriptor
        if provisioning_of(desc) != "thin":
            raise InvalidArgumentError(f"{name}: disk is not thin provisioned")
        for ext in _flat_extents(layer, "inflating"):
            _fill_holes(storage, ext, "eagerzeroedthick")
        desc.remove("ddb.thinProvisioned")
        if desc.create_type == "vmfsThin":
            desc.set("createType", "vmfsEagerZeroedThick")
        layer.save_descriptor()
    finally:
        layer.close()


def eager_zero(storage: DiskStorage, name: str) -> None:
    """Zero every block not yet zeroed in a zeroedthick disk (``vmkfstools -k``).  On a host file
    system, preallocated blocks already read as zeros; only holes need writing."""
    layer = single_layer(storage, name, writable=True)
    try:
        if provisioning_of(layer.descriptor) == "thin":
            raise InvalidArgumentError(f"{name}: disk is thin provisioned (inflate it with -j)")
        for ext in _flat_extents(layer, "eager zeroing"):
            _fill_holes(storage, ext, "eagerzeroedthick")
        if layer.descriptor.create_type in ("vmfsPreallocated",):
            layer.descriptor.set("createType", "vmfsEagerZeroedThick")
            layer.save_descriptor()
    finally:
        layer.close()


def _zero_runs(
    storage: ThinStorage, name: str, fh: BinaryIO, start: int, end: int, block: int
) -> list[tuple[int, int]]:
    """Byte ranges of ``[start, end)`` that read as zeros, in ``block`` steps from ``start``: the
    storage's holes as they are, and every all-zero block inside its data ranges (read to know)."""
    runs: list[tuple[int, int]] = []

    def add(offset: int, length: int) -> None:
        if length <= 0:
            return
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + length)
        else:
            runs.append((offset, length))

    zero_block = bytes(block)
    pos = start
    for offset, length in storage.allocated_ranges(name):
        lo = start + (max(offset, start) - start) // block * block
        hi = min(end, start + -(-(min(offset + length, end) - start) // block) * block)
        if hi <= pos:
            continue
        add(pos, lo - pos)  # a hole, or blocks preallocated but never written
        pos = max(pos, lo)
        while pos < hi:
            fh.seek(pos)
            chunk = fh.read(min(1 << 20, hi - pos)) or b""
            if not chunk:
                break
            for off in range(0, len(chunk), block):
                piece = chunk[off : off + block]
                if piece == zero_block[: len(piece)]:
                    add(pos + off, len(piece))
            pos += len(chunk)
    add(pos, end - pos)
    return runs


def punch_zero(storage: DiskStorage, name: str, *, block: int = PUNCH_BLOCK) -> int:
    """Deallocate every all-zero block of a flat disk, which becomes thin (``vmkfstools -K``).
    Returns the number of bytes of the disk that are now unallocated (ranges that already were
    holes are punched again and counted: a host file system does not tell preallocated-but-unwritten
    blocks from holes)."""
    if not isinstance(storage, ThinStorage):
        raise UnsupportedError(f"{name}: the storage cannot deallocate blocks")
    layer = single_layer(storage, name, writable=True)
    punched = 0
    try:
        for ext in _flat_extents(layer, "punching zeros"):
            base = ext.offset * SECTOR
            with storage.open(ext.name, "rb") as fh:
                runs = _zero_runs(storage, ext.name, fh, base, base + ext.capacity * SECTOR, block)
            for start, length in runs:
                storage.punch_zero(ext.name, start, length)
                punched += length
        desc = layer.descriptor
        if desc.create_type.startswith("vmfs") and not desc.thin_provisioned:
            desc.set("ddb.thinProvisioned", "1")
            layer.save_descriptor()
    finally:
        layer.close()
    return punched
