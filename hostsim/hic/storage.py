"""One host's storage: adapters, a rescan that finds VMFS volumes, datastores under
``/vmfs/volumes``, snapshot LUNs and their resignaturing.

A rescan reads the LVM header of every LUN the host sees (``vmfs.device.lvm.LvmDevice.probe``),
groups the LUNs by logical volume (LV UUID and snapID), assembles each complete group into a
logical volume (extents in any order, spanned volumes included) and mounts it read-only for
browsing as a :class:`Datastore`.  A volume whose UUID (file-system UUID or LV UUID) is already
mounted from other LUNs is a copy made by the array (a LUN snapshot or replica): ESX does not
mount it, it reports it as a snapshot volume, which :meth:`StorageSystem.resignature` gives a
new identity.  Every problem of one LUN (not VMFS, truncated, an extent missing, an I/O error,
all paths down) becomes one line of the :class:`RescanReport`; the rescan goes on with the
other LUNs.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from hostsim.hic.clock import Clock
from hostsim.hic.lun import ScsiPath, StorageAdapter
from hostsim.hic.naming import adapter_name, parse_runtime_name
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import HostIdentity
from vmfs.device.lvm import LogicalVolume, LvmDevice
from vmfs.errors import (
    ExistsError,
    InvalidArgumentError,
    NotFoundError,
    NotVmfsError,
    VmfsError,
)
from vmfs.ondisk import lvm as L
from vmfs.ondisk.common import decode_name, encode_name, format_uuid
from vmfs.ondisk.fsdesc import FS_DESCRIPTOR_OFFSET, FsDescriptor
from vmfs.volume.namespace import FileSystem
from vmfs.volume.volume import Volume

VOLUMES = "/vmfs/volumes"
#: LVM volume descriptor ``state`` values (vmfs-format.md 2.4)
STATE_NORMAL = 1
STATE_RESIGNATURE_PENDING = 2
#: the label of a resignatured copy: ``snap-<8 hex digits>-<old label>``
SNAP_PREFIX = "snap-"
LABEL_MAX = 127


@dataclass
class LunScan:
    """What a rescan found on one LUN."""

    path: str  # runtime name
    device: str  # canonical name
    status: str  # mounted, snapshot, incomplete, not-vmfs, error
    uuid: str | None = None
    label: str | None = None
    message: str = ""

    def line(self) -> str:
        what = {
            "mounted": f"datastore '{self.label}' ({self.uuid})",
            "snapshot": f"snapshot volume '{self.label}' ({self.uuid}): not mounted, resignature to use it",
        }.get(self.status, self.message)
        if self.status == "snapshot" and self.message:
            what += f" ({self.message})"
        return f"{self.path} {self.device}: {self.status}: {what}"


@dataclass
class RescanReport:
    luns: list[LunScan] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [s.line() for s in self.luns]

    def by_path(self, path: str) -> LunScan:
        for s in self.luns:
            if s.path == path:
                return s
        raise NotFoundError(f"{path}: no such LUN in the rescan")

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class SnapshotVolume:
    """A complete VMFS volume found on LUNs that copy an already mounted one."""

    uuid: str
    lv_uuid: str
    label: str
    paths: list[ScsiPath]
    pending: bool = False  # a resignature was interrupted (LVM state 2)


class Datastore:
    """A mounted VMFS volume: read-only for browsing, read-write per host through
    :meth:`attach` (each host with its own identity, heartbeat slot, journal and locks)."""

    def __init__(self, storage: StorageSystem, volume: Volume, paths: list[ScsiPath]) -> None:
        self.storage = storage
        self.volume = volume
        self.paths = paths
        self.uuid = volume.uuid
        self.label = volume.label
        self.lv_uuid = volume.lvm.devices[0].volume.lvId if volume.lvm and volume.lvm.devices else ""  # type: ignore[attr-defined]
        self.attachments: list[HostAttachment] = []

    @property
    def path(self) -> str:
        return f"{VOLUMES}/{self.uuid}"

    @property
    def extents(self) -> list[str]:
        """The extents as ESX lists them: canonical device name and partition (``naa.…:1``)."""
        return [f"{p.canonical_name}:1" for p in self.paths]

    @property
    def filesystem(self) -> FileSystem:
        """Path-level read access (``ls``, ``stat``, reading files)."""
        return FileSystem(self.volume)

    def attach(self, host: HostIdentity, *, journaling: bool = True) -> HostAttachment:
        """Open the datastore read-write as ``host``, on fresh read-write handles of its LUNs."""
        handles = [p.open(self.storage.host_name, readonly=False) for p in self.paths]
        att = HostAttachment.from_devices(list(handles), host=host, journaling=journaling)
        self.attachments.append(att)
        return att

    def close(self) -> None:
        for att in self.attachments:
            if not att.closed:
                att.close()
        self.volume.close()

    def __repr__(self) -> str:
        return f"<Datastore {self.label!r} {self.uuid} on {', '.join(p.name for p in self.paths)}>"


class VolumesNamespace(Mapping[str, Datastore]):
    """``/vmfs/volumes``: one entry per datastore UUID, and one per label that, like ESX's
    symlink, points at ``/vmfs/volumes/<uuid>``.  Keys are entry names (or full paths)."""

    def __init__(self) -> None:
        self._by_uuid: dict[str, Datastore] = {}
        self._links: dict[str, str] = {}

    @staticmethod
    def _name(key: str) -> str:
        if key.startswith(VOLUMES + "/"):
            key = key[len(VOLUMES) + 1 :]
        return key.strip("/")

    def add(self, ds: Datastore) -> None:
        if ds.uuid in self._by_uuid:
            raise ExistsError(f"{VOLUMES}/{ds.uuid}: a datastore with this UUID is already mounted")
        self._by_uuid[ds.uuid] = ds
        # a label already taken (or empty) gets no link: the UUID entry still reaches the volume
        if ds.label and ds.label not in self._links and ds.label not in self._by_uuid:
            self._links[ds.label] = ds.uuid

    def remove(self, ds: Datastore) -> None:
        self._by_uuid.pop(ds.uuid, None)
        for label, uuid in list(self._links.items()):
            if uuid == ds.uuid:
                del self._links[label]

    def islink(self, key: str) -> bool:
        return self._name(key) in self._links

    def readlink(self, key: str) -> str:
        name = self._name(key)
        if name not in self._links:
            raise InvalidArgumentError(f"{VOLUMES}/{name}: not a datastore label link")
        return f"{VOLUMES}/{self._links[name]}"

    def __getitem__(self, key: str) -> Datastore:
        name = self._name(key).split("/", 1)[0]
        uuid = self._links.get(name, name)
        if uuid not in self._by_uuid:
            raise NotFoundError(f"{VOLUMES}/{name}: no such datastore")
        return self._by_uuid[uuid]

    def resolve(self, path: str) -> tuple[Datastore, str]:
        """(datastore, path inside it) of ``/vmfs/volumes/<label or uuid>/dir/file``."""
        name = self._name(path)
        head, _, rest = name.partition("/")
        return self[head], "/" + rest

    def __iter__(self) -> Iterator[str]:
        return iter(sorted([*self._by_uuid, *self._links]))

    def __len__(self) -> int:
        return len(self._by_uuid) + len(self._links)

    def datastores(self) -> list[Datastore]:
        return list(self._by_uuid.values())


class StorageSystem:
    """The storage of one host: its adapters, what a rescan found, its datastores."""

    def __init__(self, host_name: str, clock: Clock, *, seed: int = 0, epoch_s: int | None = None) -> None:
        """``seed`` fixes the random parts of new UUIDs and snapshot labels; ``epoch_s`` is the
        host's wall time at ``clock`` 0 (the time part of new UUIDs), default now."""
        self.host_name = host_name
        self.clock = clock
        self.adapters: dict[str, StorageAdapter] = {}
        self.volumes = VolumesNamespace()
        self.snapshots: dict[str, SnapshotVolume] = {}
        self.last_report = RescanReport()
        self._rng = random.Random(seed)
        self._epoch_s = int(time.time()) if epoch_s is None else epoch_s
        # the MAC part of UUIDs this host makes: stable per host name, locally administered
        digest = hashlib.sha256(host_name.encode()).digest()
        self._mac = bytes([digest[0] & 0xFC | 0x02]) + digest[1:6]

    # -- adapters and devices -----------------------------------------------------------------

    def add_adapter(self, name: str | None = None, driver: str = "pyvmfs") -> StorageAdapter:
        name = name or adapter_name(len(self.adapters) + 1)
        parse_runtime_name(f"{name}:C0:T0:L0")  # vmhbaN, nothing else
        if name in self.adapters:
            raise ExistsError(f"{name}: adapter already exists")
        self.adapters[name] = StorageAdapter(name, driver)
        return self.adapters[name]

    def paths(self) -> list[ScsiPath]:
        """Every path this host sees, in runtime-name order (adapter, channel, target, LUN)."""
        every = [p for a in self.adapters.values() for p in a.paths.values()]
        return sorted(every, key=lambda p: parse_runtime_name(p.name))

    # -- rescan -------------------------------------------------------------------------------

    def rescan(self) -> RescanReport:
        """Probe every LUN, mount new complete volumes, report snapshots and problems."""
        report = RescanReport()
        mounted = {id(p.lun): ds for ds in self.volumes.datastores() for p in ds.paths}
        groups: dict[tuple[str, int], list[tuple[ScsiPath, LvmDevice]]] = {}
        self.snapshots.clear()
        for path in self.paths():
            if id(path.lun) in mounted:
                ds = mounted[id(path.lun)]
                report.luns.append(LunScan(path.name, path.canonical_name, "mounted", ds.uuid, ds.label))
                continue
            try:
                probed = LvmDevice.probe(path.open(self.host_name, readonly=True))
            except NotVmfsError as exc:
                report.luns.append(LunScan(path.name, path.canonical_name, "not-vmfs", message=_one_line(exc)))
                continue
            except VmfsError as exc:
                report.luns.append(LunScan(path.name, path.canonical_name, "error", message=_one_line(exc)))
                continue
            groups.setdefault(probed.lv_key, []).append((path, probed))
        for members in groups.values():
            for copy in _copies(members):
                report.luns.extend(self._mount_group(copy))
        order = {p.name: i for i, p in enumerate(self.paths())}
        report.luns.sort(key=lambda s: order.get(s.path, len(order)))
        self.last_report = report
        return report

    def _mount_group(self, members: list[tuple[ScsiPath, LvmDevice]]) -> list[LunScan]:
        """Assemble one set of extents of one logical volume and mount it (or say why not)."""
        paths = [p for p, _ in members]
        devices = [d for _, d in members]
        lv_uuid = devices[0].volume.lvId  # type: ignore[attr-defined]

        def each(status: str, uuid: str | None = None, label: str | None = None, msg: str = "") -> list[LunScan]:
            return [LunScan(p.name, p.canonical_name, status, uuid, label, msg) for p in paths]

        missing = _missing_extents(devices)
        if missing:
            return each("incomplete", msg=f"logical volume {lv_uuid}: {missing}; not mounted")
        # an interrupted resignature leaves the new LV UUID in the LVM and maybe the old one in
        # the FS descriptor: open it without that check, to report it (and resume it)
        pending = any(d.volume.state == STATE_RESIGNATURE_PENDING for d in devices)  # type: ignore[attr-defined]
        try:
            lv = LogicalVolume(devices)
            volume = Volume(lv, lvm=None if pending else lv)
        except VmfsError as exc:
            return each("error", msg=_one_line(exc))
        uuid, label = volume.uuid, volume.label
        taken = any(ds.uuid == uuid or ds.lv_uuid == lv_uuid for ds in self.volumes.datastores())
        if taken or pending:
            volume.close()
            self.snapshots[uuid] = SnapshotVolume(uuid, lv_uuid, label, paths, pending)
            return each("snapshot", uuid, label, "resignature pending" if pending else "")
        ds = Datastore(self, volume, paths)
        self.volumes.add(ds)
        return each("mounted", uuid, label)

    # -- snapshot LUNs ------------------------------------------------------------------------

    def resignature(self, uuid: str) -> Datastore:
        """Give the snapshot volume ``uuid`` a new identity (``esxcfg-volume -r``): new LV UUID
        in the LVM volume descriptor of each extent, new FS UUID, the new LV UUID in the FS
        descriptor, label ``snap-XXXXXXXX-<label>``; then mount it beside the original.

        Order, so that an interruption can be resumed: every extent's descriptor first (state
        "resignature pending"), then the FS descriptor, then each descriptor back to "normal".
        A rescan reports a half-done volume as a snapshot (pending) and this resumes it."""
        snap = self.snapshots.get(uuid)
        if snap is None:
            raise NotFoundError(f"{uuid}: no snapshot volume of that UUID (rescan first)")
        handles = [p.open(self.host_name, readonly=False) for p in snap.paths]
        devices = [LvmDevice.probe(h) for h in handles]
        if _missing_extents(devices):
            raise NotVmfsError(f"{uuid}: a spanned volume can be resignatured only with all its extents online")
        new_lv = devices[0].volume.lvId if snap.pending else self._new_uuid()  # type: ignore[attr-defined]
        for d in devices:
            _rewrite_volume_descriptor(d, new_lv, STATE_RESIGNATURE_PENDING)
        lv = LogicalVolume(devices)
        fs = FsDescriptor.parse(lv.read(FS_DESCRIPTOR_OFFSET, 512))
        if fs.volInfo.lvId != new_lv:
            fs.uuid = self._new_uuid()
            fs.volInfo.lvId = new_lv
            label = decode_name(fs.fsLabel)
            tag = f"{SNAP_PREFIX}{self._rng.getrandbits(32):08x}-"
            fs.fsLabel = encode_name((tag + label).encode()[:LABEL_MAX].decode(errors="ignore"), 128)
            lv.write(FS_DESCRIPTOR_OFFSET, FsDescriptor.build(fs))
            lv.flush()
        for d in devices:
            _rewrite_volume_descriptor(d, new_lv, STATE_NORMAL)
            d.device.flush()
        for h in handles:
            h.close()
        del self.snapshots[uuid]
        new_uuid = fs.uuid
        self.rescan()
        return self.volumes[new_uuid]

    def _new_uuid(self) -> str:
        """A VMFS-style UUID: creation time (seconds), random middle, this host's MAC."""
        now = self._epoch_s + self.clock.now_us() // 1_000_000
        middle = self._rng.getrandbits(48).to_bytes(6, "little")
        return format_uuid(now.to_bytes(4, "little") + middle + self._mac)

    # -- unmount ------------------------------------------------------------------------------

    def unmount(self, key: str) -> None:
        """Unmount a datastore (by label or UUID), closing every attachment made through it."""
        ds = self.volumes[key]
        self.volumes.remove(ds)
        ds.close()

    def close(self) -> None:
        for ds in self.volumes.datastores():
            self.unmount(ds.uuid)


