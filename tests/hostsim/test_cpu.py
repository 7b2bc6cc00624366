"""The VMkernel CPU scheduler: experiments 1 to 6 and the CPU identities of 30 (esx-design.md 8),
determinism, console defaults, bad input.

Every expected figure is worked out in the test's docstring from the published rules (shares,
reservations, limits, min/max percentages), never read back from the scheduler.  Each
experiment prints a table "expected vs simulated" (pytest -s shows it).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from hostsim.errors import HostsimError
from hostsim.vmkernel.cpu import CpuConfigError, CpuCounters, CpuGroup, CpuScheduler, Vcpu, shares_for
from hostsim.vmkernel.engine import MS, SECOND, Engine, Event
from hostsim.vmkernel.pools import PoolAdmissionError

Gen = Generator[Event, Any, None]


# -- guest workloads ------------------------------------------------------------------------------


def burner(v: Vcpu, chunk: int = 10 * MS) -> Gen:
    """CPU-bound: asks for pCPU time forever."""
    while True:
        yield v.compute(chunk)


def duty(v: Vcpu, run: int, halt: int) -> Gen:
    """Computes ``run`` then halts ``halt``: a demand of run / (run + halt) of a pCPU when alone."""
    while True:
        yield v.compute(run)
        yield v.halt(halt)


def idler(v: Vcpu, chunk: int = 10 * MS) -> Gen:
    """Stays in the guest idle loop."""
    while True:
        yield v.idle_loop(chunk)


def switchable(v: Vcpu, busy: dict[str, bool]) -> Gen:
    """CPU-bound while ``busy['on']``, halted otherwise (a VM going idle at run time)."""
    while True:
        yield v.compute(5 * MS) if busy["on"] else v.halt(5 * MS)


def start(eng: Engine, gen: Gen) -> None:
    eng.process(gen)


def window(eng: Engine, objs: dict[str, Any], t0: int, t1: int) -> dict[str, CpuCounters]:
    """Run to ``t0``, sample, run to ``t1``, sample: the counters' differences over [t0, t1)."""
    eng.run(until=t0)
    before = {k: o.counters() for k, o in objs.items()}
    eng.run(until=t1)
    return {k: diff(o.counters(), before[k]) for k, o in objs.items()}


def diff(a: CpuCounters, b: CpuCounters) -> CpuCounters:
    return CpuCounters(*(x - y for x, y in zip(vars(a).values(), vars(b).values(), strict=True)))


def pct(us: int, t0: int, t1: int) -> float:
    return 100.0 * us / (t1 - t0)


def table(title: str, rows: list[tuple[str, float, float, float]]) -> None:
    """Print expected vs simulated, one row per quantity: name, expected, simulated, tolerance."""
    print(f"\n{title}")
    print(f"  {'quantity':<28} {'expected':>10} {'simulated':>10} {'tol':>6}")
    for name, exp, sim, tol in rows:
        print(f"  {name:<28} {exp:>10.2f} {sim:>10.2f} {tol:>6.2f}")


def check(rows: list[tuple[str, float, float, float]]) -> None:
    for name, exp, sim, tol in rows:
        assert abs(sim - exp) <= tol, f"{name}: expected {exp} ± {tol}, simulated {sim:.3f}"


def vm(sched: CpuScheduler, name: str, vcpus: int = 1, **controls: Any) -> CpuGroup:
    g = sched.add_group(name, **controls)
    for _ in range(vcpus):
        g.add_vcpu()
    return g


# -- experiment 1 -----------------------------------------------------------------------------------


def test_experiment_1_shares_2_to_1() -> None:
    """One pCPU, two CPU-bound VMs with shares 2000 and 1000: 2000/3000 = 66.7 % and 33.3 % of
    the pCPU (±2 points); the small VM waits more, so its %RDY is the larger."""
    eng = Engine(1)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    big, small = vm(sched, "big", shares=2000), vm(sched, "small", shares=1000)
    start(eng, burner(big.vcpus[0]))
    start(eng, burner(small.vcpus[0]))
    t0, t1 = 1 * SECOND, 11 * SECOND
    w = window(eng, {"big": big, "small": small}, t0, t1)
    rows = [("big %USED", 200 / 3, pct(w["big"].used_us, t0, t1), 2.0),
            ("small %USED", 100 / 3, pct(w["small"].used_us, t0, t1), 2.0)]
    table("experiment 1: shares 2:1 on one pCPU", rows)
    print(f"  %RDY big {pct(w['big'].rdy_us, t0, t1):.2f}  small {pct(w['small'].rdy_us, t0, t1):.2f}")
    check(rows)
    assert w["small"].rdy_us > w["big"].rdy_us


