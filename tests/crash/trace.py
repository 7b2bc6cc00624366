"""Record a workload's I/O once, then rebuild the disk as a power cut after any write left it.

Re-running a workload up to each cut point costs O(writes²) workload time; a run is
deterministic (seeded data, a manual clock), so the disk a cut leaves is the same as replaying the
recorded writes, ATS and flushes of one full run through :class:`vmfs.device.fault.FaultDevice`
until it cuts.  The fault device does the tearing and the volatile cache exactly as it would in
the live run; :func:`crashed_disk` checks on the way that every ATS gives the answer it gave live,
so a replay that drifted from the real run fails instead of testing a disk nobody could see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vmfs.device.base import BlockDevice
from vmfs.device.fault import FaultDevice, PowerCut
from vmfs.device.overlay import OverlayDevice


@dataclass
class IoEvent:
    kind: str  # "write", "ats" or "flush"
    offset: int = 0
    data: bytes = b""
    expected: bytes = b""
    result: bool = True


class Recorder(BlockDevice):
    """Passes every operation to ``base`` and keeps it (with its bytes) in :attr:`events`."""

    def __init__(self, base: BlockDevice) -> None:
        super().__init__(readonly=False)
        self.base = base
        self.name = f"recorder:{base.name}"
        self.events: list[IoEvent] = []

    @property
    def size(self) -> int:
        return self.base.size

    @property
    def writes(self) -> int:
        """Operations the fault device counts as writes (its ``cut_after`` counts these)."""
        return sum(e.kind != "flush" for e in self.events)

    def _read(self, offset: int, length: int) -> bytes:
        return self.base.read(offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        self.events.append(IoEvent("write", offset, data))
        self.base.write(offset, data)

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        result = self.base.compare_and_write(offset, expected, new)
        self.events.append(IoEvent("ats", offset, new, expected, result))
        return result

    def flush(self) -> None:
        self.events.append(IoEvent("flush"))
        self.base.flush()


@dataclass
class Crash:
    """What a cut left: the disk, and how many writes had completed before it."""

    disk: OverlayDevice
    completed: int
    events: int = field(default=0)  # recorded events replayed before the cut (flushes included)


def crashed_disk(
    base: BlockDevice,
    events: list[IoEvent],
    cut: int,
    *,
    volatile: bool = False,
    seed: int = 0,
    fault: Callable[[OverlayDevice, int], FaultDevice] | None = None,
) -> Crash:
    """The disk after the power went at write ``cut`` + 1 of the recorded run (torn, and with
    ``volatile`` the unflushed sectors each keep one of the values they held since the flush);
    ``fault`` builds another fault device over the disk for that cut (another cache or tearing)."""
    disk = OverlayDevice(base)
    if fault is None:
        fault_device = FaultDevice(disk, cut_after=cut, tear=True, seed=seed, volatile=volatile)
    else:
        fault_device = fault(disk, cut)
    for i, event in enumerate(events):
        try:
            if event.kind == "write":
                fault_device.write(event.offset, event.data)
            elif event.kind == "ats":
                got = fault_device.compare_and_write(event.offset, event.expected, event.data)
                assert got == event.result, f"replay drifted from the recorded run at event {i}"
            else:
                fault_device.flush()
        except PowerCut:
            return Crash(disk, cut, i)
    return Crash(disk, fault_device.writes, len(events))
