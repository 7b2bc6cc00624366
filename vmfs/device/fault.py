"""A fault-injecting device: traces I/O and cuts the power after N writes.

The write that hits the cut may be *torn*: only its first sectors reach the device.  A single
sector is never torn: disks write a sector atomically, and the format relies on that
(heartbeat slots, lock blocks and cluster metadata are each one sector).  Every later write,
and every read, fails, as for a host that died.  Atomic test-and-set stays atomic (a SCSI
COMPARE AND WRITE either happens or not), but it counts as a write and can be the one the power
is cut before.

With ``volatile=True`` the device also has a volatile write cache, as most disks do: nothing
written since the last :meth:`flush` is sure to be on the medium when the power goes.  At the
cut every sector written since then ends up holding, at random, its content at the last flush or
any value written to it since (a cache may destage an older value and never the newer one).
That is what checks that the code flushes where crash safety needs it, not only that it writes
in the right order.  ``destage`` makes that cache a chosen adversary instead of a random one:
the sectors it names (and those last changed by a test-and-set) keep their newest value, every
other unflushed sector its value at the last flush.  ``cut_at_flush`` makes every flush a cut
point too (the power may go while the cache destages), counted with the writes.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from vmfs.device.base import BlockDevice
from vmfs.errors import DeviceError


class PowerCut(DeviceError):
    """The simulated host lost power: no I/O reaches the device any more."""


class FaultDevice(BlockDevice):
    def __init__(
        self,
        base: BlockDevice,
        *,
        cut_after: int | None = None,
        tear: bool = True,
        seed: int = 0,
        volatile: bool = False,
        destage: Callable[[int], bool] | None = None,
        cut_at_flush: bool = False,
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
        self.volatile = volatile
        #: sector -> [content at the last flush, every value written since] (volatile mode)
        self._unflushed: dict[int, list[bytes]] = {}
        #: byte offset -> True for a sector whose newest value the cache destages (module docstring)
        self.destage = destage
        self.cut_at_flush = cut_at_flush
        #: sectors last changed by a test-and-set (the adversarial cache keeps them)
        self._ats_sectors: set[int] = set()
        self._ats_lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.base.size

    def leaves(self) -> list[BlockDevice]:
        return self.base.leaves()

    def _check(self) -> None:
        if self.dead:
            raise PowerCut(f"{self.name}: power cut after {self.cut_after} writes")

    def _next_write_cuts(self) -> bool:
        self.writes += 1
        return self.cut_after is not None and self.writes > self.cut_after

    def _read(self, offset: int, length: int) -> bytes:
        self._check()
        return self.base.read(offset, length)

    def _remember(self, offset: int, data: bytes, before: bytes | None = None) -> None:
        """Volatile mode: note the sectors ``data`` is about to overwrite."""
        if not self.volatile:
            return
        ss = self.sector_size
        start = offset // ss * ss
        end = -(-(offset + len(data)) // ss) * ss
        if before is None or start != offset or end != offset + len(data):
            before = self.base.read(start, end - start)
        after = bytearray(before)
        after[offset - start : offset - start + len(data)] = data
        for i in range((end - start) // ss):
            history = self._unflushed.setdefault(start // ss + i, [before[i * ss : (i + 1) * ss]])
            history.append(bytes(after[i * ss : (i + 1) * ss]))

    def _lose_unflushed(self) -> None:
        """The power went: each unflushed sector keeps one of the values it held since the flush."""
        ss = self.sector_size
        for sector, history in sorted(self._unflushed.items()):
            if self.destage is None:
                value = self.rng.choice(history)
            else:
                newest = sector in self._ats_sectors or self.destage(sector * ss)
                value = history[-1] if newest else history[0]
            self.base.write(sector * ss, value)
        self._unflushed.clear()

    def _cut(self) -> None:
        self.dead = True
        if self.volatile:
            self._lose_unflushed()
        self._check()

    def _write(self, offset: int, data: bytes) -> None:
        self._check()
        if self._next_write_cuts():
            sectors = -(-len(data) // self.sector_size)
            if self.tear and sectors > 1:
                keep = self.rng.randrange(0, sectors) * self.sector_size
                if keep:
                    self._remember(offset, data[:keep])
                    self.base.write(offset, data[:keep])
            self._cut()
        self.trace.append(("write", offset, len(data)))
        self._remember(offset, data)
        self.base.write(offset, data)

    def _compare_and_write(self, offset: int, expected: bytes, new: bytes) -> bool:
        self._check()
        if self._next_write_cuts():
            self._cut()
        self.trace.append(("ats", offset, len(new)))
        if self.destage is not None:
            self._ats_sectors.update(range(offset // self.sector_size, -(-(offset + len(new)) // self.sector_size)))
        if self.volatile:
            with self._ats_lock:  # (atomic among the users of this device: one host's view)
                if self.base.read(offset, len(expected)) != expected:
                    return False
                self._remember(offset, new, before=expected)
                self.base.write(offset, new)
                return True
        return self.base.compare_and_write(offset, expected, new)

    def flush(self) -> None:
        self._check()
        if self.cut_at_flush and self._next_write_cuts():
            self._cut()
        self.base.flush()
        self._unflushed.clear()

    def close(self) -> None:
        """Closing a dead host's device does nothing: the base device lives on for the others."""
