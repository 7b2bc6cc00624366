"""Content-based page sharing (W02 section 4), over the pages' real bytes.

A scanned page is hashed (64 bits) and looked up in one host-wide table.  A *shared* entry (a
:class:`Frame`) whose bytes compare equal takes the page: the guest page now maps the frame
copy-on-write and its private machine page is freed.  A *hint* entry (another guest page seen
earlier, not write-protected) is re-hashed on a match: if that page is unchanged and equal, both
become one new frame; a stale hint is dropped.  With no match the page is left as a hint.  A hash
match with different bytes (a false match) is never merged: the page is counted as unshareable.

Pages are picked at random among each VM's resident pages, with the rate caps of the mode:
ESX 2.x ``MemShareScanVM`` 50 pages/s per VM and ``MemShareScanTotal`` 200 pages/s in all;
ESX 4 ``Mem.ShareScanTime`` 60 min for a whole VM and ``Mem.ShareScanGHz`` 4 MB/s per GHz.
Simplified: no salting (sharing across VMs is on, as before 2014), no refcount overflow table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from hostsim.vmkernel.memory.pages import Frame, IndexedSet, MachineMemory, hash64


class VmMemory(Protocol):
    """What the sharer needs of a VM's memory (:class:`hostsim.vmkernel.memory.vm.VmMemory`);
    a protocol so the two modules do not import each other."""

    pmap: dict[int, Any]
    hints: dict[int, Any]
    resident: IndexedSet
    shared_pages: int
    powered_on: bool


class Hint:
    """A page seen once and not (yet) shared: where it is and the hash it had then."""

    __slots__ = ("key", "ppn", "vm")

    def __init__(self, vm: VmMemory, ppn: int, key: int) -> None:
        self.vm = vm
        self.ppn = ppn
        self.key = key


class PageSharer:
    """The host's sharing table and scanner."""

    def __init__(self, machine: MachineMemory, rng: random.Random,
                 hash_fn: Callable[[bytes], int] = hash64) -> None:
        self.machine = machine
        self.rng = rng
        self.hash_fn = hash_fn
        self.table: dict[int, list[Frame | Hint]] = {}
        self.scanned = 0
        self.false_matches = 0
        self.frames = 0        # distinct shared frames
        self.mappings = 0      # guest pages mapped to a shared frame

    # -- scanning ---------------------------------------------------------------------------

    def scan(self, vm: VmMemory, count: int) -> None:
        """Look at ``count`` random resident pages of ``vm``."""
        for _ in range(count):
            if not vm.resident:
                return
            ppn = vm.resident.choice(self.rng)
            self.scanned += 1
            data = vm.pmap[ppn]
            if isinstance(data, Frame):
                continue
            self._consider(vm, ppn, data)

    def _consider(self, vm: VmMemory, ppn: int, data: bytes) -> None:
        key = self.hash_fn(data)
        old = vm.hints.pop(ppn, None)
        if old is not None:
            self._remove(old)  # looked up afresh below: a frame may have formed since
        chain = self.table.setdefault(key, [])
        for entry in list(chain):
            if isinstance(entry, Frame):
                if entry.data == data:
                    self._map(vm, ppn, entry)
                    return
                self.false_matches += 1
                continue
            if entry.vm is vm and entry.ppn == ppn:
                continue
            current = entry.vm.pmap.get(entry.ppn) if entry.vm.powered_on else None
            if not isinstance(current, bytes) or self.hash_fn(current) != entry.key:
                chain.remove(entry)  # stale hint: the page changed, left or was shared since
                entry.vm.hints.pop(entry.ppn, None)
                continue
            if current != data:
                self.false_matches += 1
                continue
            chain.remove(entry)
            entry.vm.hints.pop(entry.ppn, None)
            frame = Frame(current, key, 0)
            chain.append(frame)
            self.frames += 1
            self._map(entry.vm, entry.ppn, frame)
            self.machine.used += 1  # the hint page's machine page became the frame
            self._map(vm, ppn, frame)
            return
        hint = Hint(vm, ppn, key)
        chain.append(hint)
        vm.hints[ppn] = hint

    def _map(self, vm: VmMemory, ppn: int, frame: Frame) -> None:
        """Point guest page ``ppn`` at ``frame`` and free its private machine page."""
        vm.pmap[ppn] = frame
        frame.refs += 1
        vm.shared_pages += 1
        self.mappings += 1
        self.machine.used -= 1

    # -- leaving a frame ---------------------------------------------------------------------

    def unmap(self, vm: VmMemory, frame: Frame) -> None:
        """One guest page stops mapping ``frame`` (copy on write, swap-out, balloon, power-off);
        the frame's machine page is freed with its last mapping."""
        frame.refs -= 1
        vm.shared_pages -= 1
        self.mappings -= 1
        if frame.refs == 0:
            self._remove(frame)
            self.frames -= 1
            self.machine.used -= 1

    def forget_hint(self, vm: VmMemory, ppn: int) -> None:
        hint = vm.hints.pop(ppn, None)
        if hint is not None:
            self._remove(hint)

    def _remove(self, entry: Frame | Hint) -> None:
        chain = self.table.get(entry.key)
        if chain is not None:
            chain.remove(entry)
            if not chain:
                del self.table[entry.key]
