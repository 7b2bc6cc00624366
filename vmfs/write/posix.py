"""POSIX write operations on a read-write volume (VMFS5).

Each operation is one transaction (or, for a file whose blocks do not fit one journal block, a
series of transactions each of which leaves the volume consistent: a large file shrinks step by
step before its entry disappears).  Errors carry the errno a POSIX filesystem returns.

Length and time changes caused by plain overwrites and appends inside already allocated blocks are
*deferred*: kept in memory and written with the next transaction touching the FD, on fsync, on
close, or at unmount.  That saves one journal commit per write call without breaking the on-disk
invariant that no block is allocated past the end of a file.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import random
import stat as _stat
from collections import Counter
from typing import TYPE_CHECKING

from vmfs.errors import (
    BusyError,
    ExistsError,
    InvalidArgumentError,
    IsADirError,
    NotADirError,
    NotEmptyError,
    NotFoundError,
    SystemFileError,
    VmfsError,
)
from vmfs.format import address as A
from vmfs.format import builders
from vmfs.ondisk import filedesc as F
from vmfs.ondisk import resource as R
from vmfs.ondisk.common import SECTOR
from vmfs.ondisk.lock import LOCK_EXCLUSIVE, LOCK_READ_ONLY, LOCK_TYPE_FD
from vmfs.volume.directory import Directory, Directory6, check_name
from vmfs.volume.filedesc import FileDescriptor
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.write.dirchange import DirectoryChanges, new_directory5_data
from vmfs.write.dirchange6 import DirectoryChanges6, new_directory6_data
from vmfs.write.filedata import FileWriter

if TYPE_CHECKING:
    from vmfs.cluster.attachment import HostAttachment
    from vmfs.cluster.transaction import Transaction

#: bytes of file data written per transaction by one write call
WRITE_CHUNK = 64 << 20
_DEFERRED = ("fileLength", "numPreAllocBlocks", "mtime", "ctime", "atime")
#: latest time an FD holds (u32 seconds: 2106-02-07)
TIME_MAX = 0xFFFFFFFF
#: seconds an operation keeps retrying while other hosts hold the locks it needs
BUSY_TIMEOUT = 10.0


def retrying(method):  # type: ignore[no-untyped-def]
    """Run an operation again (from scratch, with fresh metadata) while another host holds a lock
    it needs, with random back-off, up to BUSY_TIMEOUT; then the EBUSY reaches the caller.
    Each attempt takes its locks inside one transaction, so a retry never holds a lock while
    waiting: hosts cannot deadlock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        clock = self.attachment.host.clock
        deadline = clock.monotonic_us() + int(self.busy_timeout * 1_000_000)
        delay = 0.005
        while True:
            try:
                return method(self, *args, **kwargs)
            except BusyError:
                if clock.monotonic_us() >= deadline or self.attachment.locks is None:
                    raise
                clock.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)

    return wrapper


def clamp_time(seconds: int) -> int:
    """The nearest time an FD can hold (u32 seconds since 1970)."""
    return min(max(int(seconds), 0), TIME_MAX)


log = logging.getLogger(__name__)

#: prefix of the name a file unlinked while open on this host keeps until its last close
ORPHAN_PREFIX = ".vmfs-deleted-"
#: prefixes of the names files unlinked while open wait under: ours, and libfuse's (the
#: high-level API renames a file it counts open instead of unlinking it, until its release)
HIDDEN_PREFIXES = (ORPHAN_PREFIX, ".fuse_hidden")


def _changeable(fd: FileDescriptor, path: str | None = None) -> None:
    """Refuse to change a system file (``.fdc.sf`` and the others hold the volume's own metadata:
    removing, truncating or writing one through the file interface would destroy the volume);
    EPERM, never retried.  The library's own changes to them (growing a
    VMFS6 resource file, fsck repairs) lock them through the attachment, not through here."""
    if fd.type == F.TYPE_SYSFILE:
        raise SystemFileError(f"{path or hex(fd.address)}: cannot change a system file")


