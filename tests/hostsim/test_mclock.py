"""The mClock scheduler alone (hostsim.vmkernel.mclock): tag rules, the two dispatch phases, the
reservation credit of the weight phase, idle re-anchoring, limits, controls, and the allocation
it converges to, checked against the water-filling formula of esx-design.md 4.2 ([D])."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsim.errors import HostsimError
from hostsim.vmkernel.mclock import (
    RESERVATION,
    SHARE_LEVELS,
    UNLIMITED,
    WEIGHT,
    IoControls,
    IoControlsError,
    MClock,
    shares_for,
)


def test_tags_follow_the_rules_by_hand() -> None:
    """r = 100 IOPS (10 ms apart), l = 200 (5 ms), shares 1000 (P 1000 apart); three arrivals at
    t = 0, one at t = 50 ms after the queue drained: R and L re-anchored at the arrival."""
    s: MClock[str] = MClock()
    c = s.add("vm", IoControls(100, 200, 1000))
    tags = [s.enqueue(c, f"io{i}", 0) for i in range(3)]
    assert [(t.r, t.l, t.p) for t in tags] == [(0, 0, 0), (10_000, 5_000, 1000), (20_000, 10_000, 2000)]
    while s.pick(10**9):
        pass
    late = s.enqueue(c, "late", 50_000)
    assert (late.r - c.r_credit, late.l) == (50_000, 50_000)


def test_constraint_phase_first_then_weights_with_reservation_credit() -> None:
    """A (r 100) and B (r 0) both queued at t = 0: A's first request goes in the reservation
    phase (R = 0 <= now), then B by its smaller P; when A is served in the weight phase, its
    remaining R tags drop by 1/r = 10 ms."""
    s: MClock[str] = MClock()
    a = s.add("A", IoControls(100, UNLIMITED, 1000))
    b = s.add("B", IoControls(0, UNLIMITED, 1000))
    for i in range(3):
        s.enqueue(a, f"a{i}", 0)
        s.enqueue(b, f"b{i}", 0)
    assert s.pick(0) == (a, "a0", RESERVATION)
    assert s.pick(0) == (b, "b0", WEIGHT)  # A's head P 1000 > B's 0; A's R 10 ms > now
    assert a.head_r() == 10_000
    assert s.pick(0) == (a, "a1", WEIGHT)  # P 1000 vs 1000: A registered first
    assert a.head_r() == 10_000  # a2 was tagged R = 20 ms, minus the 10 ms credit
    assert s.pick(10_000) == (a, "a2", RESERVATION)


def test_limit_holds_a_vm_back_and_says_when_to_retry() -> None:
    s: MClock[str] = MClock()
    c = s.add("vm", IoControls(0, 400, 1000))  # L tags 2500 µs apart
    for i in range(3):
        s.enqueue(c, f"io{i}", 0)
    assert s.pick(0) == (c, "io0", WEIGHT)
    assert s.pick(0) is None
    assert s.next_eligible_us(0) == 2500
    assert s.pick(2499) is None and s.pick(2500) == (c, "io1", WEIGHT)


def test_an_idle_vm_returns_at_the_virtual_now_not_its_old_tag() -> None:
    """B is idle while A is served 1000 times; when B returns its P tag is A's head tag, so the two
    alternate at once (no run of B catching up); without the anchoring B would be served alone
    until its tags caught up, which the mClock paper's re-basing exists to prevent."""

    def run(anchor: bool) -> str:
        s: MClock[str] = MClock(anchor_idle=anchor)
        a = s.add("A", IoControls())
        b = s.add("B", IoControls())
        s.enqueue(b, "B", 0)
        s.pick(0)
        for t in range(1000):
            s.enqueue(a, "A", t)
            s.pick(t)
        for _ in range(5):
            s.enqueue(a, "A", 2000)
        order = []
        for _ in range(10):
            s.enqueue(b, "B", 2000)
            client, item, _phase = s.pick(2000)  # type: ignore[misc]
            order.append(item)
            s.enqueue(client, item, 2000)
        return "".join(order)

    assert run(True) == "ABABABABAB"
    assert run(False) == "B" * 10


def test_weight_only_sfq_ignores_reservations_and_limits() -> None:
    s: MClock[str] = MClock(weight_only=True)
    a = s.add("A", IoControls(500, 600, 1000))
    b = s.add("B", IoControls(0, UNLIMITED, 3000))
    got = {"A": 0, "B": 0}
    for _ in range(400):
        for c in (a, b):
            if len(c.queue) < 2:
                s.enqueue(c, c.name, 0)
        client, _item, phase = s.pick(0)  # type: ignore[misc]
        assert phase == WEIGHT
        got[client.name] += 1
    assert got == {"A": 100, "B": 300}


def test_set_controls_retags_the_queue() -> None:
    """A VM throttled by its limit builds a P-tag lead over nobody: lifting the limit re-tags its
    queue from the virtual now, so it does not then take the device to itself."""
    s: MClock[str] = MClock()
    a = s.add("A", IoControls(0, 100, 1000))
    b = s.add("B", IoControls())
    now = 0
    for _ in range(2000):  # 2000 dispatches at 1000 IOPS: A throttled to 100
        for c in (a, b):
            while len(c.queue) < 4:
                s.enqueue(c, c.name, now)
        s.pick(now)
        now += 1000
    s.set_controls(a, IoControls(), now)
    assert a.controls.limit_iops == UNLIMITED and len(a.queue) == 4
    served = []
    for _ in range(20):
        client, _item, _phase = s.pick(now)  # type: ignore[misc]
        served.append(client.name)
        s.enqueue(client, client.name, now)
    assert served.count("A") == 10


