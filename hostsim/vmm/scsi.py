"""Virtual SCSI disks: the VM's VMDKs opened through :mod:`vmfs.vmdk` on the host's read-write
attachment, read and written by the guest in 512-byte blocks.

Why through the real library: a guest write must become a write to the real VMFS file (a thin
flat file growing block by block, a vmfsSparse delta allocating grains), so that datastore
space, on-disk locks and the files' contents are what ESX would leave, checked by vmfs-tools and
qemu-img.

- Opening a disk opens its whole chain: the leaf (the flat file or the newest snapshot delta)
  read-write, which takes the file's **exclusive** on-disk lock for as long as the VM runs; the
  parents read-only, with **read-only** locks (esx-design.md 1.6).  Another host's open of the
  same disk fails with ESX's message, naming the file and the host UUID that holds it.
- A write that needs space the datastore does not have (a thin disk or a delta that cannot
  grow) raises :class:`GuestStun` with the question ESX asks ("There is no more space for virtual
  disk …").  The failed piece changed nothing (each piece of at most 16 MiB is one VMFS
  transaction); everything acknowledged before is on disk.  After space is freed, retrying the
  same write succeeds (rewriting pieces already stored is harmless).
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import dataclass

from hostsim.errors import HostsimError
from hostsim.vmm.files import VmFileError, VmFileLockedError, VmFileNotFoundError, locked_error
from hostsim.vmm.folder import VmFolder
from vmfs import errors as vmfs_errors
from vmfs.vmdk import errors as vmdk_errors
from vmfs.vmdk.disk import Disk, open_disk
from vmfs.vmdk.extent import SECTOR

#: ESX's choices for the out-of-space question
STUN_CHOICES = ("Retry", "Cancel")
#: bytes handed to vmfs.vmdk per call: below vmfs.write's 64 MiB transaction chunk, because a
#: longer flat-extent write that runs out of space part-way is stored short without an error
#: (VolumeFile.write returns a short count that FlatExtent.write ignores; reported to the lead)
WRITE_PIECE = 16 << 20


class ScsiError(HostsimError):
    """A virtual disk could not be opened, or a command is invalid (beyond the disk's end)."""


class GuestStun(HostsimError):
    """The VM is stunned on a question: a disk write needs space the datastore does not have.
    Nothing of the failed write was stored; retry the same write after freeing space."""

    def __init__(self, node: str, disk: str, question: str) -> None:
        super().__init__(question)
        self.node = node
        self.disk = disk
        self.question = question
        self.choices = STUN_CHOICES


def out_of_space_question(disk: str) -> str:
    """The question ESX shows when a virtual disk cannot grow."""
    return (
        f"There is no more space for virtual disk {disk}. You might be able to continue this session by "
        "freeing disk space on the relevant volume, and clicking Retry. Click Cancel to terminate this session."
    )


@dataclass(frozen=True)
class ScsiDiskCounters:
    reads: int
    writes: int
    bytes_read: int
    bytes_written: int
    flushes: int
    stuns: int


def _is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, (vmfs_errors.NoSpaceError, vmdk_errors.NoSpaceError)) or (
        isinstance(exc, vmdk_errors.VmdkError) and exc.errno == errno.ENOSPC
    )


