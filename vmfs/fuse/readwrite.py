"""The read-write FUSE operations: every call maps to one :mod:`vmfs.write.posix` operation.

Callbacks of one mount run one at a time (:data:`SERIALIZED`): libfuse calls them from several
threads, and an operation reads, changes and writes back in-memory FDs that others share (the
pinned FD of an open file, its deferred length), so two at once could lose one's change.  Python
runs one thread at a time anyway; the cost is only the overlap of device reads.

An open file that is unlinked stays reachable by path: libfuse renames it to ``.fuse_hidden*``
when its own open count says it is open, so that fchmod(2) and the like still find it
(``hard_remove`` would make them fail with ESTALE).  libfuse's count and ours race (an open in
flight is counted by us first), so the library never frees a file this host holds open either:
:meth:`WritableFileSystem.unlink` then moves it to a hidden name of its own and removes it at the
last close, which libfuse's hidden files once left behind for good.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
import threading
from typing import Any, ClassVar

import mfusepy

from vmfs.errors import NotFoundError
from vmfs.fuse.readonly import VmfsOperations, fuse_attrs, fuse_op
from vmfs.volume.namespace import stat_fd
from vmfs.write.posix import WritableFileSystem

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
#: tv_nsec values of utimensat(2) that say "now" and "leave as it is"
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
#: a time of ``utimens`` meaning "the current time"
NOW = object()


def _timespec_value(ts: Any) -> object:
    """A timespec from libfuse as nanoseconds, :data:`NOW` or None (UTIME_OMIT)."""
    if ts.tv_nsec == UTIME_NOW:
        return NOW
    if ts.tv_nsec == UTIME_OMIT:
        return None
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec


class ReadWriteFUSE(mfusepy.FUSE):
    """mfusepy's FUSE with what it drops on the way: rename(2)'s flags (RENAME_NOREPLACE,
    RENAME_EXCHANGE; mfusepy ignores them, which turned an exchange into a replacing rename)
    and utimensat(2)'s UTIME_NOW / UTIME_OMIT (mfusepy passes them on as times); and a create
    without mfusepy's per-call look at the operation's signature."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(old.decode(self.encoding, self.errors),
                                      new.decode(self.encoding, self.errors), flags)

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    @staticmethod
    def _fh(fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def utimens_fuse_2(self, path: bytes | None, buf: Any, fh: int | None = None) -> int:
        times = None
        if buf:
            times = (_timespec_value(buf.contents.actime), _timespec_value(buf.contents.modtime))
        return self.operations.utimens(self._path(path), times, fh)

    # libfuse may name a file by its handle only (path None: a node it no longer has a path
    # for); mfusepy drops the handle of these calls, so they are passed on here.

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        return self.utimens_fuse_2(path, buf, self._fh(fip))

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        return self.operations.chmod(self._path(path), mode, self._fh(fip))

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        uid = -1 if ctypes.c_uint32(uid + 1).value == 0 else uid
        gid = -1 if ctypes.c_uint32(gid + 1).value == 0 else gid
        return self.operations.chown(self._path(path), uid, gid, self._fh(fip))

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return self.operations.truncate(self._path(path), length, self._fh(fip))

    def create(self, path: bytes, mode: int, fip: Any) -> int:
        # mfusepy asks inspect.signature() of the operation on every create, to tell which form
        # it has: 8 % of a small file's create through the mount went there
        fi = fip.contents
        fi.fh = self.operations.create(path.decode(self.encoding, self.errors), mode, fi.flags)
        return 0


def serialized(method):  # type: ignore[no-untyped-def]
    """Run a callback while holding the mount's operation lock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self.op_lock:
            return method(self, *args, **kwargs)

    return wrapper


def _caller() -> tuple[int, int]:
    try:
        uid, gid, _ = mfusepy.fuse_get_context()
        return uid, gid
    except Exception:  # pragma: no cover - outside a FUSE call
        return os.getuid(), os.getgid()


class ReadWriteOperations(VmfsOperations):
    fuse_class = ReadWriteFUSE
    #: options the read-write mount needs whatever the user asked for
    fuse_options: ClassVar[dict[str, object]] = {}

    def __init__(self, wfs: WritableFileSystem) -> None:
        super().__init__(wfs)
        self.wfs = wfs
        self.attachment = wfs.attachment
        self.op_lock = threading.RLock()

    def before_fork(self) -> None:
        self.attachment.stop_background()  # init (in the serving process) starts it again
        super().before_fork()

    def serving(self) -> None:
        """The heartbeat renewal and the lock keeper start here (a background mount got here
        through libfuse's fork, which keeps no thread), and the identity lock (inherited with
        its open file) records this process as its holder."""
        super().serving()
        self.attachment.start_background()
        if self.attachment.identity_lock is not None:
            self.attachment.identity_lock.update(pid=os.getpid())

    # -- handles: the FD address, pinned so one object carries deferred changes -----------------------

    def _open(self, address: int, write: bool) -> int:
        self.wfs.open_file(address, write=write)
        return self._new_handle((address, write))

    @fuse_op
    def open(self, path: str, flags: int) -> int:
        try:
            fd = self.wfs.resolve(path)
        except NotFoundError:
            # The kernel found the name in its cache, but it was unlinked since: ESTALE makes the
            # kernel look the name up again (LOOKUP_REVAL) and, for O_CREAT (a flag FUSE's OPEN
            # does not carry), create it, where ENOENT would fail open(O_CREAT) in an existing
            # directory, which POSIX never does
            raise mfusepy.FuseOSError(errno.ESTALE) from None
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

    def _target(self, path: str | None, fh: int | None) -> str | int:
        """What a call names: the open handle's FD address, else the path (a file unlinked
        while open has no path any more, only its handle)."""
        address = self._address(fh)
        if address is not None:
            return address
        if path is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return path

    def _file(self, path: str | None, fh: int | None) -> int:
        """The FD address a data call names (its handle, else its path)."""
        target = self._target(path, fh)
        return target if isinstance(target, int) else self.wfs.resolve(target).address

    @fuse_op
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        if path is not None:
            return super().getattr(path, fh)
        return fuse_attrs(stat_fd(self.volume.read_fd(self._file(path, fh))))

    @fuse_op
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.wfs.volume.reader(self.volume.read_fd(self._file(path, fh))).read(offset, size)

    @fuse_op
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        address = self._file(path, fh)
        return self.wfs.write(address, offset, bytes(data))

    @fuse_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.wfs.truncate(self._file(path, fh), length)
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
        address = self._file(path, fh)
        self.wfs.fsync(address)
        return 0

    @fuse_op
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        # a directory's entries are metadata: durable once the open batch has committed
        self.wfs.sync()
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
    def readdir(self, path: str, fh: int):  # type: ignore[no-untyped-def]
        items = super().readdir(path, fh)
        if not self.wfs.orphans:
            return items
        hidden = self.wfs.hidden_names(self.fs.resolve(path).address)
        return [item for item in items if (item if isinstance(item, str) else item[0]) not in hidden]

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
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise mfusepy.FuseOSError(errno.EINVAL)  # RENAME_WHITEOUT and unknown flags: never ignored
        if flags & RENAME_EXCHANGE:
            self.wfs.exchange(old, new)
        else:
            self.wfs.rename(old, new, replace=not flags & RENAME_NOREPLACE)
        return 0

    @fuse_op
    def link(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)

    # The kernel resolves symlinks before it asks for a change of attributes: the path always
    # names the node to change (lchown(2) names the link itself), so nothing here follows.

    @fuse_op
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        self.wfs.chmod(self._target(path, fh), mode, follow=False)
        return 0

    @fuse_op
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        self.wfs.chown(self._target(path, fh), uid, gid, follow=False)
        return 0

    @fuse_op
    def utimens(self, path: str | None, times=None, fh: int | None = None) -> int:  # type: ignore[no-untyped-def]
        now = self.wfs.now()
        if times is None:
            times = (NOW, NOW)
        atime, mtime = (now if t is NOW else None if t is None else t // 1_000_000_000 for t in times)
        self.wfs.utimens(self._target(path, fh), atime, mtime, follow=False)
        return 0

    @fuse_op
    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        address = self._file(path, fh)
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)  # zero, collapse, insert, unshare ranges
        if mode & FALLOC_FL_PUNCH_HOLE:
            if not mode & FALLOC_FL_KEEP_SIZE:
                raise mfusepy.FuseOSError(errno.EOPNOTSUPP)  # as Linux: a punch must keep the size
            self.wfs.punch_hole(address, offset, size)
        else:
            self.wfs.fallocate(address, offset, size, keep_size=bool(mode & FALLOC_FL_KEEP_SIZE))
        return 0

    @fuse_op
    def mknod(self, path: str, mode: int, dev: int) -> int:
        if stat.S_ISREG(mode):
            uid, gid = _caller()
            self.wfs.create(path, mode, uid, gid)
            return 0
        raise mfusepy.FuseOSError(errno.EPERM)


#: every callback of the read-write mount, run one at a time (see the module doc)
SERIALIZED = (
    "getattr", "readdir", "readlink", "statfs", "open", "create", "read", "write", "truncate", "flush",
    "fsync", "fsyncdir", "release", "mkdir", "rmdir", "unlink", "symlink", "rename", "link", "chmod", "chown",
    "utimens", "fallocate", "mknod", "opendir", "destroy",
)
for _name in SERIALIZED:
    setattr(ReadWriteOperations, _name, serialized(getattr(ReadWriteOperations, _name)))