# -- experiment 2 -----------------------------------------------------------------------------------


def test_experiment_2_share_dilution_on_power_on() -> None:
    """Host 8 GHz (two 4 GHz pCPUs).  Two CPU-bound 1-vCPU VMs at Normal (1000 each) get 4 GHz
    each.  A third at High (2000) powers on: shares 1000:1000:2000 of 8 GHz give 2, 2 and 4 GHz,
    which one vCPU can take (4 GHz is one pCPU).  ±3 %."""
    eng = Engine(2)
    sched = CpuScheduler(eng, pcpus=2, mhz=4000)
    vms = {n: vm(sched, n) for n in ("vm1", "vm2")}
    for g in vms.values():
        start(eng, burner(g.vcpus[0]))
    w = window(eng, vms, 1 * SECOND, 5 * SECOND)
    mhz = {n: c.used_us / (4 * SECOND) * 4000 for n, c in w.items()}
    rows = [(f"{n} MHz (2 VMs)", 4000, mhz[n], 4000 * 0.03) for n in sorted(mhz)]
    vms["vm3"] = vm(sched, "vm3", shares="high")
    start(eng, burner(vms["vm3"].vcpus[0]))
    w = window(eng, vms, 7 * SECOND, 17 * SECOND)
    mhz = {n: c.used_us / (10 * SECOND) * 4000 for n, c in w.items()}
    rows += [(f"{n} MHz (3 VMs)", {"vm3": 4000}.get(n, 2000), mhz[n], {"vm3": 4000}.get(n, 2000) * 0.03)
             for n in sorted(mhz)]
    table("experiment 2: share dilution on power-on", rows)
    check(rows)


# -- experiment 3 -----------------------------------------------------------------------------------


def test_experiment_3_reservation_lending() -> None:
    """Host 2 GHz (one pCPU); VM1 and VM2 reserve 1 GHz each.  VM1 computes 5 ms of every 20 ms
    (500 MHz alone): it gets its 500 MHz and VM2 the 1.5 GHz VM1 does not use.  Both CPU-bound:
    equal shares and equal reservations give 1 GHz each.  ±3 %."""
    eng = Engine(3)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    vm1, vm2 = vm(sched, "vm1", reservation_mhz=1000), vm(sched, "vm2", reservation_mhz=1000)
    start(eng, duty(vm1.vcpus[0], 5 * MS, 15 * MS))
    start(eng, burner(vm2.vcpus[0]))
    w = window(eng, {"vm1": vm1, "vm2": vm2}, 1 * SECOND, 11 * SECOND)
    rows = [("vm1 MHz (demands 500)", 500, w["vm1"].used_us / (10 * SECOND) * 2000, 15),
            ("vm2 MHz (CPU-bound)", 1500, w["vm2"].used_us / (10 * SECOND) * 2000, 45)]

    eng = Engine(3)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    vm1, vm2 = vm(sched, "vm1", reservation_mhz=1000), vm(sched, "vm2", reservation_mhz=1000)
    start(eng, burner(vm1.vcpus[0]))
    start(eng, burner(vm2.vcpus[0]))
    w = window(eng, {"vm1": vm1, "vm2": vm2}, 1 * SECOND, 11 * SECOND)
    rows += [(f"{n} MHz (both CPU-bound)", 1000, w[n].used_us / (10 * SECOND) * 2000, 30) for n in ("vm1", "vm2")]
    table("experiment 3: reservation lending", rows)
    check(rows)


# -- experiment 4 -----------------------------------------------------------------------------------


