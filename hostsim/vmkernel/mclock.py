"""mClock: per-VM reservation, limit and shares on one device's queue (esx-design.md 4.2).

Gulati, Merchant and Varman (OSDI 2010) give each VM three controls: a **reservation** r (IOPS it
is guaranteed), a **limit** l (IOPS it may not exceed) and **shares** w (its proportion of what is
left).  Every request gets three tags when it arrives at time t:

* R = max(R_prev + 1/r, t)   (reservation; no tag when r = 0)
* L = max(L_prev + 1/l, t)   (limit; always eligible when unlimited)
* P = max(P_prev + 1/w, v)   (shares)

and each time the device can take a command the scheduler dispatches in two phases:

1. *constraint-based*: if some queued request has R <= now, the one with the smallest R;
2. *weight-based*: otherwise, among VMs whose head request has L <= now, the one with the smallest
   P; then 1/r is subtracted from the R tags of that VM's remaining requests (and from the R_prev
   its next request builds on), so service in this phase counts toward the reservation.

R and L are in real time (µs), so a VM that returns from idle gets R = L = now: no reservation
burst to "catch up" the time it was away.  P is **virtual** time, and ``v`` (where the paper writes
t) is the scheduler's virtual now: the smallest P tag queued, or when nothing is queued the P tag
of the last weight-phase dispatch.  Why not real time for P: the paper re-bases the P tags of all
active VMs when one becomes active (subtract min P - t from all of them), then anchors the
newcomer at t.  Subtracting one constant from every tag the weight phase compares changes no
decision, so we leave the tags alone and anchor the newcomer at the smallest tag instead: the same
order, with no shift of every queued tag, and no dependence on how 1/w compares with real time
(with P in µs a VM given 1000 shares but served at 100 IOPS would have its P tag clamped to t at
every arrival, and the weight phase would decay to FIFO).  Either way an idle VM returns at the
current virtual time and cannot claim back service it did not use (``anchor_idle=False`` drops
the anchoring, to show the catch-up burst it prevents).

One rule of ours beside the paper's: a VM whose head request its limit holds back at a
weight-phase dispatch has its P tags moved up to the tag just dispatched.  Without it a VM held to
its limit falls behind in virtual time for as long as the limit binds, and claims all of that back
the moment the limit stops binding (the device slows down, the limit is raised): in experiment 20
a drop from 1200 to 600 IOPS gave VM3 300 IOPS and VM2 none, instead of 200 and 100.  A limit is a
cap, not service owed.  (Service in the reservation phase still advances a VM's P tags, as in the
paper: a VM lifted by its reservation is not also owed its weight share later.)

``weight_only=True`` is the baseline the paper compares against: SFQ(D), P tags only,
reservations and limits ignored.

Tags are floats (µs for R and L, 1e6/shares per request for P) and ties are broken by client
registration order, so a dispatch sequence depends only on the arrivals: no hashing, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from hostsim.errors import HostsimError

T = TypeVar("T")

#: limit meaning "no limit" (ESX's -1)
UNLIMITED = -1

#: the per-disk share presets (esx-design.md 4.1, 7)
SHARE_LEVELS: dict[str, int] = {"low": 500, "normal": 1000, "high": 2000}

#: the dispatch phases, as reported with each dispatch
RESERVATION = "reservation"
WEIGHT = "weight"


class IoControlsError(HostsimError):
    """Bad mClock controls (negative reservation, limit below the reservation, bad shares)."""


def shares_for(shares: int | str) -> int:
    """Shares as a number: a positive integer, or the preset ``low``/``normal``/``high``."""
    if isinstance(shares, str):
        try:
            return SHARE_LEVELS[shares.lower()]
        except KeyError:
            raise IoControlsError(
                f"disk shares {shares!r}: expected low, normal, high or a positive integer"
            ) from None
    if isinstance(shares, bool) or not isinstance(shares, int) or shares <= 0:
        raise IoControlsError(f"disk shares {shares!r}: expected low, normal, high or a positive integer")
    return shares


def _iops(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IoControlsError(f"{name} {value!r}: expected a whole number of IOPS")
    return value


@dataclass(frozen=True)
class IoControls:
    """One VM's controls on one device: reservation and limit in IOPS (limit -1: none), shares."""

    reservation_iops: int = 0
    limit_iops: int = UNLIMITED
    shares: int = 1000

    def __post_init__(self) -> None:
        r = _iops("reservation", self.reservation_iops)
        lim = _iops("limit", self.limit_iops)
        object.__setattr__(self, "shares", shares_for(self.shares))
        if r < 0:
            raise IoControlsError(f"reservation {r} IOPS: cannot be negative")
        if lim != UNLIMITED and lim <= 0:
            raise IoControlsError(f"limit {lim} IOPS: expected -1 (unlimited) or a positive number")
        if lim != UNLIMITED and lim < r:
            raise IoControlsError(f"limit {lim} IOPS is below the reservation {r} IOPS")

    @property
    def r_step(self) -> float:
        """R-tag spacing in µs (infinite: no reservation)."""
        return 1e6 / self.reservation_iops if self.reservation_iops else math.inf

    @property
    def l_step(self) -> float:
        """L-tag spacing in µs (0: unlimited)."""
        return 0.0 if self.limit_iops == UNLIMITED else 1e6 / self.limit_iops

    @property
    def p_step(self) -> float:
        """P-tag spacing in virtual time."""
        return 1e6 / self.shares


