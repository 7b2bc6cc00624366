"""The working-set estimator: statistical sampling of a VM's pages (W02 section 5.3).

Each sampling period picks ``n`` random guest pages and "invalidates" them; the touches the VM
makes to them during the period are counted (the first touch of each), so ``f = t / n`` is the
active fraction of the VM's memory, measured without any help from the guest.  Three averages
are kept: a slow EWMA and a fast EWMA of the per-period fractions, and the fast EWMA fed with
the current period's partial count; the estimate is the largest of the three, so it follows a
rise within a period or two and lets a fall through only at the slow average's pace.

Defaults: 100 pages per 30 s (ESX 2.x ``MemSamplePeriod``; 60 s in ESX 4 mode).  The EWMA
weights are ours [A]: fast 0.8 (90 % of a step up within two periods), slow 0.1 (a step down
takes about seven periods to fall halfway).  A VM starts at "fully active" (no tax before the
first measurements).  Simplified: the period runs in simulated time, not VM execution time.
"""

from __future__ import annotations

import random


class WorkingSetEstimator:
    """Active-fraction estimate of one VM of ``pages`` guest pages."""

    __slots__ = ("alpha_fast", "alpha_slow", "fast", "n", "pages", "periods", "rng", "sample",
                 "slow", "touched")

    def __init__(self, pages: int, rng: random.Random, *, n: int = 100, alpha_fast: float = 0.8,
                 alpha_slow: float = 0.1, initial: float = 1.0) -> None:
        self.pages = pages
        self.rng = rng
        self.n = min(n, pages)
        self.alpha_fast = alpha_fast
        self.alpha_slow = alpha_slow
        self.fast = initial
        self.slow = initial
        self.periods = 0
        self.sample: set[int] = set()
        self.touched: set[int] = set()
        self._new_sample()

    def _new_sample(self) -> None:
        self.sample = set(self.rng.sample(range(self.pages), self.n))
        self.touched = set()

    def note(self, ppn: int) -> None:
        """The guest touched ``ppn``: counted if it is one of this period's sampled pages."""
        if ppn in self.sample:
            self.touched.add(ppn)

    def partial(self) -> float:
        """The fraction of this period's sample touched so far."""
        return len(self.touched) / self.n

    def end_period(self) -> float:
        """Close the period: fold its fraction into both averages, draw the next sample."""
        f = self.partial()
        self.fast += self.alpha_fast * (f - self.fast)
        self.slow += self.alpha_slow * (f - self.slow)
        self.periods += 1
        self._new_sample()
        return f

    def estimate(self) -> float:
        """max(slow, fast, fast-with-current): the active fraction the tax uses."""
        current = self.fast + self.alpha_fast * (self.partial() - self.fast)
        return max(self.slow, self.fast, current)
