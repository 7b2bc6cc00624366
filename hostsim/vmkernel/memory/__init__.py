"""The VMkernel memory manager (esx-design.md 2; W02): one module per mechanism.

- :mod:`.admission` admission control, overhead, consolidation sizing;
- :mod:`.shares` shares, the idle memory tax, min-funding revocation;
- :mod:`.sampling` the working-set estimator;
- :mod:`.pshare` content-based page sharing over the pages' real bytes;
- :mod:`.balloon` the balloon driver; :mod:`.swap` host swapping into a :class:`SwapBacking`;
- :mod:`.states` free-memory states and their reclaim actions;
- :mod:`.vm` one VM's pmap; :mod:`.manager` the :class:`MemoryManager` that runs it all.
"""

from hostsim.vmkernel.memory.admission import AdmissionControl, Sizing, consolidation_sizing, overhead_mb
from hostsim.vmkernel.memory.counters import HostMemCounters, MemCounters
from hostsim.vmkernel.memory.errors import MemAdmissionError, MemConfigError, MemExhaustedError
from hostsim.vmkernel.memory.manager import MemoryManager
from hostsim.vmkernel.memory.shares import mem_shares, min_funding_targets, rho, tax_k
from hostsim.vmkernel.memory.states import FreeMemoryState
from hostsim.vmkernel.memory.swap import MemorySwap, SwapBacking
from hostsim.vmkernel.memory.vm import VmMemory

__all__ = [
    "AdmissionControl", "FreeMemoryState", "HostMemCounters", "MemAdmissionError", "MemConfigError",
    "MemCounters", "MemExhaustedError", "MemoryManager", "MemorySwap", "Sizing", "SwapBacking",
    "VmMemory", "consolidation_sizing", "mem_shares", "min_funding_targets", "overhead_mb", "rho", "tax_k",
]
