"""The time source of the hardware interface.

The device model needs nothing of a simulation but "what time is it now, in microseconds", so
it takes any object with ``now_us()``: the VMkernel's event engine, a wall clock for a host paced
to real time, or :class:`StepClock` in tests.  Keeping the dependency this small lets the engine
and the hardware interface be written (and tested) independently.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current simulated time."""

    def now_us(self) -> int:
        """Current time in whole microseconds; never decreases."""
        ...


class StepClock:
    """A clock that moves only when told to (tests, scripted experiments)."""

    def __init__(self, start_us: int = 0) -> None:
        self._now = start_us

    def now_us(self) -> int:
        return self._now

    def advance(self, us: int) -> None:
        """Move time forward by ``us`` microseconds (never backwards)."""
        if us < 0:
            raise ValueError("a clock does not run backwards")
        self._now += us

    def set(self, us: int) -> None:
        """Jump to ``us`` (at or after the current time)."""
        self.advance(us - self._now)


class WallClock:
    """Monotonic real time, for a host paced to the wall clock."""

    def now_us(self) -> int:
        return time.monotonic_ns() // 1000
