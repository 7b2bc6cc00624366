"""The VMkernel's discrete-event engine: one clock, one event heap, processes as generators.

Why hand-written and not SimPy or salabim: ``bench/bench_sim_engine.py`` runs the same workload on
all three (``docs/hostsim.md``, "Engine", has the figures and the reasons).  The shape is SimPy's
(``../shared/docs/style-anchors.md`` section 5): everything that acts over time is a *process*, a
generator that ``yield``\\ s events (a :meth:`Engine.timeout`, a :class:`Request` on a
:class:`Resource`, a bare :class:`Event`, another :class:`Process`, a :class:`Condition`) and is resumed when they fire;
time never moves inside a function call.

Rules the rest of the simulator relies on:

* **Time is an integer number of microseconds** (:data:`SECOND`, :data:`MS`, :data:`US`).  A float
  delay is refused, so no drift accumulates over a long run and every clock value prints the same
  on every machine.
* **One ordering rule: (time, scheduling order).**  Each scheduled event gets the next value of a
  counter; the heap is ordered by ``(time, counter)``.  Events due at the same microsecond are
  therefore processed FIFO in the order they were scheduled, whatever their kind (a process start,
  a timeout, a granted request, an interrupt).  There are no priorities.
* **Determinism.**  Nothing depends on ``id()``, hashing or the wall clock: the same processes
  started in the same order, drawing from :attr:`Engine.random` (seeded), give the same event
  order byte for byte, run after run.  :meth:`Engine.run_paced` keeps that order for the events the
  simulation makes itself; work posted from other threads (:meth:`Engine.post`) lands at the
  simulated time its wall-clock arrival maps to, which is as repeatable as the wall clock.
* ``run(until=t)`` processes events due strictly before ``t`` and leaves the clock at ``t``, so
  ``run(until=a); run(until=b)`` covers ``[0, a)`` then ``[a, b)`` with nothing done twice.
* A process that raises, with nobody waiting on it, stops :meth:`Engine.run` with its own
  exception (a world must not die silently).  A process waiting on a failed event gets the
  exception thrown in at its ``yield``.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

#: Units of simulated time (integers: one tick is one microsecond).
US = 1
MS = 1_000
SECOND = 1_000_000

_PENDING: Any = object()

ProcessGenerator = Generator["Event", Any, Any]


class SimulationError(Exception):
    """Misuse of the engine (a float delay, an event triggered twice, a yield of a non-event...).

    One root, so the console can report it in one line and the tests can expect it by type."""


class Interrupt(Exception):
    """Thrown into a process at its current ``yield`` by :meth:`Process.interrupt`."""

    def __init__(self, cause: Any = None) -> None:
        super().__init__(cause)
        self.cause = cause


class Event:
    """Something that happens at one instant; processes wait for it by yielding it.

    Pending until :meth:`succeed` or :meth:`fail` schedules it (at the current time); processed
    when the engine pops it and calls the waiters, in the order they started waiting."""

    __slots__ = ("_ok", "_value", "callbacks", "engine")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: waiters, called in order when the event is processed; None once processed
        self.callbacks: list[Callable[[Event], None]] | None = []
        self._value: Any = _PENDING
        self._ok = True

    @property
    def triggered(self) -> bool:
        """True once the event is scheduled (it has a value or an exception)."""
        return self._value is not _PENDING

    @property
    def processed(self) -> bool:
        """True once the waiters have been called."""
        return self.callbacks is None

    @property
    def ok(self) -> bool:
        """False when the event was failed (its value is then the exception)."""
        return self._ok

    @property
    def value(self) -> Any:
        """The value the event was triggered with (the exception, for a failed one)."""
        if self._value is _PENDING:
            raise SimulationError(f"{self!r} has no value yet: it has not been triggered")
        return self._value

    def succeed(self, value: Any = None) -> Event:
        """Trigger the event now with ``value``; it is processed after events already due now."""
        if self._value is not _PENDING:
            self._check_untriggered()
        self._value = value
        engine = self.engine
        heapq.heappush(engine._heap, (engine.now, next(engine._seq), self))
        return self

    def fail(self, exc: BaseException) -> Event:
        """Trigger the event now as failed: waiters get ``exc`` thrown in at their ``yield``."""
        if not isinstance(exc, BaseException):
            raise SimulationError(f"fail() needs an exception, got {exc!r}")
        self._check_untriggered()
        self._ok = False
        self._value = exc
        self.engine._schedule(self, 0)
        return self

    def _check_untriggered(self) -> None:
        if self._value is not _PENDING:
            raise SimulationError(f"{self!r} has already been triggered")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x}>"


class Timeout(Event):
    """An event that the engine triggers itself ``delay`` microseconds from now."""

    __slots__ = ("delay",)

    def __init__(self, engine: Engine, delay: int, value: Any = None) -> None:
        delay = _check_delay(delay)
        Event.__init__(self, engine)
        self.delay = delay
        self._value = value
        engine._schedule(self, delay)

    def __repr__(self) -> str:
        return f"<Timeout delay={self.delay}us>"


class Process(Event):
    """A generator run by the engine; as an event it fires when the generator returns.

    Its value is the generator's return value, so one process can wait for another by yielding it.
    The first step runs at the time the process was created, after the events already due then."""

    __slots__ = ("_gen", "_target", "name")

    def __init__(self, engine: Engine, gen: ProcessGenerator, name: str | None = None) -> None:
        if not isinstance(gen, Generator):
            raise SimulationError(
                f"process() needs a generator object, got {gen!r} "
                "(call the function: engine.process(world(engine)), not engine.process(world))"
            )
        Event.__init__(self, engine)
        self._gen = gen
        self.name = name or getattr(gen, "__name__", "process")
        start = Event(engine)
        start.callbacks.append(self._resume)  # type: ignore[union-attr]
        start._value = None  # start.succeed(), without its checks: a new event is untriggered
        heapq.heappush(engine._heap, (engine.now, next(engine._seq), start))
        #: the event the process is waiting for (None once it has ended)
        self._target: Event | None = start

    @property
    def is_alive(self) -> bool:
        """True until the generator has returned or raised."""
        return self._value is _PENDING

    def interrupt(self, cause: Any = None) -> None:
        """Throw :class:`Interrupt` (``cause``) into the process at its current ``yield``, now.

        The process stops waiting for its target; a :class:`Request` it was queued with is left in
        the queue unless the process leaves a ``with`` block (which cancels it) or cancels it.  A
        timeout it was waiting for still comes due at its time, with no one waiting."""
        if self._value is not _PENDING:
            raise SimulationError(f"cannot interrupt {self.name}: it has already ended")
        if self.engine.active_process is self:
            raise SimulationError(f"process {self.name} cannot interrupt itself")
        signal = Event(self.engine)
        signal.callbacks.append(self._on_interrupt)  # type: ignore[union-attr]
        signal.fail(Interrupt(cause))

    def _on_interrupt(self, signal: Event) -> None:
        if self._value is not _PENDING:
            return  # ended between the interrupt and its delivery
        target = self._target
        if target is not None and target.callbacks is not None:
            target.callbacks.remove(self._resume)
        self._resume(signal)

    def _resume(self, event: Event) -> None:
        """Send the event's value (or throw its exception) into the generator until it waits."""
        engine = self.engine
        engine.active_process = self
        gen = self._gen
        while True:
            try:
                nxt = gen.send(event._value) if event._ok else gen.throw(event._value)
            except StopIteration as stop:
                self._end(True, stop.value)
                break
            except BaseException as exc:  # the process's own failure becomes its value
                self._end(False, exc)
                break
            try:
                waiters = nxt.callbacks
            except AttributeError:
                gen.close()
                self._end(False, SimulationError(
                    f"process {self.name} yielded {nxt!r}, which is not an event of the engine"))
                break
            if nxt.engine is not engine:
                gen.close()
                self._end(False, SimulationError(f"process {self.name} yielded an event of another engine"))
                break
            if waiters is not None:
                waiters.append(self._resume)
                self._target = nxt
                break
            event = nxt  # already processed: carry on at once, as if it had just fired
        engine.active_process = None

    def _end(self, ok: bool, value: Any) -> None:
        self._target = None
        self._ok = ok
        self._value = value
        self.engine._schedule(self, 0)

    def __repr__(self) -> str:
        return f"<Process {self.name}>"


