"""Open a VMFS volume: FS descriptor, geometry, system files, FD and pointer-block caches.

Opening follows vmfs-format.md 1.1: descriptor at 2 MiB, bootstrap of FD cluster 0 without
``.fdc.sf``, then the resource files in dependency order (VMFS6: ``.pb2.sf`` before ``.sbc.sf``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Protocol

from construct import ConstructError

from vmfs.device.base import BlockDevice
from vmfs.device.lvm import LogicalVolume, open_logical_volume
from vmfs.device.opener import open_device
from vmfs.errors import CorruptError, DeviceError, NotVmfsError
from vmfs.format import address as A
from vmfs.format.geometry import Geometry
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import decode_name, unpack_ints
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FS_MAGIC, FSL_MAGIC, FsDescriptor
from vmfs.ondisk.lock import parse_lock
from vmfs.volume.filedesc import FileDescriptor
from vmfs.volume.filereader import FileReader
from vmfs.volume.resources import RESOURCE_NAMES, ResourceFile

log = logging.getLogger("vmfs.volume.volume")

ROOT_FD = A.make_fd(0, 0)
SYSTEM_FDS = {
    ".fbb.sf": A.make_fd(0, 1),
    ".fdc.sf": A.make_fd(0, 2),
    ".pbc.sf": A.make_fd(0, 3),
    ".sbc.sf": A.make_fd(0, 4),
    ".vh.sf": A.make_fd(0, 5),
    ".pb2.sf": A.make_fd(0, 6),
    ".sdd.sf": A.make_fd(0, 7),
    ".jbc.sf": A.make_fd(0, 8),
}

#: system files that exist only from a version on (VMFS3 has the first five)
_SYSTEM_FD_SINCE = {".pb2.sf": 5, ".sdd.sf": 5, ".jbc.sf": 6}


def system_fds(version: int) -> dict[str, int]:
    """The system files (name -> FD address) a VMFS ``version`` volume has."""
    return {name: address for name, address in SYSTEM_FDS.items() if version >= _SYSTEM_FD_SINCE.get(name, 3)}


_FD_CACHE = 4096
_PB_CACHE = 256


class _Lru(OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:  # type: ignore[no-untyped-def]
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)


class VolumeWriter(Protocol):
    """What the one host writing through a volume tells its caches.

    :class:`vmfs.cluster.attachment.HostAttachment` is the implementation; the volume names
    only this much of it, so the read side stays below the cluster layer."""

    def holds_lock(self, vol_offset: int) -> bool:
        """True while this host holds the on-disk lock at ``vol_offset`` (nobody else can
        have changed what it guards)."""
        ...

    def now_us(self) -> int:
        """The host clock's monotonic microseconds (a simulated host has its own clock)."""
        ...

    def caches_dropped(self) -> None:
        """Every cache was dropped: drop what was derived from them (allocator cursors)."""
        ...

    def close(self) -> None:
        """Detach from the volume and close it (what closing a written volume means)."""
        ...