class ScsiDisk:
    """One ``scsiN:M`` disk of a powered-on VM."""

    def __init__(self, folder: VmFolder, node: str, file_name: str, disk: Disk) -> None:
        self.folder = folder
        self.node = node
        self.file_name = file_name
        self._disk = disk
        self.sectors = disk.sectors
        self.stunned = False
        self._reads = self._writes = self._bytes_read = self._bytes_written = self._flushes = self._stuns = 0

    @classmethod
    def open(cls, folder: VmFolder, node: str, file_name: str) -> ScsiDisk:
        """Open the chain of ``file_name`` (leaf read-write, exclusively locked)."""
        return cls(folder, node, file_name, _open_chain(folder, node, file_name))

    def detach(self) -> None:
        """Close the chain but keep this object (a snapshot of the running VM is being taken)."""
        self.close()

    def attach(self, file_name: str) -> None:
        """Open the chain again, on ``file_name`` (the new leaf after a snapshot operation)."""
        if not self._disk.closed:
            raise ScsiError(f"{self.node}: the disk is still open")
        self._disk = _open_chain(self.folder, self.node, file_name)
        self.file_name = file_name
        self.sectors = self._disk.sectors

    @property
    def name(self) -> str:
        """The disk's file name as ESX shows it in questions (the leaf descriptor)."""
        return posixpath.basename(self.file_name)

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    def _check(self, lba: int, count: int) -> None:
        if self._disk.closed:
            raise ScsiError(f"{self.node}: the disk is closed (VM powered off)")
        if lba < 0 or count < 0 or lba + count > self.sectors:
            raise ScsiError(f"{self.node}: blocks {lba}..{lba + count} beyond the disk's {self.sectors} blocks")

    def read(self, lba: int, count: int) -> bytes:
        """``count`` 512-byte blocks from ``lba`` (READ(10)/READ(16))."""
        self._check(lba, count)
        try:
            data = self._disk.read_sectors(lba, count)
        except (vmdk_errors.VmdkError, vmfs_errors.VmfsError) as exc:
            raise ScsiError(f"{self.node} ({self.name}): read failed: {_one_line(exc)}") from None
        self._reads += 1
        self._bytes_read += len(data)
        return data

    def write(self, lba: int, data: bytes) -> None:
        """Whole blocks at ``lba`` (WRITE(10)/WRITE(16)).  :class:`GuestStun` when the datastore
        is full; the same call can be retried."""
        if len(data) % SECTOR:
            raise ScsiError(f"{self.node}: a write of {len(data)} bytes is not whole 512-byte blocks")
        self._check(lba, len(data) // SECTOR)
        try:
            if len(data) <= WRITE_PIECE:  # the usual command: no copies
                self._disk.write_sectors(lba, data if type(data) is bytes else bytes(data))
            else:
                view = memoryview(bytes(data))
                for start in range(0, len(view), WRITE_PIECE):
                    self._disk.write_sectors(lba + start // SECTOR, bytes(view[start : start + WRITE_PIECE]))
        except (vmdk_errors.VmdkError, vmfs_errors.VmfsError) as exc:
            if _is_enospc(exc):
                self.stunned = True
                self._stuns += 1
                self.folder.log(f"msg.hbacommon.outofspace: {self.name} ({self.node}): no more space")
                raise GuestStun(self.node, self.name, out_of_space_question(self.name)) from None
            raise ScsiError(f"{self.node} ({self.name}): write failed: {_one_line(exc)}") from None
        self.stunned = False
        self._writes += 1
        self._bytes_written += len(data)

    def flush(self) -> None:
        """SYNCHRONIZE CACHE: deferred file lengths and the device written out."""
        if self._disk.closed:
            raise ScsiError(f"{self.node}: the disk is closed (VM powered off)")
        try:
            self._disk.flush()
            self.folder.fs.volume.device.flush()
        except (vmdk_errors.VmdkError, vmfs_errors.VmfsError) as exc:
            raise ScsiError(f"{self.node} ({self.name}): flush failed: {_one_line(exc)}") from None
        self._flushes += 1

    def close(self) -> None:
        """Flush and close the chain, letting go of its locks."""
        if self._disk.closed:
            return
        try:
            self._disk.close()
        except (vmdk_errors.VmdkError, vmfs_errors.VmfsError) as exc:
            raise ScsiError(f"{self.node} ({self.name}): close failed: {_one_line(exc)}") from None

    def counters(self) -> ScsiDiskCounters:
        return ScsiDiskCounters(
            self._reads, self._writes, self._bytes_read, self._bytes_written, self._flushes, self._stuns
        )


class VirtualScsi:
    """The VM's SCSI controllers with their disks, opened at power-on (``scsiN:M`` order)."""

    def __init__(self, folder: VmFolder, disks: dict[str, ScsiDisk]) -> None:
        self.folder = folder
        self.disks = disks

    @classmethod
    def open(cls, folder: VmFolder) -> VirtualScsi:
        """Open every present disk; on any failure the ones already open are closed again."""
        disks: dict[str, ScsiDisk] = {}
        try:
            for d in folder.config.disks:
                disks[d.node] = ScsiDisk.open(folder, d.node, d.file_name)
        except BaseException:
            for disk in disks.values():
                disk.close()
            raise
        return cls(folder, disks)

    def disk(self, node: str) -> ScsiDisk:
        if node not in self.disks:
            raise ScsiError(f"{self.folder.datastore_path}: no disk at {node} (has {', '.join(self.disks) or 'none'})")
        return self.disks[node]

    def detach(self) -> None:
        """Close every chain, keeping the disk objects (the guest's handles stay valid)."""
        self.close()

    def attach(self) -> None:
        """Reopen every disk on the leaf the ``.vmx`` names now (after a snapshot operation)."""
        names = {d.node: d.file_name for d in self.folder.config.disks}
        for node, disk in self.disks.items():
            disk.attach(names[node])

    def close(self) -> None:
        errors: list[BaseException] = []
        for disk in self.disks.values():
            try:
                disk.close()
            except HostsimError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _open_chain(folder: VmFolder, node: str, file_name: str) -> Disk:
    """The chain of ``file_name``, leaf writable; errors as ESX words them, naming the file
    (and, for a lock, the host that holds it)."""
    place = folder.place(file_name)
    fs = place.fs
    shown = f"/vmfs/volumes/{fs.volume.uuid}{place.path}"
    prefix = f"Cannot open the disk '{shown}' or one of the snapshot disks it depends on"
    try:
        disk = open_disk(place.storage, place.name, writable=True)
    except vmdk_errors.MissingExtentError as exc:
        raise VmFileNotFoundError(f"{prefix}: {_one_line(exc)} ({node})") from None
    except (vmdk_errors.VmdkError, vmfs_errors.VmfsError) as exc:
        if getattr(exc, "errno", None) == errno.EBUSY:
            locked = _locked_file(place.directory, exc)
            why = locked_error(fs, locked) if locked else None
            if why is None:
                raise VmFileError(f"{prefix}: Failed to lock the file. {_one_line(exc)}") from None
            raise VmFileLockedError(f"{prefix}: Failed to lock the file. {why}", why.owner) from None
        raise ScsiError(f"{prefix}: {_one_line(exc)}") from None
    return disk


def _locked_file(directory: str, exc: BaseException) -> str | None:
    """Volume path of the file a lock error is about: vmfs.vmdk names it first in its message
    (a storage name, relative to ``directory``)."""
    head = str(exc).split(": ", 1)[0].strip()
    if not head or " " in head:
        return None
    return posixpath.normpath(posixpath.join(directory, head)) if not head.startswith("/") else head


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = [
    "STUN_CHOICES",
    "GuestStun",
    "ScsiDisk",
    "ScsiDiskCounters",
    "ScsiError",
    "VirtualScsi",
    "out_of_space_question",
]
