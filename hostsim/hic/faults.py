"""The fault layer of a LUN: added latency, I/O errors, lost writes, all paths down.

Every random choice comes from one ``random.Random(seed)`` per LUN, drawn once per command in
the order commands are issued, so the same seed and the same command sequence give the same
faults, run after run.  What each fault does:

* **added latency**: ``extra_us`` more service time for every command (or only for commands
  touching chosen LBAs);
* **I/O errors**: a command touching a chosen LBA (reads, writes and ATS, or only the kinds
  chosen), or drawn with probability ``error_rate``,
  fails with :class:`MediumError` (a :class:`vmfs.errors.DeviceError`, errno EIO) after its
  service time; nothing is written;
* **lost writes**: a write touching a chosen LBA, or drawn with probability ``lose_rate``, is
  acknowledged but never stored (the array's cache lost it).  ATS is never lost: it reports
  its outcome, and a lost ATS would be a miscompare the caller could see;
* **all paths down**: from :meth:`FaultPlan.paths_down` (or after a countdown of commands,
  :meth:`FaultPlan.down_after`) until :meth:`FaultPlan.paths_up`, every command (flush
  included) fails at once with :class:`AllPathsDownError`.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field

from vmfs.errors import DeviceError

SECTOR = 512


class MediumError(DeviceError):
    """The device failed a command (an injected EIO)."""

    errno = errno.EIO


class AllPathsDownError(DeviceError):
    """No path to the LUN is alive: every command fails until it comes back."""

    errno = errno.EIO


@dataclass
class FaultPlan:
    """What goes wrong on one LUN.  LBAs are 512-byte sectors of the LUN."""

    seed: int = 0
    extra_us: float = 0.0
    slow_lbas: set[int] = field(default_factory=set)
    slow_extra_us: float = 0.0
    error_lbas: set[int] = field(default_factory=set)
    #: the commands ``error_lbas`` fail ("read", "write", "ats")
    error_ops: set[str] = field(default_factory=lambda: {"read", "write", "ats"})
    error_rate: float = 0.0
    lose_lbas: set[int] = field(default_factory=set)
    lose_rate: float = 0.0
    apd: bool = False
    #: commands still served before all paths go down by themselves (None: no countdown)
    apd_after: int | None = None
    #: how many writes were acknowledged without being stored, and how many errors were injected
    lost_writes: int = 0
    injected_errors: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "lose_rate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        self._rng = random.Random(self.seed)

    @property
    def quiet(self) -> bool:
        """Nothing can go wrong: no latency, error, loss or path failure is planned (the LUN then
        skips the per-command fault checks; the plan may change at any time, so this is asked
        per command)."""
        return not (self.apd or self.apd_after is not None or self.extra_us or self.slow_lbas
                    or self.error_lbas or self.error_rate or self.lose_lbas or self.lose_rate)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def paths_down(self) -> None:
        self.apd = True

    def paths_up(self) -> None:
        self.apd = False
        self.apd_after = None

    def down_after(self, commands: int) -> None:
        """All paths go down once ``commands`` more commands have been served (a LUN lost in
        the middle of a transaction, at a chosen point)."""
        if commands < 0:
            raise ValueError("a command count cannot be negative")
        self.apd_after = commands

    def check_paths(self) -> bool:
        """Whether all paths are down for the command being issued (counts the countdown)."""
        if self.apd_after is not None and not self.apd:
            if self.apd_after == 0:
                self.apd = True
            else:
                self.apd_after -= 1
        return self.apd

    @staticmethod
    def lbas(offset: int, length: int) -> range:
        """The sectors a command of ``length`` bytes at byte ``offset`` touches."""
        return range(offset // SECTOR, (offset + max(length, 1) - 1) // SECTOR + 1)

    def _touches(self, chosen: set[int], offset: int, length: int) -> int | None:
        if not chosen:
            return None
        for lba in self.lbas(offset, length):
            if lba in chosen:
                return lba
        return None

    def latency_us(self, offset: int, length: int) -> float:
        slow = self._touches(self.slow_lbas, offset, length) is not None
        return self.extra_us + (self.slow_extra_us if slow else 0.0)

    def error_for(self, op: str, offset: int, length: int) -> str | None:
        """Why this command fails (a message), or None.  Draws one random number per command
        whenever an error rate is set, so the sequence of draws depends on the commands only."""
        lba = self._touches(self.error_lbas, offset, length) if op in self.error_ops else None
        draw = self._rng.random() if self.error_rate else 1.0
        if lba is not None:
            self.injected_errors += 1
            return f"medium error on {op} at LBA {lba}"
        if draw < self.error_rate:
            self.injected_errors += 1
            return f"injected {op} error at LBA {offset // SECTOR}"
        return None

    def loses(self, offset: int, length: int) -> bool:
        """Whether this write is acknowledged but not stored."""
        hit = self._touches(self.lose_lbas, offset, length) is not None
        draw = self._rng.random() if self.lose_rate else 1.0
        if hit or draw < self.lose_rate:
            self.lost_writes += 1
            return True
        return False