def allocation(capacity: float, controls: list[IoControls]) -> list[float]:
    """esx-design.md 4.2 [D]: A_i = min(l_i, max(r_i, w_i x)) with sum A_i = C (x by bisection;
    when even the limits do not add up to C, every VM sits at its limit)."""

    def at(x: float) -> list[float]:
        lim = [math.inf if c.limit_iops == UNLIMITED else c.limit_iops for c in controls]
        return [min(li, max(c.reservation_iops, c.shares * x)) for c, li in zip(controls, lim, strict=True)]

    lo, hi = 0.0, capacity
    if sum(at(hi)) <= capacity:
        return at(hi)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(at(mid)) < capacity else (lo, mid)
    return at(hi)


def served(capacity: int, controls: list[IoControls], dispatches: int) -> list[float]:
    """IOPS each backlogged VM gets from a device of ``capacity`` IOPS taking one command at a
    time, measured over the second half of the run."""
    s: MClock[int] = MClock()
    clients = [s.add(f"vm{i}", c) for i, c in enumerate(controls)]
    service = 1_000_000 / capacity
    now = 0.0
    counts = [0] * len(clients)
    start = 0.0
    done = 0
    while done < dispatches:
        t = int(now)
        for c in clients:
            while len(c.queue) < 3:
                s.enqueue(c, c.order, t)
        picked = s.pick(t)
        if picked is None:
            nxt = s.next_eligible_us(t)
            assert nxt is not None
            now = max(now, nxt)
            continue
        done += 1
        if done == dispatches // 2:
            start, counts = now, [0] * len(clients)
        counts[picked[1]] += 1
        now += service
    return [n / ((now - start) / 1e6) for n in counts]


controls_st = st.builds(
    lambda r, extra, shares: IoControls(r, UNLIMITED if extra is None else r + extra, shares),
    st.sampled_from([0, 0, 50, 100, 200]),
    st.one_of(st.none(), st.sampled_from([50, 100, 300])),
    st.sampled_from([500, 1000, 2000]),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(controls_st, min_size=1, max_size=4), st.sampled_from([600, 1000, 1500]))
def test_backlogged_vms_converge_to_the_allocation_formula(controls: list[IoControls], capacity: int) -> None:
    """Whenever the reservations fit the capacity, every VM's throughput is within 3 % (or 3 IOPS)
    of A_i = min(l_i, max(r_i, w_i x))."""
    if sum(c.reservation_iops for c in controls) > capacity:
        return
    want = allocation(capacity, controls)
    got = served(capacity, controls, 12_000)
    for w, g in zip(want, got, strict=True):
        assert abs(g - w) <= max(0.03 * w, 3), (controls, capacity, want, got)


def test_reservations_above_capacity_go_to_the_reserved_vms_only() -> None:
    """C < sum r_i: the reservation phase alone runs: the reserved VMs share all of C, nobody gets
    more than its reservation, the unreserved VM gets nothing.  How C is split between the
    reserved VMs is *not* in proportion to r_i as esx-design.md 4.2 derives ([D]): once a VM's
    R tags fall behind real time, R = max(R_prev + 1/r, t) anchors each arrival at t, so the phase
    serves by arrival time and the split depends on how long each head request has waited (here
    200/100 with 3 queued each, 225/75 when A keeps 10 times more queued than B)."""
    ctl = [IoControls(300, UNLIMITED, 2000), IoControls(100, UNLIMITED, 500), IoControls()]
    got = served(300, ctl, 8000)
    print(f"C = 300, reservations 300/100/0: served {got[0]:.0f}/{got[1]:.0f}/{got[2]:.0f}"
          " (proportional: 225/75/0)")
    assert sum(got[:2]) == pytest.approx(300, rel=0.01) and got[2] < 1
    assert got[0] <= 300 * 1.01 and got[1] <= 100 * 1.01


def test_share_presets() -> None:
    assert SHARE_LEVELS == {"low": 500, "normal": 1000, "high": 2000}
    assert shares_for("High") == 2000 and IoControls(shares="low").shares == 500  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reservation_iops": -1}, "reservation -1 IOPS: cannot be negative"),
        ({"reservation_iops": 300, "limit_iops": 200}, "limit 200 IOPS is below the reservation 300 IOPS"),
        ({"limit_iops": 0}, "limit 0 IOPS: expected -1 (unlimited) or a positive number"),
        ({"limit_iops": -5}, "limit -5 IOPS: expected -1 (unlimited) or a positive number"),
        ({"shares": 0}, "disk shares 0: expected low, normal, high or a positive integer"),
        ({"shares": "medium"}, "disk shares 'medium': expected low, normal, high or a positive integer"),
        ({"reservation_iops": 2.5}, "reservation 2.5: expected a whole number of IOPS"),
        ({"limit_iops": True}, "limit True: expected a whole number of IOPS"),
    ],
)
def test_bad_controls_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(IoControlsError) as exc:
        IoControls(**kwargs)  # type: ignore[arg-type]
    assert str(exc.value) == message and isinstance(exc.value, HostsimError)
