"""The VMkernel's event engine: ordering, determinism, resources, paced mode, interrupts, misuse.

Expected times are worked out by hand in each test's docstring, never read back from the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from hostsim.vmkernel.engine import MS, SECOND, Engine, Event, Interrupt, Resource, SimulationError

ROOT = Path(__file__).resolve().parents[2]
Log = list[tuple[Any, ...]]


# -- ordering -----------------------------------------------------------------------------------


def test_events_due_at_the_same_time_run_in_scheduling_order() -> None:
    """Five processes each wait for a timeout due at t=100, created in the order 3,1,4,0,2 and
    with delays chosen so that the scheduling order differs from the creation order: process k
    first sleeps 10*k, then 100 - 10*k, so its t=100 timeout is scheduled at 10*k.  FIFO by
    scheduling order means they wake at 100 in the order 0,1,2,3,4."""
    eng = Engine()
    woke: list[int] = []

    def sleeper(k: int) -> Generator[Event, Any, None]:
        yield eng.timeout(10 * k)
        yield eng.timeout(100 - 10 * k)
        woke.append(k)

    for k in (3, 1, 4, 0, 2):
        eng.process(sleeper(k))
    eng.run()
    assert woke == [0, 1, 2, 3, 4]
    assert eng.now == 100


def test_kinds_do_not_matter_only_the_order_they_were_scheduled() -> None:
    """At t=50 a timeout scheduled at t=0 is due; at t=50 a process also triggers a bare event
    and starts a new process.  Order at t=50: the old timeout's waiter (scheduled first), then the
    trigger's consequences in the order they were made: the bare event's waiter, then the new
    process's first step."""
    eng = Engine()
    log: list[str] = []
    flag = eng.event()

    def early_waiter() -> Generator[Event, Any, None]:
        yield eng.timeout(50)
        log.append("timeout scheduled at 0")

    def flag_waiter() -> Generator[Event, Any, None]:
        value = yield flag
        log.append(f"flag {value}")

    def newcomer() -> Generator[Event, Any, None]:
        log.append("new process")
        yield eng.timeout(0)

    def trigger() -> Generator[Event, Any, None]:
        yield eng.timeout(50)
        log.append("trigger")
        flag.succeed("up")
        eng.process(newcomer())

    eng.process(flag_waiter())
    eng.process(trigger())
    eng.process(early_waiter())  # its timeout is scheduled after trigger's, at t=0
    eng.run()
    assert log == ["trigger", "timeout scheduled at 0", "flag up", "new process"]


def test_run_until_is_half_open() -> None:
    """run(until=100) leaves an event due at exactly 100 for the next run and sets the clock to
    100; run(until=200) then processes it at 100."""
    eng = Engine()
    seen: list[int] = []

    def at_100() -> Generator[Event, Any, None]:
        yield eng.timeout(100)
        seen.append(eng.now)

    eng.process(at_100())
    eng.run(until=100)
    assert (seen, eng.now) == ([], 100)
    eng.run(until=200)
    assert (seen, eng.now) == ([100], 200)


def test_a_process_waits_for_another_and_gets_its_return_value() -> None:
    eng = Engine()

    def child() -> Generator[Event, Any, str]:
        yield eng.timeout(7 * MS)
        return "done"

    def parent() -> Generator[Event, Any, tuple[int, str]]:
        result = yield eng.process(child())
        return eng.now, result

    top = eng.process(parent())
    eng.run()
    assert top.value == (7000, "done")


def test_the_engine_is_the_clock_of_the_hardware_interface() -> None:
    """hostsim.hic's device models read time through ``now_us()``; the engine provides it."""
    eng = Engine()
    eng.run(until=1234)
    assert eng.now_us() == 1234


def _io_or_timeout(io_us: int) -> tuple[int, str]:
    """A heartbeat write racing the 8 s ATS timeout of esx-design.md experiment 23."""
    eng = Engine()
    out: list[tuple[int, str]] = []

    def heartbeat() -> Generator[Event, Any, None]:
        write = eng.timeout(io_us, "written")
        limit = eng.timeout(8 * SECOND, "timed out")
        first = yield eng.any_of([write, limit])
        out.append((eng.now, first.value))

    eng.process(heartbeat())
    eng.run()
    return out[0]


def test_any_of_fires_with_the_first_event() -> None:
    assert _io_or_timeout(3 * SECOND) == (3 * SECOND, "written")
    assert _io_or_timeout(9 * SECOND) == (8 * SECOND, "timed out")


