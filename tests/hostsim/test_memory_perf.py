"""What the memory manager costs in wall time per simulated second (the host's goal is at least
100 simulated seconds per wall second with 8 VMs, everything included).

Figures for 1 and 8 VMs of 256 MB (4 KiB pages, 64 MB of each touched at boot, the guest then
touching the lower 128 MB at random), on a host where that fits (200 MB per VM) and on one that
is overcommitted (100 MB per VM: balloon and swap at work): the manager alone (its once-a-second cycle: sampling,
the share scanner at its rate cap, balancing, balloon polls, the swap daemon), and the same with
each guest touching 1,000 pages per simulated second (a third of them writes), the guest loop's
own cost included.  The assertion is on the manager alone, with room for a loaded machine."""

from __future__ import annotations

import random
import time
from collections.abc import Generator

from hostsim.vmkernel.engine import MS, SECOND, Engine, Event
from hostsim.vmkernel.memory import MemoryManager, VmMemory

SIM_SECONDS = 60


def guest(engine: Engine, vm: VmMemory, rng: random.Random, per_second: int,
          pages: list[bytes]) -> Generator[Event, None, None]:
    """Touches ``per_second`` pages per simulated second in 10 ms batches, skipping pages the
    guest gave its balloon; waits what the VMkernel says each touch costs."""
    batch = per_second // 100
    span = vm.pages // 2  # the active half of the VM
    while True:
        delay = 0
        for _ in range(batch):
            ppn = rng.randrange(span)
            if not vm.is_ballooned(ppn):
                delay += vm.touch(ppn, pages[ppn % len(pages)] if rng.random() < 0.33 else None)
        yield engine.timeout(10 * MS + delay)


def measure(vms: int, touches: int, per_vm_mb: int) -> tuple[float, dict[str, float]]:
    engine = Engine(vms)
    machine = 24 + 192 + vms * (54 + per_vm_mb)
    mem = MemoryManager(engine, machine, seed=vms, swap_mb=vms * 256)
    rng = random.Random(vms)
    contents = [rng.randbytes(4096) for _ in range(256)]
    for i in range(vms):
        vm = mem.power_on(f"vm{i}", max_mb=256)
        for ppn in range(64 * 256):
            vm.touch(ppn, contents[ppn % 256] if ppn % 4 else None)
        if touches:
            engine.process(guest(engine, vm, random.Random(i), touches, contents), name=f"guest{i}")
    t0 = time.perf_counter()
    engine.run(until=SIM_SECONDS * SECOND)
    wall = time.perf_counter() - t0
    c = mem.counters()
    return wall / SIM_SECONDS, {"balloon": c.balloon_mb, "swap": c.swap_used_mb, "shared": c.pshare_shared_mb}


def test_memory_manager_cost_per_simulated_second() -> None:
    rows = []
    for per_vm_mb, label in ((200, "fits"), (100, "overcommitted")):
        for vms in (1, 8):
            for touches in (0, 1000):
                per_s, state = measure(vms, touches, per_vm_mb)
                rows.append((label, vms, touches, per_s, state))
    print("\nmemory manager cost (wall ms per simulated second; simulated s per wall s)")
    print(f"  {'host':<14} {'VMs':>3} {'touches/s/VM':>13} {'wall ms/sim s':>14} {'sim s/wall s':>13}   state")
    for label, vms, touches, per_s, state in rows:
        print(f"  {label:<14} {vms:>3} {touches:>13} {1000 * per_s:>14.2f} {1 / per_s:>13.0f}   "
              f"balloon {state['balloon']:.0f} MB, swap {state['swap']:.0f} MB, shared {state['shared']:.0f} MB")
    alone_8 = [per_s for _, vms, touches, per_s, _ in rows if vms == 8 and touches == 0]
    assert all(1 / per_s >= 100 for per_s in alone_8)  # the manager's own cycle leaves the host its budget
    assert any(state["balloon"] > 0 for *_, state in rows)  # the overcommitted host did reclaim
