"""esxtop for the simulated host: rates between two samples, the interactive panels, batch CSV.

Why it works on samples: esxtop on ESX reads cumulative counters from the VMkernel at every
refresh and shows their differences over the refresh interval (ETOP: "%USED = (CPU used time at
snapshot 2 - CPU used time at snapshot 1) / time elapsed between snapshots"; default interval
5 s, ``-d`` or ``s`` to change).  Here a :class:`~hostsim.console.stats.HostSample` is that
snapshot and an :class:`Interval` is the difference of two; everything shown is computed from
an Interval (and, for the 1/5/15-minute load averages, from the samples before it).

What matches real esxtop (docs/hostsim.md, section esxtop, says which facts were read where):

- CPU panel (``c``): the header line with the time, uptime, worlds, VMs, vCPUs and the
  CPU load average; ``PCPU USED(%)`` and ``PCPU UTIL(%)`` with ``AVG``; one row per group with
  ``ID GID NAME NWLD %USED %RUN %SYS %WAIT %VMWAIT %RDY %IDLE %OVRLP %CSTP %MLMTD %SWPWT``.
- memory panel (``m``): ``PMEM``, ``VMKMEM`` (with the free-memory state), ``PSHARE``, ``SWAP``
  and ``MEMCTL`` header lines; per VM ``MEMSZ GRANT SZTGT TCHD MCTL? MCTLSZ MCTLTGT MCTLMAX SWCUR
  SWTGT SWR/s SWW/s OVHD`` (MB, swap rates in MB/s).
- disk device panel (``u``): ``DEVICE PATH/WORLD/PARTITION DQLEN CMDS/s READS/s WRITES/s MBREAD/s
  MBWRTN/s DAVG/cmd KAVG/cmd GAVG/cmd QAVG/cmd`` (latencies in ms per command).
- disk VM panel (``v``): ``GID VMNAME VDEVNAME NVDISK CMDS/s READS/s WRITES/s MBREAD/s MBWRTN/s``
  and ``GAVG/cmd`` where real esxtop has ``LAT/rd LAT/wr`` (our counters do not split latency by
  direction); each VM row is followed by one row per device it uses.
- batch mode (``-b -d SECONDS -n ITERATIONS``): perfmon PDH-CSV (:mod:`hostsim.console.pdh`) with
  the counter names of real batch files.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import os
import select
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from hostsim.console import pdh
from hostsim.console.stats import (
    MEM_STATES,
    DiskStat,
    GroupSample,
    HostSample,
    LockStat,
    SampleError,
    VmMemSample,
)
from hostsim.errors import HostsimError

#: esxtop's default refresh interval (ETOP)
DEFAULT_DELAY_S = 5.0
PAGE = 4096
MB = 1 << 20
#: the load-average windows of the header line, in seconds
LOAD_WINDOWS_S = (60, 300, 900)

#: a source of samples: called with 0 for the first one, then with the refresh interval in µs;
#: returns a sample taken that long after the previous one (the host advances or waits)
Sampler = Callable[[int], HostSample]


class EsxtopError(HostsimError):
    """Bad esxtop options (one line, as esxtop prints them)."""


# -- rates over one interval --------------------------------------------------------------------


@dataclass(frozen=True)
class CpuRates:
    """One group's CPU panel row: percentages of the interval (a 2-vCPU VM can reach 200)."""

    gid: int
    name: str
    kind: str
    nworlds: int
    vcpus: int
    used: float
    run: float
    sys: float
    wait: float
    vmwait: float
    rdy: float
    idle: float
    ovrlp: float
    cstp: float
    mlmtd: float
    swpwt: float


@dataclass(frozen=True)
class MemRates:
    """One VM's memory panel row: sizes in MB at the interval's end, swap traffic in MB/s."""

    gid: int
    name: str
    balloon: bool
    memsz: float
    grant: float
    sztgt: float
    tchd: float
    active_pct: float
    mctlsz: float
    mctltgt: float
    mctlmax: float
    swcur: float
    swtgt: float
    swr_s: float
    sww_s: float
    shared: float
    ovhd: float


@dataclass(frozen=True)
class DiskRates:
    """Disk rates over the interval: commands per second, MB/s, mean latencies in ms/command."""

    cmds_s: float
    reads_s: float
    writes_s: float
    mbread_s: float
    mbwrtn_s: float
    davg: float
    kavg: float
    gavg: float
    qavg: float
    failed_s: float