class Request(Event):
    """A claim on one unit of a :class:`Resource`; fires when the unit is granted.

    Use it as SimPy's: ``with lun.request() as req: yield req; ...`` releases the unit (or leaves
    the queue) when the block ends, however it ends."""

    __slots__ = ("resource",)

    def __init__(self, resource: Resource) -> None:
        Event.__init__(self, resource.engine)
        self.resource = resource

    def cancel(self) -> None:
        """Leave the queue (if waiting) or give the unit back (if granted)."""
        self.resource._drop(self)

    def __enter__(self) -> Request:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.resource._drop(self)

    def __repr__(self) -> str:
        return f"<Request on {self.resource.name}>"


class Resource:
    """``capacity`` identical units served FIFO: a LUN queue of depth 32, a pCPU, a lock.

    A request is granted at once (as an event due now) while a unit is free, else it waits in
    :attr:`queue`; each release grants the oldest waiter."""

    def __init__(self, engine: Engine, capacity: int = 1, name: str = "resource") -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise SimulationError(f"resource {name}: capacity must be a positive integer, got {capacity!r}")
        self.engine = engine
        self.capacity = capacity
        self.name = name
        #: granted requests, in grant order (a dict: ordered, O(1) removal)
        self.users: dict[Request, None] = {}
        #: waiting requests, oldest first
        self.queue: deque[Request] = deque()

    def request(self) -> Request:
        """Ask for one unit; yield the returned request to wait until it is granted."""
        req = Request(self)
        if len(self.users) < self.capacity:
            self.users[req] = None
            req.succeed()
        else:
            self.queue.append(req)
        return req

    def release(self, req: Request) -> None:
        """Give back the unit ``req`` holds (or withdraw it from the queue)."""
        if req.resource is not self or (req not in self.users and req not in self.queue):
            raise SimulationError(f"{req!r} is not held by nor queued on {self.name} (released twice?)")
        self._drop(req)

    def _drop(self, req: Request) -> None:
        if req in self.users:
            del self.users[req]
            if self.queue and len(self.users) < self.capacity:
                nxt = self.queue.popleft()
                self.users[nxt] = None
                nxt.succeed()
        elif req in self.queue:
            self.queue.remove(req)

    @property
    def count(self) -> int:
        """Units in use."""
        return len(self.users)


