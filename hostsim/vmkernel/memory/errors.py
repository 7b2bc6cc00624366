"""The memory manager's user-caused errors, one line each (the console prints them as they are)."""

from __future__ import annotations

from hostsim.errors import HostsimError


class MemConfigError(HostsimError):
    """A bad memory setting: a negative size, min above max, a tax rate outside [0, 1), a page
    number outside the VM, a page of the wrong length."""


class MemAdmissionError(HostsimError):
    """Power-on refused by admission control.  ``reason`` is the ESX reason ("insufficient
    memory" or "insufficient swap"); the message names the VM and the numbers compared."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MemExhaustedError(HostsimError):
    """Machine memory ran out with nothing left to reclaim (every VM at its min, swap full)."""
