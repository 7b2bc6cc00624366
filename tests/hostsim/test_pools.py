"""Resource pools: experiment 32 (admission through expandable reservations, SDK worked examples
2 and 3), the accounting identities of esx-design.md 5.1 after every power-on and off, the
water-filling of 3.2 (by hand), entitlement down the tree as the CPU scheduler applies it, and
bad input."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from hostsim.errors import HostsimError
from hostsim.vmkernel.cpu import CpuScheduler, Vcpu
from hostsim.vmkernel.engine import MS, SECOND, Engine, Event
from hostsim.vmkernel.entitlement import Claim, water_fill
from hostsim.vmkernel.pools import Allocation, PoolAdmissionError, PoolError, ResourcePool, entitle


def sdk_tree() -> tuple[ResourcePool, ResourcePool, ResourcePool]:
    """SDK examples: RP-MOM reserves 6 GHz (fixed); RP-KID, inside it, 2 GHz expandable."""
    host = ResourcePool.host("host", cpu_mhz=12000, mem_mb=65536)
    mom = ResourcePool("RP-MOM", host, cpu=Allocation(reservation=6000, expandable=False))
    kid = ResourcePool("RP-KID", mom, cpu=Allocation(reservation=2000, expandable=True))
    return host, mom, kid


def assert_identities(host: ResourcePool) -> None:
    assert host.identity_errors() == []


def test_experiment_32_resource_pool_admission() -> None:
    """SDK example 2: RP-MOM runs VM-M1 (1 GHz).  VM-K1 takes RP-KID's own 2 GHz; VM-K2 borrows
    2 GHz from RP-MOM, which has 6 − 1 − 2 = 3 GHz unreserved: it powers on (RP-MOM then has
    1 GHz left, RP-KID's reservation has grown to 4 GHz).  Example 3: with VM-M1 (1 GHz) and
    VM-M2 (2 GHz) in RP-MOM, it has 6 − 3 − 2 = 1 GHz < 2 GHz unreserved: VM-K2 is refused with
    "insufficient resources".  The identities of 5.1 hold after every power-on and off."""
    rows = []
    host, mom, kid = sdk_tree()
    mom.admit("VM-M1", cpu_mhz=1000)
    kid.admit("VM-K1", cpu_mhz=2000)
    assert_identities(host)
    rows.append(("ex 2: RP-MOM unreserved before VM-K2", 3000, mom.unreserved("cpu")))
    kid.admit("VM-K2", cpu_mhz=2000)  # powers on
    assert_identities(host)
    rows += [("ex 2: VM-K2 powered on (1 = yes)", 1, int("VM-K2" in kid.consumers["cpu"])),
             ("ex 2: RP-MOM unreserved after", 1000, mom.unreserved("cpu")),
             ("ex 2: RP-KID reservation (grown)", 4000, kid.reservation("cpu")),
             ("ex 2: RP-KID reservationUsed", 4000, kid.reservation_used("cpu")),
             ("ex 2: RP-KID unreserved", 1000, kid.unreserved("cpu"))]
    for name in ("VM-K2", "VM-K1", "VM-M1"):
        (kid if name.startswith("VM-K") else mom).release(name)
        assert_identities(host)
    assert (mom.unreserved("cpu"), kid.reservation("cpu")) == (4000, 2000)

    host, mom, kid = sdk_tree()
    mom.admit("VM-M1", cpu_mhz=1000)
    mom.admit("VM-M2", cpu_mhz=2000)
    kid.admit("VM-K1", cpu_mhz=2000)
    assert_identities(host)
    rows.append(("ex 3: RP-MOM unreserved", 1000, mom.unreserved("cpu")))
    with pytest.raises(PoolAdmissionError, match="insufficient resources") as exc:
        kid.admit("VM-K2", cpu_mhz=2000)
    message = str(exc.value)
    rows.append(("ex 3: VM-K2 powered on (0 = refused)", 0, int("VM-K2" in kid.consumers["cpu"])))
    assert_identities(host)
    print("\nexperiment 32: resource-pool admission (MHz)")
    for name, exp, sim in rows:
        print(f"  {name:<40} expected {exp:>6} simulated {sim:>6}")
    print(f"  refusal: {message}")
    assert all(exp == sim for _, exp, sim in rows)
    assert "\n" not in message and "2000 MHz" in message and "1000 MHz" in message and "RP-MOM" in message


def test_identities_after_every_step_of_a_random_sequence() -> None:
    """Seeded power-ons and offs (including refused ones) over a three-level tree of fixed and
    expandable pools, for CPU and memory: the identities hold after each step, a refused
    power-on changes nothing, and no pool ever has reserved more than it may."""
    import random

    rnd = random.Random(32)
    host = ResourcePool.host("host", cpu_mhz=10000, mem_mb=8192)
    a = ResourcePool("a", host, cpu=Allocation(reservation=4000, expandable=True),
                     mem=Allocation(reservation=2048, expandable=False))
    b = ResourcePool("b", a, cpu=Allocation(reservation=1000, expandable=True),
                     mem=Allocation(reservation=512, expandable=True))
    c = ResourcePool("c", host, cpu=Allocation(reservation=2000, expandable=False),
                     mem=Allocation(reservation=1024, expandable=True))
    pools = [host, a, b, c]
    running: list[tuple[ResourcePool, str]] = []
    refused = 0
    for step in range(300):
        if running and rnd.random() < 0.4:
            pool, name = running.pop(rnd.randrange(len(running)))
            pool.release(name)
        else:
            pool, name = rnd.choice(pools), f"vm{step}"
            before = [(p.usage("cpu"), p.usage("mem")) for p in pools]
            try:
                pool.admit(name, cpu_mhz=rnd.randrange(0, 2500, 250), mem_mb=rnd.randrange(0, 1024, 128))
                running.append((pool, name))
            except PoolAdmissionError:
                refused += 1
                assert [(p.usage("cpu"), p.usage("mem")) for p in pools] == before
        assert_identities(host)
        for p in pools:
            for kind in ("cpu", "mem"):
                u = p.usage(kind)
                assert u.unreserved >= 0
                assert u.reservation_used <= u.reservation or u.expandable
        assert host.reservation_used("cpu") <= 10000 and host.reservation_used("mem") <= 8192
    assert refused > 10 and len(running) > 3


def test_limit_of_an_expandable_pool_stops_its_borrowing() -> None:
    """An expandable pool with a 3000 MHz limit cannot grow its reservation past it."""
    host = ResourcePool.host("host", cpu_mhz=10000, mem_mb=1024)
    p = ResourcePool("p", host, cpu=Allocation(reservation=1000, limit=3000, expandable=True))
    p.admit("x", cpu_mhz=2500)
    with pytest.raises(PoolAdmissionError, match="the limit of host/p leaves 500 MHz"):
        p.admit("y", cpu_mhz=1000)
    p.admit("y", cpu_mhz=500)
    assert p.unreserved("cpu") == 0


def test_water_fill_by_hand() -> None:
    """Section 3.2 worked by hand.  Capacity 100; A shares 2000 min 20 max 50, B shares 500 min 30,
    both demanding 100: A is capped at 50, B gets the rest, 50.  Without A's max: x with
    A = 2000x, B = max(30, 500x) and A + B = 100 gives A = 70, B = 30 (500x = 17.5 < 30).
    Reservation lending: capacity 2000, VM1 reserves 1000 and demands 500, VM2 reserves 1000 and
    demands 2000 → 500 and 1500.  Over-reserved (capacity below the floors) → scaled floors."""
    assert water_fill([Claim(2000, 20, 50, 100), Claim(500, 30, -1, 100)], 100) == pytest.approx([50, 50])
    assert water_fill([Claim(2000, 20, -1, 100), Claim(500, 30, -1, 100)], 100) == pytest.approx([70, 30])
    assert water_fill([Claim(1000, 1000, -1, 500), Claim(1000, 1000, -1, 2000)], 2000) == pytest.approx([500, 1500])
    assert water_fill([Claim(1, 60, -1, 100), Claim(1, 40, -1, 100)], 50) == pytest.approx([30, 20])
    assert water_fill([Claim(0, 0, -1, 100), Claim(1000, 0, -1, 100)], 100) == pytest.approx([0, 100])
    assert water_fill([Claim(1000, 0, -1, 10), Claim(1000, 0, -1, 10)], 100) == pytest.approx([10, 10])
    assert water_fill([], 100) == []


def test_entitlement_recurses_down_the_tree() -> None:
    """Host 4000 MHz: pool A (3000 shares) holds one VM, pool B (1000 shares) three Normal VMs,
    all demanding 4000: A gets 3000, B 1000, split 333.3 each inside B."""
    host = ResourcePool.host("host", cpu_mhz=4000, mem_mb=1024)
    pa = ResourcePool("A", host, cpu=Allocation(shares=3000, expandable=False))
    pb = ResourcePool("B", host, cpu=Allocation(shares=1000, expandable=False))
    leaves = {pa: [("a1", Claim(1000, 0, -1, 4000))],
              pb: [(f"b{i}", Claim(1000, 0, -1, 4000)) for i in range(3)]}
    ent = entitle(host, 4000, leaves)  # type: ignore[arg-type]
    assert ent == pytest.approx({"a1": 3000, "b0": 1000 / 3, "b1": 1000 / 3, "b2": 1000 / 3})


def _burn(v: Vcpu) -> Generator[Event, Any, None]:
    while True:
        yield v.compute(10 * MS)


def test_scheduler_follows_pool_shares_and_pool_limits() -> None:
    """On one 2 GHz pCPU, pool A (3000 shares) with one CPU-bound VM and pool B (1000 shares)
    with three: 75 % for A's VM and 8.3 % for each of B's (flat shares would give 25 % each).
    Then on two idle 2 GHz pCPUs, a pool limited to 1000 MHz holding two CPU-bound VMs: 500 MHz
    each (±3 %) though three quarters of the host idles (a limit holds even on an idle host)."""
    eng = Engine(1)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    pa = ResourcePool("A", sched.pool, cpu=Allocation(shares=3000, expandable=False))
    pb = ResourcePool("B", sched.pool, cpu=Allocation(shares=1000, expandable=False))
    groups = [sched.add_group("a1", pool=pa)] + [sched.add_group(f"b{i}", pool=pb) for i in range(3)]
    for g in groups:
        eng.process(_burn(g.add_vcpu()))
    eng.run(until=1 * SECOND)
    before = [g.counters().used_us for g in groups]
    eng.run(until=11 * SECOND)
    used = [100 * (g.counters().used_us - b) / (10 * SECOND) for g, b in zip(groups, before, strict=True)]
    print(f"\npool shares 3:1 -> %USED a1 {used[0]:.2f} (75), b0..b2 {', '.join(f'{u:.2f}' for u in used[1:])} (8.33)")
    assert used[0] == pytest.approx(75, abs=2)
    assert used[1:] == pytest.approx([25 / 3] * 3, abs=1)

    eng = Engine(2)
    sched = CpuScheduler(eng, pcpus=2, mhz=2000)
    capped = ResourcePool("capped", sched.pool, cpu=Allocation(limit=1000, expandable=True))
    groups = [sched.add_group(f"c{i}", pool=capped) for i in range(2)]
    for g in groups:
        eng.process(_burn(g.add_vcpu()))
    eng.run(until=1 * SECOND)
    before = [g.counters().used_us for g in groups]
    eng.run(until=11 * SECOND)
    mhz = [(g.counters().used_us - b) / (10 * SECOND) * 2000 for g, b in zip(groups, before, strict=True)]
    print(f"pool limit 1000 MHz -> c0 {mhz[0]:.1f} MHz, c1 {mhz[1]:.1f} MHz (500 each)")
    assert mhz == pytest.approx([500, 500], rel=0.03)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shares": -1}, "shares must be a non-negative integer"),
    ({"shares": "lots"}, "unknown share level 'lots'"),
    ({"reservation": 2000, "limit": 1000}, "limit 1000 is below the reservation 2000"),
    ({"reservation": -5}, "reservation must not be negative"),
    ({"reservation": 1.5}, "reservation must be an integer"),
])
def test_bad_allocations_are_one_line_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PoolError, match=message) as exc:
        Allocation(**kwargs)
    assert isinstance(exc.value, HostsimError) and "\n" not in str(exc.value)


def test_pool_misuse() -> None:
    host = ResourcePool.host("host", cpu_mhz=4000, mem_mb=1024)
    ResourcePool("p", host, cpu=Allocation(reservation=1000))
    with pytest.raises(PoolError, match="already a child pool named 'p'"):
        ResourcePool("p", host)
    with pytest.raises(PoolAdmissionError, match="insufficient resources"):
        ResourcePool("big", host, cpu=Allocation(reservation=3500))
    assert [c.name for c in host.children] == ["p"]
    with pytest.raises(PoolError, match="non-negative integer"):
        host.admit("vm", cpu_mhz=-3)
    with pytest.raises(PoolAdmissionError, match="mem reservation"):
        host.admit("vm", cpu_mhz=100, mem_mb=2048)
    assert "vm" not in host.consumers["cpu"]  # both kinds checked before either is taken
