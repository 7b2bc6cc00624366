"""File descriptors (inodes) and their block maps (vmfs-format.md section 8).

A :class:`FileDescriptor` wraps one parsed FD (lock block, metadata, data area) and knows where it
lives.  :class:`BlockMap` turns a file offset into the address of the block holding it, through the
pointer array and up to two levels of pointer blocks, reading pointer blocks on demand so that a
64 TiB file never needs its whole map in memory.
"""

from __future__ import annotations

import stat as _stat
from typing import Protocol

from vmfs.device.base import BlockDevice
from vmfs.errors import CorruptError
from vmfs.format import address as A
from vmfs.format.geometry import Geometry
from vmfs.ondisk import filedesc as F
from vmfs.ondisk.common import fast, unpack_ints
from vmfs.ondisk.lock import LOCK_TYPE_FD


class VolumeBlocks(Protocol):
    """What a file descriptor and its readers need of their volume: the geometry, the device of
    volume offsets, and block resolution through the volume's caches.
    :class:`vmfs.volume.volume.Volume` is the one implementation; naming only this much keeps
    descriptors, readers and resource files below the volume that opens them."""

    geometry: Geometry
    device: BlockDevice

    def pointer_block(self, address: int, owner: FileDescriptor) -> list[int]: ...

    def data_location(self, address: int, within: int, length: int, owner: FileDescriptor) -> int | None: ...

TYPE_NAMES = {
    F.TYPE_INVALID: "invalid",
    F.TYPE_VOLUME: "volume",
    F.TYPE_DIRECTORY: "directory",
    F.TYPE_REGFILE: "file",
    F.TYPE_SYMLINK: "symlink",
    F.TYPE_SYSFILE: "system",
    F.TYPE_RDM: "rdm",
}

ZLA_NAMES = {
    F.ZLA_FILE_BLOCKS: "file blocks",
    F.ZLA_SUB_BLOCKS: "sub-blocks",
    F.ZLA_POINTER_BLOCKS: "pointer blocks",
    F.ZLA_POINTER2_BLOCKS: "pointer blocks (PB2)",
    F.ZLA_DOUBLE_INDIRECT: "double indirect",
    F.ZLA_RESIDENT: "resident",
}

_TYPE_BITS = {
    F.TYPE_DIRECTORY: _stat.S_IFDIR,
    F.TYPE_REGFILE: _stat.S_IFREG,
    F.TYPE_SYMLINK: _stat.S_IFLNK,
    F.TYPE_SYSFILE: _stat.S_IFREG,
    F.TYPE_RDM: _stat.S_IFREG,
}


