"""LUNs and their drivers, storage adapters and paths.

A :class:`Lun` is the logical unit as the array (or the local disk) presents it: one backing
store, one device model, one fault plan and one set of device counters, shared by every host
that sees it, as a SAN LUN is one object for all its hosts.  Each host reaches it through its own
:class:`LunHandle` (a :class:`vmfs.device.shared.SharedDevice` whose commands go through the LUN's
model and faults): closing a handle leaves the LUN open for the others,
and every command of every handle goes through the same queue, faults and backing store, so
ATS stays atomic between hosts.

Drivers over four kinds of backing store: an image file (:meth:`Lun.image`), a block device
node (:meth:`Lun.block_device`), memory (:meth:`Lun.memory`), and a LUN on the network
(:meth:`Lun.network`: an iSCSI LUN or a Ceph RBD image, shared with hosts on other machines); any
other :class:`~vmfs.device.base.BlockDevice` can be wrapped with the constructor.

**Locking statistics** (esxtop's ATS, ATSF, RESV/s, CONS/s; :meth:`Lun.locking`).  A LUN of this
machine's own is ATS-capable: every test-and-set is one ATS command, counted per host here.  A
LUN on the network is this host's own session (its own initiator, its own RADOS client), and the
session knows what the target gave: COMPARE AND WRITE, or SCSI-2 reservations around each lock
update with the conflicts they met; those figures are the session's.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hostsim.hic.clock import Clock
from hostsim.hic.faults import AllPathsDownError, FaultPlan, MediumError
from hostsim.hic.model import DeviceModel, HostQueue, IoRecord, LunStats
from hostsim.hic.naming import mpx_name, naa_name, runtime_name
from vmfs.device.base import BlockDevice
from vmfs.device.file import FileDevice
from vmfs.device.memory import MemoryDevice
from vmfs.device.opener import open_device
from vmfs.device.shared import SharedDevice
from vmfs.errors import DeviceError, ExistsError, InvalidArgumentError, NotFoundError

T = TypeVar("T")

#: listener of completed commands: (the LUN, the handle's host, the record)
IoListener = Callable[["Lun", str, IoRecord], None]


@dataclass(frozen=True)
class LockCounters:
    """One host's test-and-sets on a LUN (cumulative): the mode ('ats', 'reserve' for SCSI-2
    reservations, '' before the first), ATS commands that wrote, ATS commands that miscompared,
    reservations taken, RESERVATION CONFLICT answers."""

    mode: str = ""
    ats: int = 0
    ats_failures: int = 0
    reservations: int = 0
    conflicts: int = 0


class Lun:
    """One logical unit, shared by all the hosts that see it."""

    def __init__(
        self,
        device: BlockDevice,
        *,
        clock: Clock,
        serial: str | None = None,
        local: bool = False,
        driver: str = "custom",
        model: DeviceModel | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        """``local`` LUNs get an ``mpx.`` name from their first path; others an ``naa.`` name
        from ``serial`` (default: the backing store's name)."""
        self.device = device
        self.clock = clock
        self.driver = driver
        self.serial = serial or device.name
        self.local = local
        self.canonical_name: str | None = None if local else naa_name(self.serial)
        self.model = model or DeviceModel()
        self.faults = faults or FaultPlan()
        self.stats = LunStats(clock.now_us())
        #: called after every command (the VMkernel's storage stack listens here)
        self.listeners: list[IoListener] = []
        #: each host's device queue on this LUN (all its handles share it)
        self.queues: dict[str, HostQueue] = {}
        #: each host's ATS commands on this LUN: [wrote, miscompared] (a LUN of this machine)
        self.ats_counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.closed = False

    # -- drivers --------------------------------------------------------------------------------

    @classmethod
    def image(cls, path: str | os.PathLike[str], *, clock: Clock, readonly: bool = False, **kw: object) -> Lun:
        """A LUN backed by an image file (the ``pyvmfs-image`` driver)."""
        path = os.fspath(path)
        _require(path, stat.S_ISREG, "an image file")
        return cls(FileDevice(path, readonly=readonly), clock=clock, driver="image", **kw)  # type: ignore[arg-type]

    @classmethod
    def block_device(
        cls, path: str | os.PathLike[str], *, clock: Clock, readonly: bool = False, **kw: object
    ) -> Lun:
        """A LUN backed by a block device node of this machine."""
        path = os.fspath(path)
        _require(path, stat.S_ISBLK, "a block device")
        return cls(FileDevice(path, readonly=readonly), clock=clock, driver="blockdev", **kw)  # type: ignore[arg-type]

    @classmethod
    def memory(cls, size: int, *, clock: Clock, name: str = "memory", **kw: object) -> Lun:
        """A LUN in memory (sparse: only written ranges cost memory)."""
        if size <= 0:
            raise InvalidArgumentError(f"{name}: a LUN needs a positive size, got {size}")
        return cls(MemoryDevice(size, name=name), clock=clock, driver="memory", **kw)  # type: ignore[arg-type]

    @classmethod
    def network(cls, url: str, *, clock: Clock, readonly: bool = False, **kw: object) -> Lun:
        """A LUN on the network: ``iscsi://portal/target/lun`` (libiscsi) or ``rbd:pool/image``
        (librbd), opened as this host's own session.  Other machines' hosts share it through the
        target only, as ESX hosts share a SAN LUN; its device model still times the commands."""
        if url.startswith("iscsi://"):
            driver = "iscsi"
        elif url.startswith("rbd:"):
            driver = "rbd"
        else:
            raise InvalidArgumentError(f"{url}: not a LUN on the network (iscsi://HOST/IQN/LUN or rbd:POOL/IMAGE)")
        # named (and its naa. name derived) from the device's name: the URL without any password
        return cls(open_device(url, readonly=readonly), clock=clock, driver=driver, **kw)  # type: ignore[arg-type]

    @property
    def networked(self) -> bool:
        return self.driver in ("iscsi", "rbd")

    def locking(self, host: str) -> LockCounters:
        """How ``host`` takes on-disk locks on this LUN and what it cost (module docstring)."""
        stats = getattr(self.device, "stats", None) if self.networked else None
        if stats is not None:  # the session's own figures
            ats = getattr(stats, "ats", 0)
            failures = getattr(stats, "ats_miscompares", 0)
            mode = getattr(stats, "mode", "")
            return LockCounters("" if mode == "unknown" else mode, ats - failures, failures,
                                getattr(stats, "reservations", 0), getattr(stats, "conflicts", 0))
        wrote, failed = self.ats_counts.get(host, (0, 0))
        return LockCounters("ats" if wrote or failed else "", wrote, failed)

    # -- shared use -----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.device.size

    @property
    def path(self) -> str | None:
        """The backing file or device node, when there is one (host identity locks use it)."""
        return getattr(self.device, "path", None)

    def handle(self, host: str, name: str, *, readonly: bool = False) -> LunHandle:
        """A new handle of ``host`` on this LUN, named ``name`` (its runtime name there)."""
        if self.closed:
            raise DeviceError(f"{name}: the LUN has been removed")
        return LunHandle(self, host, name, readonly=readonly)

    def submit(self, handle: LunHandle, op: str, offset: int, length: int, action: Callable[[], T]) -> T | None:
        """Run one command: faults first, then the device model, then ``action`` on the backing
        store (not run for a lost write).  Returns what ``action`` returned."""
        now = self.clock.now_us()
        if self.faults.quiet:  # the common case, without the three fault checks
            with self._lock:
                queue = self.queues.get(handle.host) or self.queues.setdefault(handle.host, HostQueue())
                admit, start, complete = self.model.schedule(now, length, 0.0, queue)
                self._record(handle, IoRecord(op, offset, length, now, admit, start, complete, None))
            return action()
        with self._lock:
            if self.faults.check_paths():
                rec = IoRecord(op, offset, length, now, now, now, now, "all paths down")
                self._record(handle, rec)
                raise AllPathsDownError(
                    f"{handle.name}: all paths down ({op} of {length} bytes at 0x{offset:x} failed)"
                )
            extra = self.faults.latency_us(offset, length)
            queue = self.queues.setdefault(handle.host, HostQueue())
            admit, start, complete = self.model.schedule(now, length, extra, queue)
            error = self.faults.error_for(op, offset, length) if op != "flush" else None
            lost = op == "write" and error is None and self.faults.loses(offset, length)
            rec = IoRecord(op, offset, length, now, admit, start, complete, error)
            self._record(handle, rec)
        if error is not None:
            raise MediumError(f"{handle.name}: {error} (EIO)")
        if lost:
            return None
        return action()

    def _record(self, handle: LunHandle, rec: IoRecord) -> None:
        self.stats.record(rec)
        handle.stats.record(rec)
        handle.last_io = rec
        for listener in self.listeners:
            listener(self, handle.host, rec)

    def close(self) -> None:
        """Remove the LUN (its owner does this once no host uses it)."""
        if not self.closed:
            self.closed = True
            self.device.close()


def _require(path: str, test: Callable[[int], bool], what: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file or device") from None
    except OSError as exc:
        raise DeviceError(f"{path}: {exc.strerror}", errno=exc.errno) from None
    if not test(mode):
        raise InvalidArgumentError(f"{path}: not {what}")


class LunHandle(SharedDevice):
    """One host's handle on a LUN: a :class:`SharedDevice` on the LUN's backing store whose every
    command goes through the LUN's faults and model."""

    def __init__(self, lun: Lun, host: str, name: str, *, readonly: bool) -> None:
        super().__init__(lun.device, readonly=readonly)
        self.lun = lun
        self.host = host
        self.name = name
        self.stats = LunStats(lun.clock.now_us())
        #: the last command this handle issued (its completion time is what a world waits for)
        self.last_io: IoRecord | None = None

    def _check(self) -> None:
        if self.closed:
            raise DeviceError(f"{self.name}: this host's handle on the LUN is closed")
        if self.lun.closed:
            raise DeviceError(f"{self.name}: the LUN has been removed")

    def _read(self, offset: int, length: int) -> bytes:
        self._check()
        out = self.lun.submit(self, "read", offset, length, lambda: self.device.read(offset, length))
        assert out is not None
        return out

    def _write(self, offset: int, data: bytes) -> None:
        self._check()
        self.lun.submit(self, "write", offset, len(data), lambda: self.device.write(offset, data))

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        self._check()
        done = bool(self.lun.submit(
            self, "ats", offset, len(new), lambda: self.device.compare_and_write(offset, expected, new)
        ))
        counts = self.lun.ats_counts.get(self.host) or self.lun.ats_counts.setdefault(self.host, [0, 0])
        counts[0 if done else 1] += 1
        return done

    def flush(self) -> None:
        self._check()
        self.lun.submit(self, "flush", 0, 0, self.device.flush)


class StorageAdapter:
    """A host bus adapter ``vmhbaN`` of one host, with the LUNs presented on it."""

    def __init__(self, name: str, driver: str = "pyvmfs") -> None:
        self.name = name
        self.driver = driver
        self.paths: dict[tuple[int, int, int], ScsiPath] = {}

    def present(self, lun: Lun, *, target: int = 0, lun_id: int = 0, channel: int = 0) -> ScsiPath:
        """Make ``lun`` visible at ``C<channel>:T<target>:L<lun_id>`` of this adapter."""
        key = (channel, target, lun_id)
        name = runtime_name(self.name, channel, target, lun_id)
        if key in self.paths:
            raise ExistsError(f"{name}: a LUN is already presented there")
        if lun.canonical_name is None:
            lun.canonical_name = mpx_name(name)
        path = ScsiPath(self, name, lun)
        self.paths[key] = path
        return path

    def remove(self, path: ScsiPath) -> None:
        for key, p in list(self.paths.items()):
            if p is path:
                del self.paths[key]


class ScsiPath:
    """A LUN as one host sees it on one adapter: its runtime name and that host's handles."""

    def __init__(self, adapter: StorageAdapter, name: str, lun: Lun) -> None:
        self.adapter = adapter
        self.name = name
        self.lun = lun

    @property
    def canonical_name(self) -> str:
        assert self.lun.canonical_name is not None
        return self.lun.canonical_name

    def open(self, host: str, *, readonly: bool) -> LunHandle:
        return self.lun.handle(host, self.name, readonly=readonly)

    def __repr__(self) -> str:
        return f"<ScsiPath {self.name} {self.canonical_name} {self.lun.size} bytes>"
