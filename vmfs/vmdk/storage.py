"""Where VMDK files live: the :class:`DiskStorage` seam and the host-file backend.

Format code never touches ``open()`` or ``os`` itself.  A virtual disk is a descriptor plus extents
whose names are relative to the descriptor, and the same disk must work in a host directory and
inside a VMFS volume.  So every file operation goes through a small storage object addressed by
*names* (``/``-separated, relative to the storage root; ``..`` allowed, as parent hints use it).

The protocol is deliberately minimal.  Besides byte I/O it carries the few things the format layer
cannot express with plain reads and writes:

* ``create(name, size, provisioning)``: a VMFS backend allocates blocks lazily (``thin``), with
  to-be-zeroed flags (``zeroedthick``) or zeroed up front (``eagerzeroedthick``); a host backend
  approximates with sparse files and ``posix_fallocate``;
* ``resize`` with the same provisioning words, for ``extend``;
* the optional thin-disk helpers ``punch_zero`` and ``allocated_ranges`` (``-K``, inflate, clone);
* ``describe_lock`` for ``-D``: what the backend knows about who holds a file.

A VMFS ``VolumeStorage`` implements the same methods on top of the volume's namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import time
from collections.abc import Iterator
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from vmfs.vmdk.errors import ExistsError, InvalidArgumentError, MissingExtentError, VmdkError

Provisioning = Literal["thin", "zeroedthick", "eagerzeroedthick"]
PROVISIONINGS: tuple[str, ...] = ("thin", "zeroedthick", "eagerzeroedthick")

#: Modes accepted by :meth:`DiskStorage.open`: read, read/write an existing file, create/truncate.
OPEN_MODES = ("rb", "r+b", "w+b")


@runtime_checkable
class DiskStorage(Protocol):
    """Files addressed by name.  Every method raises :class:`~vmfs.vmdk.errors.VmdkError`
    subclasses (``MissingExtentError`` for an absent name), never bare ``OSError``."""

    def open(self, name: str, mode: str) -> BinaryIO:
        """A binary file object with read/write/seek/tell/truncate/flush/close.  ``mode`` is one of
        :data:`OPEN_MODES`; ``w+b`` creates or truncates."""
        ...

    def exists(self, name: str) -> bool: ...

    def remove(self, name: str) -> None: ...

    def rename(self, old: str, new: str) -> None:
        """Rename; refuses to replace an existing ``new``."""
        ...

    def size(self, name: str) -> int:
        """Length of the file in bytes."""
        ...

    def create(self, name: str, size: int, provisioning: str) -> None:
        """Create ``name`` (which must not exist) with ``size`` bytes reading as zeros."""
        ...

    def resize(self, name: str, size: int, provisioning: str) -> None:
        """Grow or shrink; new bytes read as zeros and are allocated per ``provisioning``."""
        ...

    def describe_lock(self, name: str) -> dict[str, str]:
        """What is known about the file's lock and owner, as printable fields (``vmkfstools -D``)."""
        ...


@runtime_checkable
class ThinStorage(Protocol):
    """Optional thin-disk helpers.  Code checks ``isinstance(storage, ThinStorage)`` and falls
    back to writing zeros / treating everything as allocated when a backend lacks them."""

    def punch_zero(self, name: str, offset: int, length: int) -> None:
        """Deallocate the byte range; it reads as zeros afterwards."""
        ...

    def allocated_ranges(self, name: str) -> list[tuple[int, int]]:
        """Sorted ``(offset, length)`` ranges that hold storage; the rest reads as zeros."""
        ...


@runtime_checkable
class ProvisioningStorage(Protocol):
    """Optional: change how an existing file is allocated, natively.  ``eagerzeroedthick``
    allocates every hole and zeroes every to-be-zeroed block (VMFS: clears TBZ); ``thin`` may give
    nothing back.  Without it, operations fill holes by writing zeros.  ``offset``/``length``
    limit the change to a byte range (the whole file by default), so a long inflate can be done
    range by range, each call leaving the file consistent, with progress between them."""

    def set_provisioning(self, name: str, provisioning: str, *, offset: int = 0, length: int | None = None) -> None:
        ...