class FileDescriptor:
    """One parsed file descriptor.  ``parsed`` is the construct container; ``meta`` its metadata."""

    def __init__(self, volume: VolumeBlocks, address: int, vol_offset: int, raw: bytes) -> None:
        self.volume = volume
        self.address = address
        self.vol_offset = vol_offset
        #: monotonic microseconds of the last check against the on-disk lock token
        self.validated_us = 0
        self.reload(raw)

    def reload(self, raw: bytes) -> None:
        """Parse ``raw`` into this object (kept, so every holder of it sees the fresh state)."""
        self.parsed = fast(self.volume.geometry.structs.file_descriptor).parse(raw)
        self.meta = self.parsed.meta
        self.lock = self.parsed.lockBlock.lock
        #: the lock token under which this copy is known to be complete and current: set only
        #: when the copy was read while nobody held the lock (a copy read while another host was
        #: in the middle of a change may be half old, half new, and must never be trusted)
        self.clean_token: int | None = self.lock.token if self.lock.mode == 0 else None
        self._pointers = None
        self._validate()

    def set_lock(self, lock) -> None:  # type: ignore[no-untyped-def]
        """Record the lock image we wrote (the token we now expect on disk)."""
        self.parsed.lockBlock.lock = lock
        self.lock = lock
        self.clean_token = lock.token

    def _validate(self) -> None:
        meta = self.meta
        where = self.vol_offset
        name = f"file descriptor {self.address:#x}"
        if self.lock.type != LOCK_TYPE_FD:
            raise CorruptError(name, where, f"lock type 0x{self.lock.type:08x} is not an FD lock (free slot?)")
        if meta.descAddr != self.address:
            raise CorruptError(name, where, f"records its own address as 0x{meta.descAddr:x}")
        if meta.type not in TYPE_NAMES or meta.type in (F.TYPE_INVALID, F.TYPE_VOLUME):
            raise CorruptError(name, where, f"unknown descriptor type {meta.type}")
        if meta.zla not in ZLA_NAMES:
            raise CorruptError(name, where, f"unknown address mode (ZLA) {meta.zla}")
        geo = self.volume.geometry
        if meta.zla == F.ZLA_RESIDENT:
            if meta.fileLength > geo.resident_capacity:
                raise CorruptError(name, where, f"resident file of {meta.fileLength} bytes")
        else:
            bs = meta.blockSize
            allowed = {geo.block_size, geo.sub_block_size}
            if geo.lfb_size:
                allowed.add(geo.lfb_size)
            if bs not in allowed:
                raise CorruptError(name, where, f"block size {bs} is not one of the volume's")
            if meta.fileLength > geo.max_file_size:
                raise CorruptError(name, where, f"file length {meta.fileLength} exceeds the format limit")
            per_slot = {
                F.ZLA_FILE_BLOCKS: 1,
                F.ZLA_SUB_BLOCKS: 1,
                F.ZLA_POINTER_BLOCKS: geo.ptrs_per_pb,
                F.ZLA_POINTER2_BLOCKS: geo.ptrs_per_pb,
                F.ZLA_DOUBLE_INDIRECT: geo.ptrs_per_pb * geo.ptrs_per_pb,
            }[meta.zla]
            if meta.fileLength > geo.ptr_count * per_slot * bs:
                raise CorruptError(
                    name, where, f"file length {meta.fileLength} is more than address mode {meta.zla} can map"
                )

    # -- plain attributes ---------------------------------------------------------------------------
    # (meta["x"], not meta.x: construct's attribute access is a Python-level __getattr__, and
    # these are read on every I/O)

    @property
    def type(self) -> int:
        return self.meta["type"]

    @property
    def size(self) -> int:
        return self.meta["fileLength"]

    @property
    def zla(self) -> int:
        return self.meta["zla"]

    @property
    def block_size(self) -> int:
        return self.meta["blockSize"]

    @property
    def generation(self) -> int:
        return self.meta["generation"]

    @property
    def is_dir(self) -> bool:
        return self.meta["type"] == F.TYPE_DIRECTORY or (
            self.meta["type"] == F.TYPE_SYSFILE and _stat.S_ISDIR(self.meta["mode"])
        )

    @property
    def is_symlink(self) -> bool:
        return self.meta["type"] == F.TYPE_SYMLINK

    @property
    def is_resident(self) -> bool:
        return self.meta["zla"] == F.ZLA_RESIDENT

    @property
    def st_mode(self) -> int:
        """POSIX mode: stored permission bits plus type bits from the FD type (section 8.4).

        Stored type bits win when present (``.sdd.sf`` stores 040700)."""
        mode = self.meta.mode
        if _stat.S_IFMT(mode):
            return mode
        return mode | _TYPE_BITS.get(self.meta.type, _stat.S_IFREG)

    @property
    def pointers(self):  # type: ignore[no-untyped-def]
        """The FD's block pointer array (meaningless for resident files).  One array per FD object,
        changed in place by the write path, so every reader sees the current map."""
        if self._pointers is None:
            geo = self.volume.geometry
            start = geo.ptr_array_offset - geo.fd_data_offset
            self._pointers = unpack_ints(
                self.parsed.data[start : start + geo.ptr_count * geo.addr_width], geo.addr_width
            )
        return self._pointers

    @property
    def resident_data(self) -> bytes:
        return bytes(self.parsed.data[: self.meta.fileLength])

    # -- changes (the write path) ------------------------------------------------------------------

    def set_resident(self, data: bytes) -> None:
        """Make the data area hold ``data`` as resident file content (zero padded)."""
        size = len(self.parsed.data)
        if len(data) > self.volume.geometry.resident_capacity:
            raise ValueError("resident data larger than the FD data area")
        self.parsed.data = bytes(data) + bytes(size - len(data))
        self._pointers = None

    def clear_pointers(self) -> None:
        self.parsed.data = bytes(len(self.parsed.data))
        self._pointers = None

    def encode(self) -> bytes:
        """The whole FD as it must be on disk (pointer array folded back into the data area)."""
        if self._pointers is not None and not self.is_resident:
            from vmfs.format.builders import pointer_array_bytes

            self.parsed.data = pointer_array_bytes(self.volume.geometry, list(self._pointers))
        return fast(self.volume.geometry.structs.file_descriptor).build(self.parsed)

    def __repr__(self) -> str:
        return (
            f"<FD 0x{self.address:x} {TYPE_NAMES.get(self.type, self.type)} size={self.size} "
            f"zla={self.zla} gen={self.generation}>"
        )