def test_experiment_4_esx2_min_max_with_shares() -> None:
    """One pCPU.  A: min 20 %, max 50 %, High (2000); B: min 30 %, Low (500); both CPU-bound.
    - A is capped by its max: A 50 %, B the other 50 %; A spends time limited (%MLMTD > 0).
    - A's max removed: shares alone give 2000:500 = 80/20, B's min lifts it to 30: A 70, B 30.
    - A idle: B takes the whole pCPU (≈ 100 %).  ±2 points."""
    eng = Engine(4)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    a = vm(sched, "A", shares="high", min_pct=20, max_pct=50)
    b = vm(sched, "B", shares="low", min_pct=30)
    a_busy = {"on": True}
    start(eng, switchable(a.vcpus[0], a_busy))
    start(eng, burner(b.vcpus[0]))
    groups = {"A": a, "B": b}
    w = window(eng, groups, 1 * SECOND, 6 * SECOND)
    rows = [("A %USED (max 50)", 50, pct(w["A"].used_us, 1 * SECOND, 6 * SECOND), 2),
            ("B %USED (A capped)", 50, pct(w["B"].used_us, 1 * SECOND, 6 * SECOND), 2)]
    mlmtd_a = pct(w["A"].mlmtd_us, 1 * SECOND, 6 * SECOND)
    sched.set_controls(a, max_pct=None)
    w = window(eng, groups, 8 * SECOND, 13 * SECOND)
    rows += [("A %USED (no max)", 70, pct(w["A"].used_us, 8 * SECOND, 13 * SECOND), 2),
             ("B %USED (min 30)", 30, pct(w["B"].used_us, 8 * SECOND, 13 * SECOND), 2)]
    a_busy["on"] = False
    w = window(eng, groups, 15 * SECOND, 20 * SECOND)
    rows += [("B %USED (A idle)", 100, pct(w["B"].used_us, 15 * SECOND, 20 * SECOND), 2)]
    table("experiment 4: ESX 2.x min/max with shares", rows)
    print(f"  A %MLMTD while capped: {mlmtd_a:.2f}")
    check(rows)
    assert mlmtd_a > 10


# -- experiment 5 -----------------------------------------------------------------------------------


def test_experiment_5_limit_on_an_idle_host() -> None:
    """One VM limited to 500 MHz on a 2 GHz pCPU, CPU-bound, alone: 500 MHz (±2 %), held back the
    other 75 % of the time (%MLMTD ≈ 75), no contention (%RDY − %MLMTD ≈ 0: our %RDY includes
    %MLMTD as esxtop's does, so the contention part is the difference).  The pCPU idles 75 %."""
    eng = Engine(5)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    g = vm(sched, "capped", limit_mhz=500)
    start(eng, burner(g.vcpus[0]))
    t0, t1 = 1 * SECOND, 11 * SECOND
    w = window(eng, {"g": g}, t0, t1)["g"]
    rows = [("MHz", 500, w.used_us / (t1 - t0) * 2000, 10),
            ("%MLMTD", 75, pct(w.mlmtd_us, t0, t1), 2),
            ("%RDY - %MLMTD", 0, pct(w.rdy_us - w.mlmtd_us, t0, t1), 1)]
    table("experiment 5: limit on an idle host", rows)
    check(rows)
    idle = sched.pcpu_counters(0).idle_us / eng.now
    assert 0.70 < idle < 0.80


# -- experiment 6 -----------------------------------------------------------------------------------


def _smp_contended(mode: str) -> tuple[dict[str, CpuCounters], float, list[str]]:
    """Two pCPUs: a 2-vCPU VM with both vCPUs busy plus a busy 1-vCPU VM (three busy vCPUs).

    Returns the window's counters, the pCPU utilisation, and every co-stop seen by a 1 ms
    monitor in which the co-stopped vCPU was not ahead of its sibling (skew 0)."""
    eng = Engine(6)
    sched = CpuScheduler(eng, pcpus=2, mhz=2000, coschedule=mode)
    smp, uni = vm(sched, "smp", vcpus=2), vm(sched, "uni")
    for v in [*smp.vcpus, *uni.vcpus]:
        start(eng, burner(v))
    laggards: list[str] = []

    def monitor() -> Gen:
        while True:
            yield eng.timeout(1 * MS)
            laggards.extend(f"{eng.now} {v.name}" for v in smp.vcpus
                            if v.state_name == "COSTOP" and sched.skew_of(v) == 0)

    start(eng, monitor())
    objs = {"smp": smp, "uni": uni, "v0": smp.vcpus[0], "v1": smp.vcpus[1]}
    eng.run(until=1 * SECOND)
    p0 = [sched.pcpu_counters(i).used_us for i in (0, 1)]
    w = window(eng, objs, 1 * SECOND, 6 * SECOND)
    p1 = [sched.pcpu_counters(i).used_us for i in (0, 1)]
    util = 100.0 * (sum(p1) - sum(p0)) / (2 * 5 * SECOND)
    return w, util, laggards


