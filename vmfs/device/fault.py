"""A fault-injecting device: traces I/O and cuts the power after N writes.

The write that hits the cut may be *torn*: only its first sectors reach the device.  A single
sector is never torn: disks write a sector atomically, and the format relies on that
(heartbeat slots, lock blocks and cluster metadata are each one sector).  Every later write,
and every read, fails, as for a host that died.  Atomic test-and-set stays atomic (a SCSI
COMPARE AND WRITE either happens or not), but it counts as a write and can be the one the power
is cut before.
"""

from __future__ import annotations

import random

from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError


class PowerCut(DeviceError):
    """The simulated host lost power: no I/O reaches the device any more."""


class FaultDevice(BlockDevice):
    def __init__(
        self, base: BlockDevice, *, cut_after: int | None = None, tear: bool = True, seed: int = 0
    ) -> None:
        super().__init__(readonly=base.readonly)
        self.base = base
        self.name = f"fault:{base.name}"
        self.cut_after = cut_after
        self.tear = tear
        self.rng = random.Random(seed)
        self.writes = 0
        self.dead = False
        self.trace: list[tuple[str, int, int]] = []

    @property
    def size(self) -> int:
        return self.base.size

    def _check(self) -> None:
        if self.dead:
            raise PowerCut(f"{self.name}: power cut after {self.cut_after} writes")

    def _next_write_cuts(self) -> bool:
        self.writes += 1
        return self.cut_after is not None and self.writes > self.cut_after

    def _read(self, offset: int, length: int) -> bytes:
        self._check()
        return self.base.read(offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        self._check()
        if self._next_write_cuts():
            sectors = -(-len(data) // self.sector_size)
            if self.tear and sectors > 1:
                keep = self.rng.randrange(0, sectors) * self.sector_size
                if keep:
                    self.base.write(offset, data[:keep])
            self.dead = True
            self._check()
        self.trace.append(("write", offset, len(data)))
        self.base.write(offset, data)

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        self._check()
        if self._next_write_cuts():
            self.dead = True
            self._check()
        self.trace.append(("ats", offset, len(new)))
        return self.base.compare_and_write(offset, expected, new)

    def flush(self) -> None:
        self._check()
        self.base.flush()

    def close(self) -> None:
        """Closing a dead host's device does nothing: the base device lives on for the others."""
