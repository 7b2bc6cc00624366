"""Allocation from the resource bitmaps (vmfs-format.md 6.3, 6.4, 6.7).

Allocating or freeing a resource rewrites the metadata of its cluster header (bitmap, free
count, next/first-free index) inside the caller's transaction, so the bitmap change commits
atomically with the pointer that uses it.  Clusters are scanned from a cursor that moves
forward; a total free count kept in memory answers ENOSPC without a scan.

VMFS3/5 clusters keep 1 bit per resource.  VMFS6 clusters (``dmcr``) keep ``bitsPerResource``
bits: 1 for FDs, sub-blocks, PB2s and journal blocks, 2 for small file blocks, whose clusters
live inside the large-file-block resource (:class:`vmfs.volume.resources.ResourceFile` finds
them); :data:`vmfs.ondisk.resource.FREE_STATE` says what "free" is.  Large file blocks are not
allocated (every LFB of a volume we make is converted into an SFB cluster).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from vmfs.errors import BusyError, CorruptError, NoSpaceError, UnsupportedError
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import fast
from vmfs.volume.resources import RESOURCE_NAMES, Cluster, ResourceFile

if TYPE_CHECKING:
    from vmfs.cluster.transaction import Transaction
    from vmfs.volume.volume import Volume


class ResourceAllocator:
    def __init__(self, volume: Volume, res: ResourceFile, host_uuid: str | None = None,
                 owner: Allocators | None = None) -> None:
        v6 = volume.geometry.vmfs6
        if res.bits not in R.FREE_STATE or (res.bits != 1 and not v6) or res.kind == R.RES_LFB:
            raise UnsupportedError(f"allocation in {res.name} ({res.bits}-bit resources) is not supported")
        self.volume = volume
        self.v6 = v6
        self.bits = res.bits
        self.free_state = R.FREE_STATE[res.bits]
        self.res = res
        # hosts start their search in different clusters so they rarely contend for one lock
        self.cursor = zlib.crc32(host_uuid.encode()) % max(res.num_clusters, 1) if host_uuid is not None else 0
        self._free: int | None = None
        self.kind = res.kind
        #: the Allocators this belongs to, and what grows its resource file when it runs out
        self.owner = owner
        self.grower = owner.grower if owner is not None and owner.grows(res.kind) else None

    # -- cluster I/O through the transaction ------------------------------------------------------

    def _header_offset(self, cluster: int) -> int:
        return self.res.reader.volume_offset(self.res.cluster_header_offset(cluster))

    def read_cluster(self, tx: Transaction | None, cluster: int) -> tuple[Cluster, int]:
        off = self._header_offset(cluster)
        raw = tx.read(off, self.res.ch) if tx is not None else self.volume.device.read(off, self.res.ch)
        cl = self.res.read_cluster(cluster, raw)
        if cl.meta.clusterNum != cluster or cl.total > self.res.rpc:
            raise CorruptError(f"{self.res.name} cluster {cluster} header", off, "inconsistent cluster header")
        return cl, off

    def _is_free(self, bitmap: bytearray, r: int) -> bool:
        return bitmap_is_free(bitmap, r, self.bits)

    def _mark(self, bitmap: bytearray, r: int, free: bool) -> None:
        bitmap_mark(bitmap, r, self.bits, free)

    def _write_meta(self, tx: Transaction, cl: Cluster, header_off: int, bitmap: bytearray) -> None:
        md = self.res.ch // 2
        tx.write(header_off + md, cluster_meta_bytes(self.res, cl.meta, bitmap, cl.total))

    # -- accounting -----------------------------------------------------------------------------

    @property
    def free_count(self) -> int:
        if self._free is None:
            self._free = self.res.usage()[1]
        return self._free

    def _adjust(self, delta: int) -> None:
        if self._free is not None:
            self._free += delta
        self.volume.note_usage_change(self.kind, delta)

    # -- allocate / free ----------------------------------------------------------------------------

    def _lock(self, tx: Transaction, cluster: int, *, wait: float | None) -> bool:
        """Lock a cluster header for the transaction (one cluster at a time per host, so hosts
        allocate from different clusters in parallel).  False when another host holds it."""
        try:
            tx.lock(self._header_offset(cluster), wait=wait)
        except BusyError:
            return False
        return True

    def _lock_now(self, tx: Transaction, cluster: int) -> bool | None:
        """Lock a cluster header without waiting: None when another host holds it, True when
        we took it from the disk just now (what we read before may be stale), False when it was
        ours already (kept or held by this transaction: nobody could change the cluster)."""
        try:
            got = tx.lock(self._header_offset(cluster), wait=0)
        except BusyError:
            return None
        if got is None:
            return False  # no lock manager: a single-host tool, nobody else writes
        held, previous = got
        return held.token != previous

    def allocate(self, tx: Transaction, count: int = 1) -> list[tuple[int, int]]:
        """``count`` free resources as (cluster, resource), marked used in ``tx``."""
        if count <= 0:
            return []
        owner = self.owner
        held = owner.held_back.get(self.kind) if owner is not None else None
        if held and self.free_count - len(held) < count and owner is not None and owner.make_room is not None:
            owner.make_room()  # what is free but held back by the open batch becomes free once it commits
            held = owner.held_back.get(self.kind)
        if self.free_count < count:
            self._free = None  # other hosts may have freed some: count again
            if self.free_count < count and self.grower is not None:
                # a VMFS6 resource file grows (vmfs.cluster.grow); the caller's transaction then
                # allocates from the allocator made for the grown file
                self.grower(tx, self.kind)
                return self.owner[self.kind].allocate(tx, count)
            if self.free_count < count:
                raise NoSpaceError(
                    f"no space left: {count} {RESOURCE_NAMES[self.kind]} wanted, {self.free_count} free"
                )
        got: list[tuple[int, int]] = []
        c = self.cursor
        while True:
            c, busy = self._scan(tx, count, got, held, c)
            if len(got) == count or not held or owner is None or owner.make_room is None:
                break
            owner.make_room()  # only resources the open batch freed were left: commit it, look again
            held = owner.held_back.get(self.kind)
        self.cursor = c
        if len(got) < count:
            if busy:
                raise BusyError(f"{self.res.name}: every cluster with free space is locked by another host")
            raise NoSpaceError(f"no space left: {count} {RESOURCE_NAMES[self.kind]} wanted")
        self._adjust(-count)
        return got

    def _scan(self, tx: Transaction, count: int, got: list[tuple[int, int]], held: set[tuple[int, int]] | None,
              c: int) -> tuple[int, int]:
        """One pass over the clusters from ``c``, adding free resources (not ``held`` back) to
        ``got`` until it has ``count``; returns (cluster where it stopped, clusters found busy)."""
        clusters = self.res.num_clusters
        tried = 0
        busy = 0
        while len(got) < count and tried < clusters:
            cl, off = self.read_cluster(tx, c)
            if cl.free:
                fresh = self._lock_now(tx, c)
                if fresh is None:
                    busy += 1
                    cl = None
                elif fresh:
                    cl, off = self.read_cluster(tx, c)  # taken just now: read again under the lock
            if cl is not None and cl.free:
                bitmap = bytearray(cl.bitmap)
                taken = 0
                for r in range(cl.total):
                    if self._is_free(bitmap, r) and not (held and (c, r) in held):
                        self._mark(bitmap, r, False)
                        got.append((c, r))
                        taken += 1
                        if len(got) == count:
                            break
                if taken:
                    self._write_meta(tx, cl, off, bitmap)
                elif held and any((c, r) in held and self._is_free(bitmap, r) for r in range(cl.total)):
                    pass  # free only by resources the open batch freed: not ours to hand out yet
                elif self.bits != 1:
                    # the count says free, no resource is in the state we know as free: a volume
                    # whose 2-bit encoding is not ours (vmfs-format.md 6.4 [U]); never guess
                    raise UnsupportedError(
                        f"{self.res.name} cluster {c}: {cl.free} free by its count, none in the free state "
                        f"{self.free_state} this writer knows"
                    )
            if len(got) < count:
                c = (c + 1) % clusters
                tried += 1
        return c, busy

    def free(self, tx: Transaction, items: list[tuple[int, int]]) -> None:
        by_cluster: dict[int, list[int]] = {}
        for c, r in items:
            self.res.check(c, r)
            by_cluster.setdefault(c, []).append(r)
        for c, resources in sorted(by_cluster.items()):
            self._lock(tx, c, wait=None) or self._busy(c)
            cl, off = self.read_cluster(tx, c)
            bitmap = bytearray(cl.bitmap)
            for r in resources:
                if self._is_free(bitmap, r):
                    raise CorruptError(f"{self.res.name} cluster {c}", off, f"resource {r} freed twice")
                self._mark(bitmap, r, True)
            self._write_meta(tx, cl, off, bitmap)
        self._adjust(len(items))
        owner = self.owner
        if owner is not None and owner.holding:
            owner.held_back.setdefault(self.kind, set()).update(items)

    def _busy(self, cluster: int) -> None:
        raise BusyError(f"{self.res.name} cluster {cluster} is locked by another host")

    def free_if_used(self, tx: Transaction, cluster: int, resource: int) -> bool:
        """Free one resource unless it is already free (recovery of a half-done allocation)."""
        self._lock(tx, cluster, wait=None) or self._busy(cluster)
        if self.is_free(tx, cluster, resource):
            return False
        self.free(tx, [(cluster, resource)])
        return True

    def is_free(self, tx: Transaction | None, cluster: int, resource: int) -> bool:
        cl, _ = self.read_cluster(tx, cluster)
        return self._is_free(bytearray(cl.bitmap), resource)


def bitmap_is_free(bitmap: bytes | bytearray, r: int, bits: int) -> bool:
    """Whether resource ``r`` is free in a cluster bitmap of ``bits`` bits per resource."""
    if bits == 1:
        return bool(bitmap[r >> 3] >> (r & 7) & 1)
    return _state(bitmap, r, bits) == R.FREE_STATE[bits]


def bitmap_mark(bitmap: bytearray, r: int, bits: int, free: bool) -> None:
    """Mark resource ``r`` free or used (state 0) in place."""
    if bits == 1:
        if free:
            bitmap[r >> 3] |= 1 << (r & 7)
        else:
            bitmap[r >> 3] &= ~(1 << (r & 7))
    else:
        _set_state(bitmap, r, bits, R.FREE_STATE[bits] if free else 0)


def cluster_meta_bytes(res: ResourceFile, meta: object, bitmap: bytes | bytearray, total: int) -> bytes:
    """The cluster metadata ``meta`` (parsed by ``res.meta_struct``) with ``bitmap`` in it and the
    free count and first-free index it implies: VMFS5 keeps ``bitmap``/``nextFreeIdx``, VMFS6
    the bitmap at the start of ``body`` and ``firstFree`` (vmfs-format.md 6.3, 6.4).  The one
    rule the allocator and vmfs-fsck's repairs both write by."""
    bits = res.bits
    free_list = [r for r in range(total) if bitmap_is_free(bitmap, r, bits)]
    free = len(free_list)
    first = free_list[0] if 0 < free < total else 0
    if res.volume.geometry.vmfs6:
        body = bytearray(meta.body)  # type: ignore[attr-defined]
        body[: len(bitmap)] = bitmap
        meta.body = bytes(body)  # type: ignore[attr-defined]
        meta.firstFree = first  # type: ignore[attr-defined]
    else:
        meta.bitmap = bytes(bitmap)  # type: ignore[attr-defined]
        meta.nextFreeIdx = first  # type: ignore[attr-defined]
    meta.freeResources = free  # type: ignore[attr-defined]
    return fast(res.meta_struct).build(meta)