class WritableFileSystem(FileSystem):
    """The POSIX operations of one host on a volume, each one transaction of its attachment."""

    def __init__(self, attachment: HostAttachment) -> None:
        super().__init__(attachment.volume)
        attachment.check_writable()
        self.attachment = attachment
        #: FD address -> metadata fields changed in memory but not yet on disk
        self.deferred: dict[int, dict[str, int]] = {}
        #: FD address -> open-for-write count (we hold the FD's exclusive lock while > 0)
        self.writers: Counter[int] = Counter()
        self.readers: Counter[int] = Counter()
        self.busy_timeout = BUSY_TIMEOUT
        #: FD address -> (directory FD address, hidden name) of files unlinked (or renamed over)
        #: while open on this host: removed for good at their last close
        self.orphans: dict[int, tuple[int, str]] = {}
        attachment.flush_hooks.append(self.flush_all)
        attachment.volume.reload_hooks.append(self._reapply_deferred)
        if attachment.left_open:
            self._reclaim_left_open()

    def _reclaim_left_open(self) -> None:
        """Remove the files our previous incarnation had unlinked while they were open and
        could not remove at their last close, because it stopped uncleanly first.

        Such a file waits under a hidden name (:data:`HIDDEN_PREFIXES`) and, being open, under
        our lock, which :class:`HostAttachment` let go of at attach and remembers
        (``left_open``); nobody can hold it open any more, so its data is garbage a user would
        otherwise find later under a strange name, as ext4 frees its orphan list at mount.  A
        file another host has opened since, or one the walk cannot reach, stays (one warning).
        The walk costs a read of every directory, paid only after a crash with files open."""
        left, self.attachment.left_open = self.attachment.left_open, set()
        removed = 0
        try:
            for directory, entries in self.walk("/"):
                for e in entries:
                    if not e.name.startswith(HIDDEN_PREFIXES) or e.type == F.TYPE_DIRECTORY:
                        continue
                    fd = self._fd(e.address)
                    if fd.vol_offset in left and not fd.is_dir and fd.meta.linkCount <= 1:
                        self.unlink(posixpath.join(directory, e.name))
                        removed += 1
        except VmfsError as exc:
            log.warning("files unlinked while open before an unclean stop not all removed: %s", exc)
        if removed:
            log.warning("removed %d file(s) unlinked while open before our unclean stop", removed)

    # -- helpers --------------------------------------------------------------------------------------

    def now(self) -> int:
        return self.attachment.host.clock.wall()

    def _split(self, path: str) -> tuple[FileDescriptor, str]:
        path = path.rstrip("/") or "/"
        parent_path, _, name = path.rpartition("/")
        if not name:
            raise ExistsError("/ exists")
        parent = self.resolve(parent_path or "/")
        if not parent.is_dir:
            raise NotADirError(f"{parent_path}: not a directory")
        return parent, name

    def _dir(self, fd: FileDescriptor) -> Directory:
        return self.directory(fd)

    def _edit_dir(self, directory: Directory) -> DirectoryChanges | DirectoryChanges6:
        if isinstance(directory, Directory6):
            return DirectoryChanges6(self.attachment, directory)
        return DirectoryChanges(self.attachment, directory)

    def _fd(self, address: int) -> FileDescriptor:
        return self.volume.read_fd(address)

    def _lock(self, tx: Transaction, fd: FileDescriptor) -> FileDescriptor:
        _changeable(fd)
        return self.attachment.lock_fd(tx, fd)

    def _lock_dirs(self, tx: Transaction, *fds: FileDescriptor) -> None:
        """Lock several directories in volume-offset order (fewer collisions between hosts)."""
        for fd in sorted({f.address: f for f in fds}.values(), key=lambda f: f.vol_offset):
            self._lock(tx, fd)

    def _put(self, tx: Transaction, fd: FileDescriptor) -> None:
        self.attachment.put_fd(tx, fd)
        self.deferred.pop(fd.address, None)

    def _touch(self, fd: FileDescriptor, *, modify: bool = True) -> None:
        t = self.now()
        fd.meta.ctime = t
        if modify:
            fd.meta.mtime = t

    def _allocate_fd(self, tx: Transaction) -> tuple[int, int, int]:
        """A free FD slot: (address, volume offset, generation).  The generation comes from the
        cluster's creation counter (meta +0x50), as ESXi numbers FDs."""
        alloc = self.attachment.allocators[R.RES_FD]
        ((c, r),) = alloc.allocate(tx, 1)
        cl, off = alloc.read_cluster(tx, c)
        cl.meta.createCounter = (cl.meta.createCounter + 1) & 0xFFFFFFFF or 1
        tx.write(off + alloc.res.ch // 2, alloc.res.meta_struct.build(cl.meta))
        return A.make_fd(c, r), alloc.res.volume_offset(c, r), cl.meta.createCounter

    def _new_fd(
        self, tx: Transaction, *, ftype: int, mode: int, uid: int, gid: int, links: int, zla: int, block_size: int,
        tbz_shift: int | None = None,
    ) -> FileDescriptor:
        geo = self.volume.geometry
        address, vol_offset, generation = self._allocate_fd(tx)
        meta = builders.file_metadata(
            geo, address=address, generation=generation, ftype=ftype, mode=mode & 0o7777, now=self.now(),
            uid=uid, gid=gid, links=links, zla=zla, block_size=block_size, tbz_shift=tbz_shift,
        )
        lock = builders.lock_fields(LOCK_TYPE_FD, vol_offset)
        hb = self.attachment.heartbeat
        if hb is not None:
            lock.hbAddr = hb.addr
            lock.hbGen = hb.generation
        lock.token = 1
        raw = builders.fd_bytes(geo, vol_offset, meta, lock=lock)
        raw = self.attachment.new_lock_block(vol_offset, raw[:SECTOR]) + raw[SECTOR:]
        tx.write(vol_offset, raw)
        fd = FileDescriptor(self.volume, address, vol_offset, raw)
        self.volume._fd_cache.put(address, fd)
        return fd

    def _release_fd(self, tx: Transaction, fd: FileDescriptor) -> None:
        """Free an FD slot: all-zero again, as ESXi leaves unused slots (vmfs-format.md 8)."""
        c, r = A.fd_split(fd.address)
        self.attachment.allocators[R.RES_FD].free(tx, [(c, r)])
        tx.write(fd.vol_offset, bytes(self.volume.geometry.fd_size))
        tx.forget_lock(fd.vol_offset)
        self.volume.forget_fd(fd.address)
        self.deferred.pop(fd.address, None)

    def _drain(self, fd: FileDescriptor) -> None:
        """Free a large file's blocks in as many transactions as needed, keeping it consistent."""
        while fd.meta.numBlocks > 1024 or fd.meta.numPointerBlocks > 64:
            with self.attachment.transaction() as tx:
                fd = self._lock(tx, self._fd(fd.address))
                done = FileWriter(self.attachment, fd).truncate(tx, 0)
                self._put(tx, fd)
            if done:
                break

    # -- creation ---------------------------------------------------------------------------------------

    @retrying
    def create(self, path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> FileDescriptor:
        """A new empty regular file (resident, as ESXi creates them)."""
        with self.attachment.transaction() as tx:
            parent, d, name = self._locked_new(tx, path)
            fd = self._new_fd(
                tx, ftype=F.TYPE_REGFILE, mode=mode, uid=uid, gid=gid, links=1, zla=F.ZLA_RESIDENT,
                block_size=self.volume.geometry.sub_block_size,
            )
            self._edit_dir(d).add(tx, name, fd.address, F.TYPE_REGFILE, fd.generation)
            self._touch(parent)
            self._put(tx, parent)
            return fd

    def _locked_new(self, tx: Transaction, path: str) -> tuple[FileDescriptor, Directory, str]:
        """(locked parent, its directory, name) for a name that must not exist yet."""
        parent, name = self._split(path)
        check_name(name)
        parent = self._lock(tx, parent)
        d = self._dir(parent)
        if self._maybe(d, name) is not None:
            raise ExistsError(f"{path}: file exists")
        return parent, d, name

    def _locked_entry(self, tx: Transaction, path: str) -> tuple[FileDescriptor, Directory, str, FileDescriptor]:
        """(locked parent, its directory, name, locked FD) of an existing entry."""
        parent, name = self._split(path)
        parent = self._lock(tx, parent)
        d = self._dir(parent)
        entry = d.lookup(name)
        return parent, d, name, self._lock(tx, self._fd(entry.address))

    @staticmethod
    def _maybe(d: Directory, name: str):  # type: ignore[no-untyped-def]
        try:
            return d.lookup(name)
        except NotFoundError:
            return None

    @retrying
    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> FileDescriptor:
        geo = self.volume.geometry
        with self.attachment.transaction() as tx:
            parent, d, name = self._locked_new(tx, path)
            fd = self._new_fd(
                tx, ftype=F.TYPE_DIRECTORY, mode=mode, uid=uid, gid=gid, links=2, zla=F.ZLA_SUB_BLOCKS,
                block_size=geo.sub_block_size, tbz_shift=geo.sub_block_size.bit_length() - 1,
            )
            if geo.vmfs6:
                data = new_directory6_data(geo.md_size, fd.address, fd.generation, parent.address, parent.generation)
            else:
                data = new_directory5_data(fd.address, fd.generation, parent.address, parent.generation)
            FileWriter(self.attachment, fd).write(tx, 0, data)
            self._put(tx, fd)
            self._edit_dir(d).add(tx, name, fd.address, F.TYPE_DIRECTORY, fd.generation)
            parent.meta.linkCount += 1
            self._touch(parent)
            self._put(tx, parent)
            return fd

    @retrying
    def symlink(self, target: str, path: str, uid: int = 0, gid: int = 0) -> FileDescriptor:
        raw = target.encode("utf-8", "surrogateescape")
        if not raw:
            raise NotFoundError("empty symbolic link target")
        if b"\x00" in raw:
            raise InvalidArgumentError("a symbolic link target cannot hold a NUL byte")
        if len(raw) > 4095:
            from vmfs.errors import NameTooLongError

            raise NameTooLongError("symbolic link target longer than 4095 bytes")
        geo = self.volume.geometry
        with self.attachment.transaction() as tx:
            parent, d, name = self._locked_new(tx, path)
            fd = self._new_fd(
                tx, ftype=F.TYPE_SYMLINK, mode=0o777, uid=uid, gid=gid, links=1, zla=F.ZLA_SUB_BLOCKS,
                block_size=geo.sub_block_size,
            )
            FileWriter(self.attachment, fd).write(tx, 0, raw)
            self._put(tx, fd)
            self._edit_dir(d).add(tx, name, fd.address, F.TYPE_SYMLINK, fd.generation)
            self._touch(parent)
            self._put(tx, parent)
            return fd

    # -- removal ---------------------------------------------------------------------------------------------

    def is_open(self, address: int) -> bool:
        """True while this host has the FD open (its handles may still read and write it)."""
        return bool(self.writers[address] or self.readers[address])

    def _orphan_name(self, d: Directory, address: int) -> str:
        name = f"{ORPHAN_PREFIX}{address:x}"
        n = 0
        while self._maybe(d, name) is not None:
            n += 1
            name = f"{ORPHAN_PREFIX}{address:x}.{n}"
        return name

    def _orphan(self, tx: Transaction, d: Directory, parent: FileDescriptor, name: str, fd: FileDescriptor) -> None:
        """Unlink a file this host holds open: its entry moves to a hidden name in the same
        directory (one transaction; after a crash the file is still named, never leaked) and the
        file is removed for good at its last close (POSIX: an open file outlives its name)."""
        hidden = self._orphan_name(d, fd.address)
        self._edit_dir(d).rename(tx, name, hidden)
        tx.after_commit.append(lambda: self.orphans.__setitem__(fd.address, (parent.address, hidden)))

    def hidden_names(self, directory: int) -> set[str]:
        """Names in ``directory`` that stand for files unlinked while open (not to be listed)."""
        return {name for parent, name in self.orphans.values() if parent == directory}

    @retrying
    def unlink(self, path: str) -> None:
        parent, name = self._split(path)
        entry = self._dir(parent).lookup(name)
        fd = self._fd(entry.address)
        if fd.is_dir:
            raise IsADirError(f"{path}: is a directory")
        _changeable(fd, path)
        if not self.is_open(fd.address):
            self.flush_fd(fd)
            self._drain(fd)
        with self.attachment.transaction() as tx:
            parent, d, name, fd = self._locked_entry(tx, path)
            if fd.is_dir:
                raise IsADirError(f"{path}: is a directory")
            self._remove_file(tx, d, parent, name, fd)
            self._touch(parent)
            self._put(tx, parent)

    def _remove_file(
        self, tx: Transaction, d: Directory, parent: FileDescriptor, name: str, fd: FileDescriptor
    ) -> None:
        """Remove ``name``; its FD goes when no name is left, unless this host holds it open:
        an open handle would later write its FD back over a freed (or reused) slot, so the file
        lives on under a hidden name until its last close (:meth:`_orphan`)."""
        if fd.meta.linkCount <= 1 and self.is_open(fd.address):
            self._orphan(tx, d, parent, name, fd)
            self._touch(fd, modify=False)
            self._put(tx, fd)
            return
        self._edit_dir(d).remove(tx, name)
        fd.meta.linkCount = max(fd.meta.linkCount - 1, 0)
        if fd.meta.linkCount == 0:
            writer = FileWriter(self.attachment, fd)
            if not writer.truncate(tx, 0, limit=1 << 62):
                raise InvalidArgumentError("internal: truncate did not finish")
            self._release_fd(tx, fd)
        else:
            self._touch(fd, modify=False)
            self._put(tx, fd)

    @retrying
    def rmdir(self, path: str) -> None:
        with self.attachment.transaction() as tx:
            parent, d, name, fd = self._locked_entry(tx, path)
            if not fd.is_dir:
                raise NotADirError(f"{path}: not a directory")
            if fd.address == self.volume.root_address or fd.type == F.TYPE_SYSFILE:
                raise BusyError(f"{path}: cannot remove a system directory")
            if not self._dir(fd).is_empty():
                raise NotEmptyError(f"{path}: directory not empty")
            self._remove_dir(tx, d, parent, name, fd)
            self._touch(parent)
            self._put(tx, parent)

    def _remove_dir(
        self, tx: Transaction, d: Directory, parent: FileDescriptor, name: str, fd: FileDescriptor
    ) -> None:
        self._edit_dir(d).remove(tx, name)
        parent.meta.linkCount = max(parent.meta.linkCount - 1, 1)
        FileWriter(self.attachment, fd).release_all(tx)
        self._release_fd(tx, fd)

    # -- rename ----------------------------------------------------------------------------------------------

    def _is_ancestor(self, ancestor: int, fd: FileDescriptor) -> bool:
        seen = set()
        cur = fd
        while cur.address not in seen:
            if cur.address == ancestor:
                return True
            seen.add(cur.address)
            if cur.address == self.volume.root_address:
                return False
            cur = self._fd(self._dir(cur).parent_address())
        return False

    @retrying
    def rename(self, old: str, new: str, *, replace: bool = True) -> None:
        """rename(2); ``replace=False`` is RENAME_NOREPLACE: EEXIST when ``new`` exists."""
        src_parent, src_name = self._split(old)
        src_entry = self._dir(src_parent).lookup(src_name)
        dst_parent, dst_name = self._split(new)
        check_name(dst_name)
        existing = self._maybe(self._dir(dst_parent), dst_name)
        if existing is not None and not replace:
            raise ExistsError(f"{new}: file exists")
        if existing is not None and existing.address == src_entry.address:
            return
        src_fd = self._fd(src_entry.address)
        if src_fd.type == F.TYPE_SYSFILE:
            raise SystemFileError(f"{old}: cannot move a system file")
        if src_fd.is_dir and self._is_ancestor(src_fd.address, dst_parent):
            raise InvalidArgumentError(f"cannot move {old} into its own subtree {new}")
        if existing is not None:
            dst_fd = self._fd(existing.address)
            if dst_fd.is_dir and self._is_ancestor(dst_fd.address, src_parent):
                raise NotEmptyError(f"{new}: is an ancestor of {old}")
            if dst_fd.type == F.TYPE_SYSFILE:
                raise SystemFileError(f"{new}: cannot replace a system file")
            if src_fd.is_dir and not dst_fd.is_dir:
                raise NotADirError(f"{new}: not a directory")
            if not src_fd.is_dir and dst_fd.is_dir:
                raise IsADirError(f"{new}: is a directory")
            if dst_fd.is_dir and not self._dir(dst_fd).is_empty():
                raise NotEmptyError(f"{new}: directory not empty")
            if not dst_fd.is_dir and not self.is_open(dst_fd.address):
                self.flush_fd(dst_fd)
                self._drain(dst_fd)
        self.flush_fd(src_fd)
        with self.attachment.transaction() as tx:
            src_parent, src_name = self._split(old)
            dst_parent, dst_name = self._split(new)
            self._lock_dirs(tx, src_parent, dst_parent)
            sd = self._dir(src_parent)
            dd = self._dir(dst_parent)
            src_entry = sd.lookup(src_name)
            src_fd = self._lock(tx, self._fd(src_entry.address))
            if src_fd.is_dir and self._is_ancestor(src_fd.address, dst_parent):
                raise InvalidArgumentError(f"cannot move {old} into its own subtree {new}")
            existing = self._maybe(dd, dst_name)
            if existing is not None and not replace:
                raise ExistsError(f"{new}: file exists")
            if existing is not None and existing.address == src_fd.address:
                return
            if existing is not None:
                victim = self._lock(tx, self._fd(existing.address))
                if victim.is_dir != src_fd.is_dir or (victim.is_dir and not self._dir(victim).is_empty()):
                    raise BusyError(f"{new} changed while renaming; retrying")
                if victim.is_dir:
                    self._remove_dir(tx, dd, dst_parent, dst_name, victim)
                else:
                    self._remove_file(tx, dd, dst_parent, dst_name, victim)
            if src_parent.address == dst_parent.address:
                self._edit_dir(sd).rename(tx, src_name, dst_name)
            else:
                self._edit_dir(sd).remove(tx, src_name)
                self._edit_dir(dd).add(tx, dst_name, src_fd.address, src_entry.type, src_entry.generation)
                if src_fd.is_dir:
                    self._edit_dir(self._dir(src_fd)).set_parent(tx, dst_parent.address, dst_parent.generation)
                    src_parent.meta.linkCount = max(src_parent.meta.linkCount - 1, 1)
                    dst_parent.meta.linkCount += 1
                    self._put(tx, src_fd)
                self._touch(dst_parent)
                self._put(tx, dst_parent)
            self._touch(src_fd, modify=False)
            self._put(tx, src_fd)
            self._touch(src_parent)
            self._put(tx, src_parent)

    @retrying
    def exchange(self, old: str, new: str) -> None:
        """renameat2(RENAME_EXCHANGE): swap the two names atomically (one transaction); both
        must exist; a directory cannot be swapped with one of its own descendants."""
        for p in (old, new):
            _, name = self._split(p)
            check_name(name)
        with self.attachment.transaction() as tx:
            a_parent, a_name = self._split(old)
            b_parent, b_name = self._split(new)
            self._lock_dirs(tx, a_parent, b_parent)
            ad, bd = self._dir(a_parent), self._dir(b_parent)
            a_entry, b_entry = ad.lookup(a_name), bd.lookup(b_name)
            if a_entry.address == b_entry.address:
                return
            a_fd = self._lock(tx, self._fd(a_entry.address))
            b_fd = self._lock(tx, self._fd(b_entry.address))
            for fd, p in ((a_fd, old), (b_fd, new)):
                if fd.type == F.TYPE_SYSFILE:
                    raise SystemFileError(f"{p}: cannot move a system file")
            if (a_fd.is_dir and self._is_ancestor(a_fd.address, b_parent)) or (
                b_fd.is_dir and self._is_ancestor(b_fd.address, a_parent)
            ):
                raise InvalidArgumentError(f"cannot exchange {old} with a name inside it ({new})")
            self._edit_dir(ad).remove(tx, a_name)
            self._edit_dir(bd).remove(tx, b_name)
            self._edit_dir(ad).add(tx, a_name, b_fd.address, b_entry.type, b_entry.generation)
            self._edit_dir(bd).add(tx, b_name, a_fd.address, a_entry.type, a_entry.generation)
            if a_parent.address != b_parent.address:
                for fd, new_parent, old_parent in ((a_fd, b_parent, a_parent), (b_fd, a_parent, b_parent)):
                    if fd.is_dir:
                        self._edit_dir(self._dir(fd)).set_parent(tx, new_parent.address, new_parent.generation)
                        old_parent.meta.linkCount = max(old_parent.meta.linkCount - 1, 1)
                        new_parent.meta.linkCount += 1
                self._touch(b_parent)
                self._put(tx, b_parent)
            for fd in (a_fd, b_fd):
                self._touch(fd, modify=False)
                self._put(tx, fd)
            self._touch(a_parent)
            self._put(tx, a_parent)

    # -- attributes -------------------------------------------------------------------------------------------

    @retrying
    def _change(self, target: str | int, apply, *, follow: bool = False) -> None:  # type: ignore[no-untyped-def]
        """Change an FD's attributes; ``target`` is a path or an FD address (an open handle)."""
        with self.attachment.transaction() as tx:
            fd = self._fd(target) if isinstance(target, int) else self.resolve(target, follow=follow)
            fd = self._lock(tx, fd)
            apply(fd.meta)
            fd.meta.ctime = self.now()
            self._put(tx, fd)

    def chmod(self, path: str | int, mode: int, *, follow: bool = True) -> None:
        def apply(m):  # type: ignore[no-untyped-def]
            m.mode = (m.mode & _stat.S_IFMT(m.mode)) | (mode & 0o7777)

        self._change(path, apply, follow=follow)

    def chown(self, path: str | int, uid: int, gid: int, *, follow: bool = True) -> None:
        def apply(m):  # type: ignore[no-untyped-def]
            if uid != -1:
                m.uid = uid & 0xFFFFFFFF
            if gid != -1:
                m.gid = gid & 0xFFFFFFFF

        self._change(path, apply, follow=follow)

    def utimens(self, path: str | int, atime: int | None, mtime: int | None, *, follow: bool = True) -> None:
        """Set the times (seconds; None leaves one as it is).  VMFS stores unsigned 32-bit
        seconds: times outside [1970, 2106] are clamped to the nearest one it holds, as Linux
        clamps to a filesystem's s_time_min/s_time_max (SPEC: FD times)."""

        def apply(m):  # type: ignore[no-untyped-def]
            if atime is not None:
                m.atime = clamp_time(atime)
            if mtime is not None:
                m.mtime = clamp_time(mtime)

        self._change(path, apply, follow=follow)

    # -- data ------------------------------------------------------------------------------------------------

    def open_fd(self, path: str) -> FileDescriptor:
        fd = self.resolve(path)
        if fd.is_dir:
            raise IsADirError(f"{path}: is a directory")
        return fd

    def write(self, address: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` of the file whose FD is ``address``; returns bytes written."""
        if offset < 0:
            raise InvalidArgumentError("negative offset")
        if not data:
            return 0  # POSIX: writing nothing changes nothing, not even the length
        if self._write_in_place(address, offset, data):
            return len(data)
        done = 0
        while done < len(data):
            chunk = data[done : done + WRITE_CHUNK]
            try:
                with self.attachment.transaction() as tx:
                    fd = self._lock(tx, self._fd(address))
                    if fd.is_dir:
                        raise IsADirError("cannot write a directory")
                    prealloc = fd.type == F.TYPE_REGFILE and self.writers[address] > 0
                    changed = FileWriter(self.attachment, fd).write(tx, offset + done, chunk, prealloc=prealloc)
                    self._touch(fd)
                    if changed or not self._may_defer(address):
                        self._put(tx, fd)
                    else:
                        self.deferred[address] = {k: fd.meta[k] for k in _DEFERRED}
            except Exception:
                self._restore_deferred()
                if done:
                    return done
                raise
            done += len(chunk)
        return done

    def _write_in_place(self, address: int, offset: int, data: bytes) -> bool:
        """The common case of a virtual disk, done without a transaction: a write inside the
        length of a regular file we hold open for writing (its exclusive lock is ours, so no other
        host can change its map), into blocks it already owns and that need no zeroing.  Only
        data goes to the device, in volume-contiguous pieces, and the new times are deferred as
        a normal write's are; the result on disk is what :meth:`write` leaves.  False (nothing
        written) when any condition fails: then the normal path does it."""
        if not self.writers[address]:  # (which is also what lets the times be deferred)
            return False
        with self.attachment.meta_lock:
            if not self.attachment.nothing_to_recover():
                return False
            fd = self._fd(address)
            meta = fd.meta
            end = offset + len(data)
            if meta["type"] != F.TYPE_REGFILE or meta["zla"] == F.ZLA_RESIDENT or end > meta["fileLength"]:
                return False
            pieces = list(FileReader(fd).extents(offset, len(data)))
            for _, _, loc in pieces:
                if loc is None:
                    return False  # a hole or a to-be-zeroed block: allocation or zeroing needed
            device = self.volume.device
            if len(pieces) == 1:
                device.write(pieces[0][2], data)  # type: ignore[arg-type]
            else:
                view = memoryview(data)
                for file_offset, n, loc in pieces:
                    device.write(loc, bytes(view[file_offset - offset : file_offset - offset + n]))  # type: ignore[arg-type]
            self.attachment.data_written()
            self._touch(fd)
            self.deferred[address] = {k: meta[k] for k in _DEFERRED}
        return True

    def _may_defer(self, address: int) -> bool:
        """Length/time updates may wait only while no other host can touch the FD: we hold its
        exclusive lock for an open-for-write (or there are no on-disk locks at all)."""
        return self.attachment.locks is None or self.writers[address] > 0

    @retrying
    def truncate(self, address: int, size: int) -> None:
        while True:
            try:
                with self.attachment.transaction() as tx:
                    fd = self._lock(tx, self._fd(address))
                    if fd.is_dir:
                        raise IsADirError("cannot truncate a directory")
                    done = FileWriter(self.attachment, fd).truncate(tx, size)
                    self._touch(fd)
                    self._put(tx, fd)
            except Exception:
                self._restore_deferred()
                raise
            if done:
                return

    def allocate(self, address: int, size: int, *, eager: bool) -> None:
        """Thick provisioning: lazily zeroed (TBZ blocks) or eagerly zeroed blocks for ``size``."""
        start: int | None = 0
        while start is not None:
            try:
                with self.attachment.transaction() as tx:
                    fd = self._lock(tx, self._fd(address))
                    start = FileWriter(self.attachment, fd).allocate_thick(tx, size, eager=eager, start=start)
                    self._touch(fd)
                    self._put(tx, fd)
            except Exception:
                self._restore_deferred()
                raise

    @retrying
    def fallocate(self, address: int, offset: int, length: int, *, keep_size: bool = False) -> None:
        """fallocate(2) modes 0 and KEEP_SIZE: blocks for [offset, offset + length), lazily
        zeroed (TBZ), the length grown to the end unless ``keep_size``.  Past the end of file
        (KEEP_SIZE) the format can only count a run of at most 255 blocks from the end
        (``numPreAllocBlocks``); what lies beyond that run is not reserved, and the run is given
        back at the last close, as ESXi's own preallocation.  Resident and sub-block files store
        their data whole, so they have nothing to allocate inside their length."""
        if offset < 0 or length <= 0:
            raise InvalidArgumentError("fallocate: negative offset or non-positive length")
        end = offset + length
        fd = self._fd(address)
        if fd.is_dir:
            raise IsADirError("cannot allocate blocks for a directory")
        if end > self.volume.geometry.max_file_size:
            from vmfs.errors import FileTooBigError

            raise FileTooBigError(f"file size {end} exceeds the VMFS{self.volume.geometry.version} limit")
        if not keep_size and end > fd.size:
            self.truncate(address, end)
        size = self._fd(address).size
        index: int | None = offset // self._fd(address).block_size
        while index is not None:
            with self.attachment.transaction() as tx:
                fd = self._lock(tx, self._fd(address))
                last = -(-min(end, fd.size) // fd.block_size)
                index = FileWriter(self.attachment, fd).allocate_range(tx, index, last) if index < last else None
                self._touch(fd, modify=False)
                self._put(tx, fd)
        if keep_size and end > size:
            with self.attachment.transaction() as tx:
                fd = self._lock(tx, self._fd(address))
                FileWriter(self.attachment, fd).reserve_past_end(tx, -(-end // fd.block_size))
                self._put(tx, fd)

    @retrying
    def punch_hole(self, address: int, offset: int, length: int) -> None:
        """Free the whole blocks inside [offset, offset + length): they read as zeros again and
        go back to the free pool; partial blocks at the edges are zeroed; the length stays."""
        fd = self._fd(address)
        if fd.is_dir:
            raise IsADirError("cannot punch a hole in a directory")
        end = min(offset + length, fd.size)
        if end <= offset:
            return
        if fd.is_resident:
            self.write(address, offset, bytes(end - offset))
            return
        bs = fd.block_size
        first = -(-offset // bs)
        last = end // bs if end < fd.size else -(-end // bs)
        for start, stop in ((offset, min(first * bs, end)), (max(last * bs, offset), end)):
            if stop > start:
                for pos, n, loc in list(self.volume.reader(self._fd(address)).extents(start, stop - start)):
                    if loc is not None:
                        self.write(address, pos, bytes(n))
        index: int | None = first
        while index is not None and index < last:
            with self.attachment.transaction() as tx:
                fd = self._lock(tx, self._fd(address))
                index = FileWriter(self.attachment, fd).free_range(tx, index, last)
                self._touch(fd)
                self._put(tx, fd)

    def flush_fd(self, fd: FileDescriptor, *, trim: bool = False) -> None:
        """Write deferred length/time changes; with ``trim`` (the last writer closes) also give
        back the blocks preallocated past the end, in the same transaction."""
        trim = trim and fd.meta.numPreAllocBlocks > 0 and fd.type == F.TYPE_REGFILE
        if fd.address in self.deferred or trim:
            with self.attachment.transaction() as tx:
                fd = self._lock(tx, self._fd(fd.address))
                if trim:
                    FileWriter(self.attachment, fd).trim_preallocated(tx)
                self._put(tx, fd)

    # -- long-term locks of open files ------------------------------------------------------------------

    @retrying
    def open_file(self, address: int, *, write: bool) -> FileDescriptor:
        """An open handle: exclusive lock for writing, a shared read-only lock for reading, held
        on disk until :meth:`close_file`; another host's conflicting open gets EBUSY."""
        fd = self._fd(address)
        if write:
            _changeable(fd)
        locks = self.attachment.locks
        if locks is not None:
            held, previous = locks.acquire(fd.vol_offset, LOCK_EXCLUSIVE if write else LOCK_READ_ONLY, wait=0.5)
            if fd.clean_token is None or previous != fd.clean_token:
                self.volume._reload(fd)
            fd.set_lock(held.lock)
        if write:
            self.writers[address] += 1
        else:
            self.readers[address] += 1
        self.volume.pin(fd)
        return fd

    def flush_handle(self, address: int, *, write: bool) -> None:
        """A handle is being closed: write deferred changes and, when it is the last writer,
        give back the preallocated blocks."""
        self.flush_fd(self._fd(address), trim=write and self.writers[address] <= 1)

    def close_file(self, address: int, *, write: bool) -> None:
        fd = self._fd(address)
        try:
            self.flush_handle(address, write=write)
        finally:
            counter = self.writers if write else self.readers
            counter[address] -= 1
            if counter[address] <= 0:
                del counter[address]
            self.volume.unpin(fd)
            if self.attachment.locks is not None:
                self.attachment.locks.release(fd.vol_offset)
        if address in self.orphans and not self.is_open(address):
            self._remove_orphan(address)

    @retrying
    def _remove_orphan(self, address: int) -> None:
        """The last handle of a file unlinked while open is gone: remove it for good."""
        parent_address, name = self.orphans[address]
        fd = self._fd(address)
        self._drain(fd)
        with self.attachment.transaction() as tx:
            parent = self._lock(tx, self._fd(parent_address))
            d = self._dir(parent)
            entry = self._maybe(d, name)
            if entry is not None and entry.address == address:
                fd = self._lock(tx, self._fd(address))
                self._remove_file(tx, d, parent, name, fd)
                self._touch(parent)
                self._put(tx, parent)
        self.orphans.pop(address, None)

    def flush_all(self) -> None:
        """At unmount: write every deferred change and give back every preallocation, also of
        files still open."""
        for address in list(dict.fromkeys([*self.deferred, *self.writers])):
            self.flush_fd(self._fd(address), trim=True)
        for address in list(self.orphans):
            self.writers.pop(address, None)
            self.readers.pop(address, None)
            self._remove_orphan(address)
        self.attachment.commit_pending()

    def fsync(self, address: int) -> None:
        """Make the file durable: its deferred changes, and every change waiting in the open
        group commit (the file's own changes may sit in it beside others, as in jbd2's running
        transaction, so the whole batch commits)."""
        self.flush_fd(self._fd(address))
        self.sync()

    def sync(self) -> None:
        """Make every change made so far durable (fsync of a directory, syncfs)."""
        self.attachment.commit_pending()
        self.volume.device.flush()

    def _restore_deferred(self) -> None:
        """After an aborted transaction the caches were reloaded from disk: put back the length
        and times of writes that were done but not yet recorded (normally already done by
        :meth:`_reapply_deferred` during the reload; this covers FDs that were not pinned)."""
        for address in list(self.deferred):
            self._reapply_deferred(self._fd(address))

    def _reapply_deferred(self, fd: FileDescriptor) -> None:
        """``fd`` was just re-read from disk: lay the deferred changes of our writers over it.
        Deferring is allowed only while we hold the FD's exclusive lock, so the disk copy cannot
        hold anything newer than what we keep."""
        fields = self.deferred.get(fd.address)
        if not fields:
            return
        for key, value in fields.items():
            if key != "fileLength" or value > fd.meta[key]:
                fd.meta[key] = value

    # -- convenience for tools and tests -------------------------------------------------------------------

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> FileDescriptor:
        try:
            fd = self.resolve(path)
            self.truncate(fd.address, 0)
        except NotFoundError:
            fd = self.create(path, mode)
        if data:
            self.write(fd.address, 0, data)
        self.flush_fd(self._fd(fd.address))
        return self._fd(fd.address)
