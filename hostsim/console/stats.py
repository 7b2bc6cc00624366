"""The samples esxtop is built from: one frozen :class:`HostSample` per refresh.

Why a structure of its own: esxtop must not depend on how the CPU scheduler, the memory manager
or the storage stack are built, only on what they count.  The field names are those of the
contract's ``CpuCounters``, ``MemCounters`` and ``DiskCounters`` so that the host can copy any
object carrying those attributes with :meth:`CpuStat.of` (and the like) — duck typing, no import
of the schedulers here.

Every counter is cumulative (µs, commands, bytes, pages since the object was created); memory
sizes in MB are the state at the sample's time.  esxtop only ever looks at differences between
two samples (:mod:`hostsim.console.esxtop`), so a sample is cheap to take and never reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from hostsim.errors import HostsimError

T = TypeVar("T")


class SampleError(HostsimError):
    """Two samples that cannot be compared (same time, time going backwards, another host)."""


def _copy(cls: type[T], obj: Any) -> T:
    """Build ``cls`` from any object carrying attributes of the same names (a counters() value)."""
    return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class CpuStat:
    """Cumulative CPU times of a world group (the contract's ``CpuCounters``), all in µs."""

    used_us: int = 0
    run_us: int = 0
    sys_us: int = 0
    ovrlp_us: int = 0
    rdy_us: int = 0
    wait_us: int = 0
    vmwait_us: int = 0
    idle_us: int = 0
    cstp_us: int = 0
    mlmtd_us: int = 0
    swpwt_us: int = 0

    @classmethod
    def of(cls, counters: Any) -> CpuStat:
        """A copy of a scheduler's ``CpuCounters`` (any object with these attribute names)."""
        return _copy(cls, counters)


@dataclass(frozen=True)
class PcpuSample:
    """Cumulative used and idle time of one physical CPU (the contract's ``PcpuCounters``)."""

    used_us: int = 0
    idle_us: int = 0

    @classmethod
    def of(cls, counters: Any) -> PcpuSample:
        return _copy(cls, counters)


@dataclass(frozen=True)
class GroupSample:
    """One scheduling group: a VM (its vCPU worlds and helpers) or the console world.

    ``gid`` is esxtop's group id (GID, also the ``ID:NAME`` instance of the batch file);
    ``nworlds`` is NWLD (vCPU worlds plus helper worlds); ``kind`` is ``vm``, ``console`` or
    ``system`` (only VMs count in the VMs/vCPUs of the header)."""

    gid: int
    name: str
    cpu: CpuStat
    vcpus: int = 1
    nworlds: int = 1
    kind: str = "vm"


@dataclass(frozen=True)
class MemStat:
    """A VM's memory counters (the contract's ``MemCounters``): sizes in MB at the sample's time,
    ``active_pct`` in percent, swap traffic ``swr_pages``/``sww_pages`` cumulative 4 KiB pages."""

    memsz_mb: float = 0
    grant_mb: float = 0
    sztgt_mb: float = 0
    tchd_mb: float = 0
    active_pct: float = 0
    mctl_sz_mb: float = 0
    mctl_tgt_mb: float = 0
    mctl_max_mb: float = 0
    swcur_mb: float = 0
    swtgt_mb: float = 0
    swr_pages: int = 0
    sww_pages: int = 0
    shared_mb: float = 0
    ovhd_mb: float = 0

    @classmethod
    def of(cls, counters: Any) -> MemStat:
        return _copy(cls, counters)


@dataclass(frozen=True)
class VmMemSample:
    """One VM's memory, with whether its balloon driver runs (esxtop's ``MCTL?``)."""

    gid: int
    name: str
    mem: MemStat
    balloon: bool = True


#: free-memory states in the order esxtop's batch file numbers them (0 = high … 3 = low)
MEM_STATES: tuple[str, ...] = ("high", "soft", "hard", "low")


@dataclass(frozen=True)
class HostMemStat:
    """The host's memory at the sample's time (the contract's ``HostMemCounters`` plus the sizes
    the PMEM/VMKMEM header lines show), all in MB except ``state``."""

    state: str = "high"
    machine_mb: float = 0
    free_mb: float = 0
    vmkernel_mb: float = 0
    console_mb: float = 0
    minfree_mb: float = 0
    reserved_mb: float = 0
    unreserved_mb: float = 0
    pshare_shared_mb: float = 0
    pshare_common_mb: float = 0
    pshare_saving_mb: float = 0
    balloon_mb: float = 0
    swap_used_mb: float = 0

    def __post_init__(self) -> None:
        if self.state not in MEM_STATES:
            raise SampleError(f"memory state {self.state!r} is not one of {', '.join(MEM_STATES)}")

    @classmethod
    def of(cls, counters: Any, **extra: float) -> HostMemStat:
        """A copy of the memory manager's ``HostMemCounters``: fields it lacks come from ``extra``
        (sizes the host knows, such as ``machine_mb``) or stay 0."""
        names = {f.name for f in fields(cls)}
        values = {n: getattr(counters, n) for n in names if hasattr(counters, n)}
        values.update({k: v for k, v in extra.items() if k in names})
        return cls(**values)


@dataclass(frozen=True)
class DiskStat:
    """Cumulative disk counters (the contract's ``DiskCounters``): commands, bytes, and the sums
    over commands of each latency in µs (so a mean is a difference of sums over a difference of
    counts)."""

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

    @classmethod
    def of(cls, counters: Any) -> DiskStat:
        return _copy(cls, counters)


@dataclass(frozen=True)
class LockStat:
    """How this host takes on-disk locks on a device and what that cost, cumulative: the
    device's test-and-set (``mode``: 'ats', 'reserve' for SCSI-2 reservations, '' before the
    first lock update), ATS commands that wrote and that miscompared, reservations taken and
    RESERVATION CONFLICT answers (the hardware interface's ``LockCounters``)."""

    mode: str = ""
    ats: int = 0
    ats_failures: int = 0
    reservations: int = 0
    conflicts: int = 0

    @classmethod
    def of(cls, counters: Any) -> LockStat:
        return _copy(cls, counters)


@dataclass(frozen=True)
class DeviceSample:
    """One storage device (a LUN by its canonical name) as the host sees it; ``queue_depth`` is
    DQLEN."""

    name: str
    disk: DiskStat
    queue_depth: int = 32
    locks: LockStat = field(default_factory=LockStat)


@dataclass(frozen=True)
class VmDiskSample:
    """One VM's commands to one device (the storage stack's per-world counters)."""

    gid: int
    name: str
    device: str
    disk: DiskStat


@dataclass(frozen=True)
class HostSample:
    """Everything esxtop knows about the host at ``time_us`` (simulated µs since boot).

    ``epoch_s`` is the UTC time of simulated time 0, for the clock esxtop prints and the batch
    file's timestamps; sequences are tuples so a sample is hashable and cannot change."""

    time_us: int
    host: str
    mhz: int
    pcpus: tuple[PcpuSample, ...]
    groups: tuple[GroupSample, ...] = ()
    memory: tuple[VmMemSample, ...] = ()
    host_memory: HostMemStat = field(default_factory=HostMemStat)
    devices: tuple[DeviceSample, ...] = ()
    vm_disks: tuple[VmDiskSample, ...] = ()
    epoch_s: int = 0

    PCPU_MIN: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.time_us < 0:
            raise SampleError(f"{self.host}: a sample's time cannot be negative ({self.time_us} us)")
        if len(self.pcpus) < self.PCPU_MIN:
            raise SampleError(f"{self.host}: a sample needs at least one pCPU")
        for kind, items in (("group", self.groups), ("VM memory", self.memory)):
            gids = [g.gid for g in items]
            if len(set(gids)) != len(gids):
                raise SampleError(f"{self.host}: two {kind} entries share a GID")

    @property
    def npcpus(self) -> int:
        """The number of physical CPUs."""
        return len(self.pcpus)


def sample_to_dict(sample: HostSample) -> dict[str, Any]:
    """A sample as plain JSON-able data (the console server sends it to ``hostsim esxtop``)."""
    from dataclasses import asdict

    return asdict(sample)


def sample_from_dict(data: dict[str, Any]) -> HostSample:
    """The inverse of :func:`sample_to_dict` (a malformed one raises :class:`SampleError`)."""
    try:
        return HostSample(
            time_us=data["time_us"], host=data["host"], mhz=data["mhz"], epoch_s=data.get("epoch_s", 0),
            pcpus=tuple(PcpuSample(**p) for p in data["pcpus"]),
            groups=tuple(GroupSample(**{**g, "cpu": CpuStat(**g["cpu"])}) for g in data["groups"]),
            memory=tuple(VmMemSample(**{**m, "mem": MemStat(**m["mem"])}) for m in data["memory"]),
            host_memory=HostMemStat(**data["host_memory"]),
            devices=tuple(DeviceSample(**{**d, "disk": DiskStat(**d["disk"]), "locks": LockStat(**d.get("locks", {}))})
                          for d in data["devices"]),
            vm_disks=tuple(VmDiskSample(**{**v, "disk": DiskStat(**v["disk"])}) for v in data["vm_disks"]),
        )
    except (KeyError, TypeError) as exc:
        raise SampleError(f"not a host sample: {exc}") from None
