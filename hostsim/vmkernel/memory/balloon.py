"""The balloon driver (vmmemctl) of one VM (W02 section 3.2).

The driver inside the guest polls the VMkernel for its target once a second and moves toward it
at a limited rate: inflating, it asks the guest OS for pages, pins them and reports them, and the
VMkernel frees their machine pages; deflating, it unpins pages and gives them back to the guest
(they come back empty: a guest page the guest has not touched since holds no machine memory).
The guest chooses which pages to give up, so the VMkernel never pages out what the guest is
using (no double paging).  The ceiling is ``sched.mem.maxmemctl`` = 50 % of configured memory in
ESX 2.x, ``Mem.CtlMaxPercent`` = 65 % in ESX 4; what the target asks beyond it is left to host
swapping.

Which pages the guest gives: a :data:`PickPolicy` (the VMM's guest can supply its own); the
default gives the highest-numbered pages not already in the balloon, as a guest whose page
allocator hands out low memory first would.  The rate limit is ours [A]: 16 MB/s.
"""

from __future__ import annotations

from collections.abc import Callable

#: picks ``count`` guest pages to pin (pages not in the balloon), best first
PickPolicy = Callable[[int], list[int]]

CEILING = {"esx2": 0.50, "esx4": 0.65}


class Balloon:
    """Target, size and pinned pages of one VM's balloon."""

    def __init__(self, pages: int, ceiling_pages: int, rate_pages: int, present: bool = True) -> None:
        self.pages = pages
        self.ceiling = ceiling_pages
        self.rate = max(1, rate_pages)
        self.present = present
        self.target = 0
        self.pinned: set[int] = set()
        self._order: list[int] = []
        self._cursor = pages - 1
        self.policy: PickPolicy = self._top_pages
        self.faults = 0  # guest touched a page it had given the balloon (it took it back)

    @property
    def size(self) -> int:
        return len(self.pinned)

    def set_target(self, pages: int) -> None:
        """The VMkernel's wish; the driver never goes above its ceiling."""
        self.target = max(0, min(self.ceiling, pages)) if self.present else 0

    def step(self) -> tuple[list[int], list[int]]:
        """One poll: (pages to pin now, pages to give back now), at most ``rate`` of either."""
        gap = self.target - self.size
        if gap > 0:
            picked = [p for p in self.policy(min(gap, self.rate)) if 0 <= p < self.pages and p not in self.pinned]
            for ppn in picked:
                self.pinned.add(ppn)
                self._order.append(ppn)
            return picked, []
        released: list[int] = []
        while gap < 0 and self._order:
            ppn = self._order.pop()
            if ppn in self.pinned:
                self.pinned.discard(ppn)
                released.append(ppn)
                self._cursor = max(self._cursor, ppn)
                gap += 1
                if len(released) >= self.rate:
                    break
        return [], released

    def give_back(self, ppn: int) -> None:
        """The guest reclaimed a pinned page by touching it (it was under memory pressure)."""
        self.pinned.discard(ppn)
        self._cursor = max(self._cursor, ppn)
        self.faults += 1

    def _top_pages(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count and self._cursor >= 0:
            if self._cursor not in self.pinned:
                out.append(self._cursor)
            self._cursor -= 1
        return out