@dataclass(slots=True)
class Tagged(Generic[T]):
    """A queued request and its tags (``r`` is raw: the client's credit is subtracted on use)."""

    item: T
    r: float
    l: float  # noqa: E741 - the paper's name
    p: float
    cost: float = 1.0


class Client(Generic[T]):
    """One VM's queue on the device and the tag state its next request builds on."""

    __slots__ = ("active", "controls", "l_last", "l_step", "name", "order", "p_last", "p_shift", "p_step",
                 "queue", "r_credit", "r_last", "r_step")

    def __init__(self, name: str, controls: IoControls, order: int) -> None:
        self.name = name
        self.order = order
        self.queue: deque[Tagged[T]] = deque()
        self.active = True
        self.use(controls)
        self.r_last = self.l_last = self.p_last = -math.inf  # tags of the newest request (R, P raw)
        #: sum of the 1/r reductions earned by weight-phase service (subtracted from raw R tags)
        self.r_credit = 0.0
        #: how far the P tags were moved up while the limit held the VM back (added to raw P tags)
        self.p_shift = 0.0

    def use(self, controls: IoControls) -> None:
        """Take new controls (the tag spacings are kept as floats: they are used per request)."""
        self.controls = controls
        self.r_step, self.l_step, self.p_step = controls.r_step, controls.l_step, controls.p_step

    def head_r(self) -> float:
        """Effective R tag of the oldest queued request."""
        return self.queue[0].r - self.r_credit

    def head_p(self) -> float:
        """Effective P tag of the oldest queued request."""
        return self.queue[0].p + self.p_shift

    def __repr__(self) -> str:
        return f"<Client {self.name} {len(self.queue)} queued>"


