"""One VM's memory as the VMkernel holds it: the pmap from guest pages to machine pages.

A guest page (PPN) is in exactly one of these places: nowhere (never touched, or given back by
the balloon: it reads as zeros and holds no machine page), resident private (``pmap`` holds its
``bytes``; all-zero pages are the one zero-page object), resident shared (``pmap`` holds the
:class:`Frame` it maps copy-on-write), swapped (its bytes are in the VM's swap backing), or pinned
by the balloon.  :meth:`touch` is the guest's access; it returns the microseconds the vCPU must
wait (a swap-in, a page the guest had to take back from its balloon, a block in the low state).
"""

from __future__ import annotations

import random
from typing import Protocol

from hostsim.vmkernel.memory.balloon import Balloon
from hostsim.vmkernel.memory.counters import MemCounters
from hostsim.vmkernel.memory.errors import MemConfigError
from hostsim.vmkernel.memory.pages import Frame, IndexedSet, MachineMemory, zero_page
from hostsim.vmkernel.memory.pshare import Hint, PageSharer
from hostsim.vmkernel.memory.sampling import WorkingSetEstimator
from hostsim.vmkernel.memory.swap import SwapSpace


class MemoryManager(Protocol):
    """What a VM's memory needs of the manager (:class:`hostsim.vmkernel.memory.manager.
    MemoryManager`); a protocol so the two modules do not import each other."""

    page_size: int
    sharer: PageSharer
    machine: MachineMemory
    swap_in_us: int
    guest_fault_us: int

    def allocate(self, vm: VmMemory) -> int: ...