def _state(bitmap: bytes | bytearray, r: int, bits: int) -> int:
    """The ``bits``-bit state of resource ``r``, packed LSB first (vmfs-format.md 6.4)."""
    bit = r * bits
    word = int.from_bytes(bitmap[bit >> 3 : (bit >> 3) + 2], "little")
    return (word >> (bit & 7)) & ((1 << bits) - 1)


def _set_state(bitmap: bytearray, r: int, bits: int, value: int) -> None:
    bit = r * bits
    lo = bit >> 3
    width = 2 if lo + 1 < len(bitmap) else 1
    word = int.from_bytes(bitmap[lo : lo + width], "little")
    mask = ((1 << bits) - 1) << (bit & 7)
    word = (word & ~mask) | (value << (bit & 7))
    bitmap[lo : lo + width] = word.to_bytes(width, "little")


class Allocators:
    """One allocator per writable resource type of a volume."""

    def __init__(self, volume: Volume, host_uuid: str | None = None) -> None:
        self.volume = volume
        #: spreads hosts' first allocation over the clusters
        self.host_uuid = host_uuid
        self._by_kind: dict[int, ResourceAllocator] = {}
        #: resources freed by the host's open batch (group commit, vmfs.cluster.batch), by kind:
        #: not allocated again until the batch commits; filled while ``holding``
        self.held_back: dict[int, set[tuple[int, int]]] = {}
        self.holding = False
        #: commits the open batch and empties ``held_back`` (set by the attachment)
        self.make_room: Callable[[], None] | None = None
        #: grows a VMFS6 resource file in a transaction (set by the host's attachment)
        self.grower: Callable[[Transaction, int], object] | None = None
        self.growable: frozenset[int] = frozenset()

    def grows(self, kind: int) -> bool:
        return self.grower is not None and kind in self.growable

    def __getitem__(self, kind: int) -> ResourceAllocator:
        alloc = self._by_kind.get(kind)
        if alloc is None:
            alloc = self._by_kind[kind] = ResourceAllocator(
                self.volume, self.volume.resources[kind], self.host_uuid, self
            )
        return alloc

    def forget(self, kind: int) -> None:
        """The resource file of ``kind`` changed (it grew): the next allocation starts afresh."""
        self._by_kind.pop(kind, None)

    def reset(self) -> None:
        """Forget cached counts (after an aborted transaction or another host's changes)."""
        self._by_kind.clear()


__all__ = ["Allocators", "R", "ResourceAllocator", "bitmap_is_free", "bitmap_mark", "cluster_meta_bytes"]
