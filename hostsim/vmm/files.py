"""A VM's files on a datastore as the VMM sees them: errors that name the file, lock owners, and
reading and writing whole small files (``.vmx``, ``.vmsd``, ``vmware.log``) through the host's
read-write attachment.

Why one module: the folder, the virtual SCSI disks and the swap file all turn the library's
errors (``vmfs.errors``, ``vmfs.vmdk.errors``) into the one-line messages ESX shows, and they
must agree on how a file is named in them (``[datastore] dir/file``) and on how a lock held by
another host is reported (its owner's host UUID, as ESX's "locked" messages give it).
"""

from __future__ import annotations

import contextlib
import errno as E
import posixpath
import weakref
from collections.abc import Iterator

from hostsim.errors import HostsimError
from vmfs import errors as vmfs_errors
from vmfs.cluster.attachment import HostAttachment
from vmfs.ondisk.lock import LOCK_EXCLUSIVE, LOCK_MULTI_WRITER, LOCK_READ_ONLY, MAX_HOLDERS, LockBlock, LockHolders
from vmfs.vmdk import errors as vmdk_errors
from vmfs.volume.filereader import FileReader
from vmfs.volume.namespace import FileSystem
from vmfs.write.posix import WritableFileSystem


class VmFileError(HostsimError):
    """A VM file could not be read, created or changed."""


class VmFileNotFoundError(VmFileError):
    """A file or folder the VM needs is not on the datastore."""


class VmFileLockedError(VmFileError):
    """Another host holds a VM file locked (the VM runs there)."""

    def __init__(self, message: str, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class DatastoreFullError(VmFileError):
    """The datastore has no room for a file the VM needs."""


_MODE_WORDS = {1: "exclusive", 2: "read-only", 3: "multi-writer"}
_filesystems: weakref.WeakKeyDictionary[HostAttachment, WritableFileSystem] = weakref.WeakKeyDictionary()


def host_filesystem(attachment: HostAttachment) -> WritableFileSystem:
    """The one :class:`WritableFileSystem` of a host's attachment.  Why shared: the library
    keeps per-filesystem state (deferred lengths, open-file counts) that must be one per host."""
    fs = _filesystems.get(attachment)
    if fs is None:
        fs = WritableFileSystem(attachment)
        _filesystems[attachment] = fs
    return fs


def datastore_name(fs: FileSystem, path: str) -> str:
    """``[label] dir/file`` for a volume path, as vim-cmd and ESX messages write it."""
    return f"[{fs.volume.label or fs.volume.uuid}] {path.lstrip('/')}"


def lock_owner(fs: FileSystem, path: str) -> tuple[str, str] | None:
    """(owner host UUID, mode word) of the on-disk lock of ``path`` as it is now, or None when
    the file is unlocked or absent; a shared lock gives its holders, comma-separated."""
    try:
        fd = fs.resolve(path)
    except vmfs_errors.VmfsError:
        return None
    lock = LockBlock.parse(fs.volume.device.read(fd.vol_offset, LockBlock.sizeof())).lock
    if not lock.mode:
        return None
    owners = [str(lock.owner)]
    if lock.mode in (LOCK_READ_ONLY, LOCK_MULTI_WRITER):  # shared: the holders are listed
        holders = LockHolders.parse(lock.holders)[: min(lock.numHolders, MAX_HOLDERS)]
        owners = [str(h.owner) for h in holders]
    owners = [o for o in owners if not set(o) <= {"0", "-"}]
    if not owners:
        return None
    return ", ".join(owners), _MODE_WORDS.get(lock.mode, f"mode {lock.mode}")


def locked_error(fs: FileSystem, path: str) -> VmFileLockedError:
    """ESX's message for a file another host holds: the file, and who holds it."""
    found = lock_owner(fs, path)
    name = datastore_name(fs, path)
    if found is None:
        return VmFileLockedError(f"Unable to access file {name} since it is locked")
    owner, mode = found
    return VmFileLockedError(f"Unable to access file {name} since it is locked ({mode} lock, owner {owner})", owner)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextlib.contextmanager
def translated(fs: FileSystem, path: str, what: str = "") -> Iterator[None]:
    """Library errors about ``path`` as :class:`VmFileError` subclasses, one line each."""
    name = datastore_name(fs, path)
    prefix = f"{what}: " if what else ""
    try:
        yield
    except HostsimError:
        raise
    except (vmfs_errors.NotFoundError, vmfs_errors.NotADirError, vmdk_errors.MissingExtentError) as exc:
        raise VmFileNotFoundError(f"{prefix}{name}: {_one_line(exc)}") from None
    except vmfs_errors.BusyError as exc:
        raise locked_error(fs, path) from exc
    except (vmfs_errors.NoSpaceError, vmdk_errors.NoSpaceError) as exc:
        raise DatastoreFullError(f"{prefix}{name}: no space left on the datastore ({_one_line(exc)})") from None
    except vmdk_errors.VmdkError as exc:
        if exc.errno == E.EBUSY:
            raise locked_error(fs, path) from exc
        if exc.errno == E.ENOSPC:
            raise DatastoreFullError(f"{prefix}{name}: no space left on the datastore") from None
        raise VmFileError(f"{prefix}{name}: {_one_line(exc)}") from None
    except vmfs_errors.VmfsError as exc:
        raise VmFileError(f"{prefix}{name}: {_one_line(exc)}") from None


def read_file(fs: FileSystem, path: str, *, limit: int = 1 << 20) -> bytes:
    """A small file's bytes, read without taking its lock: ESX hosts read the ``.vmx`` of a VM
    another host runs (it holds the lock; reading needs none)."""
    with translated(fs, path):
        fd = fs.resolve(path)
        if fd.is_dir:
            raise VmFileError(f"{datastore_name(fs, path)}: is a directory")
        if fd.size > limit:
            raise VmFileError(f"{datastore_name(fs, path)}: {fd.size} bytes, more than a VM file of this kind holds")
        return FileReader(fd).read(0, fd.size)


def write_file(fs: WritableFileSystem, path: str, data: bytes) -> None:
    """Replace a small file's contents (created if absent); refused while another host holds it."""
    with translated(fs, path):
        fs.write_file(path, data)


def append_file(fs: WritableFileSystem, path: str, data: bytes) -> None:
    """Append to a file (``vmware.log``), creating it if absent."""
    with translated(fs, path):
        try:
            fd = fs.resolve(path)
        except vmfs_errors.NotFoundError:
            fd = fs.create(path)
        fs.write(fd.address, fd.size, data)
        fs.flush_fd(fs.volume.read_fd(fd.address))


def exists(fs: FileSystem, path: str) -> bool:
    try:
        fs.resolve(path)
    except (vmfs_errors.NotFoundError, vmfs_errors.NotADirError):
        return False
    return True


def join(directory: str, name: str) -> str:
    """Volume path of ``name`` (relative to a VM folder, or a ``/vmfs/volumes/...`` path kept)."""
    return name if name.startswith("/") else posixpath.normpath(posixpath.join(directory, name))


__all__ = [
    "LOCK_EXCLUSIVE",
    "DatastoreFullError",
    "VmFileError",
    "VmFileLockedError",
    "VmFileNotFoundError",
    "append_file",
    "datastore_name",
    "exists",
    "host_filesystem",
    "join",
    "lock_owner",
    "locked_error",
    "read_file",
    "translated",
    "write_file",
]
