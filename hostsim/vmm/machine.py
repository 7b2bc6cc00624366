"""One VMM: a powered-on VM's vCPUs running its guest program on the VMkernel's resources.

The VMM is the guest's :class:`~hostsim.vmm.guest.platform.GuestPlatform`: a compute burst is
CPU time asked of the CPU scheduler, a page touch goes to the memory manager (a swapped-out page
costs the vCPU a swap-in wait), a disk command is queued on the host's storage stack and, when
mClock dispatches it, really read from or written to the VM's VMDK on the datastore through the
VMFS library (:class:`~hostsim.vmm.scsi.ScsiDisk`).  The vCPU is blocked (WAIT) until the command
completes, as a guest waiting for its SCSI command is.

Out of space: a write to a thin disk the datastore cannot grow raises
:class:`~hostsim.vmm.scsi.GuestStun`.  As ESX does, the VMM stuns the whole VM (every vCPU stops
at its next instruction) and posts a question; :meth:`Vmm.answer` with ``retry`` runs the same
write again (nothing acknowledged is lost: the write was never acknowledged), ``cancel`` asks the
host to power the VM off.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from hostsim.errors import HostsimError
from hostsim.vmkernel.cpu import CpuGroup, Vcpu
from hostsim.vmkernel.engine import Engine, Event, Interrupt, Process
from hostsim.vmkernel.memory.vm import VmMemory
from hostsim.vmkernel.storage import StorageStack, StorageWorld
from hostsim.vmm.guest.content import PageBytes
from hostsim.vmm.guest.errors import GuestError
from hostsim.vmm.guest.interpreter import GuestLog, VcpuGuest, start
from hostsim.vmm.guest.tree import Program
from hostsim.vmm.scsi import GuestStun, VirtualScsi

SECTOR = 512


class GuestFailed(HostsimError):
    """The guest program stopped on an error of its own (a disk it does not have, an I/O error)."""


@dataclass(frozen=True)
class Question:
    """A VM's pending question (vim-cmd vmsvc/message): the text ESX shows and the disk."""

    text: str
    disk: str


