"""Errors of the VMDK layer.

Every error raised by :mod:`vmfs.vmdk` is a :class:`VmdkError`.  Like the volume layer's
``VmfsError`` it carries the errno a POSIX caller would see (EIO for corrupt data, EINVAL for a bad
argument, ENOENT for a missing extent...) and, where one fits, also inherits the matching builtin
so that code which only knows the standard library still catches it.  The root derives from
``Exception`` for now; a later step re-parents it under ``vmfs.errors.VmfsError`` without changing
any subclass.  Tools turn these into one-line messages; the library never prints.
"""

from __future__ import annotations

import errno as _errno


class VmdkError(Exception):
    """Root of every error raised by the VMDK code."""

    errno: int = _errno.EIO

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # OSError subclasses reset errno in __init__; set it after, from the class default.
        self.errno = errno if errno is not None else type(self).errno

    def __str__(self) -> str:
        return self.message


class CorruptError(VmdkError):
    """A structure contradicts the format (bad magic, pointer beyond the end of file, truncated
    table).  Names the file, the structure and where it was found, so a report can be acted on."""

    errno = _errno.EIO

    def __init__(self, file: str, structure: str, problem: str, *, offset: int | None = None) -> None:
        where = f" at byte 0x{offset:x}" if offset is not None else ""
        super().__init__(f"{file}: corrupt {structure}{where}: {problem}")
        self.file = file
        self.structure = structure
        self.offset = offset
        self.problem = problem


class ChainError(VmdkError):
    """A snapshot chain that must not be used: a parent changed after its child was made (CID
    mismatch), a parent that cannot be found, or a loop.  EINVAL, as qemu reports it."""

    errno = _errno.EINVAL


class InvalidArgumentError(VmdkError, ValueError):
    """A caller passed something the operation cannot accept (size, format name, offset)."""

    errno = _errno.EINVAL


class NotVmdkError(VmdkError, ValueError):
    """The file is neither a descriptor nor a sparse extent that can be opened on its own."""

    errno = _errno.EINVAL


class MissingExtentError(VmdkError, FileNotFoundError):
    """A descriptor names a file (extent or parent) that does not exist."""

    errno = _errno.ENOENT


class ExistsError(VmdkError, FileExistsError):
    """An operation would overwrite an existing file."""

    errno = _errno.EEXIST


class UnsupportedError(VmdkError):
    """Valid VMDK input that this implementation deliberately does not handle (unknown
    incompatible flags, writes to a read-only format...)."""

    errno = _errno.EOPNOTSUPP


class ReadOnlyError(VmdkError, PermissionError):
    """A write to a disk, layer or extent that is open read-only (or RDONLY in its descriptor)."""

    errno = _errno.EROFS


class OutOfRangeError(VmdkError, ValueError):
    """An I/O request outside the virtual disk's capacity."""

    errno = _errno.EINVAL


class NoSpaceError(VmdkError, OSError):
    """The format cannot address more data (for example a grain past sector 2^32 of a hosted
    sparse extent, whose pointers are 32-bit)."""

    errno = _errno.ENOSPC
