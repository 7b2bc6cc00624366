"""Memory shares, the idle memory tax and min-funding revocation (W02 section 5).

Why water-filling and not page-by-page: min-funding revocation takes each page from the client
with the lowest adjusted shares-per-page ratio

    rho = S / (P * (f + k * (1 - f))),   k = 1 / (1 - tau),

which raises that client's rho, until the pages fit.  Repeated to the end it leaves every client
that is neither at its min nor at its max with the same rho (lambda).  With ``a = f * P`` the
client's active pages (measured, so fixed while P moves), ``P * (f + k(1 - f)) = a + k (P - a)``
for ``P >= a`` and ``P`` below; so for a given lambda ``P(lambda) = S/lambda`` when that is
``<= a``, else ``a + (S/lambda - a)/k``, clamped to [min, max].  ``P`` falls as lambda rises, so
a bisection on lambda finds the allocation whose sum is the memory available: the same end point
as the one-page-at-a-time auction, in 100 steps whatever the memory size.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostsim.vmkernel.memory.errors import MemConfigError

#: shares per MB of configured memory (ESX2, RMG, API SharesInfo.Level)
SHARES_PER_MB = {"low": 5, "normal": 10, "high": 20}


def mem_shares(level: str, max_mb: float) -> int:
    """Shares of a VM of ``max_mb`` at ``level`` low/normal/high (256 MB normal -> 2560)."""
    if level not in SHARES_PER_MB:
        raise MemConfigError(f"shares level {level!r}: use low, normal or high")
    return int(SHARES_PER_MB[level] * max_mb)


def tax_k(tau: float) -> float:
    """k = 1 / (1 - tau): what an idle page costs relative to an active one (tau 0.75 -> 4)."""
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0 <= tau < 1:
        raise MemConfigError(f"idle memory tax {tau!r}: must be in [0, 1)")
    return 1.0 / (1.0 - tau)


def rho(shares: float, pages: float, active: float, tau: float) -> float:
    """The adjusted shares-per-page ratio of W02: S / (P (f + k (1 - f)))."""
    return shares / (pages * (active + tax_k(tau) * (1.0 - active)))


@dataclass(frozen=True)
class Client:
    """One VM as the allocator sees it: shares, bounds and measured active pages (all pages)."""

    name: str
    shares: float
    min_pages: int
    max_pages: int
    active_pages: float


def _alloc_at(client: Client, lam: float, k: float) -> float:
    """P(lambda) for one client, clamped to its bounds."""
    want = client.shares / lam
    pages = want if want <= client.active_pages else client.active_pages + (want - client.active_pages) / k
    return min(client.max_pages, max(client.min_pages, pages))


def min_funding_targets(clients: list[Client], available: int, tau: float) -> dict[str, int]:
    """Target pages per client so the total fits ``available`` (every min kept, never above max).

    A client with 0 shares stays at its min even when memory is free (ESX2: 0 shares pins the
    VM to its min).  When even the mins do not fit, each gets its min (admission control makes
    that impossible)."""
    k = tax_k(tau)
    out = {c.name: c.min_pages for c in clients}
    funded = [c for c in clients if c.shares > 0]
    fixed = sum(c.min_pages for c in clients if c.shares <= 0)
    if fixed + sum(c.max_pages for c in funded) <= available:
        out.update({c.name: c.max_pages for c in funded})
        return out
    if sum(c.min_pages for c in clients) >= available:
        return out
    lo, hi = 1e-12, 1e12  # lambda bounds: tiny lambda -> everyone at max, huge -> at min
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        if fixed + sum(_alloc_at(c, mid, k) for c in funded) > available:
            lo = mid
        else:
            hi = mid
    for c in funded:
        out[c.name] = int(_alloc_at(c, hi, k))
    return out