class Volume:
    """An open VMFS filesystem on a logical volume (a :class:`BlockDevice` of volume offsets).

    Read side only: a host writes through a :class:`vmfs.cluster.attachment.HostAttachment`,
    which binds itself here as :attr:`writer` for the caches' sake (:meth:`bind_writer`)."""

    def __init__(self, device: BlockDevice, *, lvm: LogicalVolume | None = None) -> None:
        self.device = device
        self.lvm = lvm
        self.readonly = device.readonly
        self._lock = threading.RLock()
        #: the host attachment writing through this volume, or None (read-only, or not yet attached)
        self.writer: VolumeWriter | None = None
        self._pinned: dict[int, list] = {}
        #: called with every cached FD re-read from disk (:meth:`_reload`, and each pinned FD in
        #: :meth:`invalidate_caches`), under the cache lock, so state kept only in memory (a
        #: writer's deferred length) is put back before any other thread can see the disk copy
        self.reload_hooks: list = []
        self._dir_cache: _Lru = _Lru(256)
        self.closed = False
        #: seconds a cached FD is trusted before its on-disk lock token is checked again (another
        #: host may have changed it); None = never (this host is known to be the only writer)
        self.revalidate_interval: float | None = 1.0
        self._fd_cache: _Lru = _Lru(_FD_CACHE)
        self._pb_cache: _Lru = _Lru(_PB_CACHE)
        #: statfs figures (:func:`vmfs.volume.usage.volume_usage`), kept current by
        #: :meth:`note_usage_change` and dropped with the caches
        self._usage: dict[str, int] | None = None
        try:
            raw = device.read(FS_DESCRIPTOR_OFFSET, 512)
        except DeviceError:
            raise NotVmfsError(f"{device.name}: too small for a VMFS volume ({device.size} bytes)") from None
        self.descriptor = FsDescriptor.parse(raw)
        d = self.descriptor
        if d.magic not in (FS_MAGIC, FSL_MAGIC):
            raise NotVmfsError(f"{device.name}: no VMFS file system (magic 0x{d.magic:08x} at volume 0x200000)")
        lvm_major = lvm.devices[0].major if lvm is not None and lvm.devices else None
        self.geometry = Geometry.from_descriptor(d, lvm_major)
        if lvm is not None and lvm.devices and d.volInfo.lvId != lvm.devices[0].volume.lvId:  # type: ignore[attr-defined]
            raise NotVmfsError(
                f"{device.name}: FS belongs to logical volume {d.volInfo.lvId}, not to this LVM volume"
            )
        self.num_blocks = device.size // self.geometry.block_size
        self.resources: dict[int, ResourceFile] = {}
        try:
            self._open_resources()
        except DeviceError as exc:
            raise CorruptError("volume", None, f"truncated image: {exc}") from None
        except ConstructError as exc:
            raise CorruptError("volume", None, f"unparsable metadata: {exc}") from None

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        paths: list[str | os.PathLike[str]] | str,
        *,
        readonly: bool = True,
    ) -> Volume:
        """Open the volume on image files or block devices (all extents of a spanned volume).

        ``readonly=False`` opens the devices for writing and nothing more: writing needs a host
        attachment (:meth:`vmfs.cluster.attachment.HostAttachment.open`)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        devices: list[BlockDevice] = []
        try:
            for p in paths:
                devices.append(open_device(p, readonly=readonly))
            lv = open_logical_volume(devices)
            return cls(lv, lvm=lv)
        except BaseException:
            for dev in devices:
                dev.close()
            raise

    @classmethod
    def from_devices(cls, devices: list[BlockDevice]) -> Volume:
        """Open the volume on already-open devices (extents in any order)."""
        lv = open_logical_volume(devices)
        return cls(lv, lvm=lv)

    def _system_fd(self, name: str) -> FileDescriptor:
        """A system FD read straight from FD cluster 0, whose place is fixed (section 8.2): this
        works before ``.fdc.sf`` (or the pointer blocks its map may need) is open."""
        geo = self.geometry
        address = SYSTEM_FDS[name]
        offset = geo.bootstrap_fd_addr(A.fd_split(address)[1])
        fd = FileDescriptor(self, address, offset, self.device.read(offset, geo.fd_size))
        self._check_system_fd(fd)
        return fd

    def _open_resources(self) -> None:
        """Resource files in dependency order: pointer blocks first (a large ``.fdc.sf`` or
        ``.sbc.sf`` maps its blocks through them), then FDs, file blocks, sub-blocks, journal."""
        geo = self.geometry
        if ".pb2.sf" in system_fds(geo.version):  # VMFS3 has neither it nor double indirection
            self.resources[R.RES_PB2] = ResourceFile(self, R.RES_PB2, self._system_fd(".pb2.sf"))
        self.resources[R.RES_PB] = ResourceFile(self, R.RES_PB, self._system_fd(".pbc.sf"))
        self.resources[R.RES_FD] = ResourceFile(self, R.RES_FD, self._system_fd(".fdc.sf"))
        fbb = self._system_fd(".fbb.sf")
        if geo.vmfs6:
            lfb = ResourceFile(self, R.RES_LFB, fbb)
            self.resources[R.RES_LFB] = lfb
            child = lfb.header.childMetaOffset
            if not child:
                raise CorruptError(".fbb.sf resource header", fbb.vol_offset, "no SFB child header")
            sfb = ResourceFile(self, R.RES_FB, fbb, header_offset=child, parent=lfb)
            if sfb.rpc != geo.sfb_rpc:
                raise CorruptError(
                    ".fbb.sf SFB header", fbb.vol_offset, f"resources per cluster {sfb.rpc}, expected {geo.sfb_rpc}"
                )
            self.resources[R.RES_FB] = sfb
        else:
            self.resources[R.RES_FB] = ResourceFile(self, R.RES_FB, fbb)
        self.resources[R.RES_SB] = ResourceFile(self, R.RES_SB, self._system_fd(".sbc.sf"))
        if geo.vmfs6:
            self.resources[R.RES_JB] = ResourceFile(self, R.RES_JB, self._system_fd(".jbc.sf"))

    def _check_system_fd(self, fd: FileDescriptor) -> None:
        if fd.type != F.TYPE_SYSFILE or fd.is_resident or fd.block_size not in (
            self.geometry.block_size,
            self.geometry.sub_block_size,
        ):
            raise CorruptError(
                f"system file descriptor {fd.address:#x}", fd.vol_offset, "not a system file of this volume"
            )

    # -- descriptor facts -------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return decode_name(self.descriptor.fsLabel)

    @property
    def uuid(self) -> str:
        return self.descriptor.uuid

    @property
    def version_string(self) -> str:
        return f"VMFS-{self.geometry.version}.{self.descriptor.minorVersion}"

    # -- file descriptors -----------------------------------------------------------------------------

    def _now_us(self) -> int:
        if self.writer is not None:
            return self.writer.now_us()
        return time.monotonic_ns() // 1000

    def trust_cache_for(self, seconds: float | None) -> None:
        """How long a cached FD is used before its on-disk lock token is checked again: 0 checks
        on every use, None never (this host is known to be the only writer)."""
        self.revalidate_interval = seconds

    def revalidate(self, fd: FileDescriptor, *, force: bool = False) -> FileDescriptor:
        """Reload ``fd`` if another host changed it: its on-disk lock token moved (section 5)."""
        interval = self.revalidate_interval
        if interval is None and not force:
            return fd
        if self.writer is not None and self.writer.holds_lock(fd.vol_offset):
            return fd  # we hold its lock: nobody else can have changed it
        now = self._now_us()
        if not force and now - fd.validated_us < (interval or 0) * 1_000_000:
            return fd
        lock = parse_lock(self.device.read(fd.vol_offset, 512))
        if lock.mode != 0 or lock.token != fd.clean_token or lock.type != fd.lock.type:
            self._reload(fd)
        fd.validated_us = now
        return fd

    def _reload(self, fd: FileDescriptor) -> None:
        raw = self.device.read(fd.vol_offset, self.geometry.fd_size)
        with self._lock:
            try:
                fd.reload(raw)
            except CorruptError:
                self._fd_cache.pop(fd.address, None)
                self._dir_cache.pop(fd.address, None)
                raise
            for hook in self.reload_hooks:
                hook(fd)
            self._dir_cache.pop(fd.address, None)
            self._pb_cache.clear()

    def reload_fd(self, fd: FileDescriptor) -> None:
        """Re-read ``fd`` from disk into the same object (its lock moved: another host wrote)."""
        self._reload(fd)

    def read_fd(self, address: int) -> FileDescriptor:
        with self._lock:
            pinned = self._pinned.get(address)
            if pinned is not None:
                cached = pinned[0]
            else:
                cached = self._fd_cache.get(address)
                if cached is not None:
                    self._fd_cache.move_to_end(address)
        if cached is not None:
            return self.revalidate(cached)
        if A.kind(address) != A.ADDR_FD:
            raise CorruptError("directory entry", None, f"0x{address:x} is not an FD address")
        cluster, resource = A.fd_split(address)
        fdc = self.resources[R.RES_FD]
        fdc.check(cluster, resource, address)
        vol_offset = fdc.volume_offset(cluster, resource)
        raw = self.device.read(vol_offset, self.geometry.fd_size)
        fd = FileDescriptor(self, address, vol_offset, raw)
        fd.validated_us = self._now_us()
        with self._lock:
            self._fd_cache.put(address, fd)
        return fd

    @property
    def root(self) -> FileDescriptor:
        return self.read_fd(ROOT_FD)

    root_address = ROOT_FD

    def reader(self, fd: FileDescriptor) -> FileReader:
        return FileReader(fd)

    # -- block resolution -----------------------------------------------------------------------------

    def _resource_for(self, kind: int, address: int, owner: FileDescriptor) -> ResourceFile:
        """The resource file an address points into.  While the system files themselves are being
        opened the later ones do not exist yet: an address into them is corruption, not a bug."""
        res = self.resources.get(kind)
        if res is None:
            raise CorruptError(
                f"file descriptor {owner.address:#x}",
                owner.vol_offset,
                f"0x{address:x} points into {RESOURCE_NAMES.get(kind, kind)}, which is not open yet",
            )
        return res

    def pointer_block(self, address: int, owner: FileDescriptor):  # type: ignore[no-untyped-def]
        """The entries of the pointer block at ``address`` (cached)."""
        with self._lock:
            cached = self._pb_cache.get(address)
            if cached is not None:
                return cached
        geo = self.geometry
        kind = A.kind(address)
        where = f"pointer block of FD {owner.address:#x}"
        if kind in (A.ADDR_PB, A.ADDR_PB2) or (kind == A.ADDR_SB and geo.vmfs6):
            res = self._resource_for(
                {A.ADDR_PB: R.RES_PB, A.ADDR_PB2: R.RES_PB2, A.ADDR_SB: R.RES_SB}[kind], address, owner
            )
            _, c, r = geo.codec.split(address)
            res.check(c, r, address)
            if res.rsz < geo.pb_size:
                raise CorruptError(res.name, None, f"resource size {res.rsz} is smaller than a pointer block")
            raw = res.read_resource(c, r, geo.pb_size)
        elif kind == A.ADDR_FB:
            block = geo.codec.fb_block(address)
            if block >= self.num_blocks:
                raise CorruptError(where, owner.vol_offset, f"block {block} beyond the volume")
            raw = self.device.read(block * geo.block_size, geo.pb_size)
        else:
            raise CorruptError(where, owner.vol_offset, f"0x{address:x} is not a pointer-block address")
        entries = unpack_ints(raw, geo.addr_width)
        with self._lock:
            self._pb_cache.put(address, entries)
        return entries

    def data_location(self, address: int, within: int, length: int, owner: FileDescriptor) -> int | None:
        """Volume offset of ``length`` bytes at ``within`` in the data block ``address``;
        None when they read as zeros (to-be-zeroed block)."""
        geo = self.geometry
        kind = address & 7
        if kind == A.ADDR_FB:
            if geo.codec.fb_tbz(address):
                return None
            block = geo.codec.fb_block(address)
            if block >= self.num_blocks:
                raise CorruptError(
                    f"file descriptor {owner.address:#x}", owner.vol_offset, f"block {block} beyond the volume"
                )
            if within + length > geo.block_size:
                raise CorruptError(
                    f"file descriptor {owner.address:#x}", owner.vol_offset, "file block smaller than its block size"
                )
            return block * geo.block_size + within
        if kind == A.ADDR_SB:
            if within + length > geo.sub_block_size:
                raise CorruptError(
                    f"file descriptor {owner.address:#x}", owner.vol_offset, "sub-block smaller than its block size"
                )
            sbc = self._resource_for(R.RES_SB, address, owner)
            _, c, r = geo.codec.split(address)
            sbc.check(c, r, address)
            return sbc.volume_offset(c, r) + within
        if kind == A.ADDR_LFB and geo.vmfs6:
            if geo.codec.fb_tbz(address):
                return None
            number = (address >> 15) & 0x7FFFFFFF
            start = number * geo.lfb_size
            if start + within + length > self.device.size:
                raise CorruptError(
                    f"file descriptor {owner.address:#x}", owner.vol_offset, f"LFB {number} beyond the volume"
                )
            return start + within
        raise CorruptError(
            f"file descriptor {owner.address:#x}",
            owner.vol_offset,
            f"0x{address:x} ({A.KIND_NAMES[kind]}) is not a data block address",
        )

    # -- life cycle -------------------------------------------------------------------------------------

    def pin(self, fd: FileDescriptor) -> None:
        """Keep ``fd`` as the one in-memory object for its address while a handle is open."""
        with self._lock:
            entry = self._pinned.get(fd.address)
            if entry is None:
                self._pinned[fd.address] = [fd, 1]
            else:
                entry[1] += 1

    def unpin(self, fd: FileDescriptor) -> None:
        with self._lock:
            entry = self._pinned.get(fd.address)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._pinned[fd.address]
                    self._fd_cache.put(fd.address, fd)

    def forget_fd(self, address: int) -> None:
        with self._lock:
            self._fd_cache.pop(address, None)
            self._dir_cache.pop(address, None)

    def remember_pointer_block(self, address: int, entries: object) -> None:
        """The entries of the pointer block at ``address`` as a writer's transaction has them
        (dropped with every cache if the transaction is abandoned)."""
        with self._lock:
            self._pb_cache.put(address, entries)

    def forget_directory(self, address: int) -> None:
        """Drop the cached directory object of ``address`` (its FD stays cached): a VMFS6
        directory object holds its header, which a writer has just changed."""
        with self._lock:
            self._dir_cache.pop(address, None)

    def invalidate_caches(self) -> None:
        """Drop every cached FD, pointer block and directory (after an aborted transaction, a
        journal replay, or changes made by another host)."""
        with self._lock:
            self._fd_cache.clear()
            self._pb_cache.clear()
            self._dir_cache.clear()
            if self.geometry.vmfs6:
                self._open_resources()  # VMFS6 resource files grow (vmfs.cluster.grow)
            for address, entry in list(self._pinned.items()):
                fd = entry[0]
                raw = self.device.read(fd.vol_offset, self.geometry.fd_size)
                fresh = FileDescriptor(self, address, fd.vol_offset, raw)
                for hook in self.reload_hooks:
                    hook(fresh)
                entry[0] = fresh
        self._usage = None
        if self.writer is not None:
            self.writer.caches_dropped()

    # -- the writer and the statfs figures -----------------------------------------------------------

    def bind_writer(self, writer: VolumeWriter) -> None:
        """The host attachment that writes through this volume from now on (one at a time)."""
        if self.writer is not None and self.writer is not writer:
            raise RuntimeError("this volume already has a writer")
        self.writer = writer

    def unbind_writer(self, writer: VolumeWriter) -> None:
        if self.writer is writer:
            self.writer = None

    def cached_usage(self) -> dict[str, int] | None:
        return dict(self._usage) if self._usage is not None else None

    def remember_usage(self, usage: dict[str, int]) -> None:
        self._usage = dict(usage)

    def note_usage_change(self, kind: int, delta: int) -> None:
        """``delta`` resources of ``kind`` were freed (positive) or taken: keep statfs current."""
        cache = self._usage
        if cache is None:
            return
        if kind == R.RES_FB:
            cache["blocks_free"] += delta
        elif kind == R.RES_FD:
            cache["files_free"] += delta

    def close(self) -> None:
        if self.closed:
            return
        if self.writer is not None:
            self.writer.close()  # detaches (unbinding itself), then closes us again
            return
        self.closed = True
        self.device.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __setattr__(self, name: str, value: object) -> None:
        """Only Volume's own methods set its attributes: what a volume has is what this class
        says, and a writer reaches it only through :meth:`bind_writer` (nothing is attached from
        outside, as it once was).  The check is one frame lookup per assignment, and assignments
        happen at open, bind, close and cache-policy changes only."""
        if sys._getframe(1).f_code not in _VOLUME_CODE:
            raise AttributeError(f"Volume.{name} is set by Volume's own methods only")
        object.__setattr__(self, name, value)


#: code objects of Volume's own methods (the only ones allowed to set its attributes)
_VOLUME_CODE = frozenset(
    member.__code__
    for member in (getattr(m, "fget", m) for m in vars(Volume).values())
    if hasattr(member, "__code__")
)