def test_all_of_fires_when_the_last_one_does_with_values_in_order() -> None:
    """Three vCPUs stop at 30, 10 and 20: all_of fires at 30 with the values in the given order."""
    eng = Engine()
    out: list[tuple[int, list[str]]] = []

    def stopper() -> Generator[Event, Any, None]:
        done = yield eng.all_of([eng.timeout(30, "v0"), eng.timeout(10, "v1"), eng.timeout(20, "v2")])
        out.append((eng.now, done))

    eng.process(stopper())
    eng.run()
    assert out == [(30, ["v0", "v1", "v2"])]


def test_a_failed_event_fails_the_condition() -> None:
    eng = Engine()
    broken = eng.event()
    out: list[str] = []

    def waiter() -> Generator[Event, Any, None]:
        try:
            yield eng.all_of([eng.timeout(50), broken])
        except OSError as err:
            out.append(f"{eng.now} {err}")

    def breaker() -> Generator[Event, Any, None]:
        yield eng.timeout(5)
        broken.fail(OSError("all paths down"))

    eng.process(waiter())
    eng.process(breaker())
    eng.run()
    assert out == ["5 all paths down"]


# -- determinism --------------------------------------------------------------------------------

_WORKLOAD = """
import sys
from hostsim.vmkernel.engine import Engine
eng = Engine(int(sys.argv[1]))
lun = eng.resource(3, "lun")
out = []
def world(i):
    while True:
        yield eng.timeout(eng.random.randrange(1, 500))
        with lun.request() as req:
            yield req
            out.append(f"{eng.now} {i} g {len(lun.queue)}")
            yield eng.timeout(eng.random.randrange(1, 300))
        out.append(f"{eng.now} {i} d")
for i in range(12):
    eng.process(world(i), name=f"w{i}")
eng.run(until=200_000)
sys.stdout.write("\\n".join(out))
"""


def _trace(seed: int, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _WORKLOAD, str(seed)], capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    return done.stdout


def test_a_seeded_run_twice_gives_a_byte_identical_trace() -> None:
    """Two fresh interpreters with different hash seeds, same engine seed: the same trace, byte for
    byte.  A different seed gives a different trace (so the comparison can fail)."""
    first = _trace(11, "1")
    second = _trace(11, "987")
    assert len(first.splitlines()) > 1000
    assert first == second
    assert _trace(12, "1") != first


# -- resources ----------------------------------------------------------------------------------


def test_resource_serves_fifo_with_hand_computed_times() -> None:
    """Capacity 2.  A arrives at 0 (service 100), B at 10 (50), C at 20 (100), D at 30 (10).
    A starts 0, ends 100; B starts 10, ends 60; C waits for the first free unit: B's at 60, so it
    runs 60..160; D waits behind C, though shorter: A's unit frees at 100, D runs 100..110."""
    eng = Engine()
    lun = Resource(eng, capacity=2, name="lun")
    log: dict[str, tuple[int, int]] = {}

    def io(name: str, arrive: int, service: int) -> Generator[Event, Any, None]:
        yield eng.timeout(arrive)
        with lun.request() as req:
            yield req
            start = eng.now
            yield eng.timeout(service)
        log[name] = (start, eng.now)

    for name, arrive, service in (("A", 0, 100), ("B", 10, 50), ("C", 20, 100), ("D", 30, 10)):
        eng.process(io(name, arrive, service))
    eng.run()
    assert log == {"A": (0, 100), "B": (10, 60), "C": (60, 160), "D": (100, 110)}
    assert lun.count == 0 and not lun.queue


def test_requests_made_at_the_same_time_are_granted_in_request_order() -> None:
    """Capacity 1, six requests at t=0, service 5 each: granted at 0, 5, 10, ... in request order."""
    eng = Engine()
    lock = eng.resource(1, "lock")
    grants: list[tuple[int, int]] = []

    def user(i: int) -> Generator[Event, Any, None]:
        with lock.request() as req:
            yield req
            grants.append((i, eng.now))
            yield eng.timeout(5)

    for i in range(6):
        eng.process(user(i))
    eng.run()
    assert grants == [(i, 5 * i) for i in range(6)]


# -- paced mode ---------------------------------------------------------------------------------


