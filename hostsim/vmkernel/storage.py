"""The VMkernel storage stack of one host: per-VM worlds on devices, mClock in front of each
device queue, and the disk counters esxtop reads (esx-design.md 4.2, 6.3).

Path of a guest command (``stack.submit(world, op, offset, length, action)``):

1. it is tagged and queued in the device's :class:`~hostsim.vmkernel.mclock.MClock` scheduler;
2. when the device queue has room (fewer than ``queue_depth`` commands of this host in flight,
   esxtop's DQLEN) and mClock picks it, it is **dispatched**: ``action()`` runs then, the real
   I/O through the VMFS library onto the LUN (data is on the backing store from that instant);
3. it **completes** after the device's time and its event fires with ``action()``'s value, or
   fails with its exception (an EIO from the fault layer reaches the guest as that exception).

**Timing.**  The hardware interface's device model (:mod:`hostsim.hic.model`) computes the times
of every device command when it is issued.  One guest command may cause several device commands
inside the VMFS library (a journal record, a metadata write, a pointer-block read, then the data),
all issued at the dispatch instant; they go through the host's device queue and the LUN's
channels like every other command.  The guest command completes when the **last** of them does:
its outstanding time is what a guest doing synchronous I/O would wait.  Per guest command:

* ``QAVG = dispatch - submit`` (waiting in the scheduler for a device slot and mClock's turn);
* ``KAVG = admit - submit`` where ``admit`` is when the last-completing device command entered the
  device (later than the dispatch only if the host's device queue was full of other commands:
  metadata I/O of this or other commands, heartbeats); QAVG <= KAVG;
* ``DAVG = complete - admit`` (in the device: its queue and service);
* ``GAVG = complete - submit = DAVG + KAVG``, exactly, per command.

A command whose action causes no device command (served from a cache, a read of a hole) completes
at its dispatch (DAVG 0).  A device given as a bare :class:`~hostsim.hic.model.DeviceModel` (no
LUN: the experiments' devices of settable capacity) times each guest command as one device
command of its length; its action may still do real I/O on any untimed device.

The scheduler counts a guest command as one slot of the device queue while it is in flight; the
extra device commands of VMFS metadata queue in the hic model's own per-host queue (same depth),
which is where their waiting shows as KAVG.

**Cost.**  One engine event per command (the command itself is the event that fires at its
completion; its outcome is known at dispatch), none for queueing; a wake-up timer only when every
queued request is held back by its limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hostsim.errors import HostsimError
from hostsim.hic.lun import Lun
from hostsim.hic.model import DeviceModel, HostQueue, IoRecord
from hostsim.vmkernel.engine import _PENDING, Engine, Event
from hostsim.vmkernel.mclock import UNLIMITED, Client, IoControls, MClock

#: what a guest command may be
OPS = ("read", "write", "flush")


class StorageError(HostsimError):
    """Misuse of the storage stack (unknown world, bad command, duplicate name)."""


class IoAbortedError(StorageError):
    """A queued command that was never sent: its world was unregistered (VM powered off)."""


@dataclass(frozen=True)
class DiskCounters:
    """Cumulative disk figures (since the world or device was created); latencies are sums in
    µs over completed commands, so esxtop's DAVG/cmd is the difference of two samples'
    ``davg_us_total`` over the difference of their ``cmds``."""

    cmds: int = 0
    reads: int = 0
    writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    davg_us_total: int = 0
    kavg_us_total: int = 0
    qavg_us_total: int = 0
    gavg_us_total: int = 0
    errors: int = 0


class _Tally:
    """The mutable sums behind :class:`DiskCounters`."""

    __slots__ = tuple(DiskCounters.__dataclass_fields__)

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def add(self, cmd: IoCommand, dispatch_us: int) -> None:
        """Count a completed command (``dispatch_us``: when it was sent, or its end if never)."""
        self.cmds += 1
        ok = cmd._ok
        op = cmd.op
        if op == "read":
            self.reads += 1
            if ok:
                self.bytes_read += cmd.length
        elif op == "write":
            self.writes += 1
            if ok:
                self.bytes_written += cmd.length
        if not ok:
            self.errors += 1
        submit, admit, complete = cmd.submit_us, cmd.admit_us, cmd.complete_us
        self.davg_us_total += complete - admit
        self.kavg_us_total += admit - submit
        self.qavg_us_total += dispatch_us - submit
        self.gavg_us_total += complete - submit

    def freeze(self) -> DiskCounters:
        return DiskCounters(*(getattr(self, name) for name in self.__slots__))


class IoCommand(Event):
    """One guest command; as an event it fires at its completion with the action's value.

    Its times (µs) are set when it is dispatched; until then ``dispatch_us`` is None."""

    __slots__ = (
        "action", "admit_us", "complete_us", "device_commands", "dispatch_us", "length", "offset",
        "op", "phase", "submit_us", "world",
    )

    def __init__(self, world: StorageWorld, op: str, offset: int, length: int, action: Callable[[], Any]) -> None:
        Event.__init__(self, world.stack.engine)
        self.world = world
        self.op = op
        self.offset = offset
        self.length = length
        self.action: Callable[[], Any] | None = action
        self.submit_us = self.engine.now
        self.dispatch_us: int | None = None
        self.admit_us = self.complete_us = self.submit_us
        self.device_commands = 0
        self.phase = ""

    @property
    def qavg_us(self) -> int:
        return (self.dispatch_us if self.dispatch_us is not None else self.complete_us) - self.submit_us

    @property
    def kavg_us(self) -> int:
        return self.admit_us - self.submit_us

    @property
    def davg_us(self) -> int:
        return self.complete_us - self.admit_us

    @property
    def gavg_us(self) -> int:
        return self.complete_us - self.submit_us

    def _fire_at(self, complete_us: int, ok: bool, value: Any) -> None:
        """Like a Timeout: the outcome is known now, it becomes visible at ``complete_us``."""
        if self._value is not _PENDING:
            self._check_untriggered()  # raises
        self._ok = ok
        self._value = value
        engine = self.engine
        heapq.heappush(engine._heap, (complete_us, next(engine._seq), self))

    def __repr__(self) -> str:
        return f"<IoCommand {self.world.name} {self.op} {self.length}@{self.offset:#x}>"


class StorageDevice:
    """A device (LUN) as this host's storage stack sees it: its queue, scheduler and counters."""

    def __init__(self, stack: StorageStack, name: str, model: DeviceModel, lun: Lun | None,
                 scheduler: MClock[IoCommand], queue_depth: int) -> None:
        self.stack = stack
        self.name = name
        self.model = model
        self.lun = lun
        self.scheduler = scheduler
        self.queue_depth = queue_depth
        #: guest commands dispatched and not yet complete (esxtop's ACTV)
        self.inflight = 0
        #: device commands the dispatched guest commands caused (VMFS metadata included)
        self.device_commands = 0
        self.worlds: list[StorageWorld] = []
        #: every world ever registered here: the device's counters are the sum of theirs
        self._all_worlds: list[StorageWorld] = []
        self._host_queue = HostQueue()  # this host's queue on a bare model
        #: ESX 2.x consumption units (0: every command counts 1 in the weight phase)
        self.cost_unit_bytes = 0
        self._wake_at: int | None = None

    def counters(self) -> DiskCounters:
        """The sum of the counters of every world that has used the device (one tally per
        command, not two: the device's figures are read far less often than commands complete)."""
        tallies = [w.counters() for w in self._all_worlds]
        return DiskCounters(*(sum(getattr(t, f) for t in tallies) for f in _Tally.__slots__))

    @property
    def queued(self) -> int:
        """Commands waiting in the scheduler (esxtop's QUED)."""
        return self.scheduler.queued

    def set_capacity(self, iops: int) -> None:
        """Make the device serve ``iops`` commands per second whatever their size (experiments);
        commands already in flight keep their times."""
        if isinstance(iops, bool) or not isinstance(iops, int) or iops <= 0:
            raise StorageError(f"{self.name}: capacity {iops!r}: expected a positive number of IOPS")
        self.model.fixed_us = 1e6 / iops
        self.model.per_byte_us = 0.0

    def __repr__(self) -> str:
        return f"<StorageDevice {self.name} depth={self.queue_depth}>"


