"""Power-on and power-off of a VM's files: what ESX holds while a VM runs, taken in one place.

Why: esx-design.md 1.6: the host running a VM holds the ``.vmx``, the writable disks and the
swap file with exclusive on-disk locks (parents read-only), and that is what stops a second host
from starting the same VM.  Power-on takes them in ESX's order, configuration first, so the
second host fails on the ``.vmx`` at once, naming the host that runs the VM; anything taken
before a failure is given back, so a failed power-on leaves nothing locked or created.

Order: open the ``.vmx`` read-write (exclusive lock, kept until power-off), then reread and
check it (taking the lock re-reads the file's metadata if another host changed it);
open every disk (:class:`~hostsim.vmm.scsi.VirtualScsi`); create the ``.vswp``
(:class:`~hostsim.vmm.swapfile.SwapFile`) and record its path as ``sched.swap.derivedName``.
Power-off undoes that in reverse and deletes the ``.vswp``.  Snapshots of the running VM
(create, remove, remove all) close the disks for the operation and reopen them on the new leaf.
"""

from __future__ import annotations

import contextlib
import posixpath
import random
from collections.abc import Callable
from typing import TypeVar

from hostsim.errors import HostsimError
from hostsim.vmm.files import translated
from hostsim.vmm.folder import VmFolder, VmPoweredOnError
from hostsim.vmm.scsi import VirtualScsi
from hostsim.vmm.swapfile import SwapFile
from hostsim.vmm.vmsd import Snapshot
from vmfs.vmdk.volume_storage import VolumeFile

T = TypeVar("T")


class PoweredOnVm:
    """The files of a VM this host runs: the locked ``.vmx``, the open disks, the swap file."""

    def __init__(self, folder: VmFolder, vmx: VolumeFile, scsi: VirtualScsi, swap: SwapFile) -> None:
        self.folder = folder
        self._vmx = vmx
        self.scsi = scsi
        self.swap = swap

    @classmethod
    def power_on(cls, folder: VmFolder, rng: random.Random) -> PoweredOnVm:
        """Take the VM's files; ``rng`` draws the swap file's name (the simulation's generator)."""
        if folder.running is not None:
            raise VmPoweredOnError(f"{folder.datastore_path}: the VM is already powered on")
        with translated(folder.fs, folder.vmx_path, "powering on"):
            vmx = folder.storage.open(posixpath.basename(folder.vmx_path), "r+b")
        scsi: VirtualScsi | None = None
        try:
            folder.reload()  # under the lock: what another host wrote before is visible now
            scsi = VirtualScsi.open(folder)
            swap = SwapFile.create(folder.fs, folder.directory, folder.stem, folder.config.swap_mb, rng)
        except BaseException:
            with contextlib.suppress(HostsimError):
                if scsi is not None:
                    scsi.close()
            vmx.close()
            raise
        vm = cls(folder, vmx, scsi, swap)
        folder.running = vm
        try:
            folder.vmx.set("sched.swap.derivedName", f"/vmfs/volumes/{folder.fs.volume.uuid}{swap.path}")
            folder.save()
            folder.log(f"powered on; swap file {swap.name} of {swap.size >> 20} MB")
        except BaseException:
            vm.power_off()
            raise
        return vm

    # -- snapshots of the running VM ----------------------------------------------------------

    def create_snapshot(self, name: str, description: str = "") -> Snapshot:
        """Take a snapshot while the VM runs: the disks are flushed and closed, the deltas made,
        and the disks reopened on them (the guest's disk objects stay valid)."""
        return self._disks_closed(lambda: self.folder.create_snapshot(name, description))

    def remove_snapshot(self, uid: int) -> None:
        self._disks_closed(lambda: self.folder.remove_snapshot(uid))

    def remove_all_snapshots(self) -> None:
        self._disks_closed(self.folder.remove_all_snapshots)

    def _disks_closed(self, operation: Callable[[], T]) -> T:
        """Run a folder operation with the disks closed (the ``.vmx`` and ``.vswp`` stay held).
        Reverting is not offered: ESX powers a VM off to revert it to a powered-off snapshot."""
        folder = self.folder
        self.scsi.detach()
        folder.running = None
        try:
            return operation()
        finally:
            folder.running = self
            self.scsi.attach()

    def power_off(self) -> None:
        """Close the disks, delete the swap file, let go of the ``.vmx``."""
        folder = self.folder
        try:
            self.scsi.close()
            self.swap.remove()
            folder.log("powered off")
        finally:
            if not self._vmx.closed:
                self._vmx.close()
            folder.running = None


__all__ = ["PoweredOnVm"]
