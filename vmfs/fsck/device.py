"""The device under the library's :class:`~vmfs.volume.volume.Volume` while vmfs-fsck runs.

It passes every read and write through to the volume below, with two corrections in what reads
return:

* **patches**: sectors whose bytes are replaced: a resource file header that pass 1 rebuilt from
  the cluster headers, a lock block (of an FD or a cluster) whose type or own address is damaged,
  an FD whose ``descAddr`` is (without them the library could not open the volume, read the FD,
  or take the lock).  A write over a patched range goes to the volume and becomes the patch's new
  content.
* **guards** (repair only): cluster metadata (a VMFS5 sector, a VMFS6 metadata unit) in which
  resources that the check found in use are shown as allocated even where the on-disk bitmap
  says "free", with a sound cluster number, resource count and free count.  The library's
  allocators (the journal block taken when the volume is opened read-write, blocks for clones,
  /lost+found) then never hand out a block that a file still uses, nor refuse a damaged
  cluster.  A guard is applied on every read, so it survives writes to its metadata (a journal
  replay, an allocation); when an allocator writes it, the written image includes the
  correction, which is the right bitmap anyway.  Pass 5 compares the raw on-disk bytes, not
  this view.

Nothing here is a repair by itself: every repair goes through the library's transactions.
"""

from __future__ import annotations

from vmfs.cluster.alloc import bitmap_mark, cluster_meta_bytes
from vmfs.device.base import BlockDevice
from vmfs.ondisk.common import fast
from vmfs.volume.resources import ResourceFile

#: resources shown as used, corrected fields, and the resource file the metadata belongs to
_Guard = tuple[frozenset[int], tuple[tuple[str, int], ...], ResourceFile]


class FsckDevice(BlockDevice):
    def __init__(self, base: BlockDevice, *, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self.base = base
        self.name = base.name
        self._patches: dict[int, bytearray] = {}
        self._guards: dict[int, _Guard] = {}

    @property
    def size(self) -> int:
        return self.base.size

    # -- corrections ------------------------------------------------------------------------------

    def patch(self, offset: int, data: bytes) -> None:
        self._patches[offset] = bytearray(data)

    def guard(
        self, meta_offset: int, resources: set[int] | frozenset[int], fields: dict[str, int] | None,
        res: ResourceFile,
    ) -> None:
        """Show ``resources`` of the cluster of ``res`` whose metadata is at ``meta_offset`` as
        allocated, with ``fields`` (cluster number, resource count) put right and the free count
        and first-free index recomputed, so that the library's allocators accept the cluster."""
        if resources or fields:
            self._guards[meta_offset] = (frozenset(resources), tuple(sorted((fields or {}).items())), res)

    @staticmethod
    def _guarded(unit: bytes, guard: _Guard) -> bytes:
        resources, fields, res = guard
        meta = fast(res.meta_struct).parse(unit)
        for k, v in fields:
            meta[k] = v
        total = min(meta.totalResources, res.rpc)
        if res.volume.geometry.vmfs6:
            bitmap = bytearray(meta.body[: res.bitmap_size])
        else:
            bitmap = bytearray(meta.bitmap)
            for r in range(total, len(bitmap) * 8):  # VMFS5 keeps no bits past the last resource
                bitmap[r >> 3] &= ~(1 << (r & 7))
        for r in resources:
            if r < total:
                bitmap_mark(bitmap, r, res.bits, free=False)
        return cluster_meta_bytes(res, meta, bitmap, total)

    # -- BlockDevice --------------------------------------------------------------------------------

    def _read(self, offset: int, length: int) -> bytes:
        data = self.base.read(offset, length)
        if not self._patches and not self._guards:
            return data
        end = offset + length
        buf: bytearray | None = None
        for start, image in self._patches.items():
            stop = start + len(image)
            if start < end and stop > offset:
                if buf is None:
                    buf = bytearray(data)
                lo, hi = max(start, offset), min(stop, end)
                buf[lo - offset : hi - offset] = image[lo - start : hi - start]
        for start, guard in self._guards.items():
            size = guard[2].meta_size
            stop = start + size
            if start < end and stop > offset:
                if buf is None:
                    buf = bytearray(data)
                if start >= offset and stop <= end:
                    sector = bytes(buf[start - offset : stop - offset])
                else:
                    sector = self.base.read(start, size)
                fixed = self._guarded(sector, guard)
                lo, hi = max(start, offset), min(stop, end)
                buf[lo - offset : hi - offset] = fixed[lo - start : hi - start]
        return bytes(buf) if buf is not None else data

    def _write(self, offset: int, data: bytes) -> None:
        self.base.write(offset, data)
        end = offset + len(data)
        for start, image in self._patches.items():
            stop = start + len(image)
            if start < end and stop > offset:
                lo, hi = max(start, offset), min(stop, end)
                image[lo - start : hi - start] = data[lo - offset : hi - offset]

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        end = offset + len(new)
        touched = any(s < end and s + len(i) > offset for s, i in self._patches.items()) or any(
            s < end and s + g[2].meta_size > offset for s, g in self._guards.items()
        )
        if not touched:
            return self.base.compare_and_write(offset, expected, new)
        if self._read(offset, len(expected)) != expected:
            return False
        self._write(offset, new)
        return True

    def flush(self) -> None:
        self.base.flush()

    def close(self) -> None:
        self.base.close()
