"""A VM's folder on a datastore, laid out as ESX lays it out, and its snapshots.

Why: every other part of the VMM (virtual SCSI, the swap file, the console's vim-cmd) works on
the files ESX keeps for a VM, so they are made and changed in one place, on the real VMFS volume
through the host's read-write attachment, where vmfs-tools and qemu-img can check them.

Layout of a new VM ``NAME`` (ESX 4.x on VMFS5)::

    NAME/NAME.vmx          configuration (hostsim.vmm.vmx)
    NAME/NAME.vmdk         disk descriptor (createType vmfs), NAME-flat.vmdk its data: thick
                           (zeroedthick, TBZ blocks), eagerzeroedthick (zeroed blocks) or thin (a
                           flat file with holes: VMFS thin provisioning); more disks NAME_1.vmdk …
    NAME/NAME.vmsd         snapshot tree, empty until the first snapshot (hostsim.vmm.vmsd)
    NAME/NAME.nvram        BIOS settings (ESX writes it at the first power-on; we at creation)
    NAME/vmware.log        the VM's log, one line per event
    NAME/NAME-<8 hex>.vswp only while powered on (hostsim.vmm.swapfile)

Snapshots (no memory state; taken with the disks closed: powered off, or through
:class:`hostsim.vmm.poweron.PoweredOnVm` while the VM runs): *create* puts a ``vmfsSparse``
delta on each disk (``NAME-000001.vmdk`` + ``NAME-000001-delta.vmdk``, as ESX names them on
VMFS5), repoints ``scsiN:M.fileName`` at it and records the snapshot in the ``.vmsd``; *revert*
empties the deltas the VM runs on (the disks read as at the current snapshot); *remove* of
snapshot S merges the delta that holds the changes made after S into the disk S froze, so S's
point in time is gone and every other one stays; *removeall* consolidates every disk into its
base.  The chain must be linear (ESX allows branches after reverting to an older snapshot;
hostsim reverts to the current one only).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from hostsim.errors import HostsimError
from hostsim.vmm.files import (
    VmFileError,
    VmFileNotFoundError,
    append_file,
    datastore_name,
    exists,
    join,
    read_file,
    translated,
    write_file,
)
from hostsim.vmm.vmsd import Snapshot, SnapshotTree
from hostsim.vmm.vmx import PROGRAM_KEY, VmConfig, VmxFile, new_vmx
from vmfs import errors as vmfs_errors
from vmfs.vmdk import chain, ops
from vmfs.vmdk import errors as vmdk_errors
from vmfs.vmdk.disk import open_disk
from vmfs.vmdk.volume_storage import VolumeStorage
from vmfs.write.posix import WritableFileSystem

PROVISIONINGS = ("thin", "zeroedthick", "eagerzeroedthick")
#: size of the NVRAM file ESX 4.x writes for a BIOS VM
NVRAM_BYTES = 8684
_NAME = re.compile(r"[^/\x00]{1,80}\Z")


class VmExistsError(HostsimError):
    """A VM folder (or registration) of that name exists already."""


class VmPoweredOnError(HostsimError):
    """The operation needs the VM powered off."""


class SnapshotError(HostsimError):
    """A snapshot operation that cannot be done (no snapshot, not the current one, …)."""


@dataclass(frozen=True)
class DiskSpec:
    """A disk of a new VM: size in MB, provisioning (thin, zeroedthick, eagerzeroedthick) and
    the datastore it lives on (this host's filesystem of it; None: the VM's own folder)."""

    size_mb: int
    provisioning: str = "thin"
    datastore: WritableFileSystem | None = None


@dataclass(frozen=True)
class DiskPlace:
    """Where a disk file named in the ``.vmx`` is: which host filesystem (datastore), its volume
    path, and the vmfs.vmdk storage rooted at its directory (deltas are made beside it, as
    vSphere 5 places them with their parent)."""

    fs: WritableFileSystem
    path: str
    own: bool  # in the VM's folder (the .vmx names it relatively)

    @property
    def directory(self) -> str:
        return posixpath.dirname(self.path) or "/"

    @property
    def name(self) -> str:
        """The storage name (the file's base name)."""
        return posixpath.basename(self.path)

    @property
    def storage(self) -> VolumeStorage:
        return VolumeStorage(self.fs, self.directory)

    def file_name(self, storage_name: str) -> str:
        """The ``scsiN:M.fileName`` of another file of this storage (a new leaf, a base)."""
        path = join(self.directory, storage_name)
        if self.own:
            return posixpath.basename(path)
        return f"/vmfs/volumes/{self.fs.volume.uuid}{path}"

    def shown(self, storage_name: str | None = None) -> str:
        return datastore_name(self.fs, join(self.directory, storage_name or self.name))


class VmFolder:
    """One VM's folder on a datastore, read from and written to through one host's filesystem."""

    def __init__(
        self, fs: WritableFileSystem, vmx_path: str, vmx: VmxFile,
        datastores: Iterable[WritableFileSystem] = (),
    ) -> None:
        """``datastores``: this host's filesystems of the other datastores the VM's disks may
        be on (``/vmfs/volumes/<uuid or label>/…`` file names)."""
        self.fs = fs
        self.vmx_path = vmx_path
        self.vmx = vmx
        self.directory = posixpath.dirname(vmx_path) or "/"
        self.datastores: dict[str, WritableFileSystem] = {}
        for other in (fs, *datastores):
            for key in (other.volume.uuid, other.volume.label):
                if key:
                    self.datastores.setdefault(key, other)
        #: set by the power-on code (hostsim.vmm.poweron) while this host runs the VM
        self.running: object | None = None
        self.config = VmConfig.from_vmx(vmx)

    def __repr__(self) -> str:
        return f"<VmFolder {self.datastore_path}>"

    # -- names ------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.display_name

    @property
    def stem(self) -> str:
        """File-name stem of the folder's files (the ``.vmx`` name without its suffix)."""
        return posixpath.basename(self.vmx_path).rsplit(".", 1)[0]

    @property
    def datastore_path(self) -> str:
        """``[datastore] NAME/NAME.vmx`` (vim-cmd's File column)."""
        return datastore_name(self.fs, self.vmx_path)

    @property
    def volumes_path(self) -> str:
        """``/vmfs/volumes/<uuid>/NAME/NAME.vmx``: the path ESX writes into files."""
        return f"/vmfs/volumes/{self.fs.volume.uuid}{self.vmx_path}"

    def place(self, name: str) -> DiskPlace:
        """Where a file named in the ``.vmx`` is (relative to the folder, or a
        ``/vmfs/volumes/<uuid or label>/…`` path on this or another datastore)."""
        prefix = "/vmfs/volumes/"
        if name.startswith(prefix):
            head, _, rest = name[len(prefix) :].partition("/")
            fs = self.datastores.get(head)
            if fs is None:
                raise VmFileNotFoundError(f"{self.datastore_path}: {name}: datastore {head} is not mounted here")
            path = posixpath.normpath("/" + rest)
            return DiskPlace(fs, path, own=fs is self.fs and posixpath.dirname(path) == self.directory)
        path = join(self.directory, name)
        return DiskPlace(self.fs, path, own=posixpath.dirname(path) == self.directory)

    def path(self, name: str) -> str:
        """Volume path of a file of the VM's own datastore named in the ``.vmx``."""
        return self.place(name).path

    @property
    def storage(self) -> VolumeStorage:
        """The folder as a vmfs.vmdk storage (names relative to the folder)."""
        return VolumeStorage(self.fs, self.directory)

    # -- creation and registration ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        fs: WritableFileSystem,
        name: str,
        *,
        memsize_mb: int,
        numvcpus: int = 1,
        disks: tuple[DiskSpec, ...] = (DiskSpec(64),),
        guest_os: str = "otherlinux",
        program: str | None = None,
        program_text: bytes | None = None,
        extra: dict[str, str] | None = None,
        parent: str = "/",
    ) -> VmFolder:
        """Make folder ``NAME`` with its ``.vmx``, disks, ``.vmsd``, ``.nvram`` and ``vmware.log``.
        Nothing is left behind when any step fails."""
        if not _NAME.match(name) or name in (".", ".."):
            raise VmFileError(f"{name!r}: not a usable VM name (1 to 80 characters, no '/')")
        for spec in disks:
            if spec.provisioning not in PROVISIONINGS:
                raise VmFileError(f"{name}: unknown provisioning {spec.provisioning!r} (use one of {PROVISIONINGS})")
            if spec.size_mb < 1:
                raise VmFileError(f"{name}: a disk needs at least 1 MB, not {spec.size_mb}")
        directory = join(parent, name)
        if exists(fs, directory):
            raise VmExistsError(f"{datastore_name(fs, directory)}: already exists")
        stems = [f"{name}.vmdk" if i == 0 else f"{name}_{i}.vmdk" for i in range(len(disks))]
        others = [spec.datastore for spec in disks if spec.datastore is not None and spec.datastore is not fs]
        places = [
            DiskPlace(spec.datastore or fs, join(join(parent, name), stem), own=spec.datastore in (None, fs))
            for stem, spec in zip(stems, disks, strict=True)
        ]
        vmx_path = join(directory, f"{name}.vmx")
        vmx = new_vmx(vmx_path, name, memsize_mb=memsize_mb, numvcpus=numvcpus, guest_os=guest_os,
                      disks=tuple(p.file_name(p.name) for p in places), program=program, extra=extra)
        with translated(fs, directory):
            fs.mkdir(directory)
        made: list[DiskPlace] = []
        try:
            for place, spec in zip(places, disks, strict=True):
                if not place.own and not exists(place.fs, place.directory):
                    with translated(place.fs, place.directory):
                        place.fs.mkdir(place.directory)
                made.append(place)
                with translated(place.fs, place.path, "creating the disk"):
                    ops.create_disk(place.storage, place.name, spec.size_mb << 20, spec.provisioning,
                                    adapter="lsilogic")
            if program is not None and program_text is not None:
                write_file(fs, join(directory, program), program_text)
            write_file(fs, join(directory, f"{name}.vmsd"), b"")
            write_file(fs, join(directory, f"{name}.nvram"), bytes(NVRAM_BYTES))
            write_file(fs, vmx_path, vmx.to_bytes())
            folder = cls(fs, vmx_path, vmx, others)
            folder.log(f"created with {len(disks)} disk(s), memsize {memsize_mb} MB")
        except BaseException:
            for place in made:
                if not place.own:
                    _remove_disk_elsewhere(place)
            _remove_tree(fs, directory)
            raise
        return folder

    @classmethod
    def open(cls, fs: WritableFileSystem, vmx_path: str, datastores: Iterable[WritableFileSystem] = ()) -> VmFolder:
        """An existing VM (registering it): its ``.vmx`` read and checked; its disks must exist
        (on ``fs`` or on one of this host's other ``datastores``)."""
        if not vmx_path.lower().endswith(".vmx"):
            raise VmFileError(f"{datastore_name(fs, vmx_path)}: not a .vmx file")
        data = read_file(fs, vmx_path)
        vmx = VmxFile.parse(data, datastore_name(fs, vmx_path))
        folder = cls(fs, vmx_path, vmx, datastores)
        for disk in folder.config.disks:
            place = folder.place(disk.file_name)
            if not exists(place.fs, place.path):
                raise VmFileNotFoundError(f"{folder.datastore_path}: {disk.node} names {place.shown()}: no such file")
        return folder

    def reload(self) -> None:
        """Read the ``.vmx`` again (another host, or the user, may have changed it)."""
        data = read_file(self.fs, self.vmx_path)
        self.vmx = VmxFile.parse(data, self.datastore_path)
        self.config = VmConfig.from_vmx(self.vmx)

    def save(self) -> None:
        """Write the ``.vmx`` back (only changed lines differ) and refresh :attr:`config`."""
        self.config = VmConfig.from_vmx(self.vmx)
        write_file(self.fs, self.vmx_path, self.vmx.to_bytes())

    def log(self, message: str) -> None:
        """One ``vmware.log`` line, stamped with the host's wall clock (UTC)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.fs.now()))
        append_file(self.fs, join(self.directory, "vmware.log"), f"{stamp}.000Z| vmx| {message}\n".encode())

    def files(self) -> list[str]:
        """Names in the folder, sorted."""
        with translated(self.fs, self.directory):
            return sorted(e.name for e in self.fs.listdir(self.directory) if e.name not in (".", ".."))

    def program(self) -> tuple[str, bytes] | None:
        """(datastore name, text) of the guest program file the ``.vmx`` names, if any."""
        name = self.vmx.get(PROGRAM_KEY)
        if not name:
            return None
        path = self.path(name)
        return datastore_name(self.fs, path), read_file(self.fs, path)

    def destroy(self) -> None:
        """Delete the VM's folder and everything in it, and its disks on other datastores
        (vim-cmd vmsvc/destroy)."""
        self._check_off("destroy")
        for disk in self.config.disks:
            place = self.place(disk.file_name)
            if not place.own:
                _remove_disk_elsewhere(place)
        _remove_tree(self.fs, self.directory)

    def _check_off(self, what: str) -> None:
        if self.running is not None:
            raise VmPoweredOnError(f"{self.datastore_path}: cannot {what} a powered-on VM")

    # -- snapshots ----------------------------------------------------------------------------------

    @property
    def vmsd_path(self) -> str:
        return join(self.directory, f"{self.stem}.vmsd")

    def snapshots(self) -> SnapshotTree:
        if not exists(self.fs, self.vmsd_path):
            return SnapshotTree(datastore_name(self.fs, self.vmsd_path))
        return SnapshotTree.parse(read_file(self.fs, self.vmsd_path), datastore_name(self.fs, self.vmsd_path))

    def _save_tree(self, tree: SnapshotTree) -> None:
        write_file(self.fs, self.vmsd_path, tree.to_bytes())

    def _disk_keys(self) -> list[tuple[str, str]]:
        """(node, fileName) of every present disk."""
        return [(d.node, d.file_name) for d in self.config.disks]

    def create_snapshot(self, name: str, description: str = "") -> Snapshot:
        """Take a snapshot: a vmfsSparse delta on every disk, the ``.vmx`` repointed at them."""
        self._check_off("snapshot")
        tree = self.snapshots()
        taken: list[tuple[str, DiskPlace, str]] = []
        try:
            for node, file_name in self._disk_keys():
                place = self.place(file_name)
                with translated(place.fs, place.path, "taking a snapshot"):
                    new = chain.create_snapshot(place.storage, place.name, delta_format="vmfsSparse")
                taken.append((node, place, new))
        except BaseException:
            for _, place, new in taken:
                with contextlib.suppress(Exception):
                    chain.remove_disk_files(place.storage, new)
            raise
        uid = tree.last_uid + 1
        snap = Snapshot(
            uid=uid, name=name, description=description, parent=tree.current,
            create_time_us=self.fs.now() * 1_000_000, filename=f"{self.stem}-Snapshot{uid}.vmsn",
            disks=self._disk_keys(),
        )
        tree.snapshots.append(snap)
        tree.current, tree.last_uid = uid, uid
        for node, place, new in taken:
            self.vmx.set(f"{node}.fileName", place.file_name(new))
        self._save_tree(tree)
        self.save()
        self.log(f"snapshot {uid} ({name!r}) taken")
        return snap

    def revert_snapshot(self, uid: int | None = None) -> None:
        """Go back to the current snapshot: the deltas the VM runs on are emptied."""
        self._check_off("revert")
        tree = self.snapshots()
        if tree.current is None:
            raise SnapshotError(f"{self.datastore_path}: the VM has no snapshot to revert to")
        if uid is not None and uid != tree.current:
            raise SnapshotError(f"{self.datastore_path}: only the current snapshot ({tree.current}) can be reverted to")
        for _, file_name in self._disk_keys():
            place = self.place(file_name)
            with translated(place.fs, place.path, "reverting"):
                chain.revert_snapshot(place.storage, place.name)
        self.log(f"reverted to snapshot {tree.current}")

    def remove_snapshot(self, uid: int) -> None:
        """Delete snapshot ``uid``: the changes made after it are merged into its disks."""
        self._check_off("remove a snapshot of")
        tree = self.snapshots()
        snap = tree.get(uid)
        child = next(iter(tree.children(uid)), None)
        if len(tree.children(uid)) > 1:
            raise SnapshotError(f"{self.datastore_path}: snapshot {uid} has branches; hostsim keeps chains linear")
        nodes = dict(snap.disks)
        for node, current in self._disk_keys():
            place = self.place(current)
            below = self.place(nodes[node]).path if node in nodes else None
            # the delta made when ``uid`` was taken: the child of its disk in this node's chain
            delta, above = self._delta_over(place, below)
            with translated(place.fs, join(place.directory, delta), "removing a snapshot"):
                chain.delete_snapshot(place.storage, delta, child=above)
            if above is None:
                self.vmx.set(f"{node}.fileName", nodes[node])
        tree.snapshots.remove(snap)
        if child is not None:
            child.parent = snap.parent
            child.disks = snap.disks
        if tree.current == uid:
            tree.current = snap.parent
        self._save_tree(tree)
        self.save()
        self.log(f"snapshot {uid} removed")

    def _delta_over(self, leaf: DiskPlace, base: str | None) -> tuple[str, str | None]:
        """(delta whose parent is the volume path ``base``, that delta's child or None) in the
        chain of ``leaf``, as storage names of the leaf's storage."""
        with translated(leaf.fs, leaf.path, "reading the snapshot chain"):
            disk = open_disk(leaf.storage, leaf.name)
            try:
                names = [layer.name for layer in disk.layers]  # leaf first
            finally:
                disk.close()
        paths = [join(leaf.directory, n) for n in names]
        if base is None or base not in paths:
            raise SnapshotError(f"{self.datastore_path}: disk {base} is not in the chain of {leaf.shown()}")
        i = paths.index(base)
        if i == 0:
            raise SnapshotError(f"{self.datastore_path}: {base} has no delta above it")
        return names[i - 1], names[i - 2] if i >= 2 else None

    def remove_all_snapshots(self) -> None:
        """Consolidate every disk into its base and forget every snapshot (snapshot.removeall)."""
        self._check_off("consolidate")
        tree = self.snapshots()
        for node, file_name in self._disk_keys():
            place = self.place(file_name)
            with translated(place.fs, place.path, "consolidating"):
                base = chain.consolidate(place.storage, place.name)
            self.vmx.set(f"{node}.fileName", place.file_name(base))
        last = tree.last_uid
        self._save_tree(SnapshotTree(tree.path, last_uid=last))
        self.save()
        self.log("all snapshots removed (disks consolidated)")


def _remove_disk_elsewhere(place: DiskPlace) -> None:
    """Remove a disk (its whole chain) kept on another datastore, then its folder there if that
    is left empty."""
    with translated(place.fs, place.path):
        if exists(place.fs, place.path):
            try:
                disk = open_disk(place.storage, place.name)
                names = [layer.name for layer in disk.layers]
                disk.close()
            except vmdk_errors.VmdkError:
                names = [place.name]
            for name in names:
                chain.remove_disk_files(place.storage, name)
        entries = [e for e in place.fs.listdir(place.directory) if e.name not in (".", "..")]
        if not entries and place.directory != "/":
            place.fs.rmdir(place.directory)


def _remove_tree(fs: WritableFileSystem, directory: str) -> None:
    """Remove a folder and its files (VM folders have no subfolders but we handle them)."""
    with translated(fs, directory):
        try:
            entries = [e for e in fs.listdir(directory) if e.name not in (".", "..")]
        except vmfs_errors.NotFoundError:
            return
        for e in entries:
            path = join(directory, e.name)
            if fs.resolve(path, follow=False).is_dir:
                _remove_tree(fs, path)
            else:
                fs.unlink(path)
        fs.rmdir(directory)


class Inventory:
    """The VMs a host has registered (``vim-cmd vmsvc/getallvms``), by vmid from 1 up.  A folder
    can be registered on several hosts (they read its ``.vmx`` without a lock); only one can run
    it, which the power-on locks decide."""

    def __init__(self, fs: WritableFileSystem) -> None:
        self.fs = fs
        self._vms: dict[int, VmFolder] = {}
        self._next = 1

    def register(self, vmx_path: str) -> int:
        for vmid, folder in self._vms.items():
            if folder.vmx_path == vmx_path:
                raise VmExistsError(f"{folder.datastore_path}: already registered as vmid {vmid}")
        folder = VmFolder.open(self.fs, vmx_path)
        vmid, self._next = self._next, self._next + 1
        self._vms[vmid] = folder
        return vmid

    def add(self, folder: VmFolder) -> int:
        """Register a folder just created on this host."""
        vmid, self._next = self._next, self._next + 1
        self._vms[vmid] = folder
        return vmid

    def get(self, vmid: int) -> VmFolder:
        if vmid not in self._vms:
            raise VmFileNotFoundError(f"vmid {vmid}: no such registered VM")
        return self._vms[vmid]

    def unregister(self, vmid: int) -> VmFolder:
        folder = self.get(vmid)
        folder._check_off("unregister")
        return self._vms.pop(vmid)

    def items(self) -> list[tuple[int, VmFolder]]:
        return sorted(self._vms.items())


__all__ = ["DiskSpec", "Inventory", "SnapshotError", "VmExistsError", "VmFolder", "VmPoweredOnError"]