def _copies(members: list[tuple[ScsiPath, LvmDevice]]) -> list[list[tuple[ScsiPath, LvmDevice]]]:
    """Split the LUNs of one logical volume into sets of extents: several LUNs holding the same
    extent (same first segment) are copies; the n-th copy of every extent forms set n."""
    by_extent: dict[int, list[tuple[ScsiPath, LvmDevice]]] = {}
    for m in members:
        by_extent.setdefault(m[1].volume.firstPE, []).append(m)  # type: ignore[attr-defined]
    depth = max(len(v) for v in by_extent.values())
    return [[v[i] for v in by_extent.values() if i < len(v)] for i in range(depth)]


def _missing_extents(devices: list[LvmDevice]) -> str:
    """Why this set of extents is not a whole volume ("" when it is)."""
    vol = devices[0].volume
    want = max(vol.numDevs, 1)  # type: ignore[attr-defined]
    have = len(devices)
    head = any(d.volume.firstPE == 0 for d in devices)  # type: ignore[attr-defined]
    if have < want or not head:
        first = "" if head else ", the first extent among them"
        return f"{want - have if have < want else 1} of its {want} extents missing{first}"
    return ""


def _rewrite_volume_descriptor(dev: LvmDevice, lv_uuid: str, state: int) -> None:
    """Set the LV UUID (binary and text) and state of the descriptor of this device's volume."""
    handle = dev.device
    old = dev.volume.lvId  # type: ignore[attr-defined]
    lay = dev.layout
    for i in range(lay.max_volumes):
        off = lay.volume_table + i * L.VOLUME_DESCRIPTOR_SIZE
        vd = L.LvmVolumeDescriptor.parse(handle.read(off, L.VOLUME_DESCRIPTOR_SIZE))
        if vd.state != L.VOLUME_STATE_INVALID and vd.lvId in (old, lv_uuid):
            vd.lvId = lv_uuid
            vd.name = encode_name(lv_uuid, 64)
            vd.state = state
            handle.write(off, L.LvmVolumeDescriptor.build(vd))
            dev.volume = vd
            return
    raise NotVmfsError(f"{handle.name}: the descriptor of logical volume {old} is gone")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())

