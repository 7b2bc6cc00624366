"""The read-write FUSE operations: every call maps to one :mod:`vmfs.writeops` operation."""

from __future__ import annotations

import errno
import os
import threading

import mfusepy

from vmfs.fuse import VmfsOperations, fuse_op
from vmfs.namespace import FileSystem
from vmfs.writeops import WritableFileSystem


def _caller() -> tuple[int, int]:
    try:
        uid, gid, _ = mfusepy.fuse_get_context()
        return uid, gid
    except Exception:  # pragma: no cover - outside a FUSE call
        return os.getuid(), os.getgid()


class ReadWriteOperations(VmfsOperations):
    def __init__(self, fs: FileSystem) -> None:
        wfs = fs if isinstance(fs, WritableFileSystem) else WritableFileSystem(fs.volume)
        super().__init__(wfs)
        self.wfs = wfs
        self._open_counts: dict[int, int] = {}
        self._counts_lock = threading.Lock()

    # -- handles: the FD address, pinned so one object carries deferred changes -----------------------

    def _open(self, address: int, write: bool) -> int:
        self.wfs.open_file(address, write=write)
        return self._new_handle((address, write))

    @fuse_op
    def open(self, path: str, flags: int) -> int:
        fd = self.wfs.resolve(path)
        write = bool(flags & (os.O_WRONLY | os.O_RDWR))
        if write and fd.is_dir:
            raise mfusepy.FuseOSError(errno.EISDIR)
        handle = self._open(fd.address, write)
        if flags & os.O_TRUNC and write:
            self.wfs.truncate(fd.address, 0)
        return handle

    @fuse_op
    def create(self, path: str, mode: int, fi=None) -> int:  # type: ignore[no-untyped-def]
        uid, gid = _caller()
        fd = self.wfs.create(path, mode, uid, gid)
        return self._open(fd.address, True)

    def _address(self, fh: int | None) -> int | None:
        entry = self._handles.get(fh) if fh is not None else None
        return entry[0] if entry is not None else None

    @fuse_op
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        address = self._address(fh)
        fd = self.volume.read_fd(address) if address is not None else self.wfs.resolve(path)
        return self.wfs.volume.reader(fd).read(offset, size)

    @fuse_op
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        address = self._address(fh)
        if address is None:
            address = self.wfs.resolve(path).address
        return self.wfs.write(address, offset, bytes(data))

    @fuse_op
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        address = self._address(fh)
        if address is None:
            address = self.wfs.resolve(path).address
        self.wfs.truncate(address, length)
        return 0

    @fuse_op
    def flush(self, path: str, fh: int) -> int:
        # close(2) waits for FLUSH but not for RELEASE: everything a closed file leaves on disk
        # (deferred length, the preallocated blocks given back) is written here
        entry = self._handles.get(fh)
        if entry is not None:
            address, write = entry
            self.wfs.flush_handle(address, write=write)
        return 0

    @fuse_op
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        address = self._address(fh)
        if address is None:
            address = self.wfs.resolve(path).address
        self.wfs.fsync(address)
        return 0

    @fuse_op
    def release(self, path: str, fh: int) -> int:
        with self._handles_lock:
            entry = self._handles.pop(fh, None)
        if entry is not None:
            address, write = entry
            self.wfs.close_file(address, write=write)
        return 0

    # -- namespace --------------------------------------------------------------------------------------

    @fuse_op
    def mkdir(self, path: str, mode: int) -> int:
        uid, gid = _caller()
        self.wfs.mkdir(path, mode, uid, gid)
        return 0

    @fuse_op
    def rmdir(self, path: str) -> int:
        self.wfs.rmdir(path)
        return 0

    @fuse_op
    def unlink(self, path: str) -> int:
        self.wfs.unlink(path)
        return 0

    @fuse_op
    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, target) as (target, source) following fusepy's naming
        uid, gid = _caller()
        self.wfs.symlink(source, target, uid, gid)
        return 0

    @fuse_op
    def rename(self, old: str, new: str) -> int:
        self.wfs.rename(old, new)
        return 0

    @fuse_op
    def link(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)

    @fuse_op
    def chmod(self, path: str, mode: int) -> int:
        self.wfs.chmod(path, mode)
        return 0

    @fuse_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.wfs.chown(path, uid, gid)
        return 0

    @fuse_op
    def utimens(self, path: str, times=None) -> int:  # type: ignore[no-untyped-def]
        if times is None:
            now = self.wfs.now()
            atime = mtime = now
        else:
            atime, mtime = (int(t // 1_000_000_000) for t in times)
        self.wfs.utimens(path, atime, mtime, follow=False)
        return 0

    @fuse_op
    def mknod(self, path: str, mode: int, dev: int) -> int:
        import stat

        if stat.S_ISREG(mode):
            uid, gid = _caller()
            self.wfs.create(path, mode, uid, gid)
            return 0
        raise mfusepy.FuseOSError(errno.EPERM)