def test_paced_run_follows_the_wall_clock() -> None:
    """300 ms simulated with a tick every 50 ms: the call lasts about 0.3 s and each tick happens
    close to its wall time (tolerance 60 ms on a shared, loaded machine)."""
    eng = Engine()
    lag: list[float] = []
    start = time.monotonic()

    def ticker() -> Generator[Event, Any, None]:
        while True:
            yield eng.timeout(50 * MS)
            lag.append((time.monotonic() - start) - eng.now / SECOND)

    eng.process(ticker())
    eng.run_paced(300 * MS)
    elapsed = time.monotonic() - start
    assert eng.now == 300 * MS
    assert 0.3 <= elapsed < 0.3 + 0.1
    assert len(lag) == 5  # 50..250 ms; the one due at 300 belongs to the next run
    assert all(-0.005 < d < 0.06 for d in lag), lag


def test_paced_run_at_double_speed() -> None:
    eng = Engine()
    start = time.monotonic()
    eng.run_paced(300 * MS, speed=2.0)
    elapsed = time.monotonic() - start
    assert eng.now == 300 * MS
    assert 0.15 <= elapsed < 0.15 + 0.1


def test_a_paced_run_that_falls_behind_skips_nothing() -> None:
    """Ten steps 10 ms apart that each cost 20 ms of wall time: the run cannot keep up, so it takes
    about 0.2 s instead of 0.1 s, and every step still happens at its own simulated time."""
    eng = Engine()
    times: list[int] = []

    def heavy() -> Generator[Event, Any, None]:
        while True:
            yield eng.timeout(10 * MS)
            times.append(eng.now)
            time.sleep(0.02)

    eng.process(heavy())
    start = time.monotonic()
    eng.run_paced(105 * MS)
    assert times == [10 * MS * k for k in range(1, 11)]
    assert time.monotonic() - start >= 0.2


def test_work_posted_from_another_thread_runs_at_its_arrival_time() -> None:
    """A thread posts a callback 100 ms into a 300 ms paced run with nothing else due then: the
    callback runs within the run, at a simulated time close to 100 ms, and can start a process
    that then runs in simulated time (a 50 ms sleep ending at arrival + 50 ms)."""
    eng = Engine()
    seen: list[tuple[str, int]] = []

    def admin_job() -> Generator[Event, Any, None]:
        yield eng.timeout(50 * MS)
        seen.append(("job done", eng.now))

    def callback() -> None:
        seen.append(("posted", eng.now))
        eng.process(admin_job())

    timer = threading.Timer(0.1, eng.post, args=(callback,))

    def start_timer() -> Generator[Event, Any, None]:
        timer.start()  # from inside the run, so the 100 ms count from the run's own start
        yield eng.timeout(0)

    eng.process(start_timer())
    eng.run_paced(300 * MS)
    timer.join()
    (what1, at1), (what2, at2) = seen
    assert (what1, what2) == ("posted", "job done")
    assert 100 * MS <= at1 < 160 * MS
    assert at2 == at1 + 50 * MS


# -- interrupts and cancellation -----------------------------------------------------------------


def test_interrupt_wakes_a_sleeper_with_its_cause() -> None:
    eng = Engine()
    log: Log = []

    def sleeper() -> Generator[Event, Any, None]:
        try:
            yield eng.timeout(1000)
        except Interrupt as irq:
            log.append(("interrupted", eng.now, irq.cause))
        yield eng.timeout(10)
        log.append(("slept", eng.now))

    victim = eng.process(sleeper())

    def killer() -> Generator[Event, Any, None]:
        yield eng.timeout(300)
        victim.interrupt("power off")

    eng.process(killer())
    eng.run(until=2000)
    assert log == [("interrupted", 300, "power off"), ("slept", 310)]
    assert not victim.is_alive


def test_an_interrupted_waiter_leaves_the_queue() -> None:
    """Capacity 1: H holds 0..100; W1 and W2 queue at 0; W1 is interrupted at 20 while queued and
    its ``with`` block cancels its request, so W2 gets the unit at 100, not 200."""
    eng = Engine()
    lun = eng.resource(1, "lun")
    log: Log = []

    def user(name: str, service: int) -> Generator[Event, Any, None]:
        try:
            with lun.request() as req:
                yield req
                log.append((name, "granted", eng.now))
                yield eng.timeout(service)
        except Interrupt:
            log.append((name, "gave up", eng.now))

    eng.process(user("H", 100))
    w1 = eng.process(user("W1", 100))
    eng.process(user("W2", 100))

    def killer() -> Generator[Event, Any, None]:
        yield eng.timeout(20)
        w1.interrupt()

    eng.process(killer())
    eng.run()
    assert log == [("H", "granted", 0), ("W1", "gave up", 20), ("W2", "granted", 100)]