class Condition(Event):
    """Fires when the first of its events (``any``) or all of them (``all``) have been processed.

    Built by :meth:`Engine.any_of` and :meth:`Engine.all_of`: "this I/O or an 8 s timeout",
    "every vCPU has stopped".  A failed event fails the condition with its exception, unless the
    condition has already fired (a later failure is then the concern of nobody: keep failures
    inside processes that can handle them)."""

    __slots__ = ("_events", "_left", "_need_all")

    def __init__(self, engine: Engine, events: list[Event], need_all: bool) -> None:
        Event.__init__(self, engine)
        for ev in events:
            if not isinstance(ev, Event) or ev.engine is not engine:
                raise SimulationError(f"{'all_of' if need_all else 'any_of'}() needs events of this engine, got {ev!r}")
        if not events and not need_all:
            raise SimulationError("any_of() of no events would never fire")
        self._events = events
        self._need_all = need_all
        self._left = len(events)
        if not events:
            self.succeed([])
        for ev in events:
            if ev.callbacks is None:
                self._check(ev)
            else:
                ev.callbacks.append(self._check)

    def _check(self, ev: Event) -> None:
        if self._value is not _PENDING:
            return
        if not ev._ok:
            self.fail(ev._value)
        elif not self._need_all:
            self.succeed(ev)
        else:
            self._left -= 1
            if self._left == 0:
                self.succeed([e._value for e in self._events])


def _check_delay(delay: Any) -> int:
    if type(delay) is not int:
        if isinstance(delay, bool) or not isinstance(delay, int):
            raise SimulationError(
                f"delay must be an integer number of microseconds, got {delay!r} (use hostsim.vmkernel.engine.MS ...)")
        delay = int(delay)
    if delay < 0:
        raise SimulationError(f"delay must not be negative, got {delay}")
    return delay