def disk_rates(before: DiskStat | None, after: DiskStat, seconds: float) -> DiskRates:
    """Rates and mean latencies of the commands counted between two cumulative samples.

    A latency mean is the growth of its sum over the growth of the command count (0 when no
    command completed in the interval), so GAVG = DAVG + KAVG holds per interval exactly as the
    storage stack keeps it per command."""
    b = before or DiskStat()
    cmds = after.cmds - b.cmds

    def per_cmd(total_after: int, total_before: int) -> float:
        return (total_after - total_before) / cmds / 1000.0 if cmds > 0 else 0.0

    return DiskRates(
        cmds_s=cmds / seconds,
        reads_s=(after.reads - b.reads) / seconds,
        writes_s=(after.writes - b.writes) / seconds,
        mbread_s=(after.bytes_read - b.bytes_read) / MB / seconds,
        mbwrtn_s=(after.bytes_written - b.bytes_written) / MB / seconds,
        davg=per_cmd(after.davg_us_total, b.davg_us_total),
        kavg=per_cmd(after.kavg_us_total, b.kavg_us_total),
        gavg=per_cmd(after.gavg_us_total, b.gavg_us_total),
        qavg=per_cmd(after.qavg_us_total, b.qavg_us_total),
        failed_s=(after.errors - b.errors) / seconds,
    )


@dataclass(frozen=True)
class LockRates:
    """A device's locking over the interval: the test-and-set mode, ATS commands that wrote
    (``ats``) and that miscompared (``atsf``) since the device was opened, as esxtop's ATS and
    ATSF count them, and reservations and reservation conflicts per second (RESV/s, CONS/s)."""

    mode: str
    ats: int
    atsf: int
    resv_s: float
    cons_s: float

    @property
    def mode_label(self) -> str:
        """The column's text: ATS, SCSI (reservations) or - (no lock update yet)."""
        return {"ats": "ATS", "reserve": "SCSI"}.get(self.mode, "-")


def lock_rates(before: LockStat | None, after: LockStat, seconds: float) -> LockRates:
    b = before if before is not None and after.reservations >= before.reservations else LockStat()
    return LockRates(after.mode, after.ats, after.ats_failures, (after.reservations - b.reservations) / seconds,
                     max(0, after.conflicts - b.conflicts) / seconds)


def _restarted(old: DiskStat | None, new: DiskStat) -> bool:
    """Counters that went down belong to a new object (counting from zero again)."""
    return old is not None and (new.cmds < old.cmds or new.bytes_read < old.bytes_read
                                or new.bytes_written < old.bytes_written)


def _sum_disk(stats: Iterable[DiskStat]) -> DiskStat:
    total = DiskStat()
    for s in stats:
        total = DiskStat(*(a + b for a, b in zip(_astuple(total), _astuple(s), strict=True)))
    return total


def _astuple(s: DiskStat) -> tuple[int, ...]:
    return (s.cmds, s.reads, s.writes, s.bytes_read, s.bytes_written, s.davg_us_total, s.kavg_us_total,
            s.qavg_us_total, s.gavg_us_total, s.errors)


@dataclass(frozen=True)
class VmDiskRates:
    """One VM's disk row (all its devices) and one row per device."""

    gid: int
    name: str
    total: DiskRates
    devices: tuple[tuple[str, DiskRates], ...]


