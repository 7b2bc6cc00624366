"""What a guest program needs from the simulated machine: the :class:`GuestPlatform` Protocol.

Why a Protocol and nothing more: the interpreter must not know the CPU scheduler, the memory
manager or the virtual SCSI disks, only that each action returns an engine event to wait for.  The
VMM wires the real resource managers behind it; the tests use a small platform of their own on
the same engine.  A platform that has nothing to wait for (a resident page) may return an event
that has already been processed: the engine then resumes the guest at once, without a heap step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hostsim.vmkernel.engine import Event
from hostsim.vmm.guest.content import PageBytes


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

    def touch_pages(self, vcpu: Any, pages: Sequence[int], start: int,
                    page: PageBytes | None) -> tuple[int, Event | None]:
        """Touches ``pages[start:]`` in order (writes with ``page(ppn)`` when ``page`` is given)
        until one must wait; returns how many it consumed (the waiting one included) and the
        event to wait for, or None when all were done at once.  Why a batch: a guest touches
        thousands of resident pages a second, and one call per page up the guest's generator
        chain cost more than the pages themselves (:class:`TouchEach` is the plain version)."""
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


class TouchEach:
    """:meth:`GuestPlatform.touch_pages` in terms of ``touch``, for platforms with no faster way."""

    def touch(self, vcpu: Any, ppn: int, data: bytes | None) -> Event:
        raise NotImplementedError

    def touch_pages(self, vcpu: Any, pages: Sequence[int], start: int,
                    page: PageBytes | None) -> tuple[int, Event | None]:
        i, n = start, len(pages)
        while i < n:
            ppn = pages[i]
            i += 1
            ev = self.touch(vcpu, ppn, None if page is None else page(ppn))
            if ev.callbacks is not None or not ev.ok:  # not at once (or failed): the guest waits
                return i - start, ev
        return i - start, None