class StorageWorld:
    """One VM's I/O on one device (or one of its virtual disks there): mClock controls, counters."""

    def __init__(self, stack: StorageStack, name: str, device: StorageDevice, client: Client[IoCommand],
                 disk: str = "") -> None:
        self.stack = stack
        self.name = name
        #: which of the VM's virtual disks on this device (ESX sets disk shares per virtual disk)
        self.disk = disk
        self.device = device
        self.client = client
        self.registered = True
        self._tally = _Tally()

    @property
    def controls(self) -> IoControls:
        return self.client.controls

    def counters(self) -> DiskCounters:
        return self._tally.freeze()

    def __repr__(self) -> str:
        c = self.controls
        return f"<StorageWorld {self.name} on {self.device.name} r={c.reservation_iops} l={c.limit_iops} s={c.shares}>"


def capacity_model(iops: int, *, queue_depth: int = 32) -> DeviceModel:
    """A device model that serves ``iops`` commands per second on one channel, any size."""
    if isinstance(iops, bool) or not isinstance(iops, int) or iops <= 0:
        raise StorageError(f"capacity {iops!r}: expected a positive number of IOPS")
    return DeviceModel(fixed_us=1e6 / iops, per_byte_us=0.0, queue_depth=queue_depth, channels=1)


class StorageStack:
    """The storage stack of one host (``host_name``: its hic handles' host)."""

    def __init__(self, engine: Engine, host_name: str) -> None:
        self.engine = engine
        self.host_name = host_name
        self.devices: dict[str, StorageDevice] = {}
        #: device commands issued while an action runs (None between actions)
        self._collecting: list[IoRecord] | None = None

    # -- configuration ------------------------------------------------------------------------

    def add_device(self, name: str, model: DeviceModel | Lun, *, weight_only: bool = False,
                   anchor_idle: bool = True, cost_unit_bytes: int = 0) -> StorageDevice:
        """A device timed by ``model``: a LUN (its actions' device commands are timed by the
        LUN's model) or a bare device model (each guest command is one device command).
        ``weight_only`` / ``anchor_idle``: see :class:`~hostsim.vmkernel.mclock.MClock`.
        ``cost_unit_bytes``: 0, shares divide commands (mClock, IOPS); else ESX 2.x's consumption
        units (esx-design.md 4.1): a command of n bytes counts ``1 + n / cost_unit_bytes`` in the
        weight phase, so shares divide bandwidth (reservations and limits stay in IOPS)."""
        if isinstance(cost_unit_bytes, bool) or not isinstance(cost_unit_bytes, int) or cost_unit_bytes < 0:
            raise StorageError(f"{name}: cost unit {cost_unit_bytes!r}: expected 0 or a positive number of bytes")
        if name in self.devices:
            raise StorageError(f"{self.host_name}: device {name} is already added")
        lun = model if isinstance(model, Lun) else None
        dm = model.model if isinstance(model, Lun) else model
        if not isinstance(dm, DeviceModel):
            raise StorageError(f"{name}: expected a LUN or a DeviceModel, got {type(model).__name__}")
        if lun is not None:
            if any(d.lun is lun for d in self.devices.values()):
                raise StorageError(f"{name}: this LUN is already a device of {self.host_name}")
            lun.listeners.append(self._on_device_command)
        dev = StorageDevice(self, name, dm, lun, MClock(weight_only=weight_only, anchor_idle=anchor_idle),
                            dm.queue_depth)
        dev.cost_unit_bytes = cost_unit_bytes
        self.devices[name] = dev
        return dev

    def register(self, vm_name: str, dev: StorageDevice, reservation_iops: int = 0, limit_iops: int = UNLIMITED,
                 shares: int | str = 1000, *, disk: str = "") -> StorageWorld:
        """A VM's world on ``dev`` with its controls (shares: a number or low/normal/high).  A VM
        with several virtual disks on one device registers each under its own ``disk`` name
        (``scsi0:1``): each has its own controls and queue, as ESX's per-disk shares and limits."""
        self._own(dev)
        if any(w.name == vm_name and w.disk == disk for w in dev.worlds):
            which = f"{vm_name} {disk}" if disk else vm_name
            raise StorageError(f"{dev.name}: {which} is already registered")
        controls = IoControls(reservation_iops, limit_iops, shares)  # type: ignore[arg-type]
        label = f"{vm_name}:{disk}" if disk else vm_name
        world = StorageWorld(self, vm_name, dev, dev.scheduler.add(label, controls), disk)
        dev.worlds.append(world)
        dev._all_worlds.append(world)
        return world

    def set_controls(self, world: StorageWorld, *, reservation_iops: int | None = None,
                     limit_iops: int | None = None, shares: int | str | None = None) -> None:
        """Change some of a world's controls (the others stay)."""
        self._check_world(world)
        old = world.controls
        new = IoControls(
            old.reservation_iops if reservation_iops is None else reservation_iops,
            old.limit_iops if limit_iops is None else limit_iops,
            old.shares if shares is None else shares,  # type: ignore[arg-type]
        )
        world.device.scheduler.set_controls(world.client, new, self.engine.now)
        self._pump(world.device)

    def unregister(self, world: StorageWorld) -> None:
        """Remove a world (power off): its queued commands fail with :class:`IoAbortedError`;
        those in flight complete as usual."""
        self._check_world(world)
        dev = world.device
        world.registered = False
        dev.worlds.remove(world)
        for cmd in dev.scheduler.remove(world.client):
            cmd.action = None
            cmd.fail(IoAbortedError(f"{dev.name}: {world.name} was unregistered before its {cmd.op} was sent"))

    def _own(self, dev: object) -> None:
        if isinstance(dev, StorageDevice) and dev.stack is not self:
            raise StorageError(f"{self.host_name}: device {dev.name} is a device of {dev.stack.host_name}")
        if not isinstance(dev, StorageDevice) or self.devices.get(dev.name) is not dev:
            raise StorageError(f"{self.host_name}: {dev!r} is not a device of this host")

    def _check_world(self, world: object) -> None:
        if isinstance(world, StorageWorld) and world.stack is not self:
            raise StorageError(f"{self.host_name}: {world.name} is a world of {world.stack.host_name}")
        if not isinstance(world, StorageWorld):
            raise StorageError(f"{self.host_name}: {world!r} is not a world of this host")
        if not world.registered:
            raise StorageError(f"{world.device.name}: {world.name} is not registered")

    # -- commands -----------------------------------------------------------------------------

    def submit(self, world: StorageWorld, op: str, offset: int, length: int, action: Callable[[], Any]) -> IoCommand:
        """Queue a guest command; the returned event fires at its completion (see the module
        docstring for when ``action`` runs and what the times mean)."""
        if (getattr(world, "stack", None) is not self or not world.registered or op not in OPS
                or type(offset) is not int or type(length) is not int or offset < 0 or length < 0
                or not callable(action)):
            self._refuse(world, op, offset, length, action)
        cmd = IoCommand(world, op, offset, length, action)
        cmd.callbacks.append(self._on_complete)  # type: ignore[union-attr]  # first: before any waiter
        dev = world.device
        unit = dev.cost_unit_bytes
        dev.scheduler.enqueue(world.client, cmd, self.engine.now, 1.0 + length / unit if unit else 1.0)
        if dev.inflight < dev.queue_depth:
            self._pump(dev)
        return cmd

    def _refuse(self, world: StorageWorld, op: str, offset: int, length: int, action: object) -> None:
        """Raise the one-line error for a command :meth:`submit` cannot take."""
        self._check_world(world)
        if op not in OPS:
            raise StorageError(f"{world.name}: unknown disk command {op!r} (expected read, write or flush)")
        for what, v in (("offset", offset), ("length", length)):
            if type(v) is not int or v < 0:
                raise StorageError(f"{world.name}: {op} {what} {v!r}: expected a non-negative integer")
        raise StorageError(f"{world.name}: {op} needs a callable action, got {action!r}")

    def _pump(self, dev: StorageDevice) -> None:
        """Dispatch while the device queue has room and mClock has an eligible request."""
        sched = dev.scheduler
        now = self.engine.now
        while dev.inflight < dev.queue_depth and sched.queued:
            picked = sched.pick(now)
            if picked is None:
                at = sched.next_eligible_us(now)
                if at is not None:
                    self._wake(dev, at)
                return
            self._dispatch(dev, picked[1], picked[2])

    def _wake(self, dev: StorageDevice, at_us: int) -> None:
        if dev._wake_at is not None and dev._wake_at <= at_us:
            return
        dev._wake_at = at_us
        timer = self.engine.timeout(at_us - self.engine.now)

        def woken(_ev: Event) -> None:
            if dev._wake_at == at_us:
                dev._wake_at = None
            self._pump(dev)

        timer.callbacks.append(woken)  # type: ignore[union-attr]

    def _dispatch(self, dev: StorageDevice, cmd: IoCommand, phase: str) -> None:
        now = self.engine.now
        cmd.dispatch_us = now
        cmd.phase = phase
        dev.inflight += 1
        action, cmd.action = cmd.action, None
        assert action is not None
        if dev.lun is None:
            admit, _start, complete = dev.model.schedule(now, cmd.length, 0.0, dev._host_queue)
            ok, value = _run(action)
            cmd.device_commands = 1
        else:
            records: list[IoRecord] = []
            self._collecting = records
            try:
                ok, value = _run(action)
            finally:
                self._collecting = None
            admit = complete = now
            for rec in records:  # the first of the last to complete
                if rec.complete_us > complete:
                    admit, complete = rec.admit_us, rec.complete_us
            cmd.device_commands = len(records)
        dev.device_commands += cmd.device_commands
        cmd.admit_us = admit
        cmd.complete_us = complete
        cmd._fire_at(complete, ok, value)

    def _on_device_command(self, _lun: Lun, _host: str, rec: IoRecord) -> None:
        # only this host's code runs during one of its actions, so every command issued then is
        # the action's (whatever handle or host name it went through)
        if self._collecting is not None:
            self._collecting.append(rec)

    def _on_complete(self, ev: Event) -> None:
        cmd: IoCommand = ev  # type: ignore[assignment]
        world = cmd.world
        dev = world.device
        sent = cmd.dispatch_us
        if sent is not None:
            dev.inflight -= 1
        else:  # aborted while queued
            sent = cmd.complete_us = cmd.admit_us = self.engine.now
        world._tally.add(cmd, sent)
        if dev.scheduler.queued:
            self._pump(dev)


def _run(action: Callable[[], Any]) -> tuple[bool, Any]:
    """Run a command's action; its exception becomes the command's outcome, never the engine's."""
    try:
        return True, action()
    except Exception as exc:  # the guest gets it at completion, the stack goes on
        return False, exc