class Interval:
    """The difference of two samples of one host: what one esxtop refresh shows.

    An entity (group, VM, device) present only in the later sample started inside the interval:
    its counters are counted from zero, as they were when it was created.  So is one whose GID
    now carries another name, or whose counters went down (powered off and on again: a new
    scheduler group, counting from zero)."""

    def __init__(self, before: HostSample, after: HostSample) -> None:
        if before.host != after.host:
            raise SampleError(f"samples of two hosts ({before.host}, {after.host}) cannot be compared")
        if after.time_us <= before.time_us:
            raise SampleError(
                f"{after.host}: sample at {after.time_us} us does not follow the one at {before.time_us} us"
            )
        self.before, self.after = before, after
        self.elapsed_us = after.time_us - before.time_us
        self.seconds = self.elapsed_us / 1_000_000
        self.cpu = {g.gid: self._cpu(g, before) for g in after.groups}
        self.mem = {m.gid: self._mem(m, before) for m in after.memory}
        old_devices = {d.name: d.disk for d in before.devices}
        old_devices = {d.name: old_devices[d.name] for d in after.devices
                       if d.name in old_devices and not _restarted(old_devices[d.name], d.disk)}
        self.devices = {d.name: disk_rates(old_devices.get(d.name), d.disk, self.seconds) for d in after.devices}
        self.queue_depth = {d.name: d.queue_depth for d in after.devices}
        old_locks = {d.name: d.locks for d in before.devices if d.name in old_devices}
        self.locks = {d.name: lock_rates(old_locks.get(d.name), d.locks, self.seconds) for d in after.devices}
        self.vm_disks = self._vm_disks()

    def pct(self, us: float) -> float:
        """µs of the interval as esxtop's percentage."""
        return 100.0 * us / self.elapsed_us

    def _cpu(self, g: GroupSample, before: HostSample) -> CpuRates:
        old = next((o.cpu for o in before.groups if (o.gid, o.name) == (g.gid, g.name)), None)
        new = g.cpu
        if old is not None and new.used_us < old.used_us:
            old = None

        def d(name: str) -> float:
            return self.pct(getattr(new, name) - (getattr(old, name) if old else 0))

        return CpuRates(g.gid, g.name, g.kind, g.nworlds, g.vcpus, d("used_us"), d("run_us"), d("sys_us"),
                        d("wait_us"), d("vmwait_us"), d("rdy_us"), d("idle_us"), d("ovrlp_us"), d("cstp_us"),
                        d("mlmtd_us"), d("swpwt_us"))

    def _mem(self, m: VmMemSample, before: HostSample) -> MemRates:
        old = next((o.mem for o in before.memory if (o.gid, o.name) == (m.gid, m.name)), None)
        s = m.mem
        if old is not None and (s.swr_pages < old.swr_pages or s.sww_pages < old.sww_pages):
            old = None
        swr = s.swr_pages - (old.swr_pages if old else 0)
        sww = s.sww_pages - (old.sww_pages if old else 0)
        return MemRates(m.gid, m.name, m.balloon, s.memsz_mb, s.grant_mb, s.sztgt_mb, s.tchd_mb, s.active_pct,
                        s.mctl_sz_mb, s.mctl_tgt_mb, s.mctl_max_mb, s.swcur_mb, s.swtgt_mb,
                        swr * PAGE / MB / self.seconds, sww * PAGE / MB / self.seconds, s.shared_mb, s.ovhd_mb)

    def _vm_disks(self) -> dict[int, VmDiskRates]:
        old = {(v.gid, v.device): v.disk for v in self.before.vm_disks}
        names = {v.gid: v.name for v in self.before.vm_disks}
        by_vm: dict[int, list] = {}
        for v in sorted(self.after.vm_disks, key=lambda v: (v.gid, v.device)):
            by_vm.setdefault(v.gid, []).append(v)
            if names.get(v.gid, v.name) != v.name or _restarted(old.get((v.gid, v.device)), v.disk):
                old.pop((v.gid, v.device), None)
        out = {}
        for gid, entries in by_vm.items():
            total_old = _sum_disk(old[(gid, e.device)] for e in entries if (gid, e.device) in old)
            total_new = _sum_disk(e.disk for e in entries)
            rows = tuple((e.device, disk_rates(old.get((gid, e.device)), e.disk, self.seconds)) for e in entries)
            out[gid] = VmDiskRates(gid, entries[0].name, disk_rates(total_old, total_new, self.seconds), rows)
        return out

    # -- host-wide figures ---------------------------------------------------------------------

    def pcpu_used(self) -> list[float]:
        """PCPU USED(%) per pCPU: time charged to worlds over the interval."""
        olds = list(self.before.pcpus) + [None] * (len(self.after.pcpus) - len(self.before.pcpus))
        return [self.pct(p.used_us - (o.used_us if o else 0)) for p, o in zip(self.after.pcpus, olds, strict=False)]

    def pcpu_util(self) -> list[float]:
        """PCPU UTIL(%) per pCPU: the part of the interval the pCPU was not idle."""
        olds = list(self.before.pcpus) + [None] * (len(self.after.pcpus) - len(self.before.pcpus))
        return [100.0 - self.pct(p.idle_us - (o.idle_us if o else 0))
                for p, o in zip(self.after.pcpus, olds, strict=False)]

    def swap_rates(self) -> tuple[float, float]:
        """Host swap-in and swap-out in MB/s (the sum over VMs)."""
        return sum(m.swr_s for m in self.mem.values()), sum(m.sww_s for m in self.mem.values())


def _busy_fraction(a: HostSample, b: HostSample) -> float:
    """Mean fraction of the host's pCPUs in use between two samples (the load average's unit)."""
    used = sum(p.used_us for p in b.pcpus) - sum(p.used_us for p in a.pcpus)
    return used / ((b.time_us - a.time_us) * b.npcpus)


def load_averages(history: Sequence[HostSample]) -> tuple[float, float, float]:
    """CPU load average over the last 1, 5 and 15 minutes of ``history`` (oldest first): the mean
    busy fraction of all pCPUs since the oldest sample inside each window (1.00 = every pCPU
    fully used).  A shorter history gives the average over what there is."""
    last = history[-1]
    out = []
    for window in LOAD_WINDOWS_S:
        start = next((s for s in history if last.time_us - s.time_us <= window * 1_000_000), last)
        out.append(_busy_fraction(start, last) if start is not last else 0.0)
    return out[0], out[1], out[2]


def overcommit(sample: HostSample) -> float:
    """Memory overcommit at one sample: configured VM memory over the memory the VMkernel manages,
    minus one, never below 0 (esxtop's ``MEM overcommit``; our formula)."""
    managed = sample.host_memory.machine_mb - sample.host_memory.console_mb
    if managed <= 0:
        return 0.0
    return max(0.0, sum(m.mem.memsz_mb for m in sample.memory) / managed - 1.0)


