"""Host swapping: a VM's swapped-out pages live in its swap backing as real bytes.

W02: when ballooning is impossible or not enough, a swap daemon pages out asynchronously,
choosing pages *at random* (it knows nothing of the guest's own use of them).  A swapped page
touched later is read back from the backing, and the vCPU waits for that read (%SWPWT).

The backing is anything with ``size``, ``write(offset, data)`` and ``read(offset, length)``: the
VMM hands a real ``.vswp`` file on the datastore; :class:`MemorySwap` keeps written slots in a
dict (so an empty swap file of 1 GB costs nothing here).  Slot ``i`` is at ``i * page_size``.
"""

from __future__ import annotations

from typing import Protocol

from hostsim.vmkernel.memory.errors import MemConfigError


class SwapBacking(Protocol):
    """Where a VM's swapped pages are written (a ``.vswp`` file, or memory in tests)."""

    size: int

    def write(self, offset: int, data: bytes) -> None: ...

    def read(self, offset: int, length: int) -> bytes: ...


class MemorySwap:
    """A sparse in-memory :class:`SwapBacking` of ``size`` bytes (unwritten bytes read as 0)."""

    def __init__(self, size: int, page_size: int = 4096) -> None:
        self.size = size
        self.page_size = page_size
        self._chunks: dict[int, bytes] = {}

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size or offset % self.page_size or len(data) != self.page_size:
            raise MemConfigError(f"swap write of {len(data)} bytes at {offset}: outside the {self.size}-byte backing")
        self._chunks[offset] = bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise MemConfigError(f"swap read of {length} bytes at {offset}: outside the {self.size}-byte backing")
        return self._chunks.get(offset, bytes(length))


class SwapSpace:
    """Slot allocation over one VM's backing, and the VM's swap counters."""

    __slots__ = ("backing", "free_slots", "next_slot", "page_size", "slots", "swapped", "swr", "sww")

    def __init__(self, backing: SwapBacking, page_size: int) -> None:
        self.backing = backing
        self.page_size = page_size
        self.slots = backing.size // page_size
        self.next_slot = 0
        self.free_slots: list[int] = []
        #: guest page -> slot it was written to
        self.swapped: dict[int, int] = {}
        self.swr = 0
        self.sww = 0

    def full(self) -> bool:
        return not self.free_slots and self.next_slot >= self.slots

    def put(self, ppn: int, data: bytes) -> None:
        """Write guest page ``ppn``'s bytes to a free slot (the page then leaves memory)."""
        if self.free_slots:
            slot = self.free_slots.pop()
        elif self.next_slot < self.slots:
            slot = self.next_slot
            self.next_slot += 1
        else:
            raise MemConfigError("swap backing full")  # callers check full() first
        self.backing.write(slot * self.page_size, data)
        self.swapped[ppn] = slot
        self.sww += 1

    def take(self, ppn: int) -> bytes:
        """Read guest page ``ppn`` back and free its slot."""
        slot = self.swapped.pop(ppn)
        data = self.backing.read(slot * self.page_size, self.page_size)
        self.free_slots.append(slot)
        self.swr += 1
        return data

    def peek(self, ppn: int) -> bytes:
        """Read a swapped page's bytes without swapping it in."""
        return self.backing.read(self.swapped[ppn] * self.page_size, self.page_size)

    def drop(self, ppn: int) -> None:
        """Forget a swapped page (the guest gave it to the balloon, or the VM powered off)."""
        slot = self.swapped.pop(ppn, None)
        if slot is not None:
            self.free_slots.append(slot)
