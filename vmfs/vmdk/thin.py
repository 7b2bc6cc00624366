"""Thin-disk operations on flat (VMFS-style) disks: inflate (``-j``), eager-zero (``-k``) and
punch zeros (``-K``), sections 7.1 and 7.2.

They change how a disk's file is *allocated*, never what it reads, so they work at the storage
level: a backend that can change provisioning natively (:class:`ProvisioningStorage`; VMFS clears
to-be-zeroed flags, allocates blocks) is asked to; otherwise holes are filled with written zeros.
Punching needs :class:`ThinStorage`.  None of them changes the CID: the content is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import BinaryIO

from vmfs.vmdk.descriptor import Descriptor
from vmfs.vmdk.errors import InvalidArgumentError, UnsupportedError
from vmfs.vmdk.extent import SECTOR
from vmfs.vmdk.flat import FlatExtent
from vmfs.vmdk.layer import Layer, open_layer
from vmfs.vmdk.storage import DiskStorage, ProvisioningStorage, ThinStorage

#: granularity of zero detection for ``punch_zero`` (a host file system block)
PUNCH_BLOCK = 4096
#: bytes allocated or scanned between two progress calls (each its own storage call), at least...
PROVISION_CHUNK = 16 << 20
#: ...and at least, when zeros are written (each chunk costs a few journal commits on VMFS, whose
#: syncs would otherwise double the time of an eager zeroing)
MIN_ZERO_CHUNK = 64 << 20
#: ...and at most, for work that writes or reads the bytes (a Ctrl-C waits for one chunk)
MAX_IO_CHUNK = 256 << 20
#: ...and at most, for lazily zeroed allocation (metadata only)
MAX_META_CHUNK = 4 << 30
#: a long job is cut into about this many chunks: enough for every percent, few enough that the
#: cost of each storage call (its transactions, on VMFS) stays small beside the work
CHUNKS = 256

#: ``progress(done, total)`` in sectors; it may raise (Ctrl-C) to stop between two chunks
Progress = Callable[[int, int], None]


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


def chunk_size(span: int, low: int, high: int, align: int = PROVISION_CHUNK) -> int:
    """Bytes per step for a job of ``span`` bytes: about ``span / CHUNKS``, a multiple of
    ``align`` between ``low`` and ``high``."""
    size = min(max(span // CHUNKS, low), high)
    return max(size // align, 1) * align


def _holes_in(storage: ThinStorage, name: str, start: int, end: int) -> list[tuple[int, int]]:
    holes = []
    pos = start
    for offset, length in storage.allocated_ranges(name):
        if offset >= end:
            break
        if offset > pos:
            holes.append((pos, offset - pos))
        pos = max(pos, offset + length)
    if pos < end:
        holes.append((pos, end - pos))
    return holes


def provision_range(
    storage: DiskStorage,
    name: str,
    start: int,
    end: int,
    provisioning: str,
    *,
    progress: Progress | None = None,
    done: int = 0,
    total: int = 0,
) -> int:
    """Allocate bytes ``[start, end)`` of file ``name`` per ``provisioning``, one
    :func:`chunk_size` at a time: each chunk is its own storage call (its own transactions on
    VMFS) and leaves the file consistent, so ``progress(done, total)`` (in sectors) is called
    between chunks and may raise to stop there.  Chunks already allocated cost a look only, so
    running the operation again after a stop finishes it.  Returns ``done`` plus the sectors
    covered."""
    if progress is not None:
        progress(done, total)
    if provisioning == "thin" or end <= start:
        done += max(end - start, 0) // SECTOR
        if progress is not None:
            progress(done, total)
        return done
    holes = None
    if not isinstance(storage, ProvisioningStorage) and isinstance(storage, ThinStorage):
        holes = _holes_in(storage, name, start, end)  # found once: only this walk fills them
    if provisioning == "zeroedthick":
        step = chunk_size(end - start, PROVISION_CHUNK, MAX_META_CHUNK)
    else:
        step = chunk_size(end - start, MIN_ZERO_CHUNK, MAX_IO_CHUNK)
    for pos in range(start, end, step):
        stop = min(pos + step, end)
        if isinstance(storage, ProvisioningStorage):
            storage.set_provisioning(name, provisioning, offset=pos, length=stop - pos)
        elif holes is not None:
            _write_zeros(storage, name, holes, pos, stop)
        done += (stop - pos) // SECTOR
        if progress is not None:
            progress(done, total)
    return done


def _write_zeros(storage: DiskStorage, name: str, holes: list[tuple[int, int]], start: int, end: int) -> None:
    with storage.open(name, "r+b") as fh:
        for offset, length in holes:
            lo, hi = max(offset, start), min(offset + length, end)
            fh.seek(lo)
            while lo < hi:
                n = min(hi - lo, 1 << 20)
                fh.write(bytes(n))
                lo += n


def _fill_holes(storage: DiskStorage, layer: Layer, what: str, progress: Progress | None) -> None:
    """Allocate every flat extent of ``layer`` fully (eager-zeroed), reporting disk sectors."""
    exts = _flat_extents(layer, what)
    total = sum(ext.capacity for ext in exts)
    done = 0
    for ext in exts:
        base = ext.offset * SECTOR
        done = provision_range(storage, ext.name, base, base + ext.capacity * SECTOR, "eagerzeroedthick",
                               progress=progress, done=done, total=total)


def inflate_disk(storage: DiskStorage, name: str, *, progress: Progress | None = None) -> None:
    """Allocate every block of a thin disk; it becomes eager-zeroed thick (``vmkfstools -j``).
    ``progress(done, total)`` in sectors, between chunks; if it raises, the disk stays thin in its
    descriptor with the blocks before the stop allocated (consistent; run again to finish)."""
    layer = single_layer(storage, name, writable=True)
    try:
        desc = layer.descriptor
        if provisioning_of(desc) != "thin":
            raise InvalidArgumentError(f"{name}: disk is not thin provisioned")
        _fill_holes(storage, layer, "inflating", progress)
        desc.remove("ddb.thinProvisioned")
        if desc.create_type == "vmfsThin":
            desc.set("createType", "vmfsEagerZeroedThick")
        layer.save_descriptor()
    finally:
        layer.close()


def eager_zero(storage: DiskStorage, name: str, *, progress: Progress | None = None) -> None:
    """Zero every block not yet zeroed in a zeroedthick disk (``vmkfstools -k``).  On a host file
    system, preallocated blocks already read as zeros; only holes need writing.  ``progress`` as
    for :func:`inflate_disk` (a stop leaves the blocks after it lazily zeroed)."""
    layer = single_layer(storage, name, writable=True)
    try:
        if provisioning_of(layer.descriptor) == "thin":
            raise InvalidArgumentError(f"{name}: disk is thin provisioned (inflate it with -j)")
        _fill_holes(storage, layer, "eager zeroing", progress)
        if layer.descriptor.create_type in ("vmfsPreallocated",):
            layer.descriptor.set("createType", "vmfsEagerZeroedThick")
            layer.save_descriptor()
    finally:
        layer.close()


def _zero_runs(
    ranges: Iterable[tuple[int, int]], fh: BinaryIO, start: int, end: int, block: int
) -> list[tuple[int, int]]:
    """Byte ranges of ``[start, end)`` that read as zeros, in ``block`` steps from ``start``: the
    holes between the storage's allocated ``ranges`` as they are, and every all-zero block inside
    its data ranges (read to know)."""
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
    for offset, length in ranges:
        if offset >= end:
            break
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


def punch_zero(storage: DiskStorage, name: str, *, block: int = PUNCH_BLOCK, progress: Progress | None = None) -> int:
    """Deallocate every all-zero block of a flat disk, which becomes thin (``vmkfstools -K``).
    Returns the number of bytes of the disk that are now unallocated (ranges that already were
    holes are punched again and counted: a host file system does not tell preallocated-but-unwritten
    blocks from holes).  The disk is scanned and punched one :func:`chunk_size` at a time,
    with ``progress(done, total)`` (sectors) between chunks; if it raises, the disk reads the same
    and the chunks before the stop are punched (run again to finish)."""
    if not isinstance(storage, ThinStorage):
        raise UnsupportedError(f"{name}: the storage cannot deallocate blocks")
    layer = single_layer(storage, name, writable=True)
    punched = 0
    try:
        exts = _flat_extents(layer, "punching zeros")
        total = sum(ext.capacity for ext in exts)
        done = 0
        if progress is not None:
            progress(done, total)
        # chunks start on a zero-detection block and on a multiple of PROVISION_CHUNK (so of a VMFS
        # file block too: a block cut in two by a chunk boundary could only be zeroed, not freed)
        step = chunk_size(total * SECTOR, PROVISION_CHUNK, MAX_IO_CHUNK, math.lcm(block, PROVISION_CHUNK))
        for ext in exts:
            base = ext.offset * SECTOR
            end = base + ext.capacity * SECTOR
            ranges = storage.allocated_ranges(ext.name)  # punching a chunk changes only that chunk
            first = 0
            for pos in range(base, end, step):
                stop = min(pos + step, end)
                while first < len(ranges) and sum(ranges[first]) <= pos:
                    first += 1
                with storage.open(ext.name, "rb") as fh:
                    runs = _zero_runs((ranges[i] for i in range(first, len(ranges))), fh, pos, stop, block)
                for start, length in runs:
                    storage.punch_zero(ext.name, start, length)
                    punched += length
                done += (stop - pos) // SECTOR
                if progress is not None:
                    progress(done, total)
        desc = layer.descriptor
        if desc.create_type.startswith("vmfs") and not desc.thin_provisioned:
            desc.set("ddb.thinProvisioned", "1")
            layer.save_descriptor()
    finally:
        layer.close()
    return punched