def test_experiment_6_relaxed_coscheduling() -> None:
    """(a) Relaxed, spare pCPUs: a 2-vCPU VM whose vCPU1 stays in the guest idle loop.  The idle
    loop is detected and counts as progress: %CSTP ≈ 0 and vCPU1 uses ≈ 0 pCPU, vCPU0 ≈ 100 %.
    (b) Both vCPUs busy with a third busy vCPU on two pCPUs: strict co-scheduling leaves pCPU
    time idle (< 100 %: a co-stopped VM waits for two free pCPUs at once), relaxed keeps the
    pCPUs busy (≈ 100 %) and co-stops only a vCPU that is ahead of its sibling."""
    eng = Engine(6)
    sched = CpuScheduler(eng, pcpus=4, mhz=2000)
    g = vm(sched, "smp", vcpus=2)
    start(eng, burner(g.vcpus[0]))
    start(eng, idler(g.vcpus[1]))
    w = window(eng, {"v0": g.vcpus[0], "v1": g.vcpus[1], "g": g}, 1 * SECOND, 6 * SECOND)
    t0, t1 = 1 * SECOND, 6 * SECOND
    rows = [("(a) %CSTP VM", 0, pct(w["g"].cstp_us, t0, t1), 0.5),
            ("(a) vCPU1 %USED (idle loop)", 0, pct(w["v1"].used_us, t0, t1), 0.5),
            ("(a) vCPU1 %IDLE", 100, pct(w["v1"].idle_us, t0, t1), 0.5),
            ("(a) vCPU0 %USED", 100, pct(w["v0"].used_us, t0, t1), 0.5)]
    relaxed, util_r, lag_r = _smp_contended("relaxed")
    strict, util_s, lag_s = _smp_contended("strict")
    rows += [("(b) relaxed pCPU util %", 100, util_r, 1.0)]
    table("experiment 6: co-scheduling", rows)
    print(f"  (b) strict pCPU util %: {util_s:.2f} (expected < 100)")
    for name, w6 in (("relaxed", relaxed), ("strict", strict)):
        print(f"  (b) {name}: smp %USED {pct(w6['smp'].used_us, t0, t1):.1f} %CSTP {pct(w6['smp'].cstp_us, t0, t1):.1f}"
              f" uni %USED {pct(w6['uni'].used_us, t0, t1):.1f}")
    print(f"  (b) co-stops of a vCPU not ahead: relaxed {len(lag_r)}, strict {len(lag_s)}")
    check(rows)
    assert util_s < 97.0
    assert lag_r == []
    assert lag_s  # strict co-stops the lagging vCPU along with the leader
    assert relaxed["smp"].cstp_us < strict["smp"].cstp_us


def test_strict_mode_spins_the_idle_loop() -> None:
    """ESX 2.x did not detect the guest idle loop: under strict co-scheduling it takes a pCPU."""
    eng = Engine(7)
    sched = CpuScheduler(eng, pcpus=2, mhz=2000, coschedule="strict")
    g = vm(sched, "smp", vcpus=2)
    start(eng, burner(g.vcpus[0]))
    start(eng, idler(g.vcpus[1]))
    w = window(eng, {"v1": g.vcpus[1]}, 1 * SECOND, 3 * SECOND)["v1"]
    assert pct(w.run_us, 1 * SECOND, 3 * SECOND) > 95
    assert w.idle_us == 0


# -- experiment 30 (CPU identities) ---------------------------------------------------------------


