"""The memory panel's counters (esx-design.md 6.3): per VM and per host.

Sizes (``*_mb``) are the value at the time of the sample; counts and times (``*_pages``,
``*_us``) are cumulative since the object was created, so esxtop takes differences."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemCounters:
    """One VM: esxtop MEMSZ, GRANT, SZTGT, TCHD, %ACTV, MCTLSZ/TGT/MAX, SWCUR, SWTGT, SWR, SWW,
    SHRD, OVHD; then ours: shares, min, zero pages, balloon faults, time blocked and in swap-in."""

    memsz_mb: float
    grant_mb: float
    sztgt_mb: float
    tchd_mb: float
    active_pct: float
    mctl_sz_mb: float
    mctl_tgt_mb: float
    mctl_max_mb: float
    swcur_mb: float
    swtgt_mb: float
    swr_pages: int
    sww_pages: int
    shared_mb: float
    ovhd_mb: float
    shares: int = 0
    min_mb: float = 0.0
    zero_mb: float = 0.0
    balloon_faults: int = 0
    blocked_us: int = 0
    swap_wait_us: int = 0
    mctl_present: bool = True


@dataclass(frozen=True)
class HostMemCounters:
    """The host: free-memory state, free memory, PSHARE shared/common/saving, balloon and swap
    totals; then machine, VMkernel, console, minFree (the high threshold) and unreserved memory,
    the swap target and the pages swapped in/out (cumulative), used, overhead, reservations,
    scanner figures."""

    state: str
    free_mb: float
    pshare_shared_mb: float
    pshare_common_mb: float
    pshare_saving_mb: float
    balloon_mb: float
    swap_used_mb: float
    machine_mb: float = 0.0
    vmkernel_mb: float = 0.0
    console_mb: float = 0.0
    minfree_mb: float = 0.0
    unreserved_mb: float = 0.0
    swap_target_mb: float = 0.0
    swr_pages: int = 0
    sww_pages: int = 0
    used_mb: float = 0.0
    overhead_mb: float = 0.0
    reserved_mb: float = 0.0
    swap_reserved_mb: float = 0.0
    pshare_scanned_pages: int = 0
    pshare_false_matches: int = 0
    state_changes: int = 0
    balance_runs: int = 0