class MClock(Generic[T]):
    """The scheduler of one device: clients (VMs), their tagged queues, and the two phases."""

    def __init__(self, *, weight_only: bool = False, anchor_idle: bool = True) -> None:
        self.weight_only = weight_only
        self.anchor_idle = anchor_idle
        self.clients: list[Client[T]] = []
        self.queued = 0
        #: P tag of the last weight-phase dispatch (virtual now when nothing is queued)
        self._vtime = 0.0
        self._next_order = 0
        #: dispatches per phase since creation
        self.dispatched = {RESERVATION: 0, WEIGHT: 0}
        #: the client of the newest arrival: when one request is queued in all, it is that
        #: client's if its queue is not empty (the common case of a lightly loaded device)
        self._last: Client[T] | None = None

    # -- clients ------------------------------------------------------------------------------

    def add(self, name: str, controls: IoControls) -> Client[T]:
        c: Client[T] = Client(name, controls, self._next_order)
        self._next_order += 1
        self.clients.append(c)
        return c

    def remove(self, client: Client[T]) -> list[T]:
        """Drop a client; returns the items it still had queued (oldest first)."""
        self.clients.remove(client)
        client.active = False
        items = [t.item for t in client.queue]
        self.queued -= len(items)
        client.queue.clear()
        return items

    def set_controls(self, client: Client[T], controls: IoControls, now_us: int) -> None:
        """New controls; the client's queued requests are tagged again as if they arrived now
        (R and L from now, P from where its head stood or the virtual now if later), so a change
        neither grants a burst nor leaves stale tags behind (a limit lifted from a VM whose P tags
        lagged while it was throttled)."""
        old = [(t.item, t.cost) for t in client.queue]
        head_p = client.head_p() if client.queue else client.p_last + client.p_shift
        self.queued -= len(old)
        client.queue.clear()
        client.use(controls)
        client.r_last = client.l_last = -math.inf
        client.r_credit = client.p_shift = 0.0
        client.p_last = max(head_p, self._virtual_now()) - controls.p_step
        for item, cost in old:
            self.enqueue(client, item, now_us, cost)

    # -- arrivals -----------------------------------------------------------------------------

    def _virtual_now(self) -> float:
        if not self.queued:
            return self._vtime
        heads = [c.head_p() for c in self.clients if c.queue]
        return min(heads) if heads else self._vtime

    def enqueue(self, client: Client[T], item: T, now_us: int, cost: float = 1.0) -> Tagged[T]:
        """Tag ``item`` arriving now from ``client`` and queue it.  ``cost``: what the request
        counts for in the weight phase (1: mClock's IOPS; ESX 2.x's consumption units are one per
        command plus a part proportional to its size, esx-design.md 4.1)."""
        if client.r_step != math.inf:
            credit = client.r_credit
            r = client.r_last - credit + client.r_step
            if r < now_us:
                r = now_us
            r += credit
        else:
            r = math.inf
        lim = client.l_last + client.l_step
        if lim < now_us:
            lim = now_us
        p = client.p_last + client.p_shift + client.p_step * cost  # effective
        if not client.queue and (self.anchor_idle or client.p_last == -math.inf):
            # idle (nothing queued): never behind the virtual now (an own queued request is
            # always at or after it, so a backlogged VM is never moved)
            p = max(p, self._virtual_now())
        p -= client.p_shift  # stored raw
        tagged = Tagged(item, r, lim, p, cost)
        client.r_last, client.l_last, client.p_last = r, lim, p
        client.queue.append(tagged)
        self.queued += 1
        self._last = client
        return tagged

    # -- dispatch -----------------------------------------------------------------------------

    def pick(self, now_us: int) -> tuple[Client[T], T, str] | None:
        """The request to send now (client, item, phase), or None if every queued request is
        held back by its limit (ask :meth:`next_eligible_us` when to try again)."""
        if not self.queued:
            return None
        if self.queued == 1:
            only = self._last
            if only is not None and only.queue:
                return self._pick_only(only, now_us)
        best: Client[T] | None = None
        if not self.weight_only:
            best_r = math.inf
            for c in self.clients:
                q = c.queue
                if q:
                    r = q[0].r - c.r_credit
                    if r <= now_us and r < best_r:
                        best, best_r = c, r
            if best is not None:
                self.dispatched[RESERVATION] += 1
                return best, self._pop(best).item, RESERVATION
        best_p = math.inf
        held: list[Client[T]] = []
        weight_only = self.weight_only
        for c in self.clients:
            q = c.queue
            if q:
                head = q[0]
                if weight_only or head.l <= now_us:
                    p = head.p + c.p_shift
                    if p < best_p:
                        best, best_p = c, p
                else:
                    held.append(c)
        if best is None:
            return None
        tagged = self._pop(best)
        self._vtime = best_p
        for c in held:  # a VM its limit holds back does not fall behind in virtual time
            c.p_shift = max(c.p_shift, best_p - c.queue[0].p)
        if not weight_only and best.r_step != math.inf:
            best.r_credit += best.r_step
        self.dispatched[WEIGHT] += 1
        return best, tagged.item, WEIGHT

    def _pick_only(self, c: Client[T], now_us: int) -> tuple[Client[T], T, str] | None:
        """:meth:`pick` when ``c`` holds the one queued request: the same decision and the same
        state changes, without scanning every client twice (no other head to compare, and no
        other VM for the limit rule to move up)."""
        head = c.queue[0]
        weight_only = self.weight_only
        if not weight_only and head.r - c.r_credit <= now_us:
            self.dispatched[RESERVATION] += 1
            return c, self._pop(c).item, RESERVATION
        if not (weight_only or head.l <= now_us):
            return None
        p = head.p + c.p_shift
        if not p < math.inf:
            return None
        self._pop(c)
        self._vtime = p
        if not weight_only and c.r_step != math.inf:
            c.r_credit += c.r_step
        self.dispatched[WEIGHT] += 1
        return c, head.item, WEIGHT

    def _pop(self, client: Client[T]) -> Tagged[T]:
        self.queued -= 1
        return client.queue.popleft()

    def next_eligible_us(self, now_us: int) -> int | None:
        """The first whole µs after ``now_us`` at which :meth:`pick` may find a request (the
        earliest head R or L tag in the future), or None when nothing is queued."""
        soonest = math.inf
        for c in self.clients:
            if c.queue:
                soonest = min(soonest, c.queue[0].l, c.head_r())
        if soonest == math.inf:
            return None
        return max(now_us + 1, math.ceil(soonest))