def _mixed_host(seed: int) -> tuple[Engine, CpuScheduler]:
    """A host with everything at once: shares, a reservation, a limit, an SMP VM, I/O with SYS
    time, swap waits, halts, the console; bursts drawn from the engine's seeded generator."""
    eng = Engine(seed)
    sched = CpuScheduler(eng, pcpus=2, mhz=2000)
    sched.add_console()
    web = vm(sched, "web", vcpus=2, shares="high")
    db = vm(sched, "db", reservation_mhz=500)
    batch = vm(sched, "batch", limit_mhz=700)
    rnd = eng.random

    def io_guest(v: Vcpu) -> Gen:
        while True:
            yield v.compute(rnd.randrange(200, 4000))
            yield v.block(eng.timeout(rnd.randrange(500, 8000)))
            if rnd.random() < 0.1:
                yield v.swap_wait(rnd.randrange(1000, 5000))

    def waker(v: Vcpu) -> Gen:
        """Blocks while not running (after a halt): its SYS lands in another world's run (OVRLP)."""
        while True:
            yield v.halt(rnd.randrange(100, 2000))
            yield v.block(eng.timeout(rnd.randrange(100, 3000)), sys_us=50)

    for v in web.vcpus:
        start(eng, io_guest(v))
    start(eng, burner(db.vcpus[0], 3 * MS))
    start(eng, burner(batch.vcpus[0], 7 * MS))
    start(eng, waker(sched.console.vcpus[0]))  # type: ignore[union-attr]
    return eng, sched


def test_experiment_30_cpu_identities() -> None:
    """Over a 5 s esxtop interval, per vCPU: %RUN + %RDY + %CSTP + %WAIT = 100 (±1); %USED =
    %RUN + %SYS − %OVRLP; the pCPUs' busy time equals the time charged to all worlds; %MLMTD ≤
    %RDY, %SWPWT ≤ %VMWAIT ≤ %WAIT, %IDLE ≤ %WAIT."""
    eng, sched = _mixed_host(30)
    vcpus = {v.name: v for g in sched.groups.values() for v in g.vcpus}
    eng.run(until=2 * SECOND)
    before = {n: v.counters() for n, v in vcpus.items()}
    pb = sum(sched.pcpu_counters(i).used_us for i in range(2))
    eng.run(until=7 * SECOND)
    pa = sum(sched.pcpu_counters(i).used_us for i in range(2))
    total_used = 0
    print("\nexperiment 30: CPU identities over 5 s (percent)")
    heads = ("RUN", "RDY", "CSTP", "WAIT", "sum", "USED", "SYS", "OVRLP")
    print(f"  {'vcpu':<16} " + " ".join(f"{h:>6}" for h in heads))
    for name in sorted(vcpus):
        c = diff(vcpus[name].counters(), before[name])
        p = {k: pct(getattr(c, k), 2 * SECOND, 7 * SECOND) for k in ("run_us", "rdy_us", "cstp_us", "wait_us",
                                                                      "used_us", "sys_us", "ovrlp_us")}
        s = p["run_us"] + p["rdy_us"] + p["cstp_us"] + p["wait_us"]
        print(f"  {name:<16} {p['run_us']:6.2f} {p['rdy_us']:6.2f} {p['cstp_us']:6.2f} {p['wait_us']:6.2f} {s:7.2f}"
              f" {p['used_us']:6.2f} {p['sys_us']:5.2f} {p['ovrlp_us']:5.2f}")
        assert abs(s - 100) <= 1, name
        assert c.used_us == c.run_us + c.sys_us - c.ovrlp_us, name
        assert c.mlmtd_us <= c.rdy_us and c.swpwt_us <= c.vmwait_us <= c.wait_us and c.idle_us <= c.wait_us
        total_used += c.used_us
    print(f"  pCPU busy {pa - pb} µs, worlds' used {total_used} µs")
    assert total_used == pa - pb
    all_c = [diff(v.counters(), before[n]) for n, v in vcpus.items()]
    assert sum(c.sys_us for c in all_c) > 0 and sum(c.ovrlp_us for c in all_c) > 0
    assert sum(c.swpwt_us for c in all_c) > 0 and sum(c.mlmtd_us for c in all_c) > 0


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_gives_a_byte_identical_counter_dump() -> None:
    """The mixed host run twice with one seed dumps the same bytes; another seed does not."""
    dumps = []
    for seed in (11, 11, 12):
        eng, sched = _mixed_host(seed)
        eng.run(until=3 * SECOND)
        dumps.append(sched.dump().encode())
    assert dumps[0] == dumps[1]
    assert dumps[0] != dumps[2]


