"""Water-filling: how much of a resource each of a set of sibling consumers is entitled to.

esx-design.md 3.2 [D]: for siblings ``i`` with demand ``d_i``, reservation ``r_i``, limit ``l_i``
and shares ``s_i`` sharing a capacity ``C``,

    E_i = min(d_i, l_i, max(r_i, s_i * x)),  x chosen so that  sum(E_i) = min(C, sum(min(d_i, l_i))).

Why this shape: a reservation is guaranteed only when it is needed (a consumer demanding less
than it reserved gets its demand, and the rest is lent to its siblings), a limit is never
exceeded, and what is left is divided in proportion to the shares.  The resource-pool tree
(:mod:`hostsim.vmkernel.pools`) applies it recursively: a pool's entitlement becomes the
capacity its children share.  Kept free of the scheduler so the CPU and memory managers and
the tests can all call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claim:
    """One consumer's controls and demand, in one unit (MHz for CPU, MB for memory).

    ``limit`` is ``-1`` for unlimited, as in the vSphere API."""

    shares: float
    reservation: float
    limit: float
    demand: float

    @property
    def cap(self) -> float:
        """The most the consumer can use: its demand, held under its limit."""
        return self.demand if self.limit < 0 else min(self.demand, self.limit)


def water_fill(claims: Sequence[Claim], capacity: float) -> list[float]:
    """The entitlement of each claim (same order) out of ``capacity``.

    The sum of ``clamp(s_i x, floor_i, cap_i)`` is piecewise linear and non-decreasing in
    ``x``, so one sweep over the sorted breakpoints (``floor_i / s_i`` where a consumer starts
    to grow, ``cap_i / s_i`` where it stops) finds ``x``: O(n log n).  When the reservations
    alone exceed what can be given (the parent itself got less than its children reserved),
    they are scaled down in proportion."""
    caps = [c.cap for c in claims]
    floors = [min(max(c.reservation, 0.0), cap) for c, cap in zip(claims, caps, strict=True)]
    target = min(capacity, math.fsum(caps))
    base = math.fsum(floors)
    if base >= target:
        scale = target / base if base > 0 else 0.0
        return [f * scale for f in floors]
    x = _level(claims, floors, caps, target, base)
    return [min(cap, max(floor, c.shares * x)) for c, floor, cap in zip(claims, floors, caps, strict=True)]


def _level(claims: Sequence[Claim], floors: list[float], caps: list[float], target: float, base: float) -> float:
    """The water level ``x`` at which the clamped, share-weighted sum reaches ``target``."""
    events: list[tuple[float, int, float, float]] = []  # (x, order, d slope, d constant)
    for i, (c, floor, cap) in enumerate(zip(claims, floors, caps, strict=True)):
        if c.shares > 0 and cap > floor:
            events.append((floor / c.shares, 2 * i, c.shares, -floor))
            events.append((cap / c.shares, 2 * i + 1, -c.shares, cap))
    events.sort()
    const, slope = base, 0.0
    for x, _, d_slope, d_const in events:
        if slope > 0 and const + slope * x >= target:
            return (target - const) / slope
        const += d_const
        slope += d_slope
    return events[-1][0] if events else 0.0  # every cap reached: the target is the sum of caps