def overcommit_averages(history: Sequence[HostSample],
                        values: Sequence[float] | None = None) -> tuple[float, float, float]:
    """Mean overcommit of the samples inside the last 1, 5 and 15 minutes (``values``: the
    samples' overcommits if already known)."""
    last = history[-1]
    values = [overcommit(s) for s in history] if values is None else values
    out = []
    for window in LOAD_WINDOWS_S:
        inside = [v for s, v in zip(history, values, strict=True) if last.time_us - s.time_us <= window * 1_000_000]
        out.append(sum(inside) / len(inside))
    return out[0], out[1], out[2]


# -- the screens --------------------------------------------------------------------------------


def clock_text(sample: HostSample) -> str:
    """The header's wall clock as esxtop prints it (`` 1:50:31pm``)."""
    t = dt.datetime.fromtimestamp(sample.epoch_s + sample.time_us // 1_000_000, tz=dt.UTC)
    hour = t.hour % 12 or 12
    return f"{hour:2d}:{t.minute:02d}:{t.second:02d}{'am' if t.hour < 12 else 'pm'}"


def uptime_text(time_us: int) -> str:
    """``up 2 days  3:04`` or ``up  0:05`` (hours:minutes since boot)."""
    minutes = time_us // 60_000_000
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"up {days} days {hours:2d}:{mins:02d}" if days else f"up {hours:2d}:{mins:02d}"


def header_line(history: Sequence[HostSample], tail: str) -> str:
    """The first line of every panel: time, uptime, worlds, VMs, vCPUs and a panel-specific tail."""
    s = history[-1]
    vms = [g for g in s.groups if g.kind == "vm"]
    worlds = sum(g.nworlds for g in s.groups)
    return (f"{clock_text(s)} {uptime_text(s.time_us)}, {worlds} worlds, {len(vms)} VMs, "
            f"{sum(g.vcpus for g in vms)} vCPUs; {tail}")


def _averages(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _name_width(names: Iterable[str], least: int = 16) -> int:
    return max([least, *(len(n) for n in names)])


CPU_COLUMNS = ("%USED", "%RUN", "%SYS", "%WAIT", "%VMWAIT", "%RDY", "%IDLE", "%OVRLP", "%CSTP", "%MLMTD", "%SWPWT")


def cpu_panel(iv: Interval, history: Sequence[HostSample]) -> str:
    """The CPU screen (``c``): groups sorted by %USED, highest first (esxtop's default order)."""
    used, util = iv.pcpu_used(), iv.pcpu_util()
    lines = [
        header_line(history, f"CPU load average: {_averages(load_averages(history))}"),
        "PCPU USED(%): " + " ".join(f"{u:.1f}" for u in used) + f" AVG: {sum(used) / len(used):.1f}",
        "PCPU UTIL(%): " + " ".join(f"{u:.1f}" for u in util) + f" AVG: {sum(util) / len(util):.1f}",
        "",
    ]
    rows = sorted(iv.cpu.values(), key=lambda r: (-round(r.used, 6), r.gid))
    w = _name_width(r.name for r in rows)
    lines.append(f"{'ID':>8} {'GID':>8} {'NAME':<{w}} {'NWLD':>4} " + " ".join(f"{c:>7}" for c in CPU_COLUMNS))
    for r in rows:
        values = (r.used, r.run, r.sys, r.wait, r.vmwait, r.rdy, r.idle, r.ovrlp, r.cstp, r.mlmtd, r.swpwt)
        lines.append(f"{r.gid:>8} {r.gid:>8} {r.name:<{w}} {r.nworlds:>4} " + " ".join(f"{v:7.2f}" for v in values))
    return "\n".join(lines) + "\n"


MEM_COLUMNS = ("MEMSZ", "GRANT", "SZTGT", "TCHD", "MCTL?", "MCTLSZ", "MCTLTGT", "MCTLMAX", "SWCUR", "SWTGT",
               "SWR/s", "SWW/s", "OVHD")


def memory_panel(iv: Interval, history: Sequence[HostSample]) -> str:
    """The memory screen (``m``): host lines, then one row per VM in GID order."""
    h = iv.after.host_memory
    rows = [iv.mem[g] for g in sorted(iv.mem)]
    other = h.machine_mb - h.console_mb - h.vmkernel_mb - h.free_mb
    swr, sww = iv.swap_rates()
    lines = [
        header_line(history, f"MEM overcommit avg: {_averages(overcommit_averages(history))}"),
        f"PMEM  /MB: {h.machine_mb:6.0f}   total: {h.console_mb:6.0f}     cos, {h.vmkernel_mb:6.0f}     vmk, "
        f"{other:6.0f} other, {h.free_mb:6.0f} free",
        f"VMKMEM/MB: {h.machine_mb - h.console_mb:6.0f} managed: {h.minfree_mb:6.0f} minfree, "
        f"{h.reserved_mb:6.0f} rsvd, {h.unreserved_mb:6.0f} ursvd, {h.state:>5} state",
        f"PSHARE/MB: {h.pshare_shared_mb:6.0f}  shared, {h.pshare_common_mb:6.0f}  common: "
        f"{h.pshare_saving_mb:6.0f} saving",
        f"SWAP  /MB: {sum(r.swcur for r in rows):6.0f}    curr, {sum(r.swtgt for r in rows):6.0f} rclmtgt: "
        f"{'':16} {swr:6.2f} r/s, {sww:6.2f} w/s",
        f"MEMCTL/MB: {sum(r.mctlsz for r in rows):6.0f}    curr, {sum(r.mctltgt for r in rows):6.0f}  target, "
        f"{sum(r.mctlmax for r in rows):6.0f} max",
        "",
    ]
    w = _name_width(r.name for r in rows)
    lines.append(f"{'GID':>8} {'NAME':<{w}} " + " ".join(f"{c:>8}" for c in MEM_COLUMNS))
    for r in rows:
        sizes = (r.memsz, r.grant, r.sztgt, r.tchd)
        balloon = (r.mctlsz, r.mctltgt, r.mctlmax, r.swcur, r.swtgt, r.swr_s, r.sww_s, r.ovhd)
        lines.append(f"{r.gid:>8} {r.name:<{w}} " + " ".join(f"{v:8.2f}" for v in sizes)
                     + f" {'Y' if r.balloon else 'N':>8} " + " ".join(f"{v:8.2f}" for v in balloon))
    return "\n".join(lines) + "\n"


DISK_COLUMNS = ("CMDS/s", "READS/s", "WRITES/s", "MBREAD/s", "MBWRTN/s", "DAVG/cmd", "KAVG/cmd", "GAVG/cmd",
                "QAVG/cmd")


def _disk_values(d: DiskRates) -> tuple[float, ...]:
    return (d.cmds_s, d.reads_s, d.writes_s, d.mbread_s, d.mbwrtn_s, d.davg, d.kavg, d.gavg, d.qavg)


#: the locking columns after the disk ones: the test-and-set (LOCK), esxtop's ATS statistics
#: (ATS, ATSF: counts since the device was opened) and reservation statistics (RESV/s, CONS/s)
LOCK_COLUMNS = ("LOCK", "ATS", "ATSF", "RESV/s", "CONS/s")


def device_panel(iv: Interval, history: Sequence[HostSample]) -> str:
    """The disk device screen (``u``): one row per device, by name."""
    names = sorted(iv.devices)
    w = _name_width(names, 36)
    lines = [header_line(history, f"CPU load average: {_averages(load_averages(history))}"), "",
             f"{'DEVICE':<{w}} {'PATH/WORLD/PARTITION':<20} {'DQLEN':>5} "
             + " ".join(f"{c:>8}" for c in DISK_COLUMNS + LOCK_COLUMNS)]
    for n in names:
        lk = iv.locks[n]
        lines.append(f"{n:<{w}} {'-':<20} {iv.queue_depth[n]:>5} "
                     + " ".join(f"{v:8.2f}" for v in _disk_values(iv.devices[n]))
                     + f" {lk.mode_label:>8} {lk.ats:>8} {lk.atsf:>8} {lk.resv_s:8.2f} {lk.cons_s:8.2f}")
    return "\n".join(lines) + "\n"


VM_DISK_COLUMNS = ("CMDS/s", "READS/s", "WRITES/s", "MBREAD/s", "MBWRTN/s", "GAVG/cmd")


def vm_disk_panel(iv: Interval, history: Sequence[HostSample]) -> str:
    """The disk VM screen (``v``): one row per VM, then its devices (as esxtop's expanded view)."""
    vms = [iv.vm_disks[g] for g in sorted(iv.vm_disks)]
    w = _name_width(v.name for v in vms)
    dw = _name_width((d for v in vms for d, _ in v.devices), 8)
    lines = [header_line(history, f"CPU load average: {_averages(load_averages(history))}"), "",
             f"{'GID':>8} {'VMNAME':<{w}} {'VDEVNAME':<{dw}} {'NVDISK':>6} "
             + " ".join(f"{c:>8}" for c in VM_DISK_COLUMNS)]

    def cells(d: DiskRates) -> str:
        return " ".join(f"{v:8.2f}" for v in (d.cmds_s, d.reads_s, d.writes_s, d.mbread_s, d.mbwrtn_s, d.gavg))

    for v in vms:
        lines.append(f"{v.gid:>8} {v.name:<{w}} {'-':<{dw}} {len(v.devices):>6} " + cells(v.total))
        for dev, rates in v.devices:
            lines.append(f"{'':>8} {'':<{w}} {dev:<{dw}} {1:>6} " + cells(rates))
    return "\n".join(lines) + "\n"


PANELS: dict[str, Callable[[Interval, Sequence[HostSample]], str]] = {
    "c": cpu_panel,
    "m": memory_panel,
    "u": device_panel,
    "v": vm_disk_panel,
}


def screen(history: Sequence[HostSample], panel: str = "c") -> str:
    """The screen esxtop shows after the last of ``history`` (at least two samples, oldest first)."""
    if len(history) < 2:
        raise SampleError("esxtop needs two samples to show rates")
    if panel not in PANELS:
        raise EsxtopError(f"esxtop: unknown panel {panel!r} (one of {', '.join(PANELS)})")
    return PANELS[panel](Interval(history[-2], history[-1]), history)


# -- batch mode ---------------------------------------------------------------------------------

#: a batch column: its counter path and how to read its value from an interval and the row's averages
Column = tuple[pdh.CounterPath, Callable[[Interval, "_Averages"], "float | int | str | None"]]

CPU_COUNTERS = (("% Used", "used"), ("% Run", "run"), ("% System", "sys"), ("% Wait", "wait"),
                ("% VmWait", "vmwait"), ("% Ready", "rdy"), ("% Idle", "idle"), ("% Overlap", "ovrlp"),
                ("% CoStop", "cstp"), ("% Max Limited", "mlmtd"), ("% Swap Wait", "swpwt"))
MEM_COUNTERS = (("Memory Size MBytes", "memsz"), ("Memory Granted Size MBytes", "grant"),
                ("Target Size MBytes", "sztgt"), ("Touched MBytes", "tchd"), ("% Active Estimate", "active_pct"),
                ("MemCtl MBytes", "mctlsz"), ("MemCtl Target MBytes", "mctltgt"), ("MemCtl Max MBytes", "mctlmax"),
                ("Swapped MBytes", "swcur"), ("Swap Target MBytes", "swtgt"), ("Swap Read MBytes/sec", "swr_s"),
                ("Swap Written MBytes/sec", "sww_s"), ("Shared MBytes", "shared"), ("Overhead MBytes", "ovhd"))
DISK_COUNTERS = (("Commands/sec", "cmds_s"), ("Reads/sec", "reads_s"), ("Writes/sec", "writes_s"),
                 ("MBytes Read/sec", "mbread_s"), ("MBytes Written/sec", "mbwrtn_s"),
                 ("Average Driver MilliSec/Command", "davg"), ("Average Kernel MilliSec/Command", "kavg"),
                 ("Average Guest MilliSec/Command", "gavg"), ("Average Queue MilliSec/Command", "qavg"),
                 ("Failed Commands/sec", "failed_s"))
#: the device's locking counters in the batch file (our names for esxtop's ATS, ATSF, RESV/s, CONS/s)
LOCK_COUNTERS = (("ATS Commands", "ats"), ("ATS Failures", "atsf"), ("Reservations/sec", "resv_s"),
                 ("Reservation Conflicts/sec", "cons_s"))
VM_DISK_COUNTERS = (("Commands/sec", "cmds_s"), ("Reads/sec", "reads_s"), ("Writes/sec", "writes_s"),
                    ("MBytes Read/sec", "mbread_s"), ("MBytes Written/sec", "mbwrtn_s"),
                    ("Average Guest MilliSec/Command", "gavg"))


def _field(table: str, key: object, attr: str) -> Callable[[Interval, _Averages], float | None]:
    """Read ``getattr(iv.<table>[key], attr)``, or None when the entity is absent."""
    def get(iv: Interval, _avg: _Averages) -> float | None:
        row = getattr(iv, table).get(key)
        if table == "vm_disks" and row is not None:
            row = row.total
        return None if row is None else getattr(row, attr)
    return get


def _host_mem(attr: str) -> Callable[[Interval, _Averages], float]:
    return lambda iv, _h: getattr(iv.after.host_memory, attr)


class _Averages:
    """The 1/5/15-minute averages of one row, computed once for the row's six columns."""

    def __init__(self, history: Sequence[HostSample], overcommits: Sequence[float]) -> None:
        self.history = history
        self.overcommits = overcommits
        self._load: tuple[float, float, float] | None = None
        self._overcommit: tuple[float, float, float] | None = None

    def load(self, i: int) -> float:
        if self._load is None:
            self._load = load_averages(self.history)
        return self._load[i]

    def overcommit(self, i: int) -> float:
        if self._overcommit is None:
            self._overcommit = overcommit_averages(self.history, self.overcommits)
        return self._overcommit[i]


def _columns(host: str, samples: Sequence[HostSample]) -> list[Column]:
    """Every counter of the run, in the order of real batch files: memory overcommit, pCPU load,
    per-pCPU times, host memory, groups' CPU, groups' memory, devices, VMs' disks."""
    def path(obj: str, inst: str | None, counter: str) -> pdh.CounterPath:
        return pdh.CounterPath(host, obj, inst, counter)

    cols: list[Column] = []
    for i, label in enumerate(("1", "5", "15")):
        cols.append((path("Memory", None, f"Memory Overcommit ({label} Minute Avg)"),
                     lambda _iv, avg, i=i: avg.overcommit(i)))
    for i, label in enumerate(("1", "5", "15")):
        cols.append((path("Physical Cpu Load", None, f"Cpu Load ({label} Minute Avg)"),
                     lambda _iv, avg, i=i: avg.load(i)))
    npcpus = max(s.npcpus for s in samples)
    for counter, fn in (("% Processor Time", Interval.pcpu_used), ("% Util Time", Interval.pcpu_util)):
        for i in range(npcpus):
            cols.append((path("Physical Cpu", str(i), counter),
                         lambda iv, _h, i=i, fn=fn: fn(iv)[i] if i < iv.after.npcpus else None))
        cols.append((path("Physical Cpu", "_Total", counter), lambda iv, _h, fn=fn: sum(fn(iv)) / len(fn(iv))))
    cols += [
        (path("Memory", None, "Machine MBytes"), _host_mem("machine_mb")),
        (path("Memory", None, "Kernel MBytes"), _host_mem("vmkernel_mb")),
        (path("Memory", None, "NonKernel MBytes"),
         lambda iv, _h: iv.after.host_memory.machine_mb - iv.after.host_memory.vmkernel_mb),
        (path("Memory", None, "Free MBytes"), _host_mem("free_mb")),
        (path("Memory", None, "Kernel State"), lambda iv, _h: MEM_STATES.index(iv.after.host_memory.state)),
        (path("Memory", None, "PShare Shared MBytes"), _host_mem("pshare_shared_mb")),
        (path("Memory", None, "PShare Common MBytes"), _host_mem("pshare_common_mb")),
        (path("Memory", None, "PShare Savings MBytes"), _host_mem("pshare_saving_mb")),
        (path("Memory", None, "Swap Used MBytes"), _host_mem("swap_used_mb")),
        (path("Memory", None, "Swap Target MBytes"), lambda iv, _h: sum(m.swtgt for m in iv.mem.values())),
        (path("Memory", None, "Swap MBytes Read/sec"), lambda iv, _h: iv.swap_rates()[0]),
        (path("Memory", None, "Swap MBytes Write/sec"), lambda iv, _h: iv.swap_rates()[1]),
        (path("Memory", None, "MemCtl Current MBytes"), _host_mem("balloon_mb")),
        (path("Memory", None, "MemCtl Target MBytes"), lambda iv, _h: sum(m.mctltgt for m in iv.mem.values())),
        (path("Memory", None, "MemCtl Max MBytes"), lambda iv, _h: sum(m.mctlmax for m in iv.mem.values())),
    ]
    groups = sorted({(g.gid, g.name) for s in samples for g in s.groups})
    for gid, name in groups:
        inst = f"{gid}:{name}"
        cols.append((path("Group Cpu", inst, "Members"), _field("cpu", gid, "nworlds")))
        cols += [(path("Group Cpu", inst, c), _field("cpu", gid, a)) for c, a in CPU_COUNTERS]
    for gid, name in sorted({(m.gid, m.name) for s in samples for m in s.memory}):
        cols += [(path("Group Memory", f"{gid}:{name}", c), _field("mem", gid, a)) for c, a in MEM_COUNTERS]
    for name in sorted({d.name for s in samples for d in s.devices}):
        cols.append((path("Physical Disk SCSI Device", name, "Device Q Depth"),
                     lambda iv, _h, n=name: iv.queue_depth.get(n)))
        cols += [(path("Physical Disk SCSI Device", name, c), _field("devices", name, a)) for c, a in DISK_COUNTERS]
        cols += [(path("Physical Disk SCSI Device", name, c), _field("locks", name, a)) for c, a in LOCK_COUNTERS]
    for gid, name in sorted({(v.gid, v.name) for s in samples for v in s.vm_disks}):
        cols += [(path("Virtual Disk", name, c), _field("vm_disks", gid, a)) for c, a in VM_DISK_COUNTERS]
    return cols


def batch_csv(samples: Sequence[HostSample]) -> str:
    """The batch file for a run: one row per interval between consecutive samples (n + 1 samples
    give n rows, as ``esxtop -b -n n`` does).  Entities are the union over the run (real esxtop
    fixes them at its start); a counter of an entity absent at a refresh is left blank.  Same
    samples, same bytes."""
    if len(samples) < 2:
        raise SampleError("a batch file needs at least two samples")
    host = samples[0].host
    columns = _columns(host, samples)
    rows = []
    times = [s.time_us for s in samples]
    overcommits = [overcommit(s) for s in samples]
    for k in range(1, len(samples)):
        iv = Interval(samples[k - 1], samples[k])
        start = bisect.bisect_left(times, times[k] - LOAD_WINDOWS_S[-1] * 1_000_000)  # older ones never count
        averages = _Averages(samples[start: k + 1], overcommits[start: k + 1])
        rows.append((pdh.timestamp(samples[k].epoch_s, samples[k].time_us),
                     [pdh.value(fn(iv, averages)) for _path, fn in columns]))
    return pdh.render([p for p, _fn in columns], rows)


def batch(sampler: Sampler, delay_s: float = DEFAULT_DELAY_S, iterations: int = 1) -> str:
    """``esxtop -b -d delay -n iterations``: take iterations + 1 samples ``delay`` apart."""
    delay_us = _delay_us(delay_s)
    if iterations < 1:
        raise EsxtopError(f"esxtop: -n needs at least 1 iteration, got {iterations}")
    samples = [sampler(0)]
    samples += [sampler(delay_us) for _ in range(iterations)]
    return batch_csv(samples)


def _delay_us(delay_s: float) -> int:
    if not delay_s > 0:
        raise EsxtopError(f"esxtop: the delay must be a positive number of seconds, got {delay_s}")
    return round(delay_s * 1_000_000)


# -- interactive --------------------------------------------------------------------------------

CLEAR = "\x1b[H\x1b[2J"
HELP = "c: cpu  m: memory  u: disk device  v: disk VM  s: delay  h: help  q: quit"


def interactive(sampler: Sampler, *, delay_s: float = DEFAULT_DELAY_S, panel: str = "c",
                iterations: int | None = None, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
                stderr: IO[str] | None = None) -> int:
    """The interactive screen: redraws every ``delay`` seconds (wall clock) with a fresh sample;
    keys c/m/u/v switch panel, s asks for a new delay, h shows the keys, q quits; with
    ``iterations`` it stops by itself after that many refreshes (as ``esxtop -n``).

    Needs a terminal on both ends: without one it says so in one line and returns 1 (batch mode
    is the way to get numbers into a file or a pipe)."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if not (stdin.isatty() and stdout.isatty()):
        print("esxtop: the interactive screen needs a terminal; use -b for batch mode", file=stderr)
        return 1
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    delay_us = _delay_us(delay_s)
    history = [sampler(0), sampler(delay_us)]
    message = ""
    refreshes = 0
    try:
        tty.setcbreak(fd)
        while True:
            stdout.write(CLEAR + screen(history, panel) + (message + "\n" if message else ""))
            stdout.flush()
            message = ""
            ready, _, _ = select.select([fd], [], [], delay_us / 1_000_000)
            if not ready:
                refreshes += 1
                if iterations is not None and refreshes >= iterations:
                    return 0
                history = [*history[-200:], sampler(delay_us)]
                continue
            key = os.read(fd, 1).decode(errors="replace")
            if key == "q":
                return 0
            if key in PANELS:
                panel = key
            elif key == "h":
                message = HELP
            elif key == "s":
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
                stdout.write("Delay of update in seconds: ")
                stdout.flush()
                answer = stdin.readline().strip()
                tty.setcbreak(fd)
                try:
                    delay_us = _delay_us(float(answer))
                except (ValueError, EsxtopError):
                    message = f"esxtop: not a positive number of seconds: {answer!r}"
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """esxtop's options: ``-b`` batch, ``-d`` delay in seconds, ``-n`` iterations.  A bad option
    raises EsxtopError with argparse's one-line reason."""
    parser = argparse.ArgumentParser(prog="esxtop", add_help=False, exit_on_error=False)
    parser.add_argument("-b", dest="batch", action="store_true")
    parser.add_argument("-d", dest="delay", type=float, default=DEFAULT_DELAY_S)
    parser.add_argument("-n", dest="iterations", type=int, default=None)
    try:
        args, extra = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise EsxtopError(f"esxtop: {exc}") from None
    if extra:
        raise EsxtopError(f"esxtop: unknown option {extra[0]}")
    _delay_us(args.delay)
    if args.iterations is not None and args.iterations < 1:
        raise EsxtopError(f"esxtop: -n needs at least 1 iteration, got {args.iterations}")
    return args


def main(argv: Sequence[str], sampler: Sampler, *, stdin: IO[str] | None = None,
         stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``esxtop [-b] [-d SECONDS] [-n ITERATIONS]`` against a host's sampler; returns the exit
    status (2 for bad options, printed in one line)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = parse_args(argv)
    except EsxtopError as exc:
        print(exc, file=stderr)
        return 2
    if args.batch:
        stdout.write(batch(sampler, args.delay, args.iterations or 1))
        stdout.flush()
        return 0
    return interactive(sampler, delay_s=args.delay, iterations=args.iterations, stdin=stdin, stdout=stdout,
                       stderr=stderr)
