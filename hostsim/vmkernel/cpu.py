"""The VMkernel CPU scheduler: proportional shares, reservations, limits, co-scheduling, esxtop time.

esx-design.md 3 and 7; docs/hostsim.md "CPU scheduler" says the algorithm, its parameters and
where each comes from.  In short:

* **Entitlement.**  Every ``period_us`` the demand of each vCPU is estimated from its recent
  history (the share of the last period it ran or wanted to run, an EWMA that follows a rise at
  once and decays slowly) and the entitlement of every group (a VM or the console) is computed by
  the water-filling of section 3.2 down the resource-pool tree (:func:`hostsim.vmkernel.pools.entitle`).
  A group's entitlement is divided among its vCPUs by their demands.
* **Selection.**  Each vCPU has a virtual time: pCPU time used divided by its entitlement (in
  pCPUs), so in steady state every vCPU's virtual time advances like the wall clock.  A free pCPU
  runs the ready vCPU with the smallest virtual time (the smallest consumed/entitlement ratio) for
  a quantum; a vCPU that wakes gets a virtual time no more than ``wake_bonus_us`` behind the
  others and preempts the running vCPU with the largest virtual time if it is behind it by more
  than ``preempt_margin_us``.  The scheduler works by events: one per quantum, per request end,
  per limit or co-scheduling threshold, never per microsecond.
* **Limits** (and ESX 2.x max %) are a credit that refills at the limit's rate up to one
  quantum's worth; a group whose credit is spent is held back (%MLMTD) until half of it is back,
  even on an idle host.  **Reservations** (and min %) enter the entitlement only.
* **Co-scheduling** (SMP groups).  A vCPU's *lag* is the time it wanted to run and could not
  (ready, limited, co-stopped, swap wait); halting and the idle loop count as progress.  The skew
  of a vCPU is the lag of its slowest awake sibling minus its own.  *Relaxed* (ESX 3/4): a vCPU
  whose skew passes ``skew_us`` is co-stopped alone and goes on once its skew is back to half;
  the guest idle loop is detected (it uses no pCPU).  *Strict* (ESX 2.x): the whole VM is
  co-stopped and co-starts only when enough pCPUs are free for all its awake vCPUs at once; the
  idle loop is not detected (it spins on a pCPU).

Accounting: per vCPU, cumulative microseconds in each state (RUN, READY, LIMITED, COSTOP, IDLE,
BLOCK, SWAP) so that run + rdy + cstp + wait is exactly the vCPU's lifetime; ``rdy`` includes
``mlmtd`` (as esxtop's %RDY includes %MLMTD) and ``wait`` includes ``idle``, ``vmwait`` and
``swpwt``.  ``sys`` is a VMkernel cost per :meth:`Vcpu.block` (the I/O path, ``sys_us_per_block``):
it keeps busy the pCPU the vCPU leaves (or, if it was not running, its last pCPU) for that long;
a world that runs there meanwhile carries it as ``ovrlp`` and its own work is pushed back by as
much, so used = run + sys − ovrlp and the pCPUs' busy time is the sum of every world's used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial

from hostsim.errors import HostsimError
from hostsim.vmkernel.engine import MS, Engine, Event
from hostsim.vmkernel.entitlement import Claim
from hostsim.vmkernel.pools import ResourcePool, entitle

#: CPU shares per vCPU (RMG [V]; esx-design.md 3.1 and 7)
SHARE_LEVELS = {"low": 500, "normal": 1000, "high": 2000}

# vCPU states; the names are the esxtop columns they count in
RUN, READY, LIMITED, COSTOP, IDLE, BLOCK, SWAP = range(7)
STATE_NAMES = ("RUN", "READY", "LIMITED", "COSTOP", "IDLE", "BLOCK", "SWAP")
_WANTS = (RUN, READY, LIMITED, COSTOP)
_LAGGING = (READY, LIMITED, COSTOP, SWAP)  # wants to progress and cannot
_AWAKE = (RUN, READY, LIMITED, COSTOP, SWAP)


class CpuConfigError(HostsimError):
    """Bad CPU controls (negative shares, limit below reservation, unknown level...) or misuse."""


def shares_for(level: str | int, vcpus: int) -> int:
    """Shares of a VM with ``vcpus`` vCPUs at ``level`` (low/normal/high), or a custom number."""
    if isinstance(level, str):
        if level not in SHARE_LEVELS:
            raise CpuConfigError(f"unknown share level {level!r} (expected low, normal, high or a number)")
        return SHARE_LEVELS[level] * vcpus
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise CpuConfigError(f"shares must be a non-negative integer or low/normal/high, got {level!r}")
    return level


@dataclass(frozen=True)
class CpuCounters:
    """Cumulative CPU time of a vCPU or a group, in µs (esxtop's CPU panel, as differences)."""

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

    def __add__(self, other: CpuCounters) -> CpuCounters:
        return CpuCounters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class PcpuCounters:
    """Cumulative busy and idle time of one physical CPU, in µs."""

    used_us: int
    idle_us: int


class Pcpu:
    """One physical CPU: who runs on it, its busy time, its one pending timer (by generation)."""

    __slots__ = ("armed", "busy_since", "deadline", "gen", "index", "sys_until", "used", "vcpu")

    def __init__(self, index: int) -> None:
        self.index = index
        self.vcpu: Vcpu | None = None
        self.busy_since: int | None = None
        self.used = 0
        self.gen = 0
        self.armed = -1  # the generation of the pending timer, and when it is due
        self.deadline = 0
        self.sys_until = 0


class Vcpu:
    """One virtual CPU world.  Its guest yields the events its requests return."""

    __slots__ = ("acc", "affinity", "check_idle", "demand", "e", "ewma", "group", "index", "lag", "last_pcpu", "name",
                 "ovrlp", "pcpu", "qend", "req", "sched", "seq", "since", "state", "sys", "vt", "wait_gen",
                 "want_prev", "work")

    def __init__(self, group: CpuGroup, index: int, seq: int) -> None:
        self.group = group
        self.sched = group.sched
        self.index = index
        self.seq = seq
        self.name = f"{group.name}.vcpu{index}"
        self.affinity = group.affinity
        self.state = IDLE
        self.since = self.sched.engine.now
        self.acc = [0] * 7
        self.sys = 0
        self.ovrlp = 0
        self.vt = 0.0
        self.lag = 0
        self.work = 0
        self.req: Event | None = None
        self.pcpu: Pcpu | None = None
        self.last_pcpu: Pcpu | None = None
        self.qend = 0
        self.e = 1.0  # entitlement in pCPUs (the weight of the virtual time)
        self.ewma = 1.0  # demand estimate, pCPUs; a new vCPU is taken to be CPU-bound
        self.demand = 1.0
        self.want_prev = 0
        self.wait_gen = 0
        #: called after a request's end has reached the guest (one bound callable, made once)
        self.check_idle = partial(self.sched._check_idle, self)

    # -- what the guest yields ------------------------------------------------------------------

    def compute(self, us: int) -> Event:
        """Fires once the vCPU has received ``us`` of pCPU time (at nominal speed)."""
        return self.sched._compute(self, _check_us(us, "compute"))

    def halt(self, us: int) -> Event:
        """The guest halts for ``us``: WAIT/IDLE, no pCPU, no skew."""
        return self.sched._timed_wait(self, _check_us(us, "halt"), IDLE)

    def idle_loop(self, us: int) -> Event:
        """The guest spins in its idle loop for ``us``: detected (IDLE) when relaxed, spun when strict."""
        us = _check_us(us, "idle_loop")
        if self.sched.coschedule == "strict":
            return self.sched._compute(self, us)
        return self.sched._timed_wait(self, us, IDLE)

    def block(self, event: Event, sys_us: int | None = None) -> Event:
        """Wait for ``event`` (an I/O): WAIT/VMWAIT; ``sys_us`` of VMkernel time charged as SYS."""
        return self.sched._block(self, event, self.sched.sys_us_per_block if sys_us is None else sys_us)

    def swap_wait(self, us: int) -> Event:
        """Wait ``us`` for a VMkernel swap-in (%SWPWT, part of VMWAIT)."""
        return self.sched._timed_wait(self, _check_us(us, "swap_wait"), SWAP)

    # -- accounting -----------------------------------------------------------------------------

    def counters(self) -> CpuCounters:
        """Cumulative times up to now (the current state's time included; nothing is changed)."""
        acc = list(self.acc)
        acc[self.state] += self.sched.engine.now - self.since
        run = acc[RUN]
        idle, vmwait = acc[IDLE], acc[BLOCK] + acc[SWAP]
        return CpuCounters(used_us=run + self.sys - self.ovrlp, run_us=run, sys_us=self.sys, ovrlp_us=self.ovrlp,
                           rdy_us=acc[READY] + acc[LIMITED], wait_us=idle + vmwait, vmwait_us=vmwait,
                           idle_us=idle, cstp_us=acc[COSTOP], mlmtd_us=acc[LIMITED], swpwt_us=acc[SWAP])

    @property
    def state_name(self) -> str:
        """RUN, READY, LIMITED, COSTOP, IDLE, BLOCK or SWAP."""
        return STATE_NAMES[self.state]

    def __repr__(self) -> str:
        return f"<Vcpu {self.name} {self.state_name}>"


def _under(pool: ResourcePool | None, pools: set[ResourcePool]) -> bool:
    while pool is not None:
        if pool in pools:
            return True
        pool = pool.parent
    return False


def _check_us(us: object, what: str) -> int:
    if isinstance(us, bool) or not isinstance(us, int) or us < 0:
        raise CpuConfigError(f"{what}() needs a non-negative integer number of microseconds, got {us!r}")
    return us


class CpuGroup:
    """A VM (or the console): its vCPUs and CPU controls."""

    def __init__(self, sched: CpuScheduler, name: str, shares: int | str, reservation_mhz: int, limit_mhz: int,
                 pool: ResourcePool, min_pct: int | None, max_pct: int | None,
                 affinity: tuple[int, ...] | None) -> None:
        self.sched = sched
        self.name = name
        self.pool = pool
        self.affinity = affinity
        self.vcpus: list[Vcpu] = []
        self.shares_spec: int | str = shares
        self.reservation_mhz = reservation_mhz
        self.limit_mhz = limit_mhz
        self.min_pct = min_pct
        self.max_pct = max_pct
        self.removed = False
        self.limited = False  # credit spent: every vCPU held back
        self.costopped = False  # strict co-scheduling: the whole VM is co-stopped
        self.credit = 0
        self.credit_t = sched.engine.now
        self.limit_gen = 0
        self.limit_now = self.configured_limit_mhz
        #: last computed entitlement and demand (MHz), for the console
        self.entitlement_mhz = 0.0
        self.demand_mhz = 0.0

    @property
    def shares(self) -> int:
        """Shares now (a level is per vCPU, so it follows the number of vCPUs)."""
        return shares_for(self.shares_spec, max(1, len(self.vcpus)))

    @property
    def effective_reservation_mhz(self) -> int:
        """The reservation, raised to the ESX 2.x min % of one pCPU when that is larger."""
        mins = 0 if self.min_pct is None else self.min_pct * self.sched.mhz // 100
        return max(self.reservation_mhz, mins)

    @property
    def configured_limit_mhz(self) -> int:
        """The limit (-1: none), lowered to the ESX 2.x max % of one pCPU when that is smaller."""
        lim = self.limit_mhz
        if self.max_pct is not None:
            m = self.max_pct * self.sched.mhz // 100
            lim = m if lim < 0 else min(lim, m)
        return lim

    @property
    def effective_limit_mhz(self) -> int:
        """The limit the scheduler enforces now: the configured one, and, under a pool with a
        limit, the group's entitlement (so the pool's VMs together never pass the pool's limit)."""
        return self.limit_now

    def add_vcpu(self) -> Vcpu:
        """A new vCPU (index 0, 1, ...), idle until its guest asks for something."""
        if self.removed:
            raise CpuConfigError(f"{self.name} is powered off")
        return self.sched._add_vcpu(self)

    def counters(self) -> CpuCounters:
        """The sum over the group's vCPUs (esxtop's group line)."""
        total = CpuCounters()
        for v in self.vcpus:
            total = total + v.counters()
        return total

    def __repr__(self) -> str:
        return f"<CpuGroup {self.name}>"


class CpuScheduler:
    """The proportional-share CPU scheduler of one host (module docstring; docs/hostsim.md).

    Defaults: quantum 50 ms and a 100 ms entitlement period ([A]: "time slices are tens of
    milliseconds", esx-design.md 3.2 [R]); skew threshold 3 ms ([A], 3.3: "a few milliseconds");
    SYS 20 µs per blocking I/O ([A])."""

    def __init__(self, engine: Engine, pcpus: int = 2, mhz: int = 2000, quantum_us: int = 50 * MS,
                 coschedule: str = "relaxed", skew_us: int = 3 * MS, *, period_us: int = 100 * MS,
                 wake_bonus_us: int | None = None, preempt_margin_us: int = 1 * MS, sys_us_per_block: int = 20,
                 pool: ResourcePool | None = None) -> None:
        for label, value in (("pcpus", pcpus), ("mhz", mhz), ("quantum_us", quantum_us), ("skew_us", skew_us),
                             ("period_us", period_us)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CpuConfigError(f"{label} must be a positive integer, got {value!r}")
        if coschedule not in ("relaxed", "strict"):
            raise CpuConfigError(f"coschedule must be 'relaxed' or 'strict', got {coschedule!r}")
        self.engine = engine
        self.mhz = mhz
        self.quantum_us = quantum_us
        self.coschedule = coschedule
        self.skew_us = skew_us
        self.period_us = period_us
        self.wake_bonus_us = quantum_us // 2 if wake_bonus_us is None else wake_bonus_us
        self.preempt_margin_us = preempt_margin_us
        self.sys_us_per_block = sys_us_per_block
        self.pool = pool or ResourcePool.host("host", cpu_mhz=pcpus * mhz, mem_mb=0)
        self.pcpus = [Pcpu(i) for i in range(pcpus)]
        self.groups: dict[str, CpuGroup] = {}
        self.console: CpuGroup | None = None
        self.t0 = engine.now
        self._ready: dict[Vcpu, None] = {}
        self._gangs: dict[CpuGroup, None] = {}  # strict: co-stopped groups waiting to co-start
        self._seq = 0
        self._last_sample = engine.now
        self._demand_key: tuple[float, ...] = ()

    # -- configuration --------------------------------------------------------------------------

    def add_group(self, name: str, shares: int | str = "normal", reservation_mhz: int = 0, limit_mhz: int = -1,
                  pool: ResourcePool | None = None, min_pct: int | None = None, max_pct: int | None = None,
                  affinity: Sequence[int] | None = None) -> CpuGroup:
        """Power on a group: its CPU reservation is admitted in its pool (PoolAdmissionError if not)."""
        if not isinstance(name, str) or not name:
            raise CpuConfigError(f"a CPU group needs a name, got {name!r}")
        if name in self.groups:
            raise CpuConfigError(f"{name}: a CPU group of that name is already powered on")
        aff = None if affinity is None else tuple(sorted(set(affinity)))
        if aff is not None and (not aff or any(not isinstance(i, int) or not 0 <= i < len(self.pcpus) for i in aff)):
            raise CpuConfigError(f"{name}: affinity must name pCPUs 0..{len(self.pcpus) - 1}, got {affinity!r}")
        self._check_controls(name, shares, reservation_mhz, limit_mhz, min_pct, max_pct)
        pool = pool or self.pool
        group = CpuGroup(self, name, shares, reservation_mhz, limit_mhz, pool, min_pct, max_pct, aff)
        pool.admit(name, cpu_mhz=group.effective_reservation_mhz)
        group.credit = self._credit_cap(group)
        self.groups[name] = group
        self._entitle()
        return group

    def add_console(self, shares: int = 2000, min_pct: int = 8) -> CpuGroup:
        """The service console's world: 2000 shares, min 8 %, always on pCPU 0 (ESX2, ETOP [V])."""
        self.console = self.add_group("console", shares=shares, min_pct=min_pct, affinity=(0,))
        self.console.add_vcpu()
        return self.console

    def set_controls(self, group: CpuGroup, *, shares: int | str | None = None, reservation_mhz: int | None = None,
                     limit_mhz: int | None = None, min_pct: int | str | None = "keep",
                     max_pct: int | str | None = "keep") -> None:
        """Change a running group's controls; a larger reservation is admitted first.

        ``min_pct``/``max_pct``: a number, None to clear, or leave out to keep."""
        self._check_live(group)
        new_shares = group.shares_spec if shares is None else shares
        new_res = group.reservation_mhz if reservation_mhz is None else reservation_mhz
        new_lim = group.limit_mhz if limit_mhz is None else limit_mhz
        new_min = group.min_pct if min_pct == "keep" else min_pct
        new_max = group.max_pct if max_pct == "keep" else max_pct
        self._check_controls(group.name, new_shares, new_res, new_lim, new_min, new_max)  # type: ignore[arg-type]
        old = (group.shares_spec, group.reservation_mhz, group.limit_mhz, group.min_pct, group.max_pct)
        group.shares_spec, group.reservation_mhz, group.limit_mhz = new_shares, new_res, new_lim
        group.min_pct, group.max_pct = new_min, new_max  # type: ignore[assignment]
        try:
            group.pool.admit(group.name, cpu_mhz=group.effective_reservation_mhz)
        except HostsimError:
            (group.shares_spec, group.reservation_mhz, group.limit_mhz, group.min_pct, group.max_pct) = old
            raise
        self._entitle()  # new entitlements, and the new limit through _set_limit
        for v in list(group.vcpus):
            if v.state == RUN:
                self._reevaluate(v)

    def remove_group(self, group: CpuGroup) -> None:
        """Power off: its vCPUs stop (pending and later requests never fire: the VMM stops the
        guest), its reservation is released, the other groups' shares are worth more."""
        self._check_live(group)
        group.removed = True
        freed = []
        for v in group.vcpus:
            v.wait_gen += 1
            v.req = None
            p = v.pcpu
            self._set_state(v, IDLE, pick=False)
            if p is not None:
                freed.append(p)
        self._gangs.pop(group, None)
        group.pool.release(group.name, ("cpu",))
        del self.groups[group.name]
        if group is self.console:
            self.console = None
        self._entitle()
        for p in freed:
            self._pick(p)

    def _check_live(self, group: CpuGroup) -> None:
        if group.removed or self.groups.get(group.name) is not group:
            raise CpuConfigError(f"{group.name} is not powered on in this scheduler")

    def _check_controls(self, name: str, shares: object, res: object, lim: object, min_pct: object,
                        max_pct: object) -> None:
        try:
            shares_for(shares, 1)  # type: ignore[arg-type]
        except CpuConfigError as exc:
            raise CpuConfigError(f"{name}: {exc}") from None
        for label, value in (("reservation_mhz", res), ("limit_mhz", lim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise CpuConfigError(f"{name}: {label} must be an integer, got {value!r}")
        assert isinstance(res, int) and isinstance(lim, int)
        if res < 0:
            raise CpuConfigError(f"{name}: CPU reservation must not be negative, got {res} MHz")
        if lim != -1 and lim < res:
            raise CpuConfigError(f"{name}: CPU limit {lim} MHz is below the reservation {res} MHz (-1 is unlimited)")
        for label, value in (("min_pct", min_pct), ("max_pct", max_pct)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise CpuConfigError(f"{name}: {label} must be a non-negative integer percentage, got {value!r}")
        if min_pct is not None and max_pct is not None and min_pct > max_pct:  # type: ignore[operator]
            raise CpuConfigError(f"{name}: min {min_pct} % is above max {max_pct} %")

    def _add_vcpu(self, group: CpuGroup) -> Vcpu:
        if len(group.vcpus) >= len(self.pcpus if group.affinity is None else group.affinity):
            raise CpuConfigError(f"{group.name}: a VM cannot have more vCPUs than the pCPUs it may run on "
                                 f"({len(group.vcpus)})")
        v = Vcpu(group, len(group.vcpus), self._seq)
        self._seq += 1
        m = self._min_vt()
        v.vt = 0.0 if m is None else m
        group.vcpus.append(v)
        self._entitle()
        return v

    # -- counters -------------------------------------------------------------------------------

    def pcpu_counters(self, i: int) -> PcpuCounters:
        """Busy (any world or VMkernel work) and idle time of pCPU ``i`` since the scheduler began."""
        p = self.pcpus[i]
        now = self.engine.now
        used = p.used + (max(0, now - p.busy_since) if p.busy_since is not None else -max(0, p.sys_until - now))
        return PcpuCounters(used_us=used, idle_us=self.engine.now - self.t0 - used)

    def skew_of(self, v: Vcpu) -> int:
        """How far ``v`` is ahead of its slowest awake sibling now, µs (0 for the slowest)."""
        return self._skew(v) if v.state in _AWAKE else 0

    def dump(self) -> str:
        """Every counter of every group, vCPU and pCPU, sorted by name: for determinism checks."""
        lines = []
        for name in sorted(self.groups):
            g = self.groups[name]
            lines.append(f"{name} {g.counters()} ent={g.entitlement_mhz:.3f}")
            lines.extend(f"  {v.name} {v.counters()}" for v in g.vcpus)
        lines.extend(f"pcpu{p.index} {self.pcpu_counters(p.index)}" for p in self.pcpus)
        return "\n".join(lines)

    # -- requests -------------------------------------------------------------------------------

    def _take(self, v: Vcpu) -> Event:
        if v.req is not None:
            raise CpuConfigError(f"{v.name}: the vCPU is still busy with its previous request")
        return self.engine.event()

    def _compute(self, v: Vcpu, us: int) -> Event:
        if v.group.removed:
            return self.engine.event()  # powered off: the world is gone, its requests never end
        ev = self._take(v)
        if us == 0:
            return ev.succeed()
        v.req, v.work = ev, us
        if v.state == RUN:  # went on right after its previous request: no decision unless the quantum is over
            now = self.engine.now
            if now >= v.qend:
                self._requeue(v)
            elif v.group.limit_now < 0 and len(v.group.vcpus) == 1:
                self._leave(v)
                self._arm_at(v.pcpu, min(v.qend, now + us))  # type: ignore[arg-type]
            else:
                self._reevaluate(v)
        elif v.state not in _WANTS:
            self._wake(v)
        return ev

    def _timed_wait(self, v: Vcpu, us: int, state: int) -> Event:
        if v.group.removed:
            return self.engine.event()
        ev = self._take(v)
        v.req = ev
        self._set_state(v, state)
        v.wait_gen += 1
        t = self.engine.timeout(us)
        t.callbacks.append(lambda _e, v=v, gen=v.wait_gen: self._end_wait(v, gen))  # type: ignore[union-attr]
        return ev

    def _end_wait(self, v: Vcpu, gen: int) -> None:
        if gen != v.wait_gen or v.group.removed:
            return
        ev, v.req = v.req, None
        if v.state != IDLE:
            self._set_state(v, IDLE)
        ev.succeed()  # type: ignore[union-attr]

    def _block(self, v: Vcpu, event: Event, sys_us: int) -> Event:
        if v.group.removed:
            return self.engine.event()
        if v.req is not None:
            self._take(v)  # raises: still busy
        if type(sys_us) is not int or sys_us < 0:
            _check_us(sys_us, "block(sys_us)")
        if event.engine is not self.engine:
            raise CpuConfigError(f"{v.name}: block() needs an event of this host's engine")
        p = v.pcpu
        if event.callbacks is None:  # already over: nothing to wait for
            if p is None:
                self._charge_sys(v, sys_us)
            return event
        v.req = event
        if p is not None and sys_us:  # the I/O path keeps the pCPU busy: mark it before anyone picks
            p.sys_until = self.engine.now + sys_us
            v.sys += sys_us
            self._set_state(v, BLOCK)
        else:
            self._set_state(v, BLOCK)
            self._charge_sys(v, sys_us)
        v.wait_gen += 1
        event.callbacks.append(lambda _e, v=v, gen=v.wait_gen: self._end_block(v, gen))
        return event

    def _end_block(self, v: Vcpu, gen: int) -> None:
        if gen != v.wait_gen or v.group.removed:
            return
        v.req = None
        self._set_state(v, IDLE)

    def _charge_sys(self, v: Vcpu, sys_us: int) -> None:
        """VMkernel time for the I/O of a ``v`` that is not running: on its last pCPU, inside the
        run of whoever is there (OVRLP; their work is pushed back), or keeping it busy if idle."""
        if sys_us == 0:
            return
        v.sys += sys_us
        p = v.last_pcpu or self.pcpus[0]
        w = p.vcpu
        if w is not None:
            self._leave(w)
            w.ovrlp += sys_us
            if w.work > 0:
                w.work += sys_us
            self._reevaluate(w)
            return
        p.sys_until = max(p.sys_until, self.engine.now) + sys_us
        p.used += sys_us  # an idle pCPU's VMkernel work is counted ahead (pcpu_counters takes back the rest)

    # -- states ---------------------------------------------------------------------------------

    def _leave(self, v: Vcpu) -> None:
        """Account the time since ``v.since`` to its current state (and, when running, to its
        virtual time, its work, its group's limit credit)."""
        now = self.engine.now
        d = now - v.since
        if d <= 0:
            return
        v.since = now
        st = v.state
        v.acc[st] += d
        if st == RUN:
            v.vt += d / v.e
            if v.work > 0:
                v.work -= d
            g = v.group
            if g.limit_now >= 0:
                self._refill(g)
                g.credit -= d * self.mhz
        elif st in _LAGGING:
            v.lag += d

    def _set_state(self, v: Vcpu, state: int, pick: bool = True) -> None:
        """Move ``v`` to ``state``, freeing its pCPU (which then picks again unless told not to)."""
        self._leave(v)
        old = v.state
        p = v.pcpu
        if old == RUN:
            p.vcpu = None  # type: ignore[union-attr]
            p.gen += 1  # type: ignore[union-attr]
            v.last_pcpu, v.pcpu = p, None
        elif old == READY:
            del self._ready[v]
        v.state = state
        if state == READY:
            self._ready[v] = None
        if old == RUN and pick:
            self._pick(p)  # type: ignore[arg-type]
        if len(v.group.vcpus) > 1 and not v.group.removed and (old in _AWAKE) != (state in _AWAKE):
            self._siblings_changed(v)

    def _wake(self, v: Vcpu) -> None:
        """``v`` has work again after idling or waiting."""
        self._leave(v)
        g = v.group
        if len(g.vcpus) > 1:  # idle vCPUs build no skew: neither ahead of the leader nor behind the laggard
            lags = [self._lag_now(u) for u in g.vcpus if u is not v and u.state in _AWAKE]
            if lags:
                v.lag = min(max(v.lag, min(lags)), max(lags))
        m = self._min_vt()
        if m is not None:
            v.vt = max(v.vt, m - self.wake_bonus_us)
        self._make_wanting(v)

    def _make_wanting(self, v: Vcpu) -> None:
        g = v.group
        if g.limit_now >= 0:
            self._refill(g)
            if not g.limited and g.credit <= 0:
                self._throttle(g)
        if g.limited:
            self._set_state(v, LIMITED)
        elif g.costopped or (len(g.vcpus) > 1 and self.coschedule == "relaxed" and self._skew(v) > self.skew_us):
            self._set_state(v, COSTOP)
        else:
            self._set_state(v, READY)
            self._place(v)

    def _place(self, v: Vcpu) -> None:
        """Run a ready ``v`` now if an eligible pCPU is idle, or if it is far enough behind a runner."""
        if v.state != READY:
            return  # already dispatched while its siblings were being re-evaluated
        now = self.engine.now
        idle = [p for p in self._eligible(v) if p.vcpu is None]
        if idle:
            last = v.last_pcpu
            self._dispatch(v, last if last in idle else idle[0])
            return
        victim, worst = None, -math.inf
        for p in self._eligible(v):
            w = p.vcpu
            if w is not None:
                vt = w.vt + (now - w.since) / w.e
                if vt > worst:
                    victim, worst = w, vt
        if victim is not None and v.vt + self.preempt_margin_us < worst:
            p = victim.pcpu
            self._set_state(victim, READY, pick=False)
            self._dispatch(v, p)  # type: ignore[arg-type]

    def _eligible(self, v: Vcpu) -> list[Pcpu]:
        return self.pcpus if v.affinity is None else [self.pcpus[i] for i in v.affinity]

    def _dispatch(self, v: Vcpu, p: Pcpu) -> None:
        if v.state == READY:
            del self._ready[v]
        self._leave(v)
        v.state, v.pcpu, p.vcpu = RUN, p, v
        now = self.engine.now
        rest = p.sys_until - now
        if rest > 0:  # VMkernel work still under way there: it runs inside v's time (v's OVRLP)
            v.ovrlp += rest
            if v.work > 0:
                v.work += rest
            p.sys_until = now
            if p.busy_since is None:
                p.used -= rest  # counted ahead when the pCPU was idle; now part of v's busy time
        if p.busy_since is None:
            p.busy_since = now
        v.qend = self.engine.now + self.quantum_us
        self._continue(p)

    def _requeue(self, v: Vcpu) -> None:
        """Quantum over: back to the ready queue; the pCPU picks again (maybe ``v`` itself)."""
        self._set_state(v, READY)

    # -- the pCPU's timer -----------------------------------------------------------------------

    def _arm_at(self, p: Pcpu, when: int) -> None:
        when = max(when, self.engine.now + 1)
        if p.armed == p.gen and p.deadline == when:
            return  # that timer is already pending
        p.gen += 1
        p.armed, p.deadline = p.gen, when
        t = self.engine.timeout(when - self.engine.now, (p, p.gen))
        t.callbacks.append(self._on_timer)  # type: ignore[union-attr]

    def _on_timer(self, t: Event) -> None:
        p, gen = t.value
        if gen != p.gen:
            return  # superseded
        v = p.vcpu
        if v is None:  # VMkernel (SYS) work over
            self._pick(p)
            return
        self._reevaluate(v)

    def _reevaluate(self, v: Vcpu) -> None:
        """Account a running ``v`` up to now and decide: limit, skew, request end, quantum, re-arm."""
        self._leave(v)
        g = v.group
        p = v.pcpu
        if g.limit_now >= 0 and not g.limited:
            self._refill(g)
            if g.credit <= 0:
                self._throttle(g)
                return
        if len(g.vcpus) > 1:
            if self._skew(v) > self.skew_us:
                self._costop(v)
                return
            self._release_costopped(g)
            if v.pcpu is not p:
                return
        self._continue(p)  # type: ignore[arg-type]

    def _continue(self, p: Pcpu) -> None:
        v = p.vcpu
        assert v is not None
        now = self.engine.now
        if v.req is not None and v.work <= 0 and v.state == RUN:
            ev, v.req = v.req, None
            v.work = 0
            ev.succeed()
            ev.callbacks.append(v.check_idle)  # type: ignore[union-attr]
            return
        if v.req is None:
            return  # between a request's end and the guest's next one
        if now >= v.qend:
            self._requeue(v)
            return
        delay = min(v.qend - now, v.work)
        g = v.group
        lim = g.limit_now
        if lim >= 0:
            running = sum(1 for u in g.vcpus if u.state == RUN)
            rate = running * self.mhz - lim
            if rate > 0:
                delay = min(delay, -(-g.credit // rate))
        if len(g.vcpus) > 1:
            delay = min(delay, self._skew_bound(v))
        self._arm_at(p, now + max(1, delay))

    def _check_idle(self, v: Vcpu, _ev: Event) -> None:
        """After a request's end has reached the guest: no new request means the vCPU idles."""
        if v.req is None and v.state in _WANTS and not v.group.removed:
            self._set_state(v, IDLE)

    def _pick(self, p: Pcpu) -> None:
        """``p`` is free: run the eligible ready vCPU with the smallest virtual time (or co-start a gang)."""
        now = self.engine.now
        if p.vcpu is not None:
            return
        if now - self._last_sample >= self.period_us:
            self._sample()
        best, key = None, (math.inf, 0)
        for v in self._ready:
            if (v.affinity is None or p.index in v.affinity) and (v.vt, v.seq) < key:
                best, key = v, (v.vt, v.seq)
        gang, gkey = None, key
        for g in self._gangs:
            waiting = [u for u in g.vcpus if u.state == COSTOP]
            k = min(((u.vt, u.seq) for u in waiting), default=gkey)
            if k < gkey:
                gang, gkey = g, k
        if gang is not None:
            if self._costart(gang, p):
                return
            best = None  # hold the pCPU for the co-start (ESX 2.x fragmentation)
        if best is not None:
            self._dispatch(best, p)
        elif p.busy_since is not None:
            p.used += max(now, p.sys_until) - p.busy_since  # busy to the end of any VMkernel work
            p.busy_since = None

    # -- limits ---------------------------------------------------------------------------------

    def _credit_cap(self, g: CpuGroup) -> int:
        lim = g.limit_now
        return 0 if lim < 0 else lim * self.quantum_us

    def _refill(self, g: CpuGroup) -> None:
        now = self.engine.now
        lim = g.limit_now
        if lim >= 0:
            g.credit = min(self._credit_cap(g), g.credit + lim * (now - g.credit_t))
        g.credit_t = now

    def _throttle(self, g: CpuGroup) -> None:
        """The group's credit is spent: hold every wanting vCPU until half a quantum's worth is back."""
        g.limited = True
        for v in g.vcpus:
            if v.state in (RUN, READY, COSTOP):
                self._set_state(v, LIMITED)
        self._arm_unthrottle(g)

    def _set_limit(self, g: CpuGroup, lim: int) -> None:
        """A new limit (set_controls, or the pool's share moved): credit so far at the old rate."""
        for v in g.vcpus:
            if v.state == RUN:
                self._leave(v)
        self._refill(g)
        was_unlimited = g.limit_now < 0
        g.limit_now = lim
        g.credit = self._credit_cap(g) if was_unlimited else min(g.credit, self._credit_cap(g))
        if g.limited:
            if lim < 0:
                self._unthrottle(g, g.limit_gen)
            else:
                self._arm_unthrottle(g)

    def _arm_unthrottle(self, g: CpuGroup) -> None:
        lim = g.limit_now
        g.limit_gen += 1
        if lim > 0:
            delay = -(-(self._credit_cap(g) // 2 - g.credit) // lim)
            t = self.engine.timeout(max(1, delay))
            t.callbacks.append(lambda _e, g=g, gen=g.limit_gen: self._unthrottle(g, gen))  # type: ignore[union-attr]

    def _unthrottle(self, g: CpuGroup, gen: int) -> None:
        if gen != g.limit_gen or g.removed or not g.limited:
            return
        g.limited = False
        self._refill(g)
        for v in g.vcpus:
            if v.state == LIMITED:
                self._make_wanting(v)

    # -- co-scheduling --------------------------------------------------------------------------

    def _lag_now(self, v: Vcpu) -> int:
        return v.lag + (self.engine.now - v.since if v.state in _LAGGING else 0)

    def _skew(self, v: Vcpu) -> int:
        """How far ``v`` has run ahead of its slowest awake sibling (µs)."""
        lag = self._lag_now(v)
        most = lag
        for u in v.group.vcpus:
            if u.state in _AWAKE:
                most = max(most, self._lag_now(u))
        return most - lag

    def _skew_bound(self, v: Vcpu) -> int:
        """Run ``v`` no longer than until its skew passes the threshold or a co-stopped sibling may go."""
        g = v.group
        bound = self.quantum_us
        lags = {u: self._lag_now(u) for u in g.vcpus if u.state in _AWAKE}
        most = max(lags.values())
        if any(u.state in _LAGGING and lags[u] == most for u in lags if u is not v):
            bound = min(bound, self.skew_us - (most - lags[v]) + 1)
        if lags[v] == most:
            for u in lags:
                if u.state == COSTOP and not g.costopped:
                    bound = min(bound, most - lags[u] - self.skew_us // 2)
        return max(1, bound)

    def _costop(self, v: Vcpu) -> None:
        g = v.group
        if self.coschedule == "relaxed":
            self._set_state(v, COSTOP)
            return
        g.costopped = True
        self._gangs[g] = None
        freed = []
        for u in g.vcpus:
            if u.state in (RUN, READY):
                if u.pcpu is not None:
                    freed.append(u.pcpu)
                self._set_state(u, COSTOP, pick=False)
        for p in freed:
            self._pick(p)

    def _release_costopped(self, g: CpuGroup) -> None:
        if g.costopped:
            return
        for u in g.vcpus:
            if u.state == COSTOP and self._skew(u) <= self.skew_us // 2:
                self._make_wanting(u)

    def _siblings_changed(self, v: Vcpu) -> None:
        """A sibling went to sleep or woke: the others' skews and slice bounds may have moved."""
        g = v.group
        if g.costopped:
            if not any(u.state == COSTOP for u in g.vcpus):
                g.costopped = False
                self._gangs.pop(g, None)
            return
        self._release_costopped(g)
        for u in g.vcpus:
            if u is not v and u.state == RUN and u.req is not None:
                self._reevaluate(u)

    def _costart(self, g: CpuGroup, p: Pcpu) -> bool:
        """Strict: start every co-stopped vCPU of ``g`` at once if enough pCPUs are free."""
        waiting = [u for u in g.vcpus if u.state == COSTOP]
        free = [q for q in self.pcpus if q.vcpu is None]
        free.sort(key=lambda q: q is not p)
        if len(free) < len(waiting):
            return False
        g.costopped = False
        del self._gangs[g]
        lags = [self._lag_now(u) for u in g.vcpus if u.state in _AWAKE]
        for u in g.vcpus:
            self._leave(u)
            if u.state in _AWAKE:
                u.lag = max(lags)  # resynchronised
        for u, q in zip(waiting, free, strict=False):
            self._leave(u)
            u.state = READY
            self._ready[u] = None
            self._dispatch(u, q)
        return True

    # -- entitlement ----------------------------------------------------------------------------

    def _min_vt(self) -> float | None:
        """The smallest virtual time among the running and ready vCPUs (None if there are none)."""
        now = self.engine.now
        best = min((u.vt for u in self._ready), default=None)
        for p in self.pcpus:
            u = p.vcpu
            if u is not None:
                vt = u.vt + (now - u.since) / u.e
                if best is None or vt < best:
                    best = vt
        return best

    def _sample(self) -> None:
        """New demand estimates from the last period, then new entitlements."""
        now = self.engine.now
        dt = now - self._last_sample
        self._last_sample = now
        alpha = min(1.0, dt / (5 * self.period_us))
        for g in self.groups.values():
            for v in g.vcpus:
                acc = v.acc
                want = acc[RUN] + acc[READY] + acc[LIMITED] + acc[COSTOP]
                if v.state in _WANTS:
                    want += now - v.since
                sample = (want - v.want_prev) / dt
                v.want_prev = want
                v.ewma += alpha * (sample - v.ewma)
                v.demand = round(max(sample, v.ewma), 2)  # steps of 1 %: a steady host recomputes nothing
        key = tuple(v.demand for g in self.groups.values() for v in g.vcpus)
        if key != self._demand_key:
            self._demand_key = key
            self._entitle()

    def _entitle(self) -> None:
        """Water-fill the host's MHz down the pool tree (esx-design.md 3.2) and reweight the vCPUs."""
        leaves: dict[ResourcePool, list[tuple[CpuGroup, Claim]]] = {}
        for g in self.groups.values():
            g.demand_mhz = math.fsum(v.demand for v in g.vcpus) * self.mhz
            claim = Claim(g.shares, g.effective_reservation_mhz, g.configured_limit_mhz, g.demand_mhz)
            leaves.setdefault(g.pool, []).append((g, claim))
        ent = entitle(self.pool, len(self.pcpus) * self.mhz, leaves)  # type: ignore[arg-type]
        capped = {p for p in self.pool.walk() if p.parent is not None and p.alloc["cpu"].limit >= 0}
        for g in self.groups.values():
            g.entitlement_mhz = ent.get(g, 0.0)
            lim = g.configured_limit_mhz
            if capped and _under(g.pool, capped):
                cap = max(int(g.entitlement_mhz), self.mhz // 100)
                lim = cap if lim < 0 else min(lim, cap)
            if lim != g.limit_now:
                self._set_limit(g, lim)
            total = math.fsum(v.demand for v in g.vcpus)
            for v in g.vcpus:
                if v.state == RUN:
                    self._leave(v)  # the old weight up to now
                frac = v.demand / total if total > 0 else 1.0 / len(g.vcpus)
                v.e = max(0.01, g.entitlement_mhz / self.mhz * frac)
