"""Virtual disks inside a VMFS volume: the :class:`~vmfs.vmdk.storage.DiskStorage` seam on top of
the volume library, without a mount (vmdk-format.md section 7).

Names are ``/``-separated paths relative to a directory of the volume (``..`` allowed, as parent
hints use it).  Absolute names are volume paths; ``/vmfs/volumes/<label or UUID>/...``, the form
ESXi writes into parent hints, is mapped onto this volume.

* File data goes through the library: reads through :class:`vmfs.volume.filereader.FileReader` (holes and
  to-be-zeroed blocks read as zeros there and nowhere else), writes through
  :meth:`WritableFileSystem.write`, one transaction per call, so every write is journaled
  metadata plus data written in place.  An open file pins its FD, so the length of appends that
  the library defers lives in one object until ``flush``/``close``.
* Provisioning (7.2): ``thin`` is a sparse file (``truncate``: no blocks); ``zeroedthick``
  allocates every block with its TBZ flag set (``allocate(eager=False)``); ``eagerzeroedthick``
  allocates zeroed blocks (``allocate(eager=True)``).
* :meth:`VolumeStorage.allocated_ranges` reports file blocks that hold data: holes and TBZ blocks
  read as zeros without touching the disk, so they are not data.
* :meth:`VolumeStorage.describe_lock` prints the FD's on-disk lock in the layout of
  ``vmkfstools -D`` (7.5) and says what the heartbeat slot it names holds now.

A volume opened read-only (a :class:`FileSystem` rather than a :class:`WritableFileSystem`)
refuses every change with :class:`~vmfs.vmdk.errors.ReadOnlyError` before anything is touched.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
from collections.abc import Iterator
from typing import Any, BinaryIO

from vmfs import errors as E
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.debug.views import LOCK_MODE_NAMES
from vmfs.format import address as A
from vmfs.ondisk import filedesc as F
from vmfs.ondisk.heartbeat import HEARTBEAT_REGION_OFFSET
from vmfs.ondisk.lock import LockBlock
from vmfs.vmdk.errors import (
    ExistsError,
    InvalidArgumentError,
    MissingExtentError,
    NoSpaceError,
    ReadOnlyError,
    UnsupportedError,
    VmdkError,
)
from vmfs.vmdk.storage import OPEN_MODES, PROVISIONINGS
from vmfs.volume.filedesc import BlockMap, FileDescriptor
from vmfs.volume.filereader import FileReader, seek_position
from vmfs.volume.namespace import FileSystem
from vmfs.volume.slots import read_slot
from vmfs.volume.volume import Volume
from vmfs.write.posix import WRITE_CHUNK, WritableFileSystem

#: blocks freed per transaction by the punch stand-in (well inside one journal block)
PUNCH_BATCH = 4096
#: ``type`` words of ``vmkfstools -D``'s Addr line
_TYPE_WORDS = {
    F.TYPE_DIRECTORY: "dir",
    F.TYPE_REGFILE: "reg",
    F.TYPE_SYSFILE: "sys",
    F.TYPE_RDM: "rdm",
}


class _translated:
    """Volume errors as VMDK errors naming the storage name (same errno, matching builtin).
    A class, not a generator context manager: it wraps every read and write of a disk."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> bool:
        if exc is None or not isinstance(exc, E.VmfsError):
            return False
        name = self.name
        if isinstance(exc, E.NotFoundError):  # the volume's message names the missing component
            raise MissingExtentError(f"{name}: {exc}") from None
        if isinstance(exc, E.ExistsError):
            raise ExistsError(f"{name}: already exists") from None
        if isinstance(exc, E.ReadOnlyError):
            raise ReadOnlyError(f"{name}: {exc}") from None
        if isinstance(exc, (E.IsADirError, E.NotADirError, E.InvalidArgumentError)):
            raise InvalidArgumentError(f"{name}: {exc}", errno=exc.errno) from None
        if isinstance(exc, E.NoSpaceError):
            raise NoSpaceError(f"{name}: {exc}") from None
        if isinstance(exc, E.UnsupportedError):
            raise UnsupportedError(f"{name}: {exc}") from None
        raise VmdkError(f"{name}: {exc}", errno=exc.errno) from None


def write_all(wfs: Any, address: int, offset: int, data: bytes) -> int:
    """Write all of ``data`` or raise.  :meth:`WritableFileSystem.write` keeps POSIX's short
    write (a full volume part way through returns the bytes stored); a disk layer that took the
    short count for success would lose the rest silently, so the remainder is written again,
    which raises the error that stopped it (ENOSPC, EIO)."""
    done = 0
    while done < len(data):
        n = wfs.write(address, offset + done, data[done:])
        if n <= 0:
            raise NoSpaceError(f"no progress writing {len(data) - done} bytes at offset {offset + done}")
        done += n
    return done


