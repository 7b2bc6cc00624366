"""The ``.vmsd`` file: a VM's snapshot tree, in the ``.vmx`` syntax ESX writes it in.

Why a module of its own: the folder's snapshot operations change it, the console lists it, and
the tree (which snapshot is current, what each one's disks were) must survive a re-registration,
so it lives on the datastore in ESX's format and is parsed with the same ``FILE:LINE`` errors.

Keys (ESX 4.x, VMFS): ``snapshot.lastUID``, ``snapshot.numSnapshots``, ``snapshot.current``
(the uid the VM runs on top of), and per snapshot ``snapshotN.uid``, ``.filename`` (the ``.vmsn``
memory-state file; hostsim takes powered-off snapshots and writes none, the name is kept as ESX
would write it), ``.displayName``, ``.description``, ``.parent`` (absent for a root),
``.createTimeHigh``/``.createTimeLow`` (µs since 1970 split into two signed 32-bit halves),
``.numDisks`` and ``.diskM.fileName``/``.diskM.node``: the disk file each node ran on when the
snapshot was taken (the parent of the delta that was created on top of it).  A VM with no
snapshot has an empty ``.vmsd`` (as ESX creates it) or only ``.encoding`` and ``lastUID``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hostsim.vmm.vmx import VmxError, VmxFile


@dataclass
class Snapshot:
    uid: int
    name: str
    description: str
    parent: int | None
    create_time_us: int
    filename: str
    #: (node, disk file the node ran on when the snapshot was taken)
    disks: list[tuple[str, str]] = field(default_factory=list)


def _split_time(us: int) -> tuple[int, int]:
    """µs as the two signed 32-bit halves ESX writes (createTimeHigh, createTimeLow)."""
    high, low = us >> 32, us & 0xFFFFFFFF
    return high, low - (1 << 32) if low >= 1 << 31 else low


@dataclass
class SnapshotTree:
    """The parsed ``.vmsd``: snapshots in creation order, the current one, the last uid given."""

    path: str
    snapshots: list[Snapshot] = field(default_factory=list)
    current: int | None = None
    last_uid: int = 0

    def get(self, uid: int) -> Snapshot:
        for snap in self.snapshots:
            if snap.uid == uid:
                return snap
        raise VmxError(f"{self.path}: no snapshot with uid {uid}")

    def children(self, uid: int | None) -> list[Snapshot]:
        return [s for s in self.snapshots if s.parent == uid]

    # -- reading --------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, path: str) -> SnapshotTree:
        vmx = VmxFile.parse(data, path)
        tree = cls(path, last_uid=_number(vmx, "snapshot.lastUID", 0))
        count = _number(vmx, "snapshot.numSnapshots", 0)
        for i in range(count):
            tree.snapshots.append(_snapshot(vmx, f"snapshot{i}."))
        uids = [s.uid for s in tree.snapshots]
        if len(set(uids)) != len(uids):
            raise VmxError(f"{path}: two snapshots share a uid ({sorted(uids)})")
        if "snapshot.current" in vmx:
            tree.current = _number(vmx, "snapshot.current", 0)
            if tree.current not in uids:
                raise vmx.error("snapshot.current", f"uid {tree.current} is not a snapshot in this file")
        for snap in tree.snapshots:
            if snap.parent is not None and snap.parent not in uids:
                raise VmxError(f"{path}: snapshot {snap.uid} names parent {snap.parent}, which is not in the file")
        if uids and tree.last_uid < max(uids):
            raise vmx.error("snapshot.lastUID", f"{tree.last_uid} is below the highest uid {max(uids)}")
        return tree

    # -- writing --------------------------------------------------------------------------------

    def to_vmx(self) -> VmxFile:
        vmx = VmxFile(self.path)
        vmx.set(".encoding", "UTF-8")
        vmx.set("snapshot.lastUID", str(self.last_uid))
        if not self.snapshots:
            return vmx
        vmx.set("snapshot.numSnapshots", str(len(self.snapshots)))
        if self.current is not None:
            vmx.set("snapshot.current", str(self.current))
        for i, snap in enumerate(self.snapshots):
            p = f"snapshot{i}."
            vmx.set(p + "uid", str(snap.uid))
            vmx.set(p + "filename", snap.filename)
            if snap.parent is not None:
                vmx.set(p + "parent", str(snap.parent))
            vmx.set(p + "displayName", snap.name)
            vmx.set(p + "description", snap.description)
            high, low = _split_time(snap.create_time_us)
            vmx.set(p + "createTimeHigh", str(high))
            vmx.set(p + "createTimeLow", str(low))
            vmx.set(p + "numDisks", str(len(snap.disks)))
            for d, (node, file_name) in enumerate(snap.disks):
                vmx.set(f"{p}disk{d}.fileName", file_name)
                vmx.set(f"{p}disk{d}.node", node)
        return vmx

    def to_bytes(self) -> bytes:
        return self.to_vmx().to_bytes()


def _number(vmx: VmxFile, key: str, default: int) -> int:
    text = vmx.get(key)
    if text is None:
        return default
    try:
        return int(text, 10)
    except ValueError:
        raise vmx.error(key, f"{text!r} is not a whole number") from None


def _snapshot(vmx: VmxFile, p: str) -> Snapshot:
    if p + "uid" not in vmx:
        raise VmxError(f"{vmx.path}: snapshot.numSnapshots counts {p[:-1]}, which has no uid")
    high = _number(vmx, p + "createTimeHigh", 0)
    low = _number(vmx, p + "createTimeLow", 0) & 0xFFFFFFFF
    disks = []
    for d in range(_number(vmx, p + "numDisks", 0)):
        name, node = vmx.get(f"{p}disk{d}.fileName"), vmx.get(f"{p}disk{d}.node")
        if not name or not node:
            raise VmxError(f"{vmx.where(p + 'numDisks')}: {p}disk{d} lacks a fileName or node")
        disks.append((node, name))
    parent = vmx.get(p + "parent")
    return Snapshot(
        uid=_number(vmx, p + "uid", 0),
        name=vmx.get(p + "displayName") or "",
        description=vmx.get(p + "description") or "",
        parent=None if parent is None else _number(vmx, p + "parent", 0),
        create_time_us=high << 32 | low,
        filename=vmx.get(p + "filename") or "",
        disks=disks,
    )


__all__ = ["Snapshot", "SnapshotTree"]
