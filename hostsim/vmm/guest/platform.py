"""What a guest program needs from the simulated machine: the :class:`GuestPlatform` Protocol.

Why a Protocol and nothing more: the interpreter must not know the CPU scheduler, the memory
manager or the virtual SCSI disks, only that each action returns an engine event to wait for.  The
VMM wires the real resource managers behind it; the tests use a small platform of their own on
the same engine.  A platform that has nothing to wait for (a resident page) may return an event
that has already been processed: the engine then resumes the guest at once, without a heap step.
"""

from __future__ import annotations

from typing import Any, Protocol

from hostsim.vmkernel.engine import Event


class GuestPlatform(Protocol):
    """The calls a vCPU's guest program makes; each returns an :class:`Event` the guest yields.

    ``vcpu`` is whatever object the platform handed to the interpreter for this vCPU (a
    scheduler vCPU in the VMM); the interpreter only passes it back.  Disk names are
    ``scsi0:0`` style; LBAs count 512-byte sectors."""

    #: bytes per guest page: every page written is exactly this long
    page_size: int

    def compute(self, vcpu: Any, us: int) -> Event:
        """Needs ``us`` of pCPU time; fires when it has received it."""
        ...

    def halt(self, vcpu: Any, us: int) -> Event:
        """The guest halts (HLT) for ``us``."""
        ...

    def idle_loop(self, vcpu: Any, us: int) -> Event:
        """The guest spins in its idle loop for ``us``."""
        ...

    def touch(self, vcpu: Any, ppn: int, data: bytes | None) -> Event:
        """Reads (``data`` None) or writes guest page ``ppn`` (``data`` is ``page_size`` bytes)."""
        ...

    def disk_read(self, vcpu: Any, disk: str, lba: int, count: int) -> Event:
        """Reads ``count`` sectors from ``lba``; fires at completion (its value: the bytes)."""
        ...

    def disk_write(self, vcpu: Any, disk: str, lba: int, data: bytes) -> Event:
        """Writes ``data`` (whole sectors) at ``lba``; fires when the write is acknowledged."""
        ...

    def flush(self, vcpu: Any, disk: str) -> Event:
        """Fires when every write acknowledged on ``disk`` before it is stable."""
        ...