def test_counter_dump_is_the_same_under_other_hash_seeds() -> None:
    """Nothing depends on hashing: two interpreters with different PYTHONHASHSEED dump the same."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys; sys.path.insert(0, 'tests/hostsim'); from test_cpu import _mixed_host; "
            "eng, sched = _mixed_host(5); eng.run(until=2_000_000); sys.stdout.write(sched.dump())")
    outs = [subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outs[0] == outs[1] and len(outs[0]) > 1000


# -- console, control changes, pools --------------------------------------------------------------


def test_console_runs_on_pcpu_0_with_its_minimum() -> None:
    """The console world: 2000 shares, min 8 % of a pCPU (ESX2 [V]), only ever on pCPU 0.  Forty
    CPU-bound High VMs (2000 each) on two 2 GHz pCPUs: shares alone would give it 2000/82000 of
    4000 MHz = 98 MHz = 4.9 % of a pCPU; its minimum lifts it to 8 % (160 MHz)."""
    eng = Engine(8)
    sched = CpuScheduler(eng, pcpus=2, mhz=2000)
    con = sched.add_console()
    assert (con.shares, con.effective_reservation_mhz, con.affinity) == (2000, 160, (0,))
    seen: set[int] = set()
    start(eng, burner(con.vcpus[0]))
    for i in range(40):
        start(eng, burner(vm(sched, f"vm{i:02}", shares="high").vcpus[0]))

    def monitor() -> Gen:
        while True:
            yield eng.timeout(1 * MS)
            p = con.vcpus[0].pcpu
            if p is not None:
                seen.add(p.index)

    start(eng, monitor())
    w = window(eng, {"con": con}, 2 * SECOND, 12 * SECOND)["con"]
    used = pct(w.used_us, 2 * SECOND, 12 * SECOND)
    table("console: min 8 % against 40 High VMs on 2 pCPUs", [("console %USED (min 8)", 8.0, used, 1.0)])
    assert 7.8 <= used <= 9.0  # a minimum: never below; above only by the quantum's granularity
    assert seen == {0}


def test_power_off_gives_the_shares_back() -> None:
    """Three Normal VMs on one pCPU get a third each; powering one off gives the other two half."""
    eng = Engine(9)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    vms = {n: vm(sched, n) for n in ("a", "b", "c")}
    for g in vms.values():
        start(eng, burner(g.vcpus[0]))
    w = window(eng, vms, 1 * SECOND, 4 * SECOND)
    assert all(abs(pct(c.used_us, 1 * SECOND, 4 * SECOND) - 100 / 3) < 1.5 for c in w.values())
    gone = vms.pop("c")
    sched.remove_group(gone)
    late = gone.vcpus[0].compute(1 * MS)  # the guest of a powered-off VM: its request never ends
    ran = gone.counters().run_us
    w = window(eng, vms, 5 * SECOND, 8 * SECOND)
    assert not late.triggered and gone.counters().run_us == ran
    assert all(abs(pct(c.used_us, 5 * SECOND, 8 * SECOND) - 50) < 1.5 for c in w.values())
    assert sched.pool.usage("cpu").reservation_used == 0


def test_cpu_reservation_admission() -> None:
    """A reservation the host cannot guarantee refuses the power-on (ESX 2.x admission of min)."""
    eng = Engine(10)
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    a = vm(sched, "a", reservation_mhz=1500)
    with pytest.raises(PoolAdmissionError, match="insufficient resources") as exc:
        vm(sched, "b", min_pct=30)  # 600 MHz > 500 left
    assert "\n" not in str(exc.value) and "600 MHz" in str(exc.value)
    assert "b" not in sched.groups
    with pytest.raises(PoolAdmissionError, match="insufficient resources"):
        sched.set_controls(a, reservation_mhz=2500)
    assert a.reservation_mhz == 1500 and sched.pool.reservation_used("cpu") == 1500
    sched.set_controls(a, reservation_mhz=2000)
    assert sched.pool.unreserved("cpu") == 0


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("controls", "message"), [
    ({"shares": -5}, "shares must be a non-negative integer"),
    ({"shares": "medium"}, "unknown share level 'medium'"),
    ({"reservation_mhz": 1000, "limit_mhz": 500}, "limit 500 MHz is below the reservation 1000 MHz"),
    ({"reservation_mhz": -1}, "must not be negative"),
    ({"min_pct": 50, "max_pct": 20}, "min 50 % is above max 20 %"),
    ({"limit_mhz": 2.5}, "limit_mhz must be an integer"),
])
def test_bad_controls_are_one_line_errors(controls: dict[str, Any], message: str) -> None:
    sched = CpuScheduler(Engine(), pcpus=1, mhz=2000)
    with pytest.raises(CpuConfigError, match=message) as exc:
        sched.add_group("vm", **controls)
    assert isinstance(exc.value, HostsimError) and "\n" not in str(exc.value)
    assert str(exc.value).startswith("vm: ")


def test_bad_requests_and_set_controls() -> None:
    eng = Engine()
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    g = vm(sched, "vm", reservation_mhz=100)
    v = g.vcpus[0]
    with pytest.raises(CpuConfigError, match="non-negative integer number of microseconds"):
        v.compute(-1)
    with pytest.raises(CpuConfigError, match="non-negative integer number of microseconds"):
        v.halt(1.5)  # type: ignore[arg-type]
    v.compute(1000)
    with pytest.raises(CpuConfigError, match="still busy"):
        v.compute(1000)
    with pytest.raises(CpuConfigError, match="below the reservation"):
        sched.set_controls(g, limit_mhz=50)
    assert g.limit_mhz == -1
    with pytest.raises(CpuConfigError, match="unknown share level"):
        shares_for("huge", 2)
    with pytest.raises(CpuConfigError, match="coschedule must be"):
        CpuScheduler(eng, coschedule="gang")
    sched.remove_group(g)
    with pytest.raises(CpuConfigError, match="not powered on"):
        sched.set_controls(g, shares=10)
    assert shares_for("high", 2) == 4000 and shares_for("low", 1) == 500 and shares_for(1234, 4) == 1234


def test_set_controls_limit_takes_effect_at_run_time() -> None:
    """A CPU-bound VM alone on a 2 GHz pCPU uses it all; limited to 1 GHz at run time it gets half."""
    eng = Engine()
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    g = vm(sched, "vm")
    start(eng, burner(g.vcpus[0]))
    w = window(eng, {"g": g}, 0, 2 * SECOND)["g"]
    assert w.used_us == 2 * SECOND
    sched.set_controls(g, limit_mhz=1000)
    w = window(eng, {"g": g}, 3 * SECOND, 8 * SECOND)["g"]
    assert abs(pct(w.used_us, 3 * SECOND, 8 * SECOND) - 50) < 1



def test_no_more_vcpus_than_pcpus() -> None:
    sched = CpuScheduler(Engine(), pcpus=2, mhz=2000, coschedule="strict")
    g = vm(sched, "vm", vcpus=2)
    with pytest.raises(CpuConfigError, match="more vCPUs than the pCPUs"):
        g.add_vcpu()


def _invariants(sched: CpuScheduler) -> None:
    """The scheduler's bookkeeping agrees with itself: who runs where, who is queued."""
    for p in sched.pcpus:
        if p.vcpu is not None:
            assert p.vcpu.state_name == "RUN" and p.vcpu.pcpu is p
    for g in sched.groups.values():
        for v in g.vcpus:
            assert (v.state_name == "RUN") == (v.pcpu is not None), v
            assert (v.state_name == "READY") == (v in sched._ready), v
            if g.limited:
                assert v.state_name not in ("RUN", "READY"), v


