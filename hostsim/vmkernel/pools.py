"""Resource pools: the tree of CPU and memory allocations, power-on admission, entitlement.

esx-design.md 5.1 (RMG, API, SDK [V]).  Every pool and VM has shares, a reservation and a limit
per resource (MHz for CPU, MB for memory; limit ``-1`` is unlimited and must otherwise be at
least the reservation).  A VM powers on only if its reservation fits in what its pool has
unreserved; a pool whose reservation is *expandable* may borrow the difference from its parent,
and so on up while the pools are expandable.  Failing that the power-on is refused with ESX's
reason, "insufficient resources".

Accounting (the vSphere API's ``ResourcePool.ResourceUsage`` [V]):

* ``reservation_used`` = the reservations of the running VMs in the pool plus the (effective)
  reservations of its child pools;
* a fixed pool: ``reservation = reservation_used + unreserved``;
* an expandable pool: ``reservation + parent.unreserved = reservation_used + unreserved``, where
  ``reservation`` is the pool's *current* reservation, ``max(configured, reservation_used)``: an
  expandable reservation "can grow beyond the specified value" by borrowing, and only with that
  reading does the identity hold once a pool has borrowed (SDK example 2, checked in the tests).

The tree also answers "how much is each VM entitled to" (:func:`entitle`): the water-filling of
:mod:`hostsim.vmkernel.entitlement`, applied at the root over the root's children, then inside
each child pool over its own children with the pool's entitlement as capacity.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from hostsim.errors import HostsimError
from hostsim.vmkernel.entitlement import Claim, water_fill

#: the two resources a pool divides, and their units
KINDS = ("cpu", "mem")
UNITS = {"cpu": "MHz", "mem": "MB"}

#: a pool's share levels equal those of a 4-vCPU, 16 GB VM (RMG [V]): CPU 500/1000/2000 per
#: vCPU, memory 5/10/20 per MB, times 4 vCPUs and 16384 MB [D]
POOL_SHARE_LEVELS = {
    "cpu": {"low": 2000, "normal": 4000, "high": 8000},
    "mem": {"low": 81920, "normal": 163840, "high": 327680},
}


class PoolError(HostsimError):
    """A resource pool set up wrongly (negative shares, limit below reservation, bad level...)."""


class PoolAdmissionError(HostsimError):
    """A power-on (or a reservation increase) refused: "insufficient resources", with numbers."""


@dataclass(frozen=True)
class Allocation:
    """Shares, reservation, limit and expandability of one resource of one pool (or VM).

    ``shares`` is a number or a level (``low``/``normal``/``high``, resolved per resource by the
    pool).  Checked when made, so a bad allocation never enters the tree."""

    shares: int | str = "normal"
    reservation: int = 0
    limit: int = -1
    expandable: bool = True

    def __post_init__(self) -> None:
        check_shares(self.shares, POOL_SHARE_LEVELS["cpu"], "allocation")
        check_reservation_limit(self.reservation, self.limit, "allocation", "")


def check_shares(shares: object, levels: dict[str, int], who: str) -> None:
    """Refuse negative, non-integer or unknown-level shares, in one line."""
    if isinstance(shares, str):
        if shares not in levels:
            raise PoolError(f"{who}: unknown share level {shares!r} (expected {', '.join(levels)} or a number)")
        return
    if isinstance(shares, bool) or not isinstance(shares, int) or shares < 0:
        raise PoolError(f"{who}: shares must be a non-negative integer or a level, got {shares!r}")


def check_reservation_limit(reservation: object, limit: object, who: str, unit: str) -> None:
    """Reservation a non-negative integer; limit -1 or an integer at least the reservation."""
    for label, value in (("reservation", reservation), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise PoolError(f"{who}: {label} must be an integer{unit and ' in ' + unit}, got {value!r}")
    assert isinstance(reservation, int) and isinstance(limit, int)
    if reservation < 0:
        raise PoolError(f"{who}: reservation must not be negative, got {reservation}")
    if limit != -1 and limit < reservation:
        sp = f" {unit}" if unit else ""
        raise PoolError(f"{who}: limit {limit}{sp} is below the reservation {reservation}{sp} (use -1 for unlimited)")


@dataclass(frozen=True)
class ResourceUsage:
    """One resource of one pool now (API ``ResourcePool.ResourceUsage``; MHz or MB)."""

    reservation: int
    reservation_used: int
    unreserved: int
    expandable: bool


class ResourcePool:
    """A node of the tree: CPU and memory allocations, child pools, admitted VMs.

    The root is the host (:meth:`host`): a fixed reservation equal to the host's capacity."""

    def __init__(self, name: str, parent: ResourcePool | None = None,
                 cpu: Allocation | None = None, mem: Allocation | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise PoolError(f"a resource pool needs a name, got {name!r}")
        self.name = name
        self.parent = parent
        self.alloc = {"cpu": cpu or Allocation(), "mem": mem or Allocation()}
        self.children: list[ResourcePool] = []
        #: admitted consumers (running VMs): kind -> name -> reserved amount
        self.consumers: dict[str, dict[str, int]] = {"cpu": {}, "mem": {}}
        if parent is not None:
            parent._attach(self)

    @classmethod
    def host(cls, name: str, cpu_mhz: int, mem_mb: int) -> ResourcePool:
        """The root pool of a host: everything it has is reserved to it, fixed."""
        fixed = Allocation("normal", cpu_mhz, cpu_mhz, False), Allocation("normal", mem_mb, mem_mb, False)
        return cls(name, None, *fixed)

    # -- the tree -----------------------------------------------------------------------------

    def _attach(self, child: ResourcePool) -> None:
        if any(c.name == child.name for c in self.children):
            raise PoolError(f"{self.name}: there is already a child pool named {child.name!r}")
        for kind in KINDS:
            self._check_grow(kind, child.alloc[kind].reservation, f"create pool {child.name}")
        self.children.append(child)

    def walk(self) -> Iterator[ResourcePool]:
        """This pool and every pool below it, depth first, in creation order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def path(self) -> str:
        """``host/RP-MOM/RP-KID``: for messages."""
        return self.name if self.parent is None else f"{self.parent.path()}/{self.name}"

    def shares(self, kind: str) -> int:
        """This pool's shares of ``kind`` as a number (a level resolved per resource)."""
        s = self.alloc[kind].shares
        return POOL_SHARE_LEVELS[kind][s] if isinstance(s, str) else s

    def reconfigure(self, cpu: Allocation | None = None, mem: Allocation | None = None) -> None:
        """Change allocations; a larger reservation must fit in the parent, as at creation."""
        new = {"cpu": cpu or self.alloc["cpu"], "mem": mem or self.alloc["mem"]}
        for kind in KINDS:
            a = new[kind]
            used = self.reservation_used(kind)
            if not a.expandable and a.reservation < used:
                raise PoolAdmissionError(
                    f"{self.path()}: insufficient resources: a fixed {kind} reservation of {a.reservation} "
                    f"{UNITS[kind]} is below the {used} {UNITS[kind]} already reserved in it")
            if self.parent is not None:
                grow = max(a.reservation, used if a.expandable else 0) - self.reservation(kind)
                self.parent._check_grow(kind, grow, f"reconfigure pool {self.name}")
        self.alloc = new

    # -- accounting (section 5.1) -------------------------------------------------------------

    def reservation(self, kind: str) -> int:
        """The current reservation: the configured one, grown by borrowing when expandable."""
        a = self.alloc[kind]
        return max(a.reservation, self.reservation_used(kind)) if a.expandable and self.parent else a.reservation

    def reservation_used(self, kind: str) -> int:
        """Reserved by the running VMs of this pool and by its child pools."""
        return sum(self.consumers[kind].values()) + sum(c.reservation(kind) for c in self.children)

    def unreserved(self, kind: str) -> int:
        """What a new child could still reserve here (borrowing from the parent when expandable)."""
        a = self.alloc[kind]
        used = self.reservation_used(kind)
        free = max(0, a.reservation - used)
        if a.expandable and self.parent is not None:
            free += self.parent.unreserved(kind)
        if a.limit >= 0:
            free = min(free, max(0, a.limit - used))
        return free

    def usage(self, kind: str) -> ResourceUsage:
        """Reservation, reservationUsed, unreserved of ``kind`` now."""
        return ResourceUsage(self.reservation(kind), self.reservation_used(kind), self.unreserved(kind),
                             self.alloc[kind].expandable and self.parent is not None)

    # -- admission ----------------------------------------------------------------------------

    def admit(self, name: str, *, cpu_mhz: int | None = None, mem_mb: int | None = None) -> None:
        """Reserve ``cpu_mhz`` / ``mem_mb`` for the consumer ``name`` (None: leave that kind as is).

        Both kinds are checked before either is changed, so a refusal changes nothing."""
        wanted = {"cpu": cpu_mhz, "mem": mem_mb}
        for kind, amount in wanted.items():
            if amount is None:
                continue
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                raise PoolError(f"{name}: {kind} reservation must be a non-negative integer, got {amount!r}")
            grow = amount - self.consumers[kind].get(name, 0)
            self._check_grow(kind, grow, f"power on {name}")
        for kind, amount in wanted.items():
            if amount is not None:
                self.consumers[kind][name] = amount

    def release(self, name: str, kinds: tuple[str, ...] = KINDS) -> None:
        """Give back what ``name`` reserved (power-off)."""
        for kind in kinds:
            self.consumers[kind].pop(name, None)

    def _check_grow(self, kind: str, amount: int, action: str) -> None:
        """Raise unless this pool can take ``amount`` more reserved by a child (walking up)."""
        if amount <= 0:
            return
        need, pool = amount, self
        while True:
            a = pool.alloc[kind]
            used = pool.reservation_used(kind)
            if a.limit >= 0 and used + need > a.limit:
                raise self._refuse(kind, amount, action, f"the limit of {pool.path()} leaves {max(0, a.limit - used)}")
            free = max(0, a.reservation - used)
            if need <= free:
                return
            if not (a.expandable and pool.parent is not None):
                raise self._refuse(kind, amount, action, f"{self.unreserved(kind)} {UNITS[kind]} unreserved "
                                   f"(up to {pool.path()})")
            need -= free  # borrowed from the parent: the pool's current reservation grows by this
            pool = pool.parent

    def _refuse(self, kind: str, amount: int, action: str, why: str) -> PoolAdmissionError:
        unit = UNITS[kind]
        if not why.endswith(")"):
            why += f" {unit}"
        return PoolAdmissionError(
            f"cannot {action} in {self.path()}: insufficient resources: needs {amount} {unit} more {kind} "
            f"reservation, {why}")

    def identity_errors(self) -> list[str]:
        """The pools of the subtree where an accounting identity of section 5.1 fails (none, we hope).

        Checked on fixed pools and on expandable pools without a limit (a limit that caps the
        borrowing makes ``unreserved`` smaller than the identity says, by design)."""
        errors = []
        for pool in self.walk():
            for kind in KINDS:
                u = pool.usage(kind)
                if u.expandable and pool.alloc[kind].limit >= 0:
                    continue
                lhs = u.reservation + (pool.parent.unreserved(kind) if u.expandable else 0)  # type: ignore[union-attr]
                if lhs != u.reservation_used + u.unreserved:
                    errors.append(f"{pool.path()} {kind}: {lhs} != {u.reservation_used} + {u.unreserved}")
        return errors

    def __repr__(self) -> str:
        return f"<ResourcePool {self.path()}>"


def entitle(root: ResourcePool, capacity: float, leaves: dict[ResourcePool, list[tuple[Hashable, Claim]]],
            kind: str = "cpu") -> dict[Hashable, float]:
    """Entitlement of every leaf (a VM's scheduler group), recursively down the tree.

    ``leaves`` maps each pool to the claims of the VMs directly in it.  A pool claims its
    shares, its current reservation, its limit and the sum of its subtree's capped demands; the
    root's children share ``capacity``, each child pool's children share what it was given."""
    demand: dict[ResourcePool, float] = {}

    def subtree_demand(pool: ResourcePool) -> float:
        d = math.fsum(c.cap for _, c in leaves.get(pool, ())) + math.fsum(subtree_demand(p) for p in pool.children)
        lim = pool.alloc[kind].limit
        demand[pool] = d if lim < 0 or pool.parent is None else min(d, lim)
        return demand[pool]

    subtree_demand(root)
    out: dict[Hashable, float] = {}

    def share_out(pool: ResourcePool, amount: float) -> None:
        keys: list[Hashable | ResourcePool] = []
        claims: list[Claim] = []
        for key, claim in leaves.get(pool, ()):
            keys.append(key)
            claims.append(claim)
        for child in pool.children:
            keys.append(child)
            claims.append(Claim(child.shares(kind), child.reservation(kind), child.alloc[kind].limit, demand[child]))
        for key, e in zip(keys, water_fill(claims, amount), strict=True):
            if isinstance(key, ResourcePool):
                share_out(key, e)
            else:
                out[key] = e

    share_out(root, min(capacity, demand[root]))
    return out
