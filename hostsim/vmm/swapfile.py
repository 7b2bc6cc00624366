"""The VM's swap file (``.vswp``): where the VMkernel puts guest memory it reclaims by swapping.

Why a real file: host swapping in ESX is I/O to a file in the VM's folder on the datastore, held
with an exclusive lock by the host running the VM (esx-design.md 1.6), and it costs datastore
space; a simulation that kept it in memory would hide both.

Rules (ESX 3.x and later, as documented by VMware):

- created at power-on, removed at power-off; size = ``memsize − sched.mem.min`` MB (a fully
  reserved VM gets an empty file);
- named ``NAME-<8 hex digits>.vswp`` in the VM's folder (ESX 4.x+ names; ESX 3.x wrote
  ``NAME.vswp``): we use the newer form, so that a leftover file from a crash never collides
  with the next power-on's.  The 8 hex digits come from a seeded ``random.Random`` (the
  simulation's) so a run is repeatable; the full ``/vmfs/volumes/<uuid>/…`` path is recorded in
  the ``.vmx`` as ``sched.swap.derivedName``, as ESX does;
- allocated up front (zeroedthick: blocks reserved, marked to-be-zeroed, no zeros written), so
  swapping never fails for lack of space later; when the datastore cannot hold it the power-on
  fails with ESX's message "Failed to extend swap file from 0 KB to N KB."

:class:`SwapFile` is the memory manager's ``SwapBacking``: ``size``, ``write(offset, data)``,
``read(offset, length)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hostsim.errors import HostsimError
from hostsim.vmm.files import DatastoreFullError, datastore_name, exists, join, translated
from vmfs.vmdk.volume_storage import VolumeFile, VolumeStorage
from vmfs.write.posix import WritableFileSystem

MB = 1 << 20


class SwapFileError(HostsimError):
    """The swap file could not be created, or an access lies outside it."""


@dataclass(frozen=True)
class SwapCounters:
    reads: int
    writes: int
    bytes_read: int
    bytes_written: int


def swap_name(stem: str, rng: random.Random) -> str:
    """``NAME-<8 hex>.vswp`` with the digits drawn from ``rng``."""
    return f"{stem}-{rng.getrandbits(32):08x}.vswp"


class SwapFile:
    """An open ``.vswp`` (exclusively locked on disk while open)."""

    def __init__(self, fs: WritableFileSystem, path: str, handle: VolumeFile, size: int) -> None:
        self.fs = fs
        self.path = path
        self.size = size
        self._fh = handle
        self._reads = self._writes = self._bytes_read = self._bytes_written = 0

    @classmethod
    def create(cls, fs: WritableFileSystem, directory: str, stem: str, size_mb: int, rng: random.Random) -> SwapFile:
        """Create and open ``directory/NAME-xxxxxxxx.vswp`` of ``size_mb`` MB."""
        if size_mb < 0:
            raise SwapFileError(f"{stem}: negative swap size {size_mb} MB")
        name = swap_name(stem, rng)
        while exists(fs, join(directory, name)):
            name = swap_name(stem, rng)
        path = join(directory, name)
        storage = VolumeStorage(fs, directory)
        try:
            with translated(fs, path, "creating the swap file"):
                storage.create(name, size_mb * MB, "zeroedthick")
        except DatastoreFullError:
            raise DatastoreFullError(
                f"Could not power on VM: No space left on device. Failed to extend swap file from 0 KB to "
                f"{size_mb * 1024} KB ({datastore_name(fs, path)})"
            ) from None
        try:
            with translated(fs, path, "opening the swap file"):
                handle = storage.open(name, "r+b")
        except BaseException:
            with translated(fs, path):
                storage.remove(name)
            raise
        return cls(fs, path, handle, size_mb * MB)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SwapFileError(f"{self.name}: access {offset}+{length} outside the {self.size}-byte swap file")
        if self._fh.closed:
            raise SwapFileError(f"{self.name}: the swap file is closed (VM powered off)")

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        with translated(self.fs, self.path, "swapping out"):
            self._fh.seek(offset)
            stored = self._fh.write(data)
        if stored != len(data):  # vmfs stores a long write short rather than fail (see scsi.py)
            raise SwapFileError(f"{self.name}: only {stored} of {len(data)} bytes written at {offset}")
        self._writes += 1
        self._bytes_written += len(data)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        with translated(self.fs, self.path, "swapping in"):
            self._fh.seek(offset)
            data = self._fh.read(length) or b""
        self._reads += 1
        self._bytes_read += len(data)
        return data + bytes(length - len(data))

    def counters(self) -> SwapCounters:
        return SwapCounters(self._reads, self._writes, self._bytes_read, self._bytes_written)

    def remove(self) -> None:
        """Close (giving up the lock) and delete the file: power-off."""
        with translated(self.fs, self.path, "removing the swap file"):
            if not self._fh.closed:
                self._fh.close()
            if exists(self.fs, self.path):
                self.fs.unlink(self.path)


__all__ = ["SwapCounters", "SwapFile", "SwapFileError", "swap_name"]