@pytest.mark.parametrize("mode", ["relaxed", "strict"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_hosts_keep_their_books(mode: str, seed: int) -> None:
    """Seeded random hosts (1-3 pCPUs, VMs of 1-3 vCPUs with random controls and workloads,
    power-ons, power-offs and control changes at run time): the bookkeeping holds at every
    millisecond checked, per-vCPU times add up to the lifetime exactly, the pCPUs' busy time is
    the worlds' used time, no limit is exceeded, and every CPU-bound vCPU makes progress."""
    import random

    rnd = random.Random(seed)
    eng = Engine(seed)
    npcpu = rnd.randint(1, 3)
    sched = CpuScheduler(eng, pcpus=npcpu, mhz=2000, coschedule=mode)
    sched.add_console()
    start(eng, duty(sched.console.vcpus[0], 1 * MS, 20 * MS))  # type: ignore[union-attr]
    born: dict[str, int] = {}
    bound: list[Vcpu] = []
    everyone: list[CpuGroup] = [sched.console]  # type: ignore[list-item]

    def guest(v: Vcpu, kind: int) -> Gen:
        while True:
            r = rnd.random()
            if kind == 0 or r < 0.5:
                yield v.compute(rnd.randrange(1, 20 * MS))
            elif r < 0.65:
                yield v.halt(rnd.randrange(1, 5 * MS))
            elif r < 0.8:
                yield v.idle_loop(rnd.randrange(1, 5 * MS))
            elif r < 0.95:
                yield v.block(eng.timeout(rnd.randrange(1, 3 * MS)))
            else:
                yield v.swap_wait(rnd.randrange(1, 2 * MS))

    def power_on(i: int) -> None:
        controls: dict[str, Any] = {"shares": rnd.choice(["low", "normal", "high", rnd.randrange(1, 5000)])}
        if rnd.random() < 0.3:
            controls["limit_mhz"] = rnd.randrange(300, 3000)
        if rnd.random() < 0.2:
            controls["reservation_mhz"] = rnd.randrange(0, 300)
        try:
            g = vm(sched, f"vm{i}", vcpus=rnd.randint(1, npcpu), **controls)
        except PoolAdmissionError:
            return
        everyone.append(g)
        for v in g.vcpus:
            kind = rnd.randrange(2)
            start(eng, guest(v, kind))
            born[v.name] = eng.now
            if kind == 0 and "limit_mhz" not in controls:
                bound.append(v)

    for i in range(5):
        power_on(i)

    def admin() -> Gen:
        i = 5
        while True:
            yield eng.timeout(rnd.randrange(50 * MS, 400 * MS))
            live = [g for g in sched.groups.values() if g is not sched.console]
            r = rnd.random()
            if r < 0.3 and live:
                sched.remove_group(rnd.choice(live))
            elif r < 0.6 and live:
                g = rnd.choice(live)
                limit = rnd.choice([-1, rnd.randrange(500, 4000)])
                sched.set_controls(g, shares=rnd.randrange(0, 4000), limit_mhz=limit)
            else:
                power_on(i)
                i += 1

    def checker() -> Gen:
        while True:
            yield eng.timeout(1 * MS)
            _invariants(sched)

    start(eng, admin())
    start(eng, checker())
    progress = {v.name: v.counters().run_us for v in bound}
    eng.run(until=4 * SECOND)
    busy = sum(sched.pcpu_counters(i).used_us for i in range(npcpu))
    used = 0
    for g in everyone:
        for v in g.vcpus:
            c = v.counters()
            assert c.run_us + c.rdy_us + c.cstp_us + c.wait_us == eng.now - born.get(v.name, 0), v
            assert c.used_us == c.run_us + c.sys_us - c.ovrlp_us
            used += c.used_us
    assert busy == used  # powered-off worlds' time included: their counters stop at power-off
    for v in bound:
        if not v.group.removed and eng.now - born[v.name] > 1 * SECOND:
            assert v.counters().run_us > progress.get(v.name, 0), v


def test_set_controls_shares_take_effect_at_run_time() -> None:
    """Two Normal CPU-bound VMs share one pCPU 50/50; one set to High (2000 vs 1000) gets 2/3."""
    eng = Engine()
    sched = CpuScheduler(eng, pcpus=1, mhz=2000)
    a, b = vm(sched, "a"), vm(sched, "b")
    for g in (a, b):
        start(eng, burner(g.vcpus[0]))
    w = window(eng, {"a": a, "b": b}, 1 * SECOND, 3 * SECOND)
    assert abs(pct(w["a"].used_us, 1 * SECOND, 3 * SECOND) - 50) < 1
    sched.set_controls(a, shares="high")
    w = window(eng, {"a": a, "b": b}, 4 * SECOND, 8 * SECOND)
    assert abs(pct(w["a"].used_us, 4 * SECOND, 8 * SECOND) - 200 / 3) < 2
    assert (a.shares, a.entitlement_mhz) == (2000, pytest.approx(4000 / 3))
