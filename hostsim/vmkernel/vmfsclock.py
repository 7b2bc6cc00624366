"""The VMFS module's clock inside a simulated host: the engine's time, not the wall clock.

The vmfs library asks its host identity's clock for monotonic microseconds (heartbeat stamps,
lease watching, lock waits) and renews heartbeats from the clock's listeners when the clock is a
:class:`vmfs.cluster.host.ManualClock`.  A simulated host therefore gives its attachments an
:class:`EngineClock`: time is the engine's, and a heartbeat process of the VMkernel calls the
listeners as simulated time passes (:func:`heartbeat_world`), so a host that stops being
simulated (a crash) stops renewing exactly as a dead ESX host does.
"""

from __future__ import annotations

from hostsim.errors import HostsimError
from hostsim.vmkernel.engine import MS, Engine, ProcessGenerator
from vmfs.cluster.host import ManualClock
from vmfs.errors import BusyError

#: how often the VMkernel lets the VMFS module renew heartbeats and watch other hosts' slots
TICK_US = 500 * MS


class EngineClock(ManualClock):
    """Monotonic time = the engine's clock plus a fixed start; wall time = ``epoch_s`` + that."""

    def __init__(self, engine: Engine, *, start_us: int = 1_000_000, epoch_s: int = 1_700_000_000) -> None:
        super().__init__(start_us=start_us, wall=epoch_s)
        self.engine = engine
        self._start_us = start_us

    @property  # type: ignore[override]
    def now_us(self) -> int:
        return self._start_us + self.engine.now

    @now_us.setter
    def now_us(self, value: int) -> None:  # ManualClock's constructor sets it once
        pass

    def sleep(self, seconds: float) -> None:
        """Nothing inside a simulated host may block for simulated time in a function call (time
        moves only between events), so a VMFS wait that would sleep ends at once as EBUSY: a lock
        another host holds (the caller names its owner from the lock on disk) or a heartbeat
        slot that must be watched.  Pretending the time passed instead would make other hosts'
        leases run out early and their live locks look breakable."""
        if seconds > 0:
            raise BusyError(f"busy, and a simulated host cannot wait {seconds:g} s inside a VMFS call")

    def advance(self, seconds: float) -> None:
        raise HostsimError("an engine clock moves with the engine, not by advance()")

    def tick(self) -> None:
        for listener in list(self.listeners):
            listener()


def heartbeat_world(engine: Engine, clock: EngineClock) -> ProcessGenerator:
    """The VMkernel world that keeps the VMFS module's heartbeats and lease watches going."""
    while True:
        yield engine.timeout(TICK_US)
        clock.tick()
