"""Errors of the guest language: one line, ``FILE:LINE: what is wrong``, never a traceback.

A guest program is a file the user writes, so every mistake in it must point at its line; the
console prints ``str(error)`` as it is.  Both kinds derive from :class:`GuestError` so a caller can
catch "anything wrong with the guest" in one clause."""

from __future__ import annotations

from hostsim.errors import HostsimError


class GuestError(HostsimError):
    """Something wrong with a guest program (its text or what it asks of the platform)."""


class GuestSyntaxError(GuestError):
    """The program text is malformed: unknown statement, bad unit, unbalanced block, bad value."""


class GuestRuntimeError(GuestError):
    """A well-formed program cannot run on this platform (a loop that never lets time pass, a
    vCPU with no body, sizes that do not fit the platform's page size)."""
