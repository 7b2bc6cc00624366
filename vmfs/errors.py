"""One exception tree for the whole library.

Every error the library raises is a :class:`VmfsError`.  Each subclass carries the errno a POSIX
filesystem would return for it and also inherits the matching builtin (``FileNotFoundError`` ...),
so callers that only know the standard library still catch it.  Tools map ``VmfsError`` to a
one-line message and an exit code; the FUSE adapter maps it to ``-errno``.  Damaged metadata is a
:class:`CorruptError` that names the structure and the address where it was found.
"""

from __future__ import annotations

import errno as _errno


class VmfsError(Exception):
    """Root of every error raised by the library."""

    errno: int = _errno.EIO

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:
        return self.message


class CorruptError(VmfsError):
    """On-disk metadata contradicts the format: reported as EIO, never as a crash."""

    errno = _errno.EIO

    def __init__(self, structure: str, address: int | None, problem: str) -> None:
        where = f" at 0x{address:x}" if address is not None else ""
        super().__init__(f"corrupt {structure}{where}: {problem}")
        self.structure = structure
        self.address = address
        self.problem = problem


class NotVmfsError(VmfsError):
    """The device holds no VMFS volume (wrong magic, too small, unsupported version)."""

    errno = _errno.EINVAL


class UnsupportedError(VmfsError):
    """A valid feature of the format that this implementation does not handle."""

    errno = _errno.EOPNOTSUPP


class DeviceError(VmfsError, OSError):
    """An I/O error of the underlying block device (short read, device gone)."""

    errno = _errno.EIO


class FencedError(DeviceError):
    """The storage refuses this client: another host found ours dead and fenced it (an RBD
    blocklist).  Nothing it sends lands any more; the host has lost the volume."""


class NotFoundError(VmfsError, FileNotFoundError):
    errno = _errno.ENOENT


class ExistsError(VmfsError, FileExistsError):
    errno = _errno.EEXIST


class NotADirError(VmfsError, NotADirectoryError):
    errno = _errno.ENOTDIR


class IsADirError(VmfsError, IsADirectoryError):
    errno = _errno.EISDIR


class NotEmptyError(VmfsError, OSError):
    errno = _errno.ENOTEMPTY


class NameTooLongError(VmfsError, OSError):
    errno = _errno.ENAMETOOLONG


class InvalidArgumentError(VmfsError, ValueError):
    errno = _errno.EINVAL


class ReadOnlyError(VmfsError, PermissionError):
    errno = _errno.EROFS


class NoSpaceError(VmfsError, OSError):
    errno = _errno.ENOSPC


class FileTooBigError(VmfsError, OSError):
    errno = _errno.EFBIG


class BusyError(VmfsError, OSError):
    """A lock is held by another live host (EBUSY, never a hang)."""

    errno = _errno.EBUSY


class SystemFileError(VmfsError, PermissionError):
    """A change to one of the volume's system files (``.fdc.sf`` and the others) through the
    file interface: never allowed, so never retried as a busy lock is."""

    errno = _errno.EPERM


class InUseError(VmfsError, OSError):
    """This host itself has the file open (EBUSY): waiting for other hosts would not help."""

    errno = _errno.EBUSY


class LoopError(VmfsError, OSError):
    errno = _errno.ELOOP


class VolumeLostError(VmfsError, OSError):
    """The host could not renew its heartbeat within the lease and stopped writing."""

    errno = _errno.EIO