class VmMemory:
    """A powered-on VM's memory: made by :meth:`MemoryManager.power_on`."""

    def __init__(self, manager: MemoryManager, name: str, *, pages: int, min_pages: int,
                 limit_pages: int, shares: int, overhead_mb: float, swap: SwapSpace,
                 balloon: Balloon, estimator: WorkingSetEstimator, rng: random.Random) -> None:
        self.manager = manager
        self.name = name
        self.pages = pages
        self.min_pages = min_pages
        self.limit_pages = limit_pages
        self.shares = shares
        self.overhead_mb = overhead_mb
        self.swap = swap
        self.balloon = balloon
        self.estimator = estimator
        self.rng = rng
        self.powered_on = True
        self.pmap: dict[int, bytes | Frame] = {}
        self.resident = IndexedSet()
        self.hints: dict[int, Hint] = {}  # pages left as hints in the sharing table
        self.shared_pages = 0
        self.target_pages = pages
        self.swap_target = 0
        self.blocked_us = 0
        self.swap_wait_us = 0
        self.zero = zero_page(manager.page_size)
        self.next_sample_us = 0

    # -- the guest's accesses ---------------------------------------------------------------

    def touch(self, ppn: int, data: bytes | None = None) -> int:
        """The guest reads (``data`` None) or writes a whole page; returns the µs to wait.

        Hot path first: a resident page is in ``pmap``, which also proves the page number valid
        and the VM powered on (power-off empties it)."""
        entry = self.pmap.get(ppn)
        estimator = self.estimator
        if ppn in estimator.sample:
            estimator.touched.add(ppn)
        delay = 0
        if entry is None:
            if isinstance(ppn, bool) or not isinstance(ppn, int) or not 0 <= ppn < self.pages:
                raise MemConfigError(f"{self.name}: page {ppn!r} is outside its {self.pages} pages")
            if not self.powered_on:
                raise MemConfigError(f"{self.name}: powered off")
            entry, delay = self._fault_in(ppn)
        if data is not None:
            data = self._normalize(data)
            if isinstance(entry, Frame):  # copy on write, whatever is written
                self.manager.sharer.unmap(self, entry)
                delay += self.manager.allocate(self)
            self.pmap[ppn] = data
        return delay

    def _fault_in(self, ppn: int) -> tuple[bytes | Frame, int]:
        """Make a non-resident page resident: from swap, back from the balloon, or fresh."""
        mgr = self.manager
        delay = mgr.allocate(self)
        if ppn in self.swap.swapped:
            data = self.swap.take(ppn)
            entry: bytes | Frame = self.zero if data == self.zero else data
            delay += mgr.swap_in_us
            self.swap_wait_us += mgr.swap_in_us
        else:
            if ppn in self.balloon.pinned:
                self.balloon.give_back(ppn)
                delay += mgr.guest_fault_us
            entry = self.zero
        self.pmap[ppn] = entry
        self.resident.add(ppn)
        return entry, delay

    def _normalize(self, data: bytes) -> bytes:
        if len(data) != self.manager.page_size:
            raise MemConfigError(f"{self.name}: a page write is {self.manager.page_size} bytes, not {len(data)}")
        if not isinstance(data, bytes):
            data = bytes(data)
        return self.zero if data == self.zero else data

    def read_page(self, ppn: int) -> bytes:
        """The page's contents as the guest sees them, without touching it (no fault, no sample)."""
        if not 0 <= ppn < self.pages:
            raise MemConfigError(f"{self.name}: page {ppn} is outside its {self.pages} pages")
        entry = self.pmap.get(ppn)
        if isinstance(entry, Frame):
            return entry.data
        if entry is not None:
            return entry
        if ppn in self.swap.swapped:
            return self.swap.peek(ppn)
        return self.zero

    def is_ballooned(self, ppn: int) -> bool:
        """True when the guest has given ``ppn`` to its balloon (a guest-aware workload skips it)."""
        return ppn in self.balloon.pinned

    # -- the VMkernel taking pages away -------------------------------------------------------

    def release(self, ppn: int) -> bytes | None:
        """Drop a resident page from memory and return its bytes (None when not resident)."""
        entry = self.pmap.pop(ppn, None)
        if entry is None:
            return None
        self.resident.discard(ppn)
        if ppn in self.hints:
            self.manager.sharer.forget_hint(self, ppn)
        if isinstance(entry, Frame):
            self.manager.sharer.unmap(self, entry)
            return entry.data
        self.manager.machine.used -= 1
        return entry

    def swap_out_random(self) -> bool:
        """Page out one random resident page (W02: the swap daemon chooses at random)."""
        if not self.resident or self.swap.full():
            return False
        ppn = self.resident.choice(self.rng)
        data = self.release(ppn)
        assert data is not None
        self.swap.put(ppn, data)
        return True

    def pin(self, ppn: int) -> None:
        """The guest gave ``ppn`` to the balloon: its contents are gone, its memory is free."""
        self.release(ppn)
        self.swap.drop(ppn)

    # -- figures ----------------------------------------------------------------------------

    @property
    def mapped(self) -> int:
        """Guest pages backed by machine memory (shared ones counted in full)."""
        return len(self.resident)

    @property
    def claimed(self) -> int:
        """Pages the VM holds or had taken from it: what it would use without reclamation."""
        return min(self.pages, len(self.resident) + len(self.swap.swapped) + self.balloon.size)

    def active_pages(self) -> float:
        return self.estimator.estimate() * self.pages

    def counters(self) -> MemCounters:
        mb = self.manager.page_size / 2**20
        return MemCounters(
            memsz_mb=self.pages * mb, grant_mb=self.mapped * mb, sztgt_mb=self.target_pages * mb,
            tchd_mb=round(self.active_pages() * mb, 6), active_pct=round(self.estimator.estimate() * 100, 6),
            mctl_sz_mb=self.balloon.size * mb, mctl_tgt_mb=self.balloon.target * mb,
            mctl_max_mb=self.balloon.ceiling * mb, swcur_mb=len(self.swap.swapped) * mb,
            swtgt_mb=self.swap_target * mb, swr_pages=self.swap.swr, sww_pages=self.swap.sww,
            shared_mb=self.shared_pages * mb, ovhd_mb=self.overhead_mb,
            shares=self.shares, min_mb=self.min_pages * mb, zero_mb=self._zero_pages() * mb,
            balloon_faults=self.balloon.faults, blocked_us=self.blocked_us,
            swap_wait_us=self.swap_wait_us, mctl_present=self.balloon.present,
        )

    def _zero_pages(self) -> int:
        zero = self.zero
        return sum(1 for e in self.pmap.values() if e is zero or (isinstance(e, Frame) and e.data is zero))