class Vmm:
    """The virtual machine monitor of one powered-on VM (see the module docstring)."""

    def __init__(self, engine: Engine, name: str, *, cpu: CpuGroup, vcpus: list[Vcpu], memory: VmMemory,
                 stack: StorageStack, worlds: dict[str, StorageWorld], scsi: VirtualScsi, page_size: int,
                 on_cancel: Callable[[Vmm], None], on_failure: Callable[[Vmm, BaseException], None],
                 track_writes: bool = False) -> None:
        self.engine = engine
        self.name = name
        self.cpu = cpu
        self.vcpus = vcpus
        self.memory = memory
        self.stack = stack
        self.worlds = worlds
        self.scsi = scsi
        self.page_size = page_size
        self.on_cancel = on_cancel
        self.on_failure = on_failure
        #: marks and counts always; the bytes of every sector written only when asked (tests)
        self.log = GuestLog(sectors=track_writes)
        self.question: Question | None = None
        self._answer: Event | None = None
        self.runs: list[VcpuGuest] = []
        self._watchers: list[Process] = []
        self.stopped = False
        done = engine.event()
        done.succeed()
        self._done = done  # an event with nothing to wait for (processed once the engine has run)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, program: Program, seed: int | str) -> None:
        """Start one guest process per vCPU, each watched so that its end is the VMM's business."""
        self.runs = start(self.engine, program, self, self.vcpus, seed=seed, log=self.log, name=self.name)
        self._watchers = [self.engine.process(self._watch(run), name=f"{self.name}.vmm{i}")
                          for i, run in enumerate(self.runs)]

    def _watch(self, run: VcpuGuest) -> Generator[Event, Any, None]:
        assert run.process is not None
        try:
            yield run.process
        except Interrupt:
            return
        except GuestError as exc:
            if not self.stopped:
                self.on_failure(self, exc)
        except HostsimError as exc:
            if not self.stopped:
                self.on_failure(self, exc)

    def stop(self) -> None:
        """Power-off: stop every vCPU where it is (a command in flight completes unobserved)."""
        self.stopped = True
        for run in self.runs:
            if run.process is not None and run.process.is_alive:
                run.process.interrupt("power off")
        if self._answer is not None and not self._answer.triggered:
            self._answer.succeed("cancel")

    # -- the question -----------------------------------------------------------------------------

    def answer(self, choice: str) -> None:
        """Answer the pending question: ``retry`` or ``cancel``."""
        if self.question is None or self._answer is None:
            raise HostsimError(f"{self.name}: no question is pending")
        if choice not in ("retry", "cancel"):
            raise HostsimError(f"{self.name}: answer retry or cancel, not {choice!r}")
        answer, self._answer, self.question = self._answer, None, None
        answer.succeed(choice)
        if choice == "cancel":
            self.on_cancel(self)

    def _stunned(self) -> Event | None:
        return self._answer

    # -- GuestPlatform ------------------------------------------------------------------------------

    def compute(self, vcpu: Vcpu, us: int) -> Event:
        stun = self._stunned()
        return vcpu.block(stun) if stun is not None else vcpu.compute(us)

    def halt(self, vcpu: Vcpu, us: int) -> Event:
        return vcpu.halt(us)

    def idle_loop(self, vcpu: Vcpu, us: int) -> Event:
        return vcpu.idle_loop(us)

    def touch(self, vcpu: Vcpu, ppn: int, data: bytes | None) -> Event:
        stun = self._stunned()
        if stun is not None:
            return vcpu.block(stun)
        delay = self.memory.touch(ppn, data)
        return vcpu.swap_wait(delay) if delay else self._done

    def touch_pages(self, vcpu: Vcpu, pages: Sequence[int], start: int,
                    page: PageBytes | None) -> tuple[int, Event | None]:
        stun = self._stunned()
        if stun is not None:  # as touch: the page is not touched, the vCPU waits for the answer
            return 1, vcpu.block(stun)
        touch = self.memory.touch
        i, n = start, len(pages)
        if page is None:
            while i < n:
                delay = touch(pages[i], None)
                i += 1
                if delay:
                    return i - start, vcpu.swap_wait(delay)
        else:
            while i < n:
                ppn = pages[i]
                delay = touch(ppn, page(ppn))
                i += 1
                if delay:
                    return i - start, vcpu.swap_wait(delay)
        return i - start, None

    def disk_read(self, vcpu: Vcpu, disk: str, lba: int, count: int) -> Event:
        scsi = self.scsi.disk(disk)
        return self._command(vcpu, disk, "read", lba * SECTOR, count * SECTOR, lambda: scsi.read(lba, count))

    def disk_write(self, vcpu: Vcpu, disk: str, lba: int, data: bytes) -> Event:
        scsi = self.scsi.disk(disk)
        return self._command(vcpu, disk, "write", lba * SECTOR, len(data), lambda: scsi.write(lba, data))

    def flush(self, vcpu: Vcpu, disk: str) -> Event:
        scsi = self.scsi.disk(disk)
        return self._command(vcpu, disk, "flush", 0, 0, scsi.flush)

    def _command(self, vcpu: Vcpu, disk: str, op: str, offset: int, length: int,
                 action: Callable[[], Any]) -> Event:
        """One guest command: queued on the storage stack, the vCPU blocked until it completes.

        Why no process per command: a command that completes (or fails with a real error) is
        its storage command's own event, handed to the guest; only a stun needs more, and then
        the guest's event is completed by hand when the retried command is (one event per
        command, not three: bench/bench_hostsim.py)."""
        stun = self._stunned()
        if stun is None:
            cmd = self.stack.submit(self.worlds[disk], op, offset, length, action)
            if op != "write":
                return vcpu.block(cmd)
        done = self.engine.event()
        if stun is not None:
            self._after_answer(stun, done, disk, op, offset, length, action)
        else:
            cmd.callbacks.append(lambda ev: self._completed(ev, done, disk, op, offset, length, action))  # type: ignore[union-attr]
        return vcpu.block(done)

    def _completed(self, cmd: Event, done: Event, disk: str, op: str, offset: int, length: int,
                   action: Callable[[], Any]) -> None:
        if cmd.ok:
            done.succeed(cmd.value)
            return
        exc = cmd.value
        if not isinstance(exc, GuestStun) or self.stopped:
            done.fail(exc) if not self.stopped else done.succeed(None)
            return
        if self._answer is None:  # the first command to hit the full datastore stuns the VM
            self.question = Question(exc.question, disk)
            self._answer = self.engine.event()
        self._after_answer(self._answer, done, disk, op, offset, length, action)

    def _after_answer(self, answer: Event, done: Event, disk: str, op: str, offset: int, length: int,
                      action: Callable[[], Any]) -> None:
        def resume(ev: Event) -> None:
            if ev.value != "retry" or self.stopped:
                done.succeed(None)  # cancelled: the VM is being powered off
                return
            cmd = self.stack.submit(self.worlds[disk], op, offset, length, action)
            cmd.callbacks.append(lambda c: self._completed(c, done, disk, op, offset, length, action))  # type: ignore[union-attr]

        answer.callbacks.append(resume)  # type: ignore[union-attr]


__all__ = ["GuestFailed", "Question", "Vmm"]