class Engine:
    """The clock (:attr:`now`, microseconds) and the heap of scheduled events.

    ``seed`` seeds :attr:`random`, the one random source the simulation should draw from (or
    derive per-world generators from), so a run is repeated exactly by its seed."""

    def __init__(self, seed: int = 0) -> None:
        self.now = 0
        self.seed = seed
        self.random = random.Random(seed)
        #: the process being resumed, if any (None between steps)
        self.active_process: Process | None = None
        self._heap: list[tuple[int, int, Event]] = []
        self._seq = itertools.count()
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()

    # -- making things ------------------------------------------------------------------------

    def event(self) -> Event:
        """A bare event, triggered by whoever holds it (:meth:`Event.succeed`, :meth:`Event.fail`)."""
        return Event(self)

    def timeout(self, delay: int, value: Any = None) -> Timeout:
        """An event due ``delay`` microseconds from now."""
        return Timeout(self, delay, value)

    def process(self, gen: ProcessGenerator, name: str | None = None) -> Process:
        """Start a process; its first step runs now, after the events already due now."""
        return Process(self, gen, name)

    def resource(self, capacity: int = 1, name: str = "resource") -> Resource:
        """A FIFO resource of ``capacity`` units."""
        return Resource(self, capacity, name)

    def any_of(self, events: list[Event]) -> Condition:
        """An event that fires with the first of ``events`` to be processed (its value is that event)."""
        return Condition(self, list(events), need_all=False)

    def all_of(self, events: list[Event]) -> Condition:
        """An event that fires once all ``events`` are processed, with their values in order."""
        return Condition(self, list(events), need_all=True)

    # -- running ------------------------------------------------------------------------------

    def _schedule(self, event: Event, delay: int) -> None:
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), event))

    def now_us(self) -> int:
        """The current time: the engine is a :class:`hostsim.hic.clock.Clock` for the device models."""
        return self.now

    def peek(self) -> int | None:
        """Time of the next scheduled event, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def step(self) -> None:
        """Process the next event: advance the clock to it and call its waiters in order."""
        if not self._heap:
            raise SimulationError("step(): nothing is scheduled")
        self.now, _, event = heapq.heappop(self._heap)
        callbacks = event.callbacks
        event.callbacks = None
        for callback in callbacks:  # type: ignore[union-attr]
            callback(event)
        if not event._ok and not callbacks:
            raise event._value  # a failure nobody waits for (a process that died) stops the run

    def run(self, until: int | None = None) -> None:
        """Process events due before ``until`` (all of them when None) and leave the clock there."""
        if until is None:
            while self._heap:
                self.step()
            return
        until = self._check_until(until)
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] < until:  # step(), inlined: this loop is every event's cost
            self.now, _, event = pop(heap)
            callbacks = event.callbacks
            event.callbacks = None
            for callback in callbacks:  # type: ignore[union-attr]
                callback(event)
            if not event._ok and not callbacks:
                raise event._value
        self.now = until

    def _check_until(self, until: Any) -> int:
        if isinstance(until, bool) or not isinstance(until, int):
            raise SimulationError(f"until must be an integer time in microseconds, got {until!r}")
        if until < self.now:
            raise SimulationError(f"until={until} is in the past (now={self.now})")
        return int(until)

    # -- paced to the wall clock --------------------------------------------------------------

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` inside the loop at the next chance; safe to call from any thread.

        This is how an administrator (the console's command server) acts on a host that runs
        paced: the callback runs between events, at the simulated time of its arrival, and may
        start processes or trigger events.  Only :meth:`run_paced` runs posted work (a headless
        :meth:`run` has no wall clock to map an arrival to)."""
        self._inbox.put(callback)
        self._wake.set()

    def run_paced(self, until: int, speed: float = 1.0,
                  clock: Callable[[], float] = time.monotonic) -> None:
        """Like :meth:`run`, but the simulated clock follows the wall clock at ``speed``.

        Before each event the loop waits until the wall clock reaches the event's time (one
        simulated second per ``1/speed`` wall seconds, counted from the call), waking early for
        work :meth:`post`\\ ed from other threads.  If the simulation falls behind (events cost
        more than the time between them) it runs as fast as it can and does not skip anything."""
        until = self._check_until(until)
        if not speed > 0:
            raise SimulationError(f"speed must be positive, got {speed!r}")
        wall0, sim0 = clock(), self.now

        def wall_of(sim: int) -> float:
            return wall0 + (sim - sim0) / SECOND / speed

        while True:
            self._drain_inbox(clock, wall0, sim0, speed, until)
            due = self.peek()
            final = due is None or due >= until
            remaining = wall_of(until if final else due) - clock()  # type: ignore[arg-type]
            if remaining > 0 and self._wake.wait(remaining):
                self._wake.clear()
                continue  # woken early by post(): run the posted work, then wait again
            if final:
                self.now = until
                return
            self.step()

    def _drain_inbox(self, clock: Callable[[], float], wall0: float, sim0: int, speed: float, until: int) -> None:
        """Run posted callbacks at the simulated time their arrival maps to (never backwards)."""
        while True:
            try:
                callback = self._inbox.get_nowait()
            except queue.Empty:
                return
            arrived = min(until, sim0 + int((clock() - wall0) * speed * SECOND))
            due = self.peek()
            if due is not None:
                arrived = min(arrived, due)  # never jump over an event that is due first
            self.now = max(self.now, arrived)
            callback()
