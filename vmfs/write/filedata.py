"""Writing file data and changing file lengths (VMFS3/5 address modes, vmfs-format.md 8.5, 8.6).

A file's address mode follows its length, as ESXi lays files out on VMFS5: resident up to the
FD's data area (1 KiB), one sub-block up to 8 KiB, direct file blocks up to 256 blocks, single
indirect pointer blocks up to 256 × 1024 blocks, double indirect beyond.  Growing converts up one
mode at a time; shrinking converts back down, so freed blocks always return to their resource.

Every metadata change of one step is one transaction.  Data of regular files goes straight to its
blocks *before* the transaction that makes them part of the file commits; directory and symlink
contents are metadata and go through the transaction.  Bytes of the last block beyond the end of
the file are undefined on disk and are zeroed whenever the end of file moves past them, so a
file never shows stale data, even after a crash.

Preallocation: an append to a file held open for writing takes as many further blocks past the end
of file as it has blocks before (so a growing file doubles its runs, as XFS's speculative
preallocation does), up to :data:`MAX_PREALLOC`, in the same transaction, counted in the FD's
``numPreAllocBlocks`` (+0x84), so that the following appends only write data and defer the length
(one journal commit per run of blocks instead of one per block: about 16 for a 2 GiB file of
1 MiB blocks).  The preallocated blocks are always the contiguous
block indexes ``[ceil(length / blockSize), ceil(length / blockSize) + numPreAllocBlocks)``; their
bytes are undefined like the tail of the last block and are zeroed whenever the end of file moves
past them.  Closing the file frees what was not used (:meth:`FileWriter.trim_preallocated`); after a
crash they stay, consistently counted, until the file is truncated or closed again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmfs.errors import CorruptError, FileTooBigError, InvalidArgumentError
from vmfs.format import address as A
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import pack_ints, unpack_ints
from vmfs.volume.filedesc import FileDescriptor

if TYPE_CHECKING:
    from vmfs.cluster.attachment import HostAttachment
    from vmfs.cluster.transaction import Transaction

# address modes in growth order
ORDER = {
    F.ZLA_RESIDENT: 0,
    F.ZLA_SUB_BLOCKS: 1,
    F.ZLA_FILE_BLOCKS: 2,
    F.ZLA_POINTER_BLOCKS: 3,
    F.ZLA_DOUBLE_INDIRECT: 4,
}
BY_ORDER = {v: k for k, v in ORDER.items()}

#: data blocks handled per transaction when allocating or freeing in bulk (keeps every
#: transaction well inside a 1 MiB journal block)
BULK_BLOCKS = 16384
#: most blocks one append preallocates past the end of file (``numPreAllocBlocks`` is a u8)
MAX_PREALLOC = 255


class FileWriter:
    """Changes to one file's data and length, by one host.  Use inside ``attachment.meta_lock``."""

    def __init__(self, attachment: HostAttachment, fd: FileDescriptor) -> None:
        self.attachment = attachment
        self.volume = volume = attachment.volume
        self.fd = fd
        self.geo = volume.geometry
        self.codec = self.geo.codec
        #: directory and symlink contents are metadata: journaled, never written around the log
        self.journaled = fd.type in (F.TYPE_DIRECTORY, F.TYPE_SYMLINK, F.TYPE_SYSFILE)

    # -- modes ----------------------------------------------------------------------------------------

    def mode_for(self, size: int) -> int:
        geo = self.geo
        if self.fd.type == F.TYPE_REGFILE and geo.resident_capacity and size <= geo.resident_capacity:
            return F.ZLA_RESIDENT
        if size <= geo.sub_block_file_max:
            return F.ZLA_SUB_BLOCKS
        if size <= geo.ptr_count * geo.block_size:
            return F.ZLA_FILE_BLOCKS
        if size <= geo.ptr_count * geo.ptrs_per_pb * geo.block_size:
            return F.ZLA_POINTER_BLOCKS
        return F.ZLA_DOUBLE_INDIRECT

    @property
    def meta(self):  # type: ignore[no-untyped-def]
        return self.fd.meta

    def _bs(self) -> int:
        return self.fd.meta.blockSize

    def _blocks_for(self, size: int) -> int:
        """Block indexes inside a length of ``size`` bytes."""
        return -(-size // self._bs())

    def _allocated_end(self) -> int:
        """One past the last block index that may be allocated: the end-of-file block plus the
        preallocated run (only file-block modes preallocate)."""
        m = self.meta
        if self.fd.is_resident:
            return 0
        if m.zla == F.ZLA_SUB_BLOCKS:
            return self._blocks_for(m.fileLength)
        return self._blocks_for(m.fileLength) + m.numPreAllocBlocks

    def _set_length(self, size: int, allocated_end: int) -> None:
        """Set the length, and count the blocks before ``allocated_end`` that now lie past it."""
        m = self.meta
        m.fileLength = size
        if self.fd.is_resident or m.zla == F.ZLA_SUB_BLOCKS:
            m.numPreAllocBlocks = 0
        else:
            m.numPreAllocBlocks = max(0, min(allocated_end - self._blocks_for(size), 255))

    def _mode_capacity(self) -> int:
        """Block indexes the current address mode can map."""
        geo = self.geo
        zla = self.meta.zla
        if zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            cap = geo.ptr_count
        elif zla == F.ZLA_POINTER_BLOCKS:
            cap = geo.ptr_count * geo.ptrs_per_pb
        else:
            cap = geo.ptr_count * geo.ptrs_per_pb * geo.ptrs_per_pb
        return min(cap, geo.max_file_size // self._bs())

    # -- block map editing through the transaction -------------------------------------------------------

    def _pb_place(self, pb: int) -> tuple[int, int, int]:
        """(resource kind, cluster, resource) of a pointer-block address found in a map: ours
        are in ``.pbc.sf`` (VMFS3/5) or 64 KiB sub-blocks of ``.sbc.sf`` (VMFS6), a ``.pb2.sf``
        one is followed too; anything else is corruption."""
        kind = A.kind(pb)
        res_kind = {A.ADDR_PB: R.RES_PB, A.ADDR_PB2: R.RES_PB2}.get(kind)
        if kind == A.ADDR_SB and self.geo.vmfs6:
            res_kind = R.RES_SB
        if res_kind is None or res_kind not in self.volume.resources:
            raise CorruptError(
                f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, f"0x{pb:x} is not a pointer-block address"
            )
        _, c, r = self.codec.split(pb)
        self.volume.resources[res_kind].check(c, r, pb)
        return res_kind, c, r

    def _pb_entries(self, tx: Transaction, pb: int):  # type: ignore[no-untyped-def]
        res_kind, c, r = self._pb_place(pb)
        off = self.volume.resources[res_kind].volume_offset(c, r)
        cached = self.volume._pb_cache.get(pb)
        if cached is None:
            cached = unpack_ints(tx.read(off, self.geo.pb_size), self.geo.addr_width)
            self.volume._pb_cache.put(pb, cached)
        return cached, off

    def _pb_store(self, tx: Transaction, pb: int, entries) -> None:  # type: ignore[no-untyped-def]
        res_kind, c, r = self._pb_place(pb)
        tx.write(self.volume.resources[res_kind].volume_offset(c, r), pack_ints(entries, self.geo.addr_width))
        self.volume._pb_cache.put(pb, entries)

    def _new_pb(self, tx: Transaction, entries: list[int] | None = None) -> int:
        """A new pointer block.  VMFS6 keeps none in ``.pbc.sf`` (ESXi formats it empty and
        vmkfstools reports 0 pointer blocks on VMFS6; vmfs6-tools reads ZLA 3 pointer blocks from
        ``.sbc.sf``): a 64 KiB sub-block holds the 8192 pointers (vmfs-format.md 8.6)."""
        if self.geo.vmfs6:
            ((c, r),) = self.attachment.allocators[R.RES_SB].allocate(tx, 1)
            pb = self.codec.make(A.ADDR_SB, c, r)
        else:
            ((c, r),) = self.attachment.allocators[R.RES_PB].allocate(tx, 1)
            pb = self.codec.make(A.ADDR_PB, c, r)
        values = list(entries or []) + [0] * (self.geo.ptrs_per_pb - len(entries or []))
        self._pb_store(tx, pb, unpack_ints(pack_ints(values, self.geo.addr_width), self.geo.addr_width))
        self.meta.numPointerBlocks += 1
        return pb

    def _free_pb(self, tx: Transaction, pb: int) -> None:
        res_kind, c, r = self._pb_place(pb)
        self.attachment.allocators[res_kind].free(tx, [(c, r)])
        self.volume._pb_cache.pop(pb, None)
        self.meta.numPointerBlocks = max(self.meta.numPointerBlocks - 1, 0)

    def get(self, tx: Transaction, index: int) -> int:
        n = self.geo.ptrs_per_pb
        zla = self.meta.zla
        ptrs = self.fd.pointers
        if zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            return ptrs[index] if index < len(ptrs) else 0
        if zla == F.ZLA_POINTER_BLOCKS:
            pb = ptrs[index // n] if index // n < len(ptrs) else 0
            return self._pb_entries(tx, pb)[0][index % n] if pb else 0
        if zla == F.ZLA_DOUBLE_INDIRECT:
            top = index // (n * n)
            pb1 = ptrs[top] if top < len(ptrs) else 0
            if not pb1:
                return 0
            pb2 = self._pb_entries(tx, pb1)[0][(index // n) % n]
            return self._pb_entries(tx, pb2)[0][index % n] if pb2 else 0
        return 0

    def set(self, tx: Transaction, index: int, address: int) -> None:
        n = self.geo.ptrs_per_pb
        zla = self.meta.zla
        ptrs = self.fd.pointers
        if zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            ptrs[index] = address
            return
        if zla == F.ZLA_POINTER_BLOCKS:
            top = index // n
            if not ptrs[top]:
                if not address:
                    return
                ptrs[top] = self._new_pb(tx)
            entries, _ = self._pb_entries(tx, ptrs[top])
            entries[index % n] = address
            self._pb_store(tx, ptrs[top], entries)
            if not address and not any(entries):
                self._free_pb(tx, ptrs[top])
                ptrs[top] = 0
            return
        if zla == F.ZLA_DOUBLE_INDIRECT:
            top = index // (n * n)
            mid = (index // n) % n
            if not ptrs[top]:
                if not address:
                    return
                ptrs[top] = self._new_pb(tx)
            pb1_entries, _ = self._pb_entries(tx, ptrs[top])
            if not pb1_entries[mid]:
                if not address:
                    return
                pb1_entries[mid] = self._new_pb(tx)
                self._pb_store(tx, ptrs[top], pb1_entries)
            pb2 = pb1_entries[mid]
            entries, _ = self._pb_entries(tx, pb2)
            entries[index % n] = address
            self._pb_store(tx, pb2, entries)
            if not address and not any(entries):
                self._free_pb(tx, pb2)
                pb1_entries[mid] = 0
                self._pb_store(tx, ptrs[top], pb1_entries)
                if not any(pb1_entries):
                    self._free_pb(tx, ptrs[top])
                    ptrs[top] = 0
            return
        raise CorruptError(f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, "no block map to change")

    def allocated(self, tx: Transaction, start: int = 0):  # type: ignore[no-untyped-def]
        """(index, address) of every allocated data block at or after ``start``, skipping the
        ranges of absent pointer blocks without visiting them."""
        n = self.geo.ptrs_per_pb
        zla = self.meta.zla
        ptrs = list(self.fd.pointers)
        if zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            for i in range(start, len(ptrs)):
                if ptrs[i]:
                    yield i, ptrs[i]
        elif zla == F.ZLA_POINTER_BLOCKS:
            for top in range(start // n, len(ptrs)):
                if ptrs[top]:
                    entries = list(self._pb_entries(tx, ptrs[top])[0])
                    for j, a in enumerate(entries):
                        if a and top * n + j >= start:
                            yield top * n + j, a
        elif zla == F.ZLA_DOUBLE_INDIRECT:
            for top in range(start // (n * n), len(ptrs)):
                if not ptrs[top]:
                    continue
                mids = list(self._pb_entries(tx, ptrs[top])[0])
                for mid, pb2 in enumerate(mids):
                    base = (top * n + mid) * n
                    if not pb2 or base + n <= start:
                        continue
                    for j, a in enumerate(list(self._pb_entries(tx, pb2)[0])):
                        if a and base + j >= start:
                            yield base + j, a

    # -- data blocks --------------------------------------------------------------------------------------

    def _data_kind(self) -> int:
        return A.ADDR_SB if self.meta.zla == F.ZLA_SUB_BLOCKS else A.ADDR_FB

    def _alloc_data(self, tx: Transaction, count: int) -> list[int]:
        kind = self._data_kind()
        if kind == A.ADDR_SB:
            sbs = self.attachment.allocators[R.RES_SB].allocate(tx, count)
            return [self.codec.make(A.ADDR_SB, c, r) for c, r in sbs]
        rpc = self.volume.resources[R.RES_FB].rpc
        return [self.codec.make_fb(c * rpc + r) for c, r in self.attachment.allocators[R.RES_FB].allocate(tx, count)]

    def _free_data(self, tx: Transaction, addresses: list[int]) -> None:
        fbs = []
        sbs = []
        rpc = self.volume.resources[R.RES_FB].rpc
        tbz = 0
        for a in addresses:
            if a & 7 == A.ADDR_FB:
                if self.codec.fb_tbz(a):
                    tbz += 1
                fbs.append(divmod(self.codec.fb_block(a), rpc))
            elif a & 7 == A.ADDR_SB:
                _, c, r = self.codec.split(a)
                sbs.append((c, r))
            else:
                raise CorruptError(f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, f"data 0x{a:x}")
        if fbs:
            self.attachment.allocators[R.RES_FB].free(tx, fbs)
        if sbs:
            self.attachment.allocators[R.RES_SB].free(tx, sbs)
        self._add_blocks(-len(addresses))
        if tbz:
            self._add_tbz(-tbz)

    def _add_blocks(self, delta: int) -> None:
        m = self.meta
        m.numBlocks = max(m.numBlocks + delta, 0)
        m.newSinceEpochLo = m.numBlocks & 0xFFFFFFFF
        m.newSinceEpochHi = m.numBlocks >> 32

    def _add_tbz(self, delta: int) -> None:
        m = self.meta
        total = max((m.numTBZBlocksLo | m.numTBZBlocksHi << 32) + delta, 0)
        m.numTBZBlocksLo = total & 0xFFFFFFFF
        m.numTBZBlocksHi = total >> 32

    def _location(self, address: int) -> int:
        loc = self.volume.data_location(self.codec.clear_tbz(address) if address & 7 == A.ADDR_FB else address,
                                        0, 1, self.fd)
        assert loc is not None
        return loc

    def _put_data(self, tx: Transaction, offset: int, data: bytes) -> None:
        """Write bytes to a volume offset: through the journal for metadata files."""
        if self.journaled:
            tx.write(offset, data)
        else:
            self.volume.device.write(offset, data)
            self.attachment.data_written()

    # -- mode conversion ------------------------------------------------------------------------------------

    def _read_all(self, tx: Transaction) -> bytes:
        size = self.meta.fileLength
        if self.fd.is_resident:
            return self.fd.resident_data
        out = bytearray(size)
        bs = self._bs()
        for index, addr in list(self.allocated(tx)):
            start = index * bs
            if start >= size:
                continue
            n = min(bs, size - start)
            if addr & 7 == A.ADDR_FB and self.codec.fb_tbz(addr):
                continue
            out[start : start + n] = tx.read(self._location(addr), n)
        return bytes(out)

    def _set_mode(self, zla: int) -> None:
        m = self.meta
        m.zla = zla
        bs = self.geo.sub_block_size if zla in (F.ZLA_RESIDENT, F.ZLA_SUB_BLOCKS) else self.geo.block_size
        m.blockSize = bs
        m.blockOffsetShift = bs.bit_length() - 1
        if zla == F.ZLA_RESIDENT:
            self.fd.set_resident(b"")
        else:
            self.fd.clear_pointers()
            self.fd.parsed.meta.zla = zla
            self.fd.pointers  # noqa: B018 - materialise the (zero) array

    def _rewrite_small(self, tx: Transaction, zla: int, size: int) -> None:
        """Move a small file (all its data ≤ one direct-block map) into another small mode."""
        data = self._read_all(tx)[:size]
        old = [a for _, a in self.allocated(tx)] if not self.fd.is_resident else []
        if old:
            self._free_data(tx, old)
        self._set_mode(zla)
        if zla == F.ZLA_RESIDENT:
            self.fd.set_resident(data)
            return
        if not data:
            return
        bs = self._bs()
        count = -(-len(data) // bs)
        addrs = self._alloc_data(tx, count)
        for i, a in enumerate(addrs):
            chunk = data[i * bs : (i + 1) * bs]
            self._put_data(tx, self._location(a), chunk)
            self.fd.pointers[i] = a
        self._add_blocks(count)

    def _convert(self, tx: Transaction, target: int, size: int) -> None:
        """Change the address mode one step at a time until it is ``target``."""
        while self.meta.zla != target:
            cur = self.meta.zla
            if cur not in ORDER:
                raise CorruptError(f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, f"ZLA {cur}")
            if ORDER[target] > ORDER[cur]:
                if ORDER[cur] <= ORDER[F.ZLA_SUB_BLOCKS]:
                    self._rewrite_small(tx, min(target, F.ZLA_FILE_BLOCKS, key=ORDER.__getitem__), size)
                else:
                    self._up_one(tx, cur)
            elif ORDER[cur] > ORDER[F.ZLA_FILE_BLOCKS]:
                self._down_one(tx, cur)
            else:
                self._rewrite_small(tx, target, size)

    def _up_one(self, tx: Transaction, cur: int) -> None:
        """FB -> PB or PB -> double indirect: the current pointer array moves into a new pointer block."""
        old = list(self.fd.pointers)
        nxt = F.ZLA_POINTER_BLOCKS if cur == F.ZLA_FILE_BLOCKS else F.ZLA_DOUBLE_INDIRECT
        pb = self._new_pb(tx, old) if any(old) else 0
        self.fd.clear_pointers()
        self.meta.zla = nxt
        ptrs = self.fd.pointers
        ptrs[0] = pb

    def _down_one(self, tx: Transaction, cur: int) -> None:
        """PB -> FB or double indirect -> PB: the first pointer block's head becomes the array."""
        ptrs = self.fd.pointers
        if any(ptrs[1:]):
            raise CorruptError(
                f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, "shrinking a map that still has blocks"
            )
        first = ptrs[0]
        head: list[int] = []
        if first:
            entries, _ = self._pb_entries(tx, first)
            if any(entries[self.geo.ptr_count :]):
                raise CorruptError(
                    f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, "pointer block beyond the array"
                )
            head = list(entries[: self.geo.ptr_count])
            self._free_pb(tx, first)
        nxt = F.ZLA_FILE_BLOCKS if cur == F.ZLA_POINTER_BLOCKS else F.ZLA_POINTER_BLOCKS
        self.fd.clear_pointers()
        self.meta.zla = nxt
        ptrs = self.fd.pointers
        for i, a in enumerate(head):
            ptrs[i] = a

    # -- public operations ---------------------------------------------------------------------------------

    def _check_size(self, size: int) -> None:
        if size > self.geo.max_file_size:
            raise FileTooBigError(f"file size {size} exceeds the VMFS{self.geo.version} limit {self.geo.max_file_size}")

    def _zero_tail(self, tx: Transaction, start: int, end: int) -> None:
        """Zero the allocated bytes of [start, end) past the old end of file ``start``: the tail
        of the block holding it and any preallocated blocks (the only bytes on disk that may be
        undefined)."""
        if end <= start or self.fd.is_resident:
            return  # resident tails are always zero (set_resident pads with zeros)
        bs = self._bs()
        first = start // bs
        stop = min(self._blocks_for(end), max(first + 1, self._allocated_end()))
        for index in range(first, stop):
            addr = self.get(tx, index)
            if not addr or (addr & 7 == A.ADDR_FB and self.codec.fb_tbz(addr)):
                continue
            lo = max(start, index * bs)
            hi = min(end, (index + 1) * bs)
            self._put_data(tx, self._location(addr) + lo - index * bs, bytes(hi - lo))

    def _prealloc_count(self, tx: Transaction, index: int, wanted: int) -> int:
        """How many blocks after ``index`` to preallocate: ``wanted`` at most, inside the current
        mode's map and inside the pointer block that maps ``index`` (a preallocation never needs
        a pointer block of its own: a volume short of pointer blocks must still hold every file
        whose final map fits), leaving most of the free space to others, stopping at any mapped
        block."""
        free = self.attachment.allocators[R.RES_FB].free_count
        limit = min(wanted, MAX_PREALLOC, self._mode_capacity() - index - 1, (free - 1) // 4)
        if self.meta.zla in (F.ZLA_POINTER_BLOCKS, F.ZLA_DOUBLE_INDIRECT):
            n = self.geo.ptrs_per_pb
            limit = min(limit, n - 1 - index % n)
        count = 0
        while count < limit and not self.get(tx, index + 1 + count):
            count += 1
        return count

    def trim_preallocated(self, tx: Transaction) -> bool:
        """Free the preallocated blocks past the end of file; True when there were any."""
        m = self.meta
        if not m.numPreAllocBlocks or self.fd.is_resident or m.zla == F.ZLA_SUB_BLOCKS:
            m.numPreAllocBlocks = 0
            return False
        first = self._blocks_for(m.fileLength)
        self.free_range(tx, first, first + m.numPreAllocBlocks)
        m.numPreAllocBlocks = 0
        return True

    def write(self, tx: Transaction, offset: int, data: bytes, *, prealloc: bool = False) -> bool:
        """Write ``data`` at ``offset`` (one transaction's worth).  Returns True when metadata
        changed (the FD must be written in ``tx``); False when only data and the in-memory
        length/time changed (a deferred FD update).  ``prealloc``: the caller holds the file open
        for writing, so an append may preallocate blocks past the end (see the module doc)."""
        if offset < 0:
            raise InvalidArgumentError("negative offset")
        end = offset + len(data)
        self._check_size(end)
        m = self.meta
        old_size = m.fileLength
        new_size = max(old_size, end)
        changed = False
        target = self.mode_for(new_size)
        if m.zla not in ORDER:
            raise CorruptError(f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, f"ZLA {m.zla}")
        if ORDER[target] > ORDER[m.zla]:
            self._convert(tx, target, old_size)
            changed = True
        if offset > old_size:
            self._zero_tail(tx, old_size, offset)
        allocated_end = self._allocated_end()
        if self.fd.is_resident:
            buf = bytearray(self.fd.resident_data) + bytes(max(0, new_size - old_size))
            buf[offset:end] = data
            self.fd.set_resident(bytes(buf))
            m.fileLength = new_size
            return True
        bs = self._bs()
        pos = offset
        view = memoryview(data)
        while pos < end:
            index = pos // bs
            within = pos - index * bs
            n = min(bs - within, end - pos)
            # the common case, one whole write inside one block, goes to the device uncopied
            chunk = data if n == len(data) else bytes(view[pos - offset : pos - offset + n])
            addr = self.get(tx, index)
            if not addr:
                extra = 0
                appending = index >= allocated_end and (index + 1) * bs >= new_size
                if prealloc and appending and self._data_kind() == A.ADDR_FB:
                    extra = self._prealloc_count(tx, index, index + 1)
                addr, *more = self._alloc_data(tx, 1 + extra)
                self.set(tx, index, addr)
                for j, a in enumerate(more, start=index + 1):
                    self.set(tx, j, a)
                self._add_blocks(1 + extra)
                allocated_end = max(allocated_end, index + 1 + extra)
                changed = True
                # zero what will be inside EOF but is not written now
                tail_end = min(max(old_size, end) - index * bs, bs)
                tail = max(0, tail_end - (within + n))
                if within or tail:
                    chunk = bytes(within) + chunk + bytes(tail)
                self._put_data(tx, self._location(addr), chunk)
            elif addr & 7 == A.ADDR_FB and self.codec.fb_tbz(addr):
                block = bytearray(bs)
                block[within : within + n] = chunk
                clean = self.codec.clear_tbz(addr)
                self._put_data(tx, self._location(clean), bytes(block))
                self.set(tx, index, clean)
                self._add_tbz(-1)
                changed = True
            else:
                self._put_data(tx, self._location(addr) + within, chunk)
            pos += n
        self._set_length(new_size, allocated_end)
        return changed or self.journaled

    def truncate(self, tx: Transaction, size: int, *, limit: int = BULK_BLOCKS) -> bool:
        """Set the length to ``size``.  Freeing stops after ``limit`` blocks; returns True when the
        truncation is complete (call again, in a new transaction, while it returns False)."""
        if size < 0:
            raise InvalidArgumentError("negative length")
        self._check_size(size)
        m = self.meta
        old = m.fileLength
        if size >= old:
            target = self.mode_for(size)
            if ORDER[target] > ORDER[m.zla]:
                self._convert(tx, target, old)
            self._zero_tail(tx, old, size)
            if self.fd.is_resident:
                self.fd.set_resident(self.fd.resident_data + bytes(size - old))
            self._set_length(size, self._allocated_end())
            return True
        if self.fd.is_resident:
            self.fd.set_resident(self.fd.resident_data[:size])
            m.fileLength = size
            return True
        bs = self._bs()
        first_gone = -(-size // bs)
        doomed = list(self.allocated(tx, first_gone))
        done = len(doomed) <= limit
        if not done:
            doomed = doomed[-limit:]
        for index, _ in reversed(doomed):
            self.set(tx, index, 0)
        self._free_data(tx, [a for _, a in doomed])
        if not done:
            # an intermediate, consistent state: the file ends where the freed range starts
            # (preallocated blocks before that range, if it began past the end, stay counted)
            self._set_length(min(old, max(size, doomed[0][0] * bs)), doomed[0][0])
            return False
        m.numPreAllocBlocks = 0  # every block past the new end is freed
        m.fileLength = size
        target = self.mode_for(size)
        # Directories keep their mode when they shrink (ESXi's root stays in a file block even
        # when nearly empty; vmfs-tools cannot read a root that moved to a sub-block).
        if ORDER[target] < ORDER[m.zla] and self.fd.type != F.TYPE_DIRECTORY:
            self._convert(tx, target, size)
        return True

    def free_range(self, tx: Transaction, first: int, last: int, *, limit: int = BULK_BLOCKS) -> int | None:
        """Free the data blocks with indexes in [first, last) (a hole punched; the length stays).
        Returns the index to continue from in a new transaction, or None when done."""
        if self.fd.is_resident:
            return None
        doomed: list[tuple[int, int]] = []
        resume = None
        for index, address in self.allocated(tx, first):
            if index >= last:
                break
            if len(doomed) >= limit:
                resume = index
                break
            doomed.append((index, address))
        for index, _ in reversed(doomed):
            self.set(tx, index, 0)
        if doomed:
            self._free_data(tx, [a for _, a in doomed])
        return resume

    def release_all(self, tx: Transaction) -> None:
        """Free every data and pointer block (the FD itself is the caller's)."""
        if self.fd.is_resident:
            return
        doomed = list(self.allocated(tx))
        for index, _ in reversed(doomed):
            self.set(tx, index, 0)
        if doomed:
            self._free_data(tx, [a for _, a in doomed])

    def allocate_thick(
        self, tx: Transaction, size: int, *, eager: bool, start: int = 0, limit: int = BULK_BLOCKS
    ) -> int | None:
        """Give the file blocks for its whole length from block ``start`` on: lazily zeroed (TBZ)
        or written with zeros.  Returns the block index to continue from in the next
        transaction, or None when every block is allocated."""
        self._check_size(size)
        if size > self.meta.fileLength:
            self.truncate(tx, size)
        count = -(-self.meta.fileLength // self._bs())
        return self.allocate_range(tx, start, count, eager=eager, limit=limit)

    def allocate_range(
        self, tx: Transaction, first: int, last: int, *, eager: bool = False, limit: int = BULK_BLOCKS
    ) -> int | None:
        """Map every unmapped block index in [first, last) (inside the length) to a new block,
        lazily zeroed (TBZ: reads as zeros until written, vmfs-format.md 8.5) or written with
        zeros.  Returns the index to continue from in a new transaction, or None when done.
        Resident and sub-block files have nothing to allocate: their data is stored whole."""
        if self.fd.is_resident or self.meta.zla == F.ZLA_SUB_BLOCKS:
            return None
        bs = self._bs()
        todo = []
        index = first
        while index < last and len(todo) < limit:
            if not self.get(tx, index):
                todo.append(index)
            index += 1
        if todo:
            addrs = self._alloc_data(tx, len(todo))
            for i, a in zip(todo, addrs, strict=True):
                if eager:
                    self.volume.device.write(self._location(a), bytes(bs))
                    self.attachment.data_written()
                    self.set(tx, i, a)
                else:
                    self.set(tx, i, a | self.codec.TBZ)
            self._add_blocks(len(todo))
            if not eager:
                self._add_tbz(len(todo))
        return index if index < last else None

    def reserve_past_end(self, tx: Transaction, end_index: int) -> int:
        """Preallocate blocks past the end of file up to block index ``end_index`` (fallocate with
        KEEP_SIZE), as far as the format can count them: the run past EOF is the FD's
        ``numPreAllocBlocks`` (a u8, contiguous from the end of file), inside the current mode's
        map and the pointer block that maps its start.  Returns how many blocks were added."""
        m = self.meta
        if self.fd.is_resident or m.zla == F.ZLA_SUB_BLOCKS:
            return 0
        first = self._blocks_for(m.fileLength)
        start = first + m.numPreAllocBlocks
        stop = min(end_index, first + 255, self._mode_capacity())
        if m.zla in (F.ZLA_POINTER_BLOCKS, F.ZLA_DOUBLE_INDIRECT):
            n = self.geo.ptrs_per_pb
            stop = min(stop, (start // n + 1) * n)
        index = start
        while index < stop and not self.get(tx, index):
            index += 1
        count = index - start
        if count > 0:
            for i, a in enumerate(self._alloc_data(tx, count), start=start):
                self.set(tx, i, a)
            self._add_blocks(count)
            m.numPreAllocBlocks += count
        return count