class BlockMap:
    """File block index -> block address for one FD, reading pointer blocks lazily."""

    def __init__(self, fd: FileDescriptor) -> None:
        self.fd = fd
        self.volume = fd.volume
        geo = self.volume.geometry
        self.n = geo.ptrs_per_pb
        self.pointers = fd.pointers if not fd.is_resident else ()
        bs = fd.block_size
        self.shift = bs.bit_length() - 1
        self.zla = fd.zla

    @property
    def capacity_blocks(self) -> int:
        count = len(self.pointers)
        if self.zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            return count
        if self.zla in (F.ZLA_POINTER_BLOCKS, F.ZLA_POINTER2_BLOCKS):
            return count * self.n
        if self.zla == F.ZLA_DOUBLE_INDIRECT:
            return count * self.n * self.n
        return 0

    def lookup(self, index: int) -> int:
        """Address of file block ``index`` (0 for a hole)."""
        n = self.n
        zla = self.zla
        ptrs = self.pointers
        if zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            if index >= len(ptrs):
                return self._beyond(index)
            return ptrs[index]
        if zla in (F.ZLA_POINTER_BLOCKS, F.ZLA_POINTER2_BLOCKS):
            top = index // n
            if top >= len(ptrs):
                return self._beyond(index)
            pb = ptrs[top]
            if pb == 0:
                return 0
            return self.volume.pointer_block(pb, self.fd)[index % n]
        if zla == F.ZLA_DOUBLE_INDIRECT:
            top = index // (n * n)
            if top >= len(ptrs):
                return self._beyond(index)
            pb1 = ptrs[top]
            if pb1 == 0:
                return 0
            pb2 = self.volume.pointer_block(pb1, self.fd)[(index // n) % n]
            if pb2 == 0:
                return 0
            return self.volume.pointer_block(pb2, self.fd)[index % n]
        raise CorruptError(f"file descriptor {self.fd.address:#x}", self.fd.vol_offset, "resident file has no map")

    def _beyond(self, index: int) -> int:
        raise CorruptError(
            f"file descriptor {self.fd.address:#x}",
            self.fd.vol_offset,
            f"file length {self.fd.size} needs block {index}, beyond what address mode {self.zla} maps",
        )

    def top_level_addresses(self) -> list[int]:
        return [p for p in self.pointers if p]

    def references(self):  # type: ignore[no-untyped-def]
        """Every non-null address the map holds, as (file block index or None, address, is_pointer_block).

        Pointer blocks come before the entries they hold; absent ranges cost nothing, so this is
        cheap for sparse files of any size."""
        n = self.n
        zla = self.zla
        if zla in (F.ZLA_FILE_BLOCKS, F.ZLA_SUB_BLOCKS):
            for i, a in enumerate(self.pointers):
                if a:
                    yield i, a, False
        elif zla in (F.ZLA_POINTER_BLOCKS, F.ZLA_POINTER2_BLOCKS):
            for top, pb in enumerate(self.pointers):
                if not pb:
                    continue
                yield None, pb, True
                for j, a in enumerate(self.volume.pointer_block(pb, self.fd)):
                    if a:
                        yield top * n + j, a, False
        elif zla == F.ZLA_DOUBLE_INDIRECT:
            for top, pb1 in enumerate(self.pointers):
                if not pb1:
                    continue
                yield None, pb1, True
                for mid, pb2 in enumerate(self.volume.pointer_block(pb1, self.fd)):
                    if not pb2:
                        continue
                    yield None, pb2, True
                    for j, a in enumerate(self.volume.pointer_block(pb2, self.fd)):
                        if a:
                            yield (top * n + mid) * n + j, a, False


def data_kind_ok(kind: int) -> bool:
    return kind in (A.ADDR_FB, A.ADDR_SB, A.ADDR_LFB)