class VolumeFile(io.RawIOBase):
    """One open file of the volume, as a seekable binary stream (``DiskStorage.open``)."""

    def __init__(self, storage: VolumeStorage, name: str, address: int, *, writable: bool) -> None:
        super().__init__()
        self.name = name
        self._storage = storage
        self._volume = storage.volume
        self._address = address
        self._writable = writable
        self._pos = 0
        #: the library's open-file call, when it has one: it takes the FD's on-disk lock
        #: (exclusive to write, read-only to read, vmdk-format.md 7.5) and pins the FD
        self._locking = storage.writable and hasattr(storage.fs, "open_file")
        self._pinned: FileDescriptor | None = None  # set once the open succeeded (close() checks it)
        if self._locking:
            self._pinned = storage.wfs.open_file(address, write=writable)  # type: ignore[attr-defined]
        else:
            fd = self._volume.read_fd(address)
            self._volume.pin(fd)
            self._pinned = fd

    def _fd(self) -> FileDescriptor:
        return self._volume.read_fd(self._address)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = seek_position(self._pos, offset, whence, self._fd().size)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        with _translated(self.name):
            fd = self._fd()
            if size is None or size < 0:
                size = max(fd.size - self._pos, 0)
            data = FileReader(fd).read(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        self._check_open()
        if not self._writable:
            raise ReadOnlyError(f"{self.name}: file is open read-only")
        if type(data) is not bytes:
            data = bytes(data)
        with _translated(self.name):
            n = write_all(self._storage.wfs, self._address, self._pos, data)
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        self._check_open()
        if not self._writable:
            raise ReadOnlyError(f"{self.name}: file is open read-only")
        size = self._pos if size is None else size
        with _translated(self.name):
            self._storage.wfs.truncate(self._address, size)
        return size

    def flush(self) -> None:
        if self.closed or not self._writable or self._volume.closed:
            return
        with _translated(self.name):
            self._storage.wfs.flush_fd(self._fd())

    def close(self) -> None:
        if self.closed:
            return
        pinned, self._pinned = self._pinned, None
        try:
            if pinned is not None and self._locking and not self._volume.closed:
                with _translated(self.name):
                    self._storage.wfs.close_file(self._address, write=self._writable)  # type: ignore[attr-defined]
            else:
                self.flush()
        finally:
            if pinned is not None and not self._locking:
                self._volume.unpin(pinned)  # by address: the pinned object may have been refreshed
            super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidArgumentError(f"{self.name}: I/O on a closed file")


class VolumeStorage:
    """Disk files under ``directory`` of a VMFS volume opened with the library (no mount)."""

    def __init__(self, fs: FileSystem, directory: str = "/") -> None:
        self.fs = fs
        self.volume: Volume = fs.volume
        self.directory = posixpath.normpath("/" + directory.strip("/"))

    def __repr__(self) -> str:
        return f"VolumeStorage({self.volume.label or self.volume.uuid!r}, {self.directory!r})"

    @property
    def writable(self) -> bool:
        return isinstance(self.fs, WritableFileSystem)

    @property
    def wfs(self) -> WritableFileSystem:
        if not isinstance(self.fs, WritableFileSystem):
            raise ReadOnlyError(f"{self.volume.device.name}: the VMFS volume is open read-only")
        return self.fs

    def path(self, name: str) -> str:
        """Volume path of a storage name."""
        path = self._strip_datastore(name) if name.startswith("/") else posixpath.join(self.directory, name)
        return posixpath.normpath("/" + path.lstrip("/"))

    def _strip_datastore(self, path: str) -> str:
        parts = path.split("/")
        if len(parts) > 3 and parts[1:3] == ["vmfs", "volumes"] and parts[3] in {self.volume.label, self.volume.uuid}:
            return "/" + "/".join(parts[4:])
        return path

    def _resolve(self, name: str) -> FileDescriptor:
        with _translated(name):
            fd = self.fs.resolve(self.path(name))
        if fd.is_dir:
            raise InvalidArgumentError(f"{name}: is a directory")
        return fd

    # -- protocol ----------------------------------------------------------------------------------

    def open(self, name: str, mode: str) -> BinaryIO:
        if mode not in OPEN_MODES:
            raise InvalidArgumentError(f"unsupported open mode {mode!r} (use one of {OPEN_MODES})")
        if mode == "w+b":
            wfs = self.wfs
            if self.exists(name):
                fd = self._resolve(name)
                with _translated(name):
                    wfs.truncate(fd.address, 0)
            else:
                with _translated(name):
                    fd = wfs.create(self.path(name))
        else:
            if mode == "r+b":
                self.wfs  # noqa: B018 - refuse before opening
            fd = self._resolve(name)
        with _translated(name):
            return VolumeFile(self, name, fd.address, writable=mode != "rb")  # type: ignore[return-value]

    def exists(self, name: str) -> bool:
        try:
            self.fs.resolve(self.path(name))
        except (E.NotFoundError, E.NotADirError):
            return False
        except E.VmfsError as exc:
            raise VmdkError(f"{name}: {exc}", errno=exc.errno) from None
        return True

    def remove(self, name: str) -> None:
        wfs = self.wfs
        with _translated(name):
            wfs.unlink(self.path(name))

    def rename(self, old: str, new: str) -> None:
        wfs = self.wfs
        if self.exists(new):
            raise ExistsError(f"{new}: already exists")
        with _translated(old):
            wfs.rename(self.path(old), self.path(new))

    def size(self, name: str) -> int:
        return self._resolve(name).size

    def create(self, name: str, size: int, provisioning: str) -> None:
        _check_provisioning(provisioning)
        wfs = self.wfs
        if size < 0:
            raise InvalidArgumentError(f"{name}: negative size")
        with _translated(name):
            fd = wfs.create(self.path(name))
        try:
            with _translated(name):
                if size:
                    wfs.truncate(fd.address, size)
                if size and provisioning != "thin":
                    wfs.allocate(fd.address, size, eager=provisioning == "eagerzeroedthick")
                wfs.flush_fd(self.volume.read_fd(fd.address))
        except BaseException:
            with contextlib.suppress(E.VmfsError):
                wfs.unlink(self.path(name))
            raise

    def resize(self, name: str, size: int, provisioning: str) -> None:
        """Shrink, or grow with the new space allocated per ``provisioning``.  Growing a thick file
        also allocates any hole it already had (the library allocates from block 0)."""
        _check_provisioning(provisioning)
        wfs = self.wfs
        fd = self._resolve(name)
        with _translated(name):
            old = fd.size
            wfs.truncate(fd.address, size)
            if size > old and provisioning != "thin":
                wfs.allocate(fd.address, size, eager=provisioning == "eagerzeroedthick")

    def makedirs(self, name: str) -> None:
        """Create directory ``name`` and its missing parents (like ``mkdir -p``)."""
        wfs = self.wfs
        path = self.path(name)
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            with _translated(current):
                try:
                    fd = wfs.resolve(current)
                except E.NotFoundError:
                    wfs.mkdir(current)
                    continue
                if not fd.is_dir:
                    raise InvalidArgumentError(f"{current}: not a directory")

    # -- provisioning ---------------------------------------------------------------------------------

    def set_provisioning(self, name: str, provisioning: str, *, offset: int = 0, length: int | None = None) -> None:
        """``zeroedthick``: allocate every hole as a TBZ block.  ``eagerzeroedthick``: allocate the
        holes zeroed and zero every TBZ block (a write clears its flag, vmdk-format.md 7.2).
        ``thin`` gives nothing back (use :meth:`punch_zero`).  With ``offset``/``length`` only the
        blocks of that byte range change (zeroedthick: ``fallocate``; eagerzeroedthick: zeros
        written over its holes and TBZ blocks, which allocates and clears them in the same
        transactions): every step is its own transaction, so the file is consistent after each call."""
        _check_provisioning(provisioning)
        if provisioning == "thin":
            return
        wfs = self.wfs
        fd = self._resolve(name)
        address = fd.address
        end = fd.size if length is None else min(fd.size, offset + length)
        whole = offset == 0 and end == fd.size
        eager = provisioning == "eagerzeroedthick"
        with _translated(name):
            if whole:
                wfs.allocate(address, fd.size, eager=eager)
            elif end > offset and not (eager and not fd.is_resident):
                wfs.fallocate(address, offset, end - offset, keep_size=True)
            if eager and end > offset:
                fd = self.volume.read_fd(address)
                if whole:
                    zeros = self._tbz_ranges(fd)
                elif fd.is_resident:
                    zeros = []
                else:  # what reads as zeros without I/O: holes and TBZ blocks
                    zeros = [(pos, n) for pos, n, loc in FileReader(fd).extents(offset, end - offset) if loc is None]
                for start, run in zeros:
                    pos = start
                    while pos < start + run:
                        n = min(WRITE_CHUNK, start + run - pos)
                        write_all(wfs, address, pos, bytes(n))
                        pos += n
            wfs.flush_fd(self.volume.read_fd(address))

    # -- thin helpers -----------------------------------------------------------------------------------

    def allocated_ranges(self, name: str) -> list[tuple[int, int]]:
        """Byte ranges held by data blocks, sorted and merged; holes and TBZ blocks are left out.
        Walks only the pointer blocks that exist, so a huge thin file costs what it holds."""
        fd = self._resolve(name)
        with _translated(name):
            return self._data_ranges(fd)

    def _blocks(self, fd: FileDescriptor) -> Iterator[tuple[int, int]]:
        """(file block index, address) of every data block inside the file length."""
        if fd.is_resident or not fd.size:
            return
        count = -(-fd.size // fd.block_size)
        for index, addr, is_pb in BlockMap(fd).references():
            if not is_pb and index is not None and index < count:
                yield index, addr

    def _data_ranges(self, fd: FileDescriptor) -> list[tuple[int, int]]:
        if fd.is_resident:
            return [(0, fd.size)] if fd.size else []
        bs = fd.block_size
        out: list[tuple[int, int]] = []
        for index, addr in self._blocks(fd):
            if self.volume.data_location(addr, 0, 1, fd) is None:  # to be zeroed
                continue
            _merge(out, index * bs, min(bs, fd.size - index * bs))
        return out

    def _tbz_ranges(self, fd: FileDescriptor) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        bs = fd.block_size
        for index, addr in self._blocks(fd):
            if self.volume.data_location(addr, 0, 1, fd) is None:
                _merge(out, index * bs, min(bs, fd.size - index * bs))
        return out

    def punch_zero(self, name: str, offset: int, length: int) -> None:
        """Deallocate ``[offset, offset+length)``: whole blocks inside it are freed, and the data
        of the partial blocks at its ends is overwritten with zeros (holes and TBZ blocks there
        already read as zeros and stay as they are)."""
        wfs = self.wfs
        fd = self._resolve(name)
        address = fd.address
        end = min(offset + length, fd.size)
        if length <= 0 or offset >= end:
            return
        with _translated(name):
            wfs.flush_fd(fd)
            if fd.is_resident:
                write_all(wfs, address, offset, bytes(end - offset))
                return
            bs = fd.block_size
            first = -(-offset // bs)
            last = end // bs if end < fd.size else -(-end // bs)  # the file's tail block counts whole
            if first >= last:
                self._zero_data(address, offset, end)
                return
            self._zero_data(address, offset, first * bs)
            self._zero_data(address, last * bs, end)
            wfs.punch_hole(address, first * bs, (last - first) * bs)

    def _zero_data(self, address: int, start: int, end: int) -> None:
        """Write zeros over the data blocks of ``[start, end)`` (holes and TBZ blocks untouched)."""
        if end <= start:
            return
        fd = self.volume.read_fd(address)
        for pos, n, loc in list(FileReader(fd).extents(start, end - start)):
            if loc is not None:
                write_all(self.wfs, address, pos, bytes(n))

    # -- lock information ------------------------------------------------------------------------------

    def describe_lock(self, name: str) -> dict[str, str]:
        """The FD's lock in ``vmkfstools -D`` layout (key ``vmkfstools -D``, a text block), then
        what the heartbeat slot named by the lock holds now and the file's allocation."""
        fd = self._resolve(name)
        with _translated(name):
            # the lock as it is on disk now: another host (or this one, since the FD was cached)
            # may have taken or released it
            lock = LockBlock.parse(self.volume.device.read(fd.vol_offset, LockBlock.sizeof())).lock
            meta = fd.meta
            text = vmkfstools_d(fd, lock)
            info = {
                "file": name,
                "vmkfstools -D": text,
                "volume path": self.path(name),
                "volume": f"{self.volume.label or '(no label)'} {self.volume.uuid} {self.volume.version_string}",
                "lock mode": LOCK_MODE_NAMES.get(lock.mode, f"unknown {lock.mode}"),
                "lock owner": str(lock.owner),
                "lock token": str(lock.token),
                "heartbeat": self._heartbeat_text(lock.hbAddr, lock.hbGen),
                "size": str(meta.fileLength),
                "allocated": str(0 if fd.is_resident else meta.numBlocks * meta.blockSize),
                "tbz blocks": str(meta.numTBZBlocksLo | meta.numTBZBlocksHi << 32),
            }
        return info

    def _heartbeat_text(self, hb_addr: int, hb_gen: int) -> str:
        if not hb_addr:
            return "none recorded in the lock"
        geo = self.volume.geometry
        if not HEARTBEAT_REGION_OFFSET <= hb_addr < HEARTBEAT_REGION_OFFSET + geo.heartbeat_region_size:
            return f"offset {hb_addr}: outside the heartbeat region"
        slot = (hb_addr - HEARTBEAT_REGION_OFFSET) // geo.hb_slot_size
        view = read_slot(self.volume, slot)
        hb = view.hb
        if not view.in_use:
            state = "free now (the lock holder is gone)"
        elif hb.hbGen != hb_gen:
            state = f"in use by {hb.owner} at generation {hb.hbGen} (not the lock's: stale)"
        else:
            state = f"in use by {hb.owner}, same generation (holder alive)"
        return f"slot {slot} at offset {hb_addr}, generation {hb_gen}: {state}"


def vmkfstools_d(fd: FileDescriptor, lock: Any = None) -> str:
    """An FD as ESXi 6.x ``vmkfstools -D`` prints it (the layout dissect.vmfs's ``debug()`` mimics):
    the lock (type, own offset, version = token, heartbeat offset and generation, mode, owner,
    mtime, holder counts), the ``Addr <kind, cluster, resource>`` line, the allocation line, then
    affinity/parent FDs and the remaining counters.  ``lock`` defaults to the one parsed with the
    FD.  ESXi 5.x printed only the first five lines."""
    lock = fd.lock if lock is None else lock
    meta = fd.meta
    ftype = _TYPE_WORDS.get(meta.type, "oth")
    tbz = meta.numTBZBlocksLo | meta.numTBZBlocksHi << 32
    cow = meta.numCOWBlocksLo | meta.numCOWBlocksHi << 32
    new = meta.newSinceEpochLo | meta.newSinceEpochHi << 32

    def fd_text(address: int, sep: str) -> str:
        cluster, resource = A.fd_split(address)
        return f"<{address & 7}{sep}{cluster}{sep}{resource}>"

    return "\n".join(
        [
            f"Lock [type {lock.type:x} offset {lock.addr} v {lock.token}, hb offset {lock.hbAddr}",
            f"gen {lock.hbGen}, mode {lock.mode}, owner {lock.owner} mtime {lock.mtime}",
            f"num {lock.numHolders} gblnum {lock.gblNumHolders} gblgen {lock.gblGen} gblbrk {lock.gblBrk}]",
            f"Addr {fd_text(fd.address, ', ')}, gen {meta.generation}, links {meta.linkCount}, type {ftype}, "
            f"flags {meta.flags}, uid {meta.uid}, gid {meta.gid}, mode {meta.mode & 0o7777:o}",
            f"len {meta.fileLength}, nb {meta.numBlocks} tbz {tbz}, cow {cow}, newSinceEpoch {new}, "
            f"zla {meta.zla}, bs {meta.blockSize}",
            f"affinityFD {fd_text(meta.affinityFD, ',')}, parentFD {fd_text(meta.parentFD, ',')}, "
            f"tbzGranularityShift {meta.tbzGranularityShift}, numLFB {meta.numLFB}",
            f"lastSFBClusterNum {meta.lastSFBClusterNum}, numPreAllocBlocks {meta.numPreAllocBlocks}, "
            f"numPointerBlocks {meta.numPointerBlocks}",
        ]
    )


def _merge(ranges: list[tuple[int, int]], start: int, length: int) -> None:
    if length <= 0:
        return
    if ranges and ranges[-1][0] + ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
    else:
        ranges.append((start, length))


def _check_provisioning(provisioning: str) -> None:
    if provisioning not in PROVISIONINGS:
        raise InvalidArgumentError(f"unknown provisioning {provisioning!r} (use one of {PROVISIONINGS})")


@contextlib.contextmanager
def open_volume_storage(
    images: list[str | os.PathLike[str]],
    directory: str = "/",
    *,
    writable: bool = False,
    host: HostIdentity | None = None,
) -> Iterator[VolumeStorage]:
    """Open the volume on ``images`` (every extent of a spanned volume) and yield a
    :class:`VolumeStorage` rooted at ``directory``; the volume is closed (heartbeat released,
    deferred metadata written) on exit.  Read-write (as ``host``) only when ``writable``."""
    if writable:
        attachment = HostAttachment.open(list(images), host=host)
        volume = attachment.volume
    else:
        volume = Volume.open(list(images))
    try:
        fs: FileSystem = WritableFileSystem(attachment) if writable else FileSystem(volume)
        yield VolumeStorage(fs, directory)
    finally:
        volume.close()


__all__ = ["VolumeFile", "VolumeStorage", "open_volume_storage", "vmkfstools_d"]
