"""The VMkernel memory manager: admission, allocation targets and reclamation, on the engine.

One process (``memory-balancer``) wakes every simulated second and does, in this order: close the
working-set sampling periods that are due; run the page-sharing scanner for its per-second
quota; re-evaluate the free-memory state; recompute allocation targets by min-funding revocation
with the idle memory tax every balance period (15 s, ``Mem.BalancePeriod``) and whenever the
state changes (the "large change in free memory" trigger); then turn each VM's excess over its
target into a balloon target or a swap target as the state's action says, let every balloon
driver take one poll step, and let the swap daemon page out toward the swap targets.

Guest accesses (:meth:`VmMemory.touch`) happen between ticks, whenever the guest runs.  A page
allocation that finds machine memory exhausted swaps out a random page of the VM furthest above
its target at once (the allocation then waits no longer than the swap daemon would have made it
wait, so that is not charged); in the low state a VM above its target is blocked until the next
tick on every allocation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Generator

from hostsim.vmkernel.engine import MS, SECOND, Engine, Event
from hostsim.vmkernel.memory.admission import AdmissionControl, check_size, overhead_mb
from hostsim.vmkernel.memory.balloon import CEILING, Balloon
from hostsim.vmkernel.memory.counters import HostMemCounters
from hostsim.vmkernel.memory.errors import MemConfigError, MemExhaustedError
from hostsim.vmkernel.memory.pages import MachineMemory, hash64
from hostsim.vmkernel.memory.pshare import PageSharer
from hostsim.vmkernel.memory.sampling import WorkingSetEstimator
from hostsim.vmkernel.memory.shares import Client, mem_shares, min_funding_targets, tax_k
from hostsim.vmkernel.memory.states import FreeMemoryState
from hostsim.vmkernel.memory.swap import MemorySwap, SwapBacking, SwapSpace
from hostsim.vmkernel.memory.vm import VmMemory

TICK_US = SECOND
#: per-mode defaults (esx-design.md 2 and 7)
SAMPLE_PERIOD_US = {"esx2": 30 * SECOND, "esx4": 60 * SECOND}
SCAN_VM_PAGES_S = 50          # ESX 2.x MemShareScanVM
SCAN_TOTAL_PAGES_S = 200      # ESX 2.x MemShareScanTotal
SCAN_TIME_S = 3600            # ESX 4 Mem.ShareScanTime (60 min per VM)
SCAN_MB_S_PER_GHZ = 4         # ESX 4 Mem.ShareScanGHz


class MemoryManager:
    """A host's machine memory and the VMs in it (see the module docstring for the cycle)."""

    def __init__(self, engine: Engine, machine_mb: float, *, mode: str = "esx2", idle_tax: float = 0.75,
                 page_size: int = 4096, vmkernel_mb: float = 24, console_mb: float = 192,
                 swap_mb: float | None = None, seed: int | None = None, host_ghz: float = 4.0,
                 balance_period_us: int = 15 * SECOND, sample_period_us: int | None = None,
                 sample_pages: int = 100, swap_in_us: int = 5 * MS, guest_fault_us: int | None = None,
                 balloon_mb_s: float = 16, swap_mb_s: float = 32,
                 share_scan_vm: int | None = None, share_scan_total: int | None = None,
                 hash_fn: Callable[[bytes], int] = hash64, start: bool = True) -> None:
        if mode not in CEILING:
            raise MemConfigError(f"mode: {mode!r} is neither 'esx2' nor 'esx4'")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 512 \
                or page_size & (page_size - 1):
            raise MemConfigError(f"page_size: {page_size!r} is not a power of two of at least 512")
        check_size("machine memory", machine_mb, positive=True)
        check_size("vmkernel memory", vmkernel_mb)
        check_size("console memory", console_mb)
        self.engine = engine
        self.mode = mode
        self.page_size = page_size
        self.idle_tax = idle_tax
        tax_k(idle_tax)
        self.machine_mb = machine_mb
        self.vmkernel_mb = vmkernel_mb
        self.console_mb = console_mb
        vm_memory = machine_mb - vmkernel_mb - console_mb
        if vm_memory <= 0:
            raise MemConfigError(f"machine memory {machine_mb} MB leaves nothing beyond VMkernel and console")
        self.swap_mb = check_size("swap", machine_mb if swap_mb is None else swap_mb)
        self.admission = AdmissionControl(vm_memory, self.swap_mb, mode)
        self.machine = MachineMemory(self.pages_of(machine_mb), self.pages_of(vmkernel_mb) + self.pages_of(console_mb))
        self.seed = engine.random.randrange(2**63) if seed is None else seed
        self.rng = random.Random(f"{self.seed}:memory")
        self.sharer = PageSharer(self.machine, random.Random(f"{self.seed}:pshare"), hash_fn)
        self.states = FreeMemoryState()
        self.host_ghz = host_ghz
        self.balance_period_us = balance_period_us
        self.sample_period_us = SAMPLE_PERIOD_US[mode] if sample_period_us is None else sample_period_us
        self.sample_pages = sample_pages
        self.swap_in_us = swap_in_us
        self.guest_fault_us = swap_in_us if guest_fault_us is None else guest_fault_us
        self.balloon_rate = max(1, int(balloon_mb_s * 2**20 // page_size))
        self.swap_rate = max(1, int(swap_mb_s * 2**20 // page_size))
        self.share_scan_vm = share_scan_vm      # pages/s per VM (None: the mode's default; 0: off)
        self.share_scan_total = share_scan_total
        self.vms: dict[str, VmMemory] = {}
        self.balance_runs = 0
        self._swr_done = 0  # swap-ins and -outs of VMs powered off since (the host's totals keep them)
        self._sww_done = 0
        self._next_balance = 0
        self._next_tick = TICK_US
        self._ticks = 0
        self.process = engine.process(self._run(), name="memory-balancer") if start else None

    def pages_of(self, mb: float) -> int:
        """MB -> pages, rounded up (an overhead of 113.17 MB reserves whole pages)."""
        return math.ceil(mb * 2**20 / self.page_size)

    # -- power on / off ------------------------------------------------------------------------

    def admit(self, name: str, max_mb: float, min_mb: float = 0, overhead_mb: float | None = None, *,
              vcpus: int = 1, vm_swap_mb: float | None = None) -> None:
        """Raise :class:`MemAdmissionError` if the VM could not power on now (nothing reserved)."""
        check_size(f"{name}: max", max_mb, positive=True)
        ovhd = self._overhead(max_mb, vcpus, overhead_mb)
        self.admission.check(name, max_mb, min_mb, ovhd, vm_swap_mb)

    def overhead_for(self, max_mb: float, vcpus: int = 1, given: float | None = None) -> float:
        """The overhead a VM reserves: ``given`` when set, else the mode's rule."""
        return self._overhead(max_mb, vcpus, given)

    def _overhead(self, max_mb: float, vcpus: int, given: float | None) -> float:
        if given is not None:
            return check_size("overhead", given)
        return overhead_mb(max_mb, vcpus, self.mode)

    def power_on(self, name: str, *, max_mb: float, min_mb: float = 0, shares: int | None = None,
                 overhead_mb: float | None = None, vcpus: int = 1, swap: SwapBacking | None = None,
                 balloon: bool = True, limit_mb: float | None = None) -> VmMemory:
        """Admit, reserve and create a VM's memory (nothing is allocated until the guest touches)."""
        check_size(f"{name}: max", max_mb, positive=True)
        check_size(f"{name}: min", min_mb)
        ovhd = self._overhead(max_mb, vcpus, overhead_mb)
        if shares is None:
            shares = mem_shares("normal", max_mb)
        if isinstance(shares, bool) or not isinstance(shares, int) or shares < 0:
            raise MemConfigError(f"{name}: shares {shares!r} must be an integer of at least 0")
        swap_bytes = None if swap is None else swap.size
        reservation = self.admission.check(name, max_mb, min_mb, ovhd,
                                           None if swap_bytes is None else swap_bytes / 2**20)
        pages = self.pages_of(max_mb)
        limit = pages if limit_mb is None else min(pages, self.pages_of(check_size(f"{name}: limit", limit_mb)))
        if limit < self.pages_of(min_mb):
            raise MemConfigError(f"{name}: limit {limit_mb} MB is below min {min_mb} MB")
        if swap is None:
            swap = MemorySwap(self.pages_of(max_mb - min_mb) * self.page_size, self.page_size)
        rng = random.Random(f"{self.seed}:vm:{name}")
        vm = VmMemory(
            self, name, pages=pages, min_pages=self.pages_of(min_mb), limit_pages=limit, shares=shares,
            overhead_mb=ovhd, swap=SwapSpace(swap, self.page_size),
            balloon=Balloon(pages, int(pages * CEILING[self.mode]), self.balloon_rate, balloon),
            estimator=WorkingSetEstimator(pages, random.Random(f"{self.seed}:sample:{name}"), n=self.sample_pages),
            rng=rng)
        vm.next_sample_us = self.engine.now + self.sample_period_us
        self.admission.reserve(reservation)
        self.machine.fixed += self.pages_of(ovhd)
        self.vms[name] = vm
        self._next_balance = self.engine.now  # a new VM changes every target
        return vm

    def power_off(self, vm: VmMemory) -> None:
        """Free everything the VM holds: its pages, its swap slots, its reservation."""
        if self.vms.get(vm.name) is not vm:
            raise MemConfigError(f"{vm.name}: not powered on")
        for ppn in list(vm.resident):
            vm.release(ppn)
        for ppn in list(vm.swap.swapped):
            vm.swap.drop(ppn)
        for ppn in list(vm.hints):
            self.sharer.forget_hint(vm, ppn)
        vm.balloon.pinned.clear()
        self._swr_done += vm.swap.swr
        self._sww_done += vm.swap.sww
        vm.powered_on = False
        del self.vms[vm.name]
        self.admission.release(vm.name)
        self.machine.fixed -= self.pages_of(vm.overhead_mb)
        self._next_balance = self.engine.now

    # -- controls -----------------------------------------------------------------------------

    def set_idle_tax(self, tau: float) -> None:
        """Change the idle memory tax (``Mem.IdleTax``); targets are recomputed at once."""
        tax_k(tau)
        self.idle_tax = tau
        self.balance()

    def set_limit(self, vm: VmMemory, limit_mb: float | None) -> None:
        """An ESX 4 style memory limit (None = the configured size); recomputes the targets."""
        limit = vm.pages if limit_mb is None else self.pages_of(check_size(f"{vm.name}: limit", limit_mb))
        if limit < vm.min_pages:
            raise MemConfigError(f"{vm.name}: limit {limit_mb} MB is below its min")
        vm.limit_pages = min(vm.pages, limit)
        self.balance()

    # -- allocation ----------------------------------------------------------------------------

    def allocate(self, vm: VmMemory) -> int:
        """Take one machine page for ``vm``; returns the µs the VM is blocked first (low state)."""
        delay = 0
        if self.states.state == "low" and vm.mapped >= vm.target_pages:
            delay = max(1, self._next_tick - self.engine.now)
            vm.blocked_us += delay
        machine = self.machine
        while machine.free <= 0:
            if not self._swap_out_one():
                raise MemExhaustedError(f"{vm.name}: machine memory exhausted and nothing left to swap")
        machine.used += 1
        return delay

    def _swap_out_one(self) -> bool:
        """Page out one random page of the VM furthest above its target that can swap."""
        candidates = [v for v in self.vms.values() if v.resident and not v.swap.full()]
        if not candidates:
            return False
        victim = max(candidates, key=lambda v: v.mapped - v.target_pages)
        return victim.swap_out_random()

    # -- the periodic cycle ------------------------------------------------------------------

    def _run(self) -> Generator[Event, object, None]:
        while True:
            yield self.engine.timeout(TICK_US)
            self._next_tick = self.engine.now + TICK_US
            self.tick()

    def tick(self) -> None:
        """One second of the VMkernel's memory work (the balancer process calls it)."""
        now = self.engine.now
        self._ticks += 1
        for vm in self.vms.values():
            while now >= vm.next_sample_us:
                vm.estimator.end_period()
                vm.next_sample_us += self.sample_period_us
        self._scan_shares()
        before = self.states.state
        state = self.update_state()
        if state != before or now >= self._next_balance:
            self.balance()
        self._reclaim()
        self.update_state()

    def update_state(self) -> str:
        """Apply the free-memory transition rules to the current free memory."""
        return self.states.update(self.machine.free / self.machine.total)

    def balance(self) -> None:
        """Allocation targets: min-funding revocation with the idle tax, keeping 6 % free."""
        self.balance_runs += 1
        self._next_balance = self.engine.now + self.balance_period_us
        minfree = math.ceil(self.machine.total * self.states.thresholds["high"])
        saving = self.sharer.mappings - self.sharer.frames
        available = self.machine.total - self.machine.fixed - minfree + saving
        clients = [Client(vm.name, vm.shares, vm.min_pages, max(vm.min_pages, min(vm.limit_pages, vm.claimed)),
                          min(vm.active_pages(), vm.pages)) for vm in self.vms.values()]
        targets = min_funding_targets(clients, available, self.idle_tax)
        for vm in self.vms.values():
            # a VM that got all it claims is unconstrained: it may grow up to its limit until the
            # next balance; one held below its claim is held there
            target = targets[vm.name]
            vm.target_pages = vm.limit_pages if target >= vm.claimed else min(vm.limit_pages, target)

    def _reclaim(self) -> None:
        state = self.states.state
        for vm in self.vms.values():
            need = vm.mapped - vm.target_pages
            balloon = vm.balloon
            rest = 0
            action = state
            cap = vm.min_pages if vm.shares == 0 else vm.limit_pages  # ESX2: 0 shares pins at min
            if state == "high" and vm.mapped > cap:
                action, need = "soft", vm.mapped - cap  # a limit holds even on a free host
            if need <= 0:
                balloon.set_target(balloon.size + need)  # deflate toward the target
            elif action == "high":
                balloon.set_target(min(balloon.target, balloon.size + need))  # finish, never grow
            elif action == "soft" and balloon.present:
                balloon.set_target(balloon.size + need)
                rest = need - (balloon.target - balloon.size)
            else:  # soft without a driver, hard, low: swap it all, and the balloon stops where
                balloon.set_target(balloon.size)  # it is (else both would take the same pages)
                rest = need
            vm.swap_target = len(vm.swap.swapped) + max(0, rest)
            pinned, _released = balloon.step()
            for ppn in pinned:
                vm.pin(ppn)
            for _ in range(min(self.swap_rate, vm.swap_target - len(vm.swap.swapped))):
                if not vm.swap_out_random():
                    break

    def _scan_shares(self) -> None:
        vms = list(self.vms.values())
        if not vms:
            return
        if self.share_scan_vm is not None:
            per_vm = [self.share_scan_vm] * len(vms)
        elif self.mode == "esx2":
            per_vm = [SCAN_VM_PAGES_S] * len(vms)
        else:
            per_vm = [math.ceil(vm.pages / SCAN_TIME_S) for vm in vms]
        if self.share_scan_total is not None:
            total = self.share_scan_total
        elif self.mode == "esx2":
            total = SCAN_TOTAL_PAGES_S
        else:
            total = int(SCAN_MB_S_PER_GHZ * self.host_ghz * 2**20 // self.page_size)
        if sum(per_vm) > total:  # share the total cap evenly, the remainder rotating
            base, extra = divmod(total, len(vms))
            per_vm = [min(p, base + (1 if (i - self._ticks) % len(vms) < extra else 0)) for i, p in enumerate(per_vm)]
        for vm, quota in zip(vms, per_vm, strict=True):
            self.sharer.scan(vm, quota)

    # -- figures -------------------------------------------------------------------------------

    def counters(self) -> HostMemCounters:
        mb = self.page_size / 2**20
        sharer = self.sharer
        return HostMemCounters(
            state=self.states.state, free_mb=self.machine.free * mb,
            pshare_shared_mb=sharer.mappings * mb, pshare_common_mb=sharer.frames * mb,
            pshare_saving_mb=(sharer.mappings - sharer.frames) * mb,
            balloon_mb=sum(vm.balloon.size for vm in self.vms.values()) * mb,
            swap_used_mb=sum(len(vm.swap.swapped) for vm in self.vms.values()) * mb,
            machine_mb=self.machine.total * mb, vmkernel_mb=self.vmkernel_mb, console_mb=self.console_mb,
            minfree_mb=self.machine.total * self.states.thresholds["high"] * mb,
            unreserved_mb=self.admission.vm_memory_mb - self.admission.reserved_mb,
            swap_target_mb=sum(vm.swap_target for vm in self.vms.values()) * mb,
            swr_pages=self._swr_done + sum(vm.swap.swr for vm in self.vms.values()),
            sww_pages=self._sww_done + sum(vm.swap.sww for vm in self.vms.values()),
            used_mb=self.machine.used * mb,
            overhead_mb=sum(vm.overhead_mb for vm in self.vms.values()),
            reserved_mb=self.admission.reserved_mb, swap_reserved_mb=self.admission.swap_reserved_mb,
            pshare_scanned_pages=sharer.scanned, pshare_false_matches=sharer.false_matches,
            state_changes=self.states.changes, balance_runs=self.balance_runs)
