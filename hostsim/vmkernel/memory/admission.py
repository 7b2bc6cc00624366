"""Memory admission control, the per-VM overhead estimate and the consolidation sizing rule.

ESX 2.x (W02, ESX2 Administration Guide): a VM powers on only if *unreserved machine memory*
covers its ``min + overhead`` and *unreserved swap* (one host-wide swap file) covers
``max - min``.  Overhead is 54 MB for a 1-vCPU VM and 64 MB for a 2-vCPU VM up to 512 MB of VM
memory, plus 32 MB per additional GB above that (the guide's example: 1 vCPU, 2 GB -> 102 MB).

ESX 4 mode (vSphere 4.0 Resource Management Guide): the memory rule is the same (reservation +
overhead against unreserved memory) with the 4.0 overhead table (Table 3-2, interpolated
linearly, extrapolated with the last slope); there is no host swap pool: each VM gets its own
``.vswp`` of ``max - min`` (configured minus reservation) at power-on, so the swap check is that
the VM's own swap backing is at least that large.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hostsim.vmkernel.memory.errors import MemAdmissionError, MemConfigError

#: ESX 4.0 overhead table (MB of VM memory -> MB of overhead) per vCPU count (RMG 4.0, Table 3-2)
ESX4_OVERHEAD: dict[int, tuple[tuple[int, float], ...]] = {
    1: ((256, 113.17), (512, 116.68), (1024, 123.73), (2048, 137.81), (4096, 165.98),
        (8192, 222.30), (16384, 334.96), (32768, 560.27), (65536, 1011.21)),
    2: ((256, 159.43), (512, 164.96), (1024, 176.05), (2048, 198.20), (4096, 242.51)),
    4: ((256, 241.62), (512, 247.17), (1024, 258.30), (2048, 280.53), (4096, 324.99)),
}


def check_size(what: str, value: float, *, positive: bool = False) -> float:
    """``value`` as a number of MB, or a one-line :class:`MemConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise MemConfigError(f"{what}: {value!r} is not a size in MB")
    if value < 0 or (positive and value == 0):
        raise MemConfigError(f"{what}: {value} MB must be {'above' if positive else 'at least'} 0")
    return value


def overhead_mb(max_mb: float, vcpus: int = 1, mode: str = "esx2") -> float:
    """The overhead memory a VM of ``max_mb`` and ``vcpus`` reserves at power-on."""
    check_size("memory size", max_mb, positive=True)
    if mode == "esx2":
        if vcpus not in (1, 2):
            raise MemConfigError(f"vcpus: ESX 2.x runs 1 or 2 vCPUs per VM, not {vcpus}")
        base = 54.0 if vcpus == 1 else 64.0
        return base + 32.0 * max(0.0, max_mb - 512) / 1024
    if mode != "esx4":
        raise MemConfigError(f"mode: {mode!r} is neither 'esx2' nor 'esx4'")
    if vcpus not in ESX4_OVERHEAD:
        raise MemConfigError(f"vcpus: the ESX 4 overhead table has 1, 2 or 4 vCPUs, not {vcpus}")
    return _interpolate(ESX4_OVERHEAD[vcpus], max_mb)


def _interpolate(table: tuple[tuple[int, float], ...], x: float) -> float:
    """Piecewise-linear through ``table``; beyond either end the nearest segment's slope."""
    for (x0, y0), (x1, y1) in itertools.pairwise(table):
        if x <= x1 or (x1, y1) == table[-1]:
            return round(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 2)
    return table[-1][1]  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class Reservation:
    """What one powered-on VM holds against the host: memory (min + overhead) and swap."""

    name: str
    mem_mb: float
    swap_mb: float


class AdmissionControl:
    """The host's ledger of reservations; :meth:`check` refuses what the rules refuse."""

    def __init__(self, vm_memory_mb: float, swap_mb: float, mode: str) -> None:
        self.vm_memory_mb = vm_memory_mb
        self.swap_mb = swap_mb
        self.mode = mode
        self.reservations: dict[str, Reservation] = {}

    @property
    def reserved_mb(self) -> float:
        return sum(r.mem_mb for r in self.reservations.values())

    @property
    def swap_reserved_mb(self) -> float:
        return sum(r.swap_mb for r in self.reservations.values())

    def check(self, name: str, max_mb: float, min_mb: float, overhead: float,
              vm_swap_mb: float | None = None) -> Reservation:
        """The reservation a VM would take, or :class:`MemAdmissionError` saying why not."""
        check_size(f"{name}: max", max_mb, positive=True)
        check_size(f"{name}: min", min_mb)
        check_size(f"{name}: overhead", overhead)
        if min_mb > max_mb:
            raise MemConfigError(f"{name}: min {min_mb} MB is above max {max_mb} MB")
        if name in self.reservations:
            raise MemConfigError(f"{name}: already powered on")
        need = min_mb + overhead
        unreserved = self.vm_memory_mb - self.reserved_mb
        if need > unreserved:
            raise MemAdmissionError(
                "insufficient memory",
                f"{name}: insufficient memory: min + overhead = {min_mb:g} + {overhead:g} = "
                f"{need:g} MB > {unreserved:g} MB unreserved")
        swap_need = max_mb - min_mb
        if self.mode == "esx2":
            swap_free = self.swap_mb - self.swap_reserved_mb
            if swap_need > swap_free:
                raise MemAdmissionError(
                    "insufficient swap",
                    f"{name}: insufficient swap: max - min = {max_mb:g} - {min_mb:g} = "
                    f"{swap_need:g} MB > {swap_free:g} MB unreserved swap")
        elif vm_swap_mb is not None and swap_need > vm_swap_mb:
            raise MemAdmissionError(
                "insufficient swap",
                f"{name}: insufficient swap: the swap file needs max - min = {swap_need:g} MB, "
                f"its backing holds {vm_swap_mb:g} MB")
        return Reservation(name, need, swap_need if self.mode == "esx2" else 0.0)

    def reserve(self, reservation: Reservation) -> None:
        self.reservations[reservation.name] = reservation

    def release(self, name: str) -> None:
        self.reservations.pop(name, None)


@dataclass(frozen=True)
class Sizing:
    """The ESX 2.x sizing example's figures (Administration Guide, "Sizing")."""

    required_mb: float
    physical_mb: float
    overhead_mb: float


def consolidation_sizing(vms: int, vm_mb: float, *, overhead: float = 54.0, vmkernel_mb: float = 24.0,
                         console_mb: float = 192.0, free_reserve: float = 0.06,
                         sharing: float = 0.0) -> Sizing:
    """Machine memory for ``vms`` VMs of ``vm_mb``: VMkernel + console + (1 + reserve) x
    n x (vm + overhead), minus the page-sharing saving (``sharing`` of the VMs' memory).

    ``overhead_mb`` is what the host needs beyond the ``n x vm_mb`` of as many physical servers;
    negative when sharing saves more than virtualization costs."""
    check_size("vm_mb", vm_mb, positive=True)
    if not 0 <= sharing < 1 or not 0 <= free_reserve < 1:
        raise MemConfigError(f"sharing {sharing} and free_reserve {free_reserve} must be in [0, 1)")
    physical = vms * vm_mb
    required = vmkernel_mb + console_mb + (1 + free_reserve) * vms * (vm_mb + overhead)
    required -= sharing * physical
    return Sizing(required, physical, required - physical)
