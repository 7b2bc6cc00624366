"""Run a guest program alone on an ideal machine and say what it asked for.

Why: before a program goes into a scenario its author wants to know what it demands (how much CPU,
how many pages, how much disk traffic per vCPU) without a host's contention mixed in.  The ideal
platform gives every vCPU its own pCPU, keeps every page resident and completes every disk command
after a fixed latency; the figures are the program's demand, not what a loaded host would give.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from hostsim.vmkernel.engine import SECOND, Engine, Event
from hostsim.vmm.guest.interpreter import GuestLog, start
from hostsim.vmm.guest.platform import TouchEach
from hostsim.vmm.guest.tree import Program


@dataclass(frozen=True)
class VcpuDemand:
    """What one vCPU asked for during the run (cumulative; a burst that started before the end
    counts whole)."""

    vcpu: int
    statements: int
    compute_us: int
    halt_us: int
    idle_us: int
    pages_read: int
    pages_written: int
    distinct_pages: int
    disk_reads: int
    disk_writes: int
    bytes_read: int
    bytes_written: int
    flushes: int
    marks: int


@dataclass
class _Tally:
    compute_us: int = 0
    halt_us: int = 0
    idle_us: int = 0
    pages_read: int = 0
    pages_written: int = 0
    pages: set[int] = field(default_factory=set)
    disk_reads: int = 0
    disk_writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    flushes: int = 0


class IdealPlatform(TouchEach):
    """A GuestPlatform with no contention: every call takes exactly its own time (disk commands
    ``latency_us``), reads return zeros, nothing is stored."""

    def __init__(self, engine: Engine, *, page_size: int = 4096, latency_us: int = 500) -> None:
        self.engine = engine
        self.page_size = page_size
        self.latency_us = latency_us
        self.tallies: dict[int, _Tally] = {}
        self._done = engine.event()
        self._done.succeed()

    def _t(self, vcpu: int) -> _Tally:
        tally = self.tallies.get(vcpu)
        if tally is None:
            tally = self.tallies[vcpu] = _Tally()
        return tally

    def compute(self, vcpu: Any, us: int) -> Event:
        self._t(vcpu).compute_us += us
        return self.engine.timeout(us)

    def halt(self, vcpu: Any, us: int) -> Event:
        self._t(vcpu).halt_us += us
        return self.engine.timeout(us)

    def idle_loop(self, vcpu: Any, us: int) -> Event:
        self._t(vcpu).idle_us += us
        return self.engine.timeout(us)

    def touch(self, vcpu: Any, ppn: int, data: bytes | None) -> Event:
        t = self._t(vcpu)
        if data is None:
            t.pages_read += 1
        else:
            t.pages_written += 1
        t.pages.add(ppn)
        return self._done

    def disk_read(self, vcpu: Any, disk: str, lba: int, count: int) -> Event:
        t = self._t(vcpu)
        t.disk_reads += 1
        t.bytes_read += count * 512
        return self.engine.timeout(self.latency_us, bytes(count * 512))

    def disk_write(self, vcpu: Any, disk: str, lba: int, data: bytes) -> Event:
        t = self._t(vcpu)
        t.disk_writes += 1
        t.bytes_written += len(data)
        return self.engine.timeout(self.latency_us)

    def flush(self, vcpu: Any, disk: str) -> Event:
        self._t(vcpu).flushes += 1
        return self.engine.timeout(self.latency_us)


def dry_run(program: Program, *, vcpus: int = 1, seconds: int = 10, seed: int | str = 0,
            page_size: int = 4096, latency_us: int = 500) -> list[VcpuDemand]:
    """Run ``program`` for ``seconds`` of simulated time on ``vcpus`` ideal vCPUs; one
    :class:`VcpuDemand` per vCPU.  Errors are the program's own :class:`GuestError`\\ s."""
    engine = Engine()
    platform = IdealPlatform(engine, page_size=page_size, latency_us=latency_us)
    log = GuestLog()
    runs = start(engine, program, platform, list(range(vcpus)), seed=seed, log=log)
    engine.run(until=seconds * SECOND)
    out = []
    for run in runs:
        t = platform._t(run.index)
        marks = sum(1 for m in log.marks if m.vcpu == run.index)
        out.append(VcpuDemand(run.index, run.statements, t.compute_us, t.halt_us, t.idle_us, t.pages_read,
                              t.pages_written, len(t.pages), t.disk_reads, t.disk_writes, t.bytes_read,
                              t.bytes_written, t.flushes, marks))
    return out


def render(demands: Collection[VcpuDemand], seconds: int) -> str:
    """A plain table, one row per vCPU; CPU columns are percent of the run (as esxtop's %USED,
    %WAIT...)."""
    head = ["vcpu", "stmts", "%compute", "%halt", "%idle", "pg-read", "pg-write", "pages", "reads", "writes",
            "MiB-read", "MiB-written", "flushes", "marks"]
    rows = [head]
    span = seconds * SECOND
    for d in demands:
        rows.append([str(d.vcpu), str(d.statements), f"{100 * d.compute_us / span:.1f}",
                     f"{100 * d.halt_us / span:.1f}", f"{100 * d.idle_us / span:.1f}", str(d.pages_read),
                     str(d.pages_written), str(d.distinct_pages), str(d.disk_reads), str(d.disk_writes),
                     f"{d.bytes_read / (1 << 20):.2f}", f"{d.bytes_written / (1 << 20):.2f}", str(d.flushes),
                     str(d.marks)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


__all__ = ["IdealPlatform", "VcpuDemand", "dry_run", "render"]