def test_cancel_withdraws_a_queued_request() -> None:
    eng = Engine()
    lun = eng.resource(1, "lun")
    held = lun.request()
    queued = lun.request()
    assert list(lun.queue) == [queued]
    queued.cancel()
    assert not lun.queue
    lun.release(held)
    assert lun.count == 0


# -- bad use ------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo[BaseException], *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("delay", [1.5, -1, "10", True])
def test_bad_delay_is_refused(delay: object) -> None:
    with pytest.raises(SimulationError) as exc:
        Engine().timeout(delay)  # type: ignore[arg-type]
    _one_line(exc, "delay")


def test_yielding_a_non_event_stops_the_run_naming_the_process() -> None:
    eng = Engine()

    def world() -> Generator[Any, Any, None]:
        yield 5

    eng.process(world(), name="vcpu-0")
    with pytest.raises(SimulationError) as exc:
        eng.run()
    _one_line(exc, "vcpu-0", "5", "not an event")


def test_passing_the_function_instead_of_a_generator() -> None:
    eng = Engine()

    def world() -> Generator[Event, Any, None]:
        yield eng.timeout(1)

    with pytest.raises(SimulationError) as exc:
        eng.process(world)  # type: ignore[arg-type]
    _one_line(exc, "generator")


def test_event_misuse() -> None:
    eng = Engine()
    ev = eng.event()
    with pytest.raises(SimulationError) as exc:
        _ = ev.value
    _one_line(exc, "not been triggered")
    ev.succeed(1)
    with pytest.raises(SimulationError) as exc:
        ev.succeed(2)
    _one_line(exc, "already been triggered")
    with pytest.raises(SimulationError):
        eng.event().fail("not an exception")  # type: ignore[arg-type]


def test_resource_and_run_misuse() -> None:
    eng = Engine()
    with pytest.raises(SimulationError) as exc:
        eng.resource(0, "lun")
    _one_line(exc, "lun", "capacity")
    lun = eng.resource(1, "lun")
    req = lun.request()
    lun.release(req)
    with pytest.raises(SimulationError) as exc:
        lun.release(req)
    _one_line(exc, "released twice")
    eng.run(until=10)
    with pytest.raises(SimulationError) as exc:
        eng.run(until=5)
    _one_line(exc, "past")
    with pytest.raises(SimulationError):
        eng.run(until=20.0)  # type: ignore[arg-type]
    with pytest.raises(SimulationError):
        eng.run_paced(20, speed=0)
    with pytest.raises(SimulationError) as exc:
        Engine().step()
    _one_line(exc, "nothing is scheduled")


def test_condition_misuse() -> None:
    eng = Engine()
    with pytest.raises(SimulationError) as exc:
        eng.any_of([])
    _one_line(exc, "never fire")
    with pytest.raises(SimulationError) as exc:
        eng.all_of([Engine().timeout(1)])
    _one_line(exc, "events of this engine")


def test_interrupt_misuse() -> None:
    eng = Engine()

    def selfish() -> Generator[Event, Any, None]:
        me.interrupt()
        yield eng.timeout(1)

    me = eng.process(selfish())
    with pytest.raises(SimulationError) as exc:
        eng.run()
    _one_line(exc, "itself")
    with pytest.raises(SimulationError) as exc:
        me.interrupt()
    _one_line(exc, "already ended")


def test_a_dying_process_stops_the_run_unless_someone_waits_for_it() -> None:
    eng = Engine()

    def doomed() -> Generator[Event, Any, None]:
        yield eng.timeout(5)
        raise RuntimeError("guest crashed")

    eng.process(doomed())
    with pytest.raises(RuntimeError, match="guest crashed"):
        eng.run()

    eng = Engine()
    caught: list[tuple[int, str]] = []

    def watcher() -> Generator[Event, Any, None]:
        try:
            yield eng.process(doomed())
        except RuntimeError as err:
            caught.append((eng.now, str(err)))

    eng.process(watcher())
    eng.run()
    assert caught == [(5, "guest crashed")]