def parent_dir(name: str) -> str:
    """Directory part of a storage name ('' for the root)."""
    head, _, _ = name.rpartition("/")
    return head


def join(directory: str, name: str) -> str:
    """Resolve ``name`` (relative or absolute) against ``directory``, as extent file names and
    parent hints are resolved against the descriptor that holds them."""
    if name.startswith("/") or not directory:
        return name
    return f"{directory}/{name}"


# --- host files ------------------------------------------------------------------------------------

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _libc_fallocate() -> object | None:
    path = ctypes.util.find_library("c")
    if not path:
        return None
    try:
        libc = ctypes.CDLL(path, use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    func.restype = ctypes.c_int
    return func


_FALLOCATE = _libc_fallocate()

_ZERO_CHUNK = bytes(1 << 20)


def _write_zeros(fh: BinaryIO, offset: int, length: int) -> None:
    fh.seek(offset)
    while length > 0:
        n = min(length, len(_ZERO_CHUNK))
        fh.write(_ZERO_CHUNK[:n])
        length -= n


class HostStorage:
    """Ordinary files under one host directory.

    ``thin`` files are sparse (``truncate``); thick ones are preallocated with ``posix_fallocate``,
    whose blocks read as zeros, so ``zeroedthick`` and ``eagerzeroedthick`` coincide on a host file
    system.  Holes are punched with ``fallocate(PUNCH_HOLE)`` and found with ``SEEK_DATA``/``SEEK_HOLE``
    when the platform has them; otherwise zeros are written and the whole file counts as allocated.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)

    def __repr__(self) -> str:
        return f"HostStorage({self.directory!r})"

    def path(self, name: str) -> str:
        """Host path of a storage name."""
        return os.path.normpath(os.path.join(self.directory, name))

    # -- protocol ----------------------------------------------------------------------------------

    def open(self, name: str, mode: str) -> BinaryIO:
        if mode not in OPEN_MODES:
            raise InvalidArgumentError(f"unsupported open mode {mode!r} (use one of {OPEN_MODES})")
        try:
            return open(self.path(name), mode, buffering=0)  # type: ignore[return-value]
        except FileNotFoundError:
            raise MissingExtentError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise InvalidArgumentError(f"{name}: is a directory") from None
        except OSError as exc:
            raise VmdkError(f"{name}: {exc.strerror}", errno=exc.errno) from None

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            raise MissingExtentError(f"{name}: no such file") from None
        except OSError as exc:
            raise VmdkError(f"{name}: {exc.strerror}", errno=exc.errno) from None

    def rename(self, old: str, new: str) -> None:
        if self.exists(new):
            raise ExistsError(f"{new}: already exists")
        try:
            os.rename(self.path(old), self.path(new))
        except FileNotFoundError:
            raise MissingExtentError(f"{old}: no such file") from None
        except OSError as exc:
            raise VmdkError(f"{old}: {exc.strerror}", errno=exc.errno) from None

    def size(self, name: str) -> int:
        try:
            return os.stat(self.path(name)).st_size
        except FileNotFoundError:
            raise MissingExtentError(f"{name}: no such file") from None

    def create(self, name: str, size: int, provisioning: str) -> None:
        _check_provisioning(provisioning)
        try:
            fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ExistsError(f"{name}: already exists") from None
        except OSError as exc:
            raise VmdkError(f"{name}: {exc.strerror}", errno=exc.errno) from None
        with os.fdopen(fd, "r+b", buffering=0) as fh:
            self._grow(fh, 0, size, provisioning)

    def resize(self, name: str, size: int, provisioning: str) -> None:
        _check_provisioning(provisioning)
        with self.open(name, "r+b") as fh:
            old = fh.seek(0, os.SEEK_END)
            if size <= old:
                fh.truncate(size)
            else:
                self._grow(fh, old, size, provisioning)

    def describe_lock(self, name: str) -> dict[str, str]:
        """Host files have no VMFS on-disk lock: report the file's identity and allocation and any
        hosted-product ``<file>.lck`` directory (VMware Workstation/Fusion lock files)."""
        path = self.path(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise MissingExtentError(f"{name}: no such file") from None
        info = {
            "file": name,
            "host path": path,
            "lock": "none (host file: VMFS on-disk locks exist only inside a VMFS volume)",
            "mode": stat.filemode(st.st_mode),
            "owner uid/gid": f"{st.st_uid}/{st.st_gid}",
            "inode": f"{st.st_dev}:{st.st_ino}",
            "links": str(st.st_nlink),
            "size": str(st.st_size),
            "allocated": str(getattr(st, "st_blocks", 0) * 512),
            "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(st.st_mtime)),
        }
        lck = path + ".lck"
        if os.path.isdir(lck):
            entries = sorted(os.listdir(lck))
            info["hosted lock"] = f"{os.path.basename(lck)}/ holds {', '.join(entries) or 'nothing'}"
        else:
            info["hosted lock"] = "no .lck directory"
        return info

    def set_provisioning(self, name: str, provisioning: str, *, offset: int = 0, length: int | None = None) -> None:
        """Thick: preallocate the file, or its bytes ``[offset, offset+length)`` (holes become
        allocated blocks reading as zeros; data is untouched).  Thin: nothing to do on a host file."""
        _check_provisioning(provisioning)
        if provisioning == "thin":
            return
        with self.open(name, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            end = size if length is None else min(size, offset + length)
            if end > offset:
                try:
                    os.posix_fallocate(fh.fileno(), offset, end - offset)
                except (AttributeError, OSError):
                    for start, hole in _holes(fh.fileno(), size):
                        lo, hi = max(start, offset), min(start + hole, end)
                        if lo < hi:
                            _write_zeros(fh, lo, hi - lo)

    # -- thin helpers --------------------------------------------------------------------------------

    def punch_zero(self, name: str, offset: int, length: int) -> None:
        with self.open(name, "r+b") as fh:
            if length <= 0:
                return
            if _FALLOCATE is not None:
                rc = _FALLOCATE(fh.fileno(), _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)  # type: ignore[operator]
                if rc == 0:
                    return
                err = ctypes.get_errno()
                if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise VmdkError(f"{name}: fallocate: {os.strerror(err)}", errno=err)
            _write_zeros(fh, offset, length)

    def allocated_ranges(self, name: str) -> list[tuple[int, int]]:
        with self.open(name, "rb") as fh:
            return list(_data_ranges(fh.fileno(), os.fstat(fh.fileno()).st_size))

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _grow(fh: BinaryIO, old: int, size: int, provisioning: str) -> None:
        fh.truncate(size)
        if provisioning == "thin" or size <= old:
            return
        try:
            os.posix_fallocate(fh.fileno(), old, size - old)
        except (AttributeError, OSError):
            # No preallocation here (tmpfs on some kernels, non-Linux): the bytes still read as
            # zeros, and "thick" only means "allocated", so write the zeros.
            _write_zeros(fh, old, size - old)


def _check_provisioning(provisioning: str) -> None:
    if provisioning not in PROVISIONINGS:
        raise InvalidArgumentError(f"unknown provisioning {provisioning!r} (use one of {PROVISIONINGS})")


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        if size:
            yield (0, size)
        return
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, seek_data)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            if size:
                yield (0, size)
            return
        end = os.lseek(fd, start, seek_hole)
        yield (start, min(end, size) - start)
        pos = end


def _holes(fd: int, size: int) -> Iterator[tuple[int, int]]:
    pos = 0
    for start, length in list(_data_ranges(fd, size)):
        if start > pos:
            yield (pos, start - pos)
        pos = start + length
    if pos < size:
        yield (pos, size - pos)


def host_device_sectors(path: str | os.PathLike[str]) -> int:
    """Size in 512-byte sectors of a host block device or file, for RDM mapping files."""
    try:
        with open(path, "rb", buffering=0) as fh:
            size = fh.seek(0, os.SEEK_END)
    except FileNotFoundError:
        raise MissingExtentError(f"{os.fspath(path)}: no such device") from None
    except OSError as exc:
        raise VmdkError(f"{os.fspath(path)}: {exc.strerror}", errno=exc.errno) from None
    return size // 512
