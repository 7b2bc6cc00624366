"""A simulated ESX host as its service console boots and administers it.

Boot follows ESX (esx-design.md 6.1): the console reads the host's config, starts the VMkernel
(the event engine, the CPU scheduler with the console world on pCPU 0, the memory manager, the
storage stack), presents the LUNs on their adapters, rescans storage, makes a VMFS5 datastore on
a blank LUN that the config asks one for, and opens every datastore read-write under the host's
own identity (heartbeat slot, journal, locks), exactly as a separate ESX host would.  VMs are
folders on a datastore (:class:`~hostsim.vmm.folder.VmFolder`); powering one on admits it
(resource pools, memory), takes its files with on-disk locks and makes its ``.vswp``
(:class:`~hostsim.vmm.poweron.PoweredOnVm`), gives it a CPU group with one world per vCPU, its
memory, a storage world per disk, and starts its VMM (:class:`~hostsim.vmm.machine.Vmm`).

The host is only ever changed from inside the engine's loop (or before it runs): a headless
scenario calls these methods between ``engine.run`` slices, a paced host runs console commands
posted from its command server.  Every action is logged with its simulated time, and every
mistake a user can make is a :class:`~hostsim.errors.HostsimError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostsim.console import config as cfg
from hostsim.console import scenario as sc
from hostsim.console.stats import (
    CpuStat,
    DeviceSample,
    DiskStat,
    GroupSample,
    HostMemStat,
    HostSample,
    LockStat,
    MemStat,
    PcpuSample,
    VmDiskSample,
    VmMemSample,
)
from hostsim.console.vimcmd import HostView, SnapshotView, VmView
from hostsim.errors import HostPanic, HostsimError
from hostsim.hic import Datastore, DeviceModel, Lun, StorageSystem
from hostsim.vmkernel.cpu import CpuGroup, CpuScheduler
from hostsim.vmkernel.engine import SECOND, Engine
from hostsim.vmkernel.memory.manager import MemoryManager
from hostsim.vmkernel.memory.shares import mem_shares
from hostsim.vmkernel.memory.vm import VmMemory
from hostsim.vmkernel.pools import Allocation, ResourcePool
from hostsim.vmkernel.storage import StorageStack, StorageWorld
from hostsim.vmkernel.vmfsclock import EngineClock, heartbeat_world
from hostsim.vmm.files import exists, host_filesystem
from hostsim.vmm.folder import DiskSpec, VmFolder
from hostsim.vmm.guest.parser import load as load_program
from hostsim.vmm.guest.parser import parse as parse_program
from hostsim.vmm.guest.tree import Program
from hostsim.vmm.machine import Vmm
from hostsim.vmm.poweron import PoweredOnVm
from vmfs.cluster.attachment import HostAttachment
from vmfs.cluster.host import Clock as RealClock
from vmfs.cluster.host import HostIdentity
from vmfs.mkfs import MkfsOptions, format_volume
from vmfs.ondisk.common import format_uuid
from vmfs.write.posix import WritableFileSystem

log = logging.getLogger("hostsim.console.host")

#: how much of a LUN must be zero for the console to call it blank and make the datastore on it
BLANK_PROBE = 2 << 20


class HostError(HostsimError):
    """A console action that cannot be done (unknown VM, datastore, pool; wrong power state)."""


#: where an armed crash fires: at once, or in the middle of the next VMFS journal transaction
#: that has two or more home writes, after its first (half home: what only a replay repairs)
PANIC_POINTS = ("now", "journal-half-home")


def host_uuid(name: str) -> str:
    """The host's VMFS identity: the same for the same host name on every machine and boot, so
    a host that comes back after a crash finds and replays its own journal."""
    digest = hashlib.sha256(f"hostsim:{name}".encode()).digest()
    return format_uuid(digest[:10] + bytes([digest[10] | 0x02]) + digest[11:16])


@dataclass
class RunningVm:
    """What the host holds for a powered-on VM."""

    files: PoweredOnVm
    memory: VmMemory
    cpu: CpuGroup
    worlds: dict[str, StorageWorld]
    vmm: Vmm
    pool: ResourcePool
    started_us: int


@dataclass
class VmRecord:
    """A registered VM: its folder, its pool and, while powered on, what runs it."""

    vmid: int
    folder: VmFolder
    datastore: str
    pool: str | None = None
    balloon: bool = True
    mem_limit_mb: int | None = None
    running: RunningVm | None = None
    #: why the host last powered the VM off by itself (its guest failed), for later errors
    stopped_because: str | None = None


class Host:
    """One simulated ESX host (see the module docstring)."""

    def __init__(self, config: cfg.HostConfig, *, track_guest_writes: bool = False, realtime: bool = False) -> None:
        """``track_guest_writes``: every VMM keeps the bytes of every sector its guest wrote
        (``vmm.log.expected_sectors``), for tests that compare the VMDKs with them.

        ``realtime``: the engine will run paced to the wall clock at speed 1 (``hostsim boot``).
        A host with a LUN on the network needs it: hosts of other machines on that LUN judge
        its heartbeat by their own clocks, and it judges theirs, so its VMFS module keeps real
        time (a real clock and its own heartbeat thread, as a mount does) — a host running ahead
        of the wall clock would break live hosts' locks after 16 *simulated* seconds, and one
        falling behind would write past its lease.  Such a host is not deterministic."""
        network = config.network_luns
        if network and not realtime:
            lc = network[0]
            raise HostError(f"{config.path}:{lc.line}: LUN {lc.name} is on the network, shared with hosts that keep "
                            "real time: boot this host with `hostsim boot` at speed 1 (not headless, not faster)")
        self.config = config
        self.track_guest_writes = track_guest_writes
        self.name = config.name
        self.engine = Engine(seed=config.seed)
        self.rng = random.Random(f"{config.seed}:console")
        self.events: list[str] = []
        self.clock = EngineClock(self.engine, epoch_s=config.epoch_s)
        self.identity = HostIdentity(uuid=host_uuid(config.name), ip=f"192.0.2.{1 + config.seed % 250}",
                                     clock=RealClock() if network else self.clock, heartbeat_period=3.0, lease=16.0)
        self.storage = StorageSystem(config.name, self.engine, seed=config.seed, epoch_s=config.epoch_s)
        self.luns: dict[str, Lun] = {}
        self.datastores: dict[str, Datastore] = {}
        self.attachments: dict[str, HostAttachment] = {}
        self.inventory: dict[int, VmRecord] = {}
        self._next_vmid = 1
        self.crashed = False
        self.closed = False
        #: what a panic does once the host has stopped: raise :class:`HostPanic` (in one process
        #: with its caller); ``hostsim boot`` replaces it with a SIGKILL of its own process
        self.on_panic: Callable[[str], None] = _raise_panic
        #: the panic point armed and not yet reached (``vsish -e get``)
        self.armed_panic: str | None = None
        vm_memory = config.memory_mb - config.vmkernel_mb - config.console_mb
        self.root_pool = ResourcePool.host("host", cpu_mhz=config.pcpus * config.mhz, mem_mb=max(vm_memory, 0))
        self.pools: dict[str, ResourcePool] = {}
        try:
            self._boot()
        except BaseException:
            self._close_storage()
            raise

    # -- boot -------------------------------------------------------------------------------------

    def event(self, message: str) -> None:
        """One line of the host's event log, stamped with simulated seconds since boot."""
        self.events.append(f"{self.engine.now / SECOND:10.3f} {self.name}: {message}")

    def _boot(self) -> None:
        c = self.config
        self.event(f"booting: {c.pcpus} pCPUs at {c.mhz} MHz, {c.memory_mb} MB, mode {c.mode}, seed {c.seed}")
        for p in c.pools:
            parent = self.root_pool if p.parent is None else self.pools[p.parent]
            self.pools[p.name] = ResourcePool(
                p.name, parent,
                cpu=Allocation(p.cpu.shares, p.cpu.reservation, p.cpu.limit, p.cpu.expandable),
                mem=Allocation(p.mem.shares, p.mem.reservation, p.mem.limit, p.mem.expandable))
        self.cpu = CpuScheduler(self.engine, pcpus=c.pcpus, mhz=c.mhz, coschedule=c.coschedule, pool=self.root_pool)
        self.console_world = self.cpu.add_console()
        self.memory = MemoryManager(self.engine, c.memory_mb, mode=c.mode, idle_tax=c.idle_tax,
                                    vmkernel_mb=c.vmkernel_mb, console_mb=c.console_mb, swap_mb=c.swap_mb,
                                    seed=c.seed)
        self.stack = StorageStack(self.engine, c.name)
        adapters: dict[str, object] = {}
        for lc in c.luns:
            lun = self._make_lun(lc)
            self.luns[lc.name] = lun
            adapter = adapters.get(lc.adapter)
            if adapter is None:
                adapter = adapters[lc.adapter] = self.storage.add_adapter(lc.adapter)
            adapter.present(lun, target=lc.target, lun_id=lc.lun_id, channel=lc.channel)  # type: ignore[attr-defined]
            self.stack.add_device(lc.name, lun)
        report = self.storage.rescan()
        for line in report.lines():
            self.event(f"rescan: {line}")
        for ds in self.storage.volumes.datastores():
            self.datastores[ds.label or ds.uuid] = ds
        for lc in c.luns:
            if lc.datastore and lc.datastore not in self.datastores:
                raise HostError(f"{c.path}:{lc.line}: LUN {lc.name} carries no datastore {lc.datastore!r} "
                                "(not blank, so the console did not make one; vmfs-mkfs it, or fix the label)")
        for label, ds in sorted(self.datastores.items()):
            att = ds.attach(self.identity)
            att.locks.wait = 0  # nothing may block inside the simulation: a busy lock is an error at once
            att.locks.wait_for_silent = False  # not even for a holder whose heartbeat stands still
            host_filesystem(att).busy_timeout = 0
            self.attachments[label] = att
            self.event(f"datastore {label} ({ds.uuid}) mounted read-write, heartbeat slot {att.heartbeat.slot}")
        self.engine.process(heartbeat_world(self.engine, self.clock), name="vmfs-heartbeat")
        for label in sorted(self.attachments):
            self._register_existing(label)

    def _make_lun(self, lc: cfg.LunConfig) -> Lun:
        m = lc.model
        model = DeviceModel(fixed_us=m.fixed_us, per_byte_us=m.per_byte_us, queue_depth=m.queue_depth,
                            channels=m.channels)
        try:
            if lc.kind == "memory":
                assert lc.size_bytes is not None
                lun = Lun.memory(lc.size_bytes, clock=self.engine, name=lc.name, model=model, local=lc.local)
            elif lc.kind == "image":
                lun = Lun.image(lc.path, clock=self.engine, model=model, local=lc.local)  # type: ignore[arg-type]
            elif lc.kind == "network":
                assert lc.url is not None
                lun = Lun.network(lc.url, clock=self.engine, model=model)
            else:
                lun = Lun.block_device(lc.path, clock=self.engine, model=model, local=lc.local)  # type: ignore[arg-type]
        except HostsimError:
            raise
        except Exception as exc:
            raise HostError(f"{self.config.path}:{lc.line}: LUN {lc.name}: {exc}") from None
        blank = bool(lc.datastore) and self._blank(lun)
        if blank and lun.networked:
            lun.close()
            raise HostError(f"{self.config.path}:{lc.line}: LUN {lc.name} is blank; a host never formats a LUN on "
                            f"the network (another machine may boot on it at once): vmfs-mkfs -L {lc.datastore} "
                            f"{lc.url}")
        if blank:
            version = 6 if lc.vmfs == "vmfs6" else 5  # no format given: VMFS5, as ESX 2.x to 6.0 made

            def uuid(what: str) -> str:  # the same image for the same config: determinism
                d = hashlib.sha256(f"hostsim:{self.config.seed}:{lc.name}:{what}".encode()).digest()
                return format_uuid(d[:16])

            format_volume([lun.device], MkfsOptions(
                label=lc.datastore, version=version, fs_uuid=uuid("fs"), lv_uuid=uuid("lv"),
                host_uuid=self.identity.uuid, device_uuids=(uuid("dev"),),
                creation_time_us=self.config.epoch_s * 1_000_000))
            self.event(f"LUN {lc.name}: blank, made VMFS{version} datastore {lc.datastore}")
        return lun

    @staticmethod
    def _blank(lun: Lun) -> bool:
        return not any(lun.device.read(0, min(BLANK_PROBE, lun.size)))

    def _register_existing(self, label: str) -> None:
        """Register every ``NAME/NAME.vmx`` found at the datastore's top (a host's inventory
        survives its reboot because the VMs' folders are on the datastore)."""
        fs = self.filesystem(label)
        for entry in sorted(fs.listdir("/"), key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or name in (".", ".."):
                continue
            path = f"/{name}/{name}.vmx"
            if exists(fs, path):
                try:
                    self.register(label, path)
                except HostsimError as exc:
                    self.event(f"not registered: {exc}")

    # -- inventory ----------------------------------------------------------------------------------

    def filesystem(self, datastore: str) -> WritableFileSystem:
        att = self.attachments.get(datastore)
        if att is None:
            have = ", ".join(sorted(self.attachments)) or "none"
            raise HostError(f"{self.name}: no datastore {datastore!r} (mounted: {have})")
        return host_filesystem(att)

    def register(self, datastore: str, vmx_path: str, *, pool: str | None = None) -> int:
        fs = self.filesystem(datastore)
        for rec in self.inventory.values():
            if rec.datastore == datastore and rec.folder.vmx_path == vmx_path:
                raise HostError(f"[{datastore}] {vmx_path.lstrip('/')}: already registered as vmid {rec.vmid}")
        folder = VmFolder.open(fs, vmx_path)
        return self._add(folder, datastore, pool)

    def _add(self, folder: VmFolder, datastore: str, pool: str | None, balloon: bool = True,
             mem_limit_mb: int | None = None) -> int:
        if pool is not None and pool not in self.pools:
            have = ", ".join(sorted(self.pools)) or "none"
            raise HostError(f"{folder.name}: no resource pool {pool!r} (have: {have})")
        vmid = self._next_vmid
        self._next_vmid += 1
        self.inventory[vmid] = VmRecord(vmid, folder, datastore, pool, balloon, mem_limit_mb)
        self.event(f"registered vmid {vmid}: {folder.datastore_path}")
        return vmid

    def create_vm(self, name: str, *, memory_mb: int, vcpus: int = 1, datastore: str | None = None,
                  disks: tuple[tuple[int, str], ...] = ((1024, "thin"),), program: Path | None = None,
                  pool: str | None = None, balloon: bool = True, cpu_shares: int | str | None = None,
                  cpu_reservation_mhz: int | None = None, cpu_limit_mhz: int | None = None,
                  mem_shares: int | str | None = None, mem_reservation_mb: int | None = None,
                  mem_limit_mb: int | None = None, disk_shares: int | str | None = None,
                  disk_reservation_iops: int | None = None, disk_limit_iops: int | None = None) -> int:
        """Create a VM's folder as ESX lays it out and register it; returns its vmid."""
        label = datastore or next(iter(sorted(self.attachments)), None)
        if label is None:
            raise HostError(f"{self.name}: no datastore to create {name} on")
        fs = self.filesystem(label)
        extra: dict[str, str] = {}
        for key, value in (("sched.cpu.shares", cpu_shares), ("sched.cpu.min", cpu_reservation_mhz),
                           ("sched.cpu.max", cpu_limit_mhz), ("sched.mem.shares", mem_shares),
                           ("sched.mem.min", mem_reservation_mb)):
            if value is not None and not (key == "sched.cpu.max" and value == -1):
                extra[key] = str(value)
        extra.update(self._disk_keys([f"scsi0:{i}" for i in range(len(disks))], disk_shares,
                                     disk_reservation_iops, disk_limit_iops))
        text = None
        program_name = None
        if program is not None:
            try:
                text = Path(program).read_bytes()
            except OSError as exc:
                raise HostError(f"{program}: cannot read the guest program ({exc.strerror})") from None
            # a bad program fails before any file is made, with its FILE:LINE
            load_program(program, disks=[f"scsi0:{i}" for i in range(len(disks))], memory_bytes=memory_mb << 20,
                         page_size=self.memory.page_size)
            program_name = Path(program).name
        folder = VmFolder.create(fs, name, memsize_mb=memory_mb, numvcpus=vcpus,
                                 disks=tuple(DiskSpec(size_mb, kind) for size_mb, kind in disks),
                                 program=program_name, program_text=text, extra=extra)
        return self._add(folder, label, pool, balloon, None if mem_limit_mb in (None, -1) else mem_limit_mb)

    def create_vm_step(self, step: sc.CreateVm) -> int:
        """Create the VM of a scenario's ``create vm`` line (or of ``vim-cmd hostsim/createvm``)."""
        c = step.controls
        datastores = sorted({d.datastore for d in step.disks}) or [None]
        return self.create_vm(step.name, memory_mb=step.memory_mb, vcpus=step.vcpus, datastore=datastores[0],
                              disks=tuple((max(1, d.size_bytes >> 20), d.kind) for d in step.disks),
                              program=step.guest, pool=step.pool, balloon=step.balloon,
                              cpu_shares=c.cpu_shares, cpu_reservation_mhz=c.cpu_reservation_mhz,
                              cpu_limit_mhz=c.cpu_limit_mhz, mem_shares=c.mem_shares,
                              mem_reservation_mb=c.mem_reservation_mb, mem_limit_mb=c.mem_limit_mb,
                              disk_shares=c.disk_shares, disk_reservation_iops=c.disk_reservation_iops,
                              disk_limit_iops=c.disk_limit_iops)

    def createvm(self, args: list[str]) -> int:
        """``vim-cmd hostsim/createvm NAME memory=SIZE [vcpus=N] [guest=FILE] [disk=SIZE:TYPE] ...``"""
        return self.create_vm_step(sc.parse_create(args, self.config))

    def create_dummy_vm(self, name: str, datastore: str | None) -> int:
        """``vim-cmd vmsvc/createdummyvm NAME [DATASTORE]``: a VM with ESX's defaults and no guest
        program (it idles): 1 vCPU, 256 MB, one 1 GB thin disk."""
        label = None
        if datastore:
            label = datastore.removeprefix("/vmfs/volumes/").strip("/") or None
            if label is not None and label not in self.attachments:
                ds = self.storage.volumes.get(label)
                label = ds.label if ds is not None else label
        return self.create_vm(name, memory_mb=256, datastore=label, disks=((1024, "thin"),))

    def register_path(self, path: str) -> int:
        """``vim-cmd solo/registervm /vmfs/volumes/DATASTORE/DIR/NAME.vmx``"""
        prefix = "/vmfs/volumes/"
        if not path.startswith(prefix):
            raise HostError(f"{path}: expected a path /vmfs/volumes/DATASTORE/...vmx")
        head, _, rest = path[len(prefix):].partition("/")
        label = head
        if label not in self.attachments:
            ds = self.storage.volumes.get(head)
            label = ds.label if ds is not None and ds.label in self.attachments else head
        return self.register(label, "/" + rest)

    def unregister(self, vmid: int | str) -> None:
        rec = self.record(vmid)
        if rec.running is not None:
            raise HostError(f"{rec.folder.name}: The attempted operation cannot be performed in the current state "
                            "(Powered on)")
        del self.inventory[rec.vmid]
        self.event(f"unregistered vmid {rec.vmid} ({rec.folder.name})")

    def destroy(self, vmid: int | str) -> None:
        rec = self.record(vmid)
        if rec.running is not None:
            raise HostError(f"{rec.folder.name}: The attempted operation cannot be performed in the current state "
                            "(Powered on)")
        rec.folder.destroy()
        del self.inventory[rec.vmid]
        self.event(f"destroyed vmid {rec.vmid} ({rec.folder.name}) and its files")

    def record(self, vmid: int | str) -> VmRecord:
        if isinstance(vmid, str) and not vmid.isdigit():
            for rec in self.inventory.values():
                if rec.folder.name == vmid:
                    return rec
            raise HostError(f'Unable to find a VM corresponding to "{vmid}"')
        rec = self.inventory.get(int(vmid))
        if rec is None:
            raise HostError(f'Unable to find a VM corresponding to "{vmid}"')
        return rec

    # -- power ------------------------------------------------------------------------------------

    def power_on(self, vmid: int | str) -> None:
        rec = self.record(vmid)
        if rec.running is not None:
            raise HostError(f"{rec.folder.name}: The attempted operation cannot be performed in the current state "
                            "(Powered on)")
        folder = rec.folder
        folder.reload()
        conf = folder.config
        pool = self.pools[rec.pool] if rec.pool else self.root_pool
        overhead = None
        # admission before anything is taken: memory (ESX's reasons), then the pool's CPU and memory
        self.memory.admit(conf.display_name, conf.memsize_mb, conf.mem_min_mb, overhead, vcpus=conf.numvcpus)
        ovhd_mb = self.memory.overhead_for(conf.memsize_mb, conf.numvcpus, overhead)
        pool.admit(conf.display_name, mem_mb=int(conf.mem_min_mb + ovhd_mb + 0.999))
        files = cpu = mem = None
        worlds: dict[str, StorageWorld] = {}
        try:
            files = PoweredOnVm.power_on(folder, self.rng)
            program_file = folder.program()
            program = self._program(folder, program_file)
            cpu = self.cpu.add_group(conf.display_name, shares=conf.cpu_shares, reservation_mhz=conf.cpu_min_mhz,
                                     limit_mhz=conf.cpu_max_mhz, pool=pool)
            vcpus = [cpu.add_vcpu() for _ in range(conf.numvcpus)]
            mem = self.memory.power_on(conf.display_name, max_mb=conf.memsize_mb, min_mb=conf.mem_min_mb,
                                       shares=conf.mem_shares, vcpus=conf.numvcpus, swap=files.swap,
                                       balloon=rec.balloon, limit_mb=rec.mem_limit_mb)
            device = self._device_of(rec.datastore)
            for node in files.scsi.disks:
                reservation, limit, shares = self._disk_controls(folder, node)
                worlds[node] = self.stack.register(f"{conf.display_name}:{node}", device, reservation_iops=reservation,
                                                   limit_iops=limit, shares=shares)
            vmm = Vmm(self.engine, conf.display_name, cpu=cpu, vcpus=vcpus, memory=mem, stack=self.stack,
                      worlds=worlds, scsi=files.scsi, page_size=self.memory.page_size,
                      on_cancel=lambda v, r=rec: self._cancelled(r), on_failure=lambda v, e, r=rec: self._failed(r, e),
                      track_writes=self.track_guest_writes)
        except BaseException:
            for w in worlds.values():
                self.stack.unregister(w)
            if mem is not None:
                self.memory.power_off(mem)
            if cpu is not None:
                self.cpu.remove_group(cpu)
            pool.release(conf.display_name, ("mem",))
            if files is not None:
                with contextlib.suppress(HostsimError):
                    files.power_off()
            raise
        rec.running = RunningVm(files, mem, cpu, worlds, vmm, pool, self.engine.now)
        rec.stopped_because = None
        vmm.start(program, seed=f"{self.config.seed}:{conf.display_name}")
        self.event(f"powered on vmid {rec.vmid} ({conf.display_name}): {conf.numvcpus} vCPU, {conf.memsize_mb} MB, "
                   f"swap {files.swap.name}")

    @staticmethod
    def _disk_keys(nodes: list[str], shares: int | str | None, reservation: int | None,
                   limit: int | None) -> dict[str, str]:
        """The ``.vmx`` keys of disk controls for ``nodes`` (what is None is left out)."""
        keys: dict[str, str] = {}
        for node in nodes:
            if shares is not None:
                keys[f"sched.{node}.shares"] = str(shares)
            if reservation is not None:
                keys[f"sched.{node}.reservation"] = str(reservation)
            if limit is not None:
                keys[f"sched.{node}.throughputCap"] = str(0 if limit == -1 else limit)
        return keys

    @staticmethod
    def _disk_controls(folder: VmFolder, node: str) -> tuple[int, int, int | str]:
        """A disk's mClock controls from the ``.vmx``, with ESX's keys: ``sched.NODE.shares``
        (low/normal/high or a number; 1000), ``sched.NODE.throughputCap`` (an IOPS limit; absent or
        0: none) and ``sched.NODE.reservation`` (IOPS; 0)."""
        vmx = folder.vmx

        def number(key: str, default: int) -> int:
            text = vmx.get(key)
            if text is None or text == "":
                return default
            try:
                value = int(text)
            except ValueError:
                raise HostError(f"{folder.datastore_path}: {key} = {text!r}: not a whole number") from None
            if value < 0:
                raise HostError(f"{folder.datastore_path}: {key} = {value}: must not be negative")
            return value

        shares_text = (vmx.get(f"sched.{node}.shares") or "normal").strip()
        shares: int | str = int(shares_text) if shares_text.isdigit() else shares_text.lower()
        cap = number(f"sched.{node}.throughputCap", 0)
        return number(f"sched.{node}.reservation", 0), cap if cap > 0 else -1, shares

    def _program(self, folder: VmFolder, program_file: tuple[str, bytes] | None) -> Program:
        """The guest program the ``.vmx`` names, checked against the VM's disks and memory; a VM
        without one halts for ever (an idle guest)."""
        conf = folder.config
        if program_file is None:
            return parse_program("forever\n    halt 1s\nend\n", f"{folder.name} (no guest program: idle)")
        name, raw = program_file
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise HostError(f"{name}:{line}: not UTF-8 text") from None
        return parse_program(text, name, disks=[d.node for d in conf.disks], memory_bytes=conf.memsize_mb << 20,
                             page_size=self.memory.page_size)

    def _device_of(self, datastore: str):  # type: ignore[no-untyped-def]
        ds = self.datastores[datastore]
        for lc in self.config.luns:
            lun = self.luns[lc.name]
            if any(p.lun is lun for p in ds.paths):
                return self.stack.devices[lc.name]
        raise HostError(f"{datastore}: no storage device found under it")

    def power_off(self, vmid: int | str) -> None:
        rec = self.record(vmid)
        run = rec.running
        if run is None:
            why = f"; {rec.stopped_because}" if rec.stopped_because else ""
            raise HostError(f"{rec.folder.name}: The attempted operation cannot be performed in the current state "
                            f"(Powered off{why})")
        run.vmm.stop()
        for w in run.worlds.values():
            self.stack.unregister(w)
        self.memory.power_off(run.memory)
        self.cpu.remove_group(run.cpu)
        run.pool.release(rec.folder.name, ("mem",))
        rec.running = None
        run.files.power_off()
        self.event(f"powered off vmid {rec.vmid} ({rec.folder.name})")

    def reset(self, vmid: int | str) -> None:
        self.power_off(vmid)
        self.power_on(vmid)

    def _cancelled(self, rec: VmRecord) -> None:
        self.event(f"{rec.folder.name}: question answered Cancel: powering off")
        self.engine.process(self._later(lambda: self.power_off(rec.vmid)), name="power-off")

    def _failed(self, rec: VmRecord, exc: BaseException) -> None:
        rec.stopped_because = f"powered off at {self.engine.now / SECOND:g} s: guest stopped: {exc}"
        self.event(f"{rec.folder.name}: guest stopped: {exc}")
        if rec.running is not None:
            self.engine.process(self._later(lambda: self.power_off(rec.vmid)), name="power-off")

    def _later(self, action):  # type: ignore[no-untyped-def]
        yield self.engine.timeout(0)
        with contextlib.suppress(HostError):
            action()

    def answer(self, vmid: int, choice: str) -> None:
        rec = self.record(vmid)
        if rec.running is None:
            raise HostError(f"{rec.folder.name}: not powered on")
        rec.running.vmm.answer(choice)
        self.event(f"{rec.folder.name}: question answered {choice}")

    # -- controls -----------------------------------------------------------------------------------

    def set_controls(self, vmid: int | str, *, cpu_shares: int | str | None = None,
                     cpu_reservation_mhz: int | None = None, cpu_limit_mhz: int | None = None,
                     cpu_min_pct: float | None = None, cpu_max_pct: float | None = None,
                     mem_shares: int | str | None = None, mem_reservation_mb: int | None = None,
                     mem_limit_mb: int | None = None, disk_shares: int | str | None = None,
                     disk_reservation_iops: int | None = None, disk_limit_iops: int | None = None) -> None:
        """Change a VM's controls: in its ``.vmx`` (kept across power cycles) and, when it runs,
        in the schedulers at once."""
        rec = self.record(vmid)
        vmx = rec.folder.vmx
        nodes = [d.node for d in rec.folder.config.disks]
        for key, value in self._disk_keys(nodes, disk_shares, disk_reservation_iops, disk_limit_iops).items():
            vmx.set(key, value)
        for key, value in (("sched.cpu.shares", cpu_shares), ("sched.cpu.min", cpu_reservation_mhz),
                           ("sched.cpu.max", cpu_limit_mhz), ("sched.mem.shares", mem_shares),
                           ("sched.mem.min", mem_reservation_mb)):
            if value is not None:
                vmx.set(key, str(value))
        rec.folder.save()
        conf = rec.folder.config
        run = rec.running
        if run is not None:
            kwargs: dict[str, object] = {}
            if cpu_shares is not None:
                kwargs["shares"] = conf.cpu_shares
            if cpu_reservation_mhz is not None:
                kwargs["reservation_mhz"] = cpu_reservation_mhz
            if cpu_limit_mhz is not None:
                kwargs["limit_mhz"] = cpu_limit_mhz
            if cpu_min_pct is not None:
                kwargs["min_pct"] = round(cpu_min_pct)
            if cpu_max_pct is not None:
                kwargs["max_pct"] = round(cpu_max_pct)
            if kwargs:
                self.cpu.set_controls(run.cpu, **kwargs)  # type: ignore[arg-type]
            if mem_shares is not None:
                run.memory.shares = conf.mem_shares if not isinstance(mem_shares, str) else \
                    mem_shares_for(mem_shares, conf.memsize_mb)
            if mem_limit_mb is not None:
                self.memory.set_limit(run.memory, None if mem_limit_mb == -1 else mem_limit_mb)
            if (disk_shares, disk_reservation_iops, disk_limit_iops) != (None, None, None):
                for node, world in run.worlds.items():
                    reservation, limit, shares = self._disk_controls(rec.folder, node)
                    self.stack.set_controls(world, reservation_iops=reservation, limit_iops=limit, shares=shares)
        self.event(f"{rec.folder.name}: controls changed")

    def set_idle_tax(self, tau: float) -> None:
        self.memory.set_idle_tax(tau)
        self.event(f"Mem.IdleTax set to {tau:g}")

    # -- snapshots -------------------------------------------------------------------------------------

    def snapshot_create(self, vmid: int | str, name: str, description: str = "") -> None:
        """Take a snapshot; a running VM keeps running (its disks are flushed, closed, given their
        deltas and reopened between two of its commands, as ESX stuns a VM briefly)."""
        rec = self.record(vmid)
        if rec.running is not None:
            snap = rec.running.files.create_snapshot(name, description)
        else:
            snap = rec.folder.create_snapshot(name, description)
        self.event(f"{rec.folder.name}: snapshot {name!r} created (uid {snap.uid})")

    def _snapshot_uid(self, rec: VmRecord, key: int | str) -> int:
        tree = rec.folder.snapshots()
        for snap in tree.snapshots:
            if str(snap.uid) == str(key) or snap.name == key:
                return snap.uid
        raise HostError(f"{rec.folder.name}: no snapshot {key!r}")

    def snapshot_revert(self, vmid: int | str, snapshot: int | str) -> None:
        """Revert to a snapshot: ESX powers the VM off to revert it to a powered-off snapshot (the
        state of its disks then); a VM that was on is powered on again afterwards."""
        rec = self.record(vmid)
        uid = self._snapshot_uid(rec, snapshot)
        was_on = rec.running is not None
        if was_on:
            self.power_off(rec.vmid)
        rec.folder.revert_snapshot(uid)
        self.event(f"{rec.folder.name}: reverted to snapshot {snapshot}")
        if was_on:
            self.power_on(rec.vmid)

    def snapshot_remove(self, vmid: int | str, snapshot: int | str) -> None:
        rec = self.record(vmid)
        uid = self._snapshot_uid(rec, snapshot)
        if rec.running is not None:
            rec.running.files.remove_snapshot(uid)
        else:
            rec.folder.remove_snapshot(uid)
        self.event(f"{rec.folder.name}: snapshot {snapshot} removed")

    def snapshot_removeall(self, vmid: int | str) -> None:
        rec = self.record(vmid)
        if rec.running is not None:
            rec.running.files.remove_all_snapshots()
        else:
            rec.folder.remove_all_snapshots()
        self.event(f"{rec.folder.name}: all snapshots removed")

    # -- time -----------------------------------------------------------------------------------------

    def run(self, until_us: int) -> None:
        """Run the simulation up to ``until_us`` (simulated µs since boot)."""
        if until_us > self.engine.now:
            self.engine.run(until=until_us)

    # -- statistics ------------------------------------------------------------------------------------

    def gid(self, group: CpuGroup) -> int:
        if group is self.console_world:
            return 1
        for rec in self.inventory.values():
            if rec.running is not None and rec.running.cpu is group:
                return 1000 + rec.vmid
        return 2

    def sample(self) -> HostSample:
        """Everything esxtop shows, now (cumulative counters)."""
        groups = []
        for group in sorted(self.cpu.groups.values(), key=lambda g: self.gid(g)):
            kind = "console" if group is self.console_world else "vm"
            groups.append(GroupSample(self.gid(group), group.name, CpuStat.of(group.counters()),
                                      vcpus=len(group.vcpus), nworlds=len(group.vcpus) + (2 if kind == "vm" else 0),
                                      kind=kind))
        memory = []
        vm_disks = []
        for rec in sorted(self.inventory.values(), key=lambda r: r.vmid):
            run = rec.running
            if run is None:
                continue
            memory.append(VmMemSample(1000 + rec.vmid, rec.folder.name, MemStat.of(run.memory.counters()),
                                      balloon=rec.balloon))
            per_device: dict[str, list[DiskStat]] = {}
            for _node, world in sorted(run.worlds.items()):
                per_device.setdefault(world.device.name, []).append(DiskStat.of(world.counters()))
            for device, stats in sorted(per_device.items()):  # esxtop's v panel: one row per VM and device
                total = DiskStat(*(sum(getattr(st, f) for st in stats) for f in DiskStat.__dataclass_fields__))
                vm_disks.append(VmDiskSample(1000 + rec.vmid, rec.folder.name,
                                             self.luns[device].canonical_name or device, total))
        hm = self.memory.counters()
        c = self.config
        host_memory = HostMemStat.of(hm, machine_mb=c.memory_mb, vmkernel_mb=c.vmkernel_mb, console_mb=c.console_mb)
        devices = tuple(DeviceSample(self.luns[name].canonical_name or name, DiskStat.of(dev.counters()),
                                     queue_depth=dev.queue_depth, locks=LockStat.of(self.luns[name].locking(self.name)))
                        for name, dev in sorted(self.stack.devices.items()))
        return HostSample(
            time_us=self.engine.now, host=self.name, mhz=c.mhz,
            pcpus=tuple(PcpuSample.of(self.cpu.pcpu_counters(i)) for i in range(c.pcpus)),
            groups=tuple(groups), memory=tuple(memory), host_memory=host_memory, devices=devices,
            vm_disks=tuple(vm_disks), epoch_s=c.epoch_s)

    # -- console views -------------------------------------------------------------------------------

    def vm_views(self) -> list[VmView]:
        views = []
        for rec in sorted(self.inventory.values(), key=lambda r: r.vmid):
            f = rec.folder
            conf = f.config
            run = rec.running
            mem = run.memory.counters() if run is not None else None
            q = run.vmm.question if run is not None else None
            cpu_mhz = 0
            if run is not None:
                elapsed = max(self.engine.now - run.started_us, 1)
                cpu_mhz = round(run.cpu.counters().used_us / elapsed * self.config.mhz)
            views.append(VmView(
                vmid=rec.vmid, name=f.name, datastore=rec.datastore, vmx_path=f.vmx_path.lstrip("/"),
                vmx_full_path=f"/vmfs/volumes/{rec.datastore}{f.vmx_path}", guest_os=conf.guest_os,
                version=f"vmx-{conf.hw_version:02d}", annotation=f.vmx.get("annotation") or "",
                power_state="poweredOn" if run is not None else "poweredOff", memory_mb=conf.memsize_mb,
                num_cpu=conf.numvcpus, uuid=f.vmx.get("uuid.bios") or "",
                question=None if q is None else q.text, cpu_usage_mhz=cpu_mhz,
                guest_memory_mb=round(mem.tchd_mb) if mem else 0, host_memory_mb=round(mem.grant_mb) if mem else 0,
                ballooned_mb=round(mem.mctl_sz_mb) if mem else 0, swapped_mb=round(mem.swcur_mb) if mem else 0,
                shared_mb=round(mem.shared_mb) if mem else 0,
                uptime_s=(self.engine.now - run.started_us) // SECOND if run is not None else 0,
                snapshots=self._snapshot_views(rec)))
        return views

    def _snapshot_views(self, rec: VmRecord) -> tuple[SnapshotView, ...]:
        try:
            tree = rec.folder.snapshots()
        except HostsimError:
            return ()
        return tuple(SnapshotView(s.uid, s.name, s.description, "", "powered off") for s in tree.snapshots)

    def host_view(self) -> HostView:
        c = self.config
        used = sum(self.cpu.pcpu_counters(i).used_us for i in range(c.pcpus))
        elapsed = max(self.engine.now, 1)
        hm = self.memory.counters()
        return HostView(name=c.name, uuid=self.identity.uuid, pcpus=c.pcpus, mhz=c.mhz, memory_mb=c.memory_mb,
                        cpu_usage_mhz=round(used / elapsed * c.mhz), memory_usage_mb=round(c.memory_mb - hm.free_mb),
                        uptime_s=self.engine.now // SECOND)

    # -- shutdown --------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Power every VM off, unmount the datastores cleanly (heartbeat slots released)."""
        if self.closed:
            return
        for rec in sorted(self.inventory.values(), key=lambda r: r.vmid):
            if rec.running is not None:
                self.power_off(rec.vmid)
        self.event("shut down")
        self._close_storage()

    def crash(self) -> None:
        """Stop as a host that loses power: nothing flushed, closed or given back."""
        self.crashed = self.closed = True
        for att in self.attachments.values():
            att.crash()
        self.event("crashed")

    def arm_panic(self, point: str | None) -> None:
        """Crash the host at ``point`` (:data:`PANIC_POINTS`), as ``vsish -e set
        /reliability/crashMe/Panic 1`` crashes an ESXi host on purpose; None disarms."""
        if point is None:
            self._disarm()
            return
        if point not in PANIC_POINTS:
            raise HostError(f"unknown panic point {point!r} (one of {', '.join(PANIC_POINTS)})")
        if self.closed:
            raise HostError(f"{self.name} is not running")
        if point == "now":
            self.panic("crashMe Panic")
            return
        journals = [att.journal for att in self.attachments.values() if att.journal is not None]
        if not journals:
            raise HostError(f"{self.name} has no journaled datastore to crash in")

        def half_home(i: int, n: int) -> None:
            if i == 1 and n >= 2:
                self.panic(f"crashMe in a VMFS journal transaction: home write 1 of {n} done")
        for journal in journals:
            journal.on_home_write = half_home
        self.armed_panic = point
        self.event("armed: panic in the next journal transaction with two or more home writes")

    def panic(self, reason: str) -> None:
        """Stop now, as at a PSOD: the event says why; then :attr:`on_panic` (which does not return)."""
        self._disarm()
        self.event(f"PSOD: {reason}")
        self.crash()
        self.on_panic(f"{self.name}: PSOD: {reason}")

    def _disarm(self) -> None:
        self.armed_panic = None
        for att in self.attachments.values():
            if att.journal is not None:
                att.journal.on_home_write = None

    def _close_storage(self) -> None:
        if self.closed and not self.crashed:
            return
        self.closed = True
        for att in self.attachments.values():
            if not att.closed:
                att.close()
        self.storage.close()


def _raise_panic(message: str) -> None:
    raise HostPanic(message)


def mem_shares_for(level: str, memsize_mb: int) -> int:
    return mem_shares(level, memsize_mb)


