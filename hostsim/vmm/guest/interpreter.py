"""Run a guest program on one vCPU: a generator the engine runs as that vCPU's process.

Why bind first, then interpret: every size, unit, content and seed is resolved once per vCPU
(against the platform's page size) into small slot objects, so running a statement costs a type
test and a platform call, a few µs, and the engine budget (docs/hostsim.md, "Engine") goes to the
simulation rather than to re-reading the tree.  Every random draw comes from generators seeded
from the VM's seed, the program's ``seed`` and the vCPU index (or from a statement's own
``seed``), never from global state, so the same seed gives the same run byte for byte.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any

from hostsim.vmkernel.engine import Engine, Event, Process
from hostsim.vmm.guest.content import DiskBytes, PageBytes, disk_source, page_source
from hostsim.vmm.guest.errors import GuestRuntimeError
from hostsim.vmm.guest.platform import GuestPlatform
from hostsim.vmm.guest.tree import (
    SECTOR,
    Choose,
    Disk,
    Flush,
    Loop,
    Mark,
    Program,
    Repeat,
    Size,
    Statement,
    Timed,
    Touch,
)

#: iterations in a row of ``forever`` / ``for`` without simulated time passing before the loop
#: is declared endless (the engine would otherwise spin at one instant for ever)
STALL_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write the platform acknowledged: when, from which vCPU, where, and its exact bytes."""

    time_us: int
    vcpu: int
    disk: str
    lba: int
    data: bytes
    where: str


@dataclass(frozen=True, slots=True)
class MarkEntry:
    """A ``mark NAME`` reached by a vCPU at a simulated time."""

    time_us: int
    vcpu: int
    name: str
    where: str


@dataclass
class GuestLog:
    """What the guests of a VM did that a test checks afterwards: the latest acknowledged bytes of
    every sector written, the marks, counts, and (with ``history``) every acknowledged write in
    acknowledgement order.

    Why ``history`` is off by default: a VM that writes for an hour would keep every byte it ever
    wrote; the latest bytes per sector (what the VMDK must hold) are bounded by the sectors
    written, and the write objects are shared, not copied, until every sector of one is
    overwritten."""

    history: bool = False
    #: keep the latest bytes of every sector written (what :meth:`expected_sectors` returns); a
    #: host that no test checks turns it off: the per-sector map cost 19 µs a write
    sectors: bool = True
    writes: list[AckedWrite] = field(default_factory=list)
    marks: list[MarkEntry] = field(default_factory=list)
    acked_writes: int = 0
    acked_bytes: int = 0
    _latest: dict[str, dict[int, tuple[bytes, int]]] = field(default_factory=dict, repr=False)

    def record(self, write: AckedWrite) -> None:
        """Log one acknowledged write."""
        self.acked_writes += 1
        self.acked_bytes += len(write.data)
        if self.history:
            self.writes.append(write)
        if not self.sectors:
            return
        sectors = self._latest.get(write.disk)
        if sectors is None:
            sectors = self._latest[write.disk] = {}
        data, lba = write.data, write.lba
        for i in range(len(data) // SECTOR):
            sectors[lba + i] = (data, i)

    def expected_sectors(self, disk: str) -> dict[int, bytes]:
        """Sector LBA -> the 512 bytes the last acknowledged write to it put there."""
        return {lba: data[i * SECTOR:(i + 1) * SECTOR]
                for lba, (data, i) in sorted(self._latest.get(disk, {}).items())}


# -- bound statements: the tree resolved for one vCPU on one platform -----------------------------

class _Timed:
    __slots__ = ("hi", "lo", "op")

    def __init__(self, op: int, lo: int, hi: int) -> None:
        self.op, self.lo, self.hi = op, lo, hi


class _Touch:
    __slots__ = ("count", "draws", "first", "page", "pages", "rng")

    def __init__(self, first: int, count: int, draws: int, pages: Sequence[int] | None, rng: Random | None,
                 page: PageBytes | None) -> None:
        self.first, self.count, self.draws, self.pages, self.rng, self.page = first, count, draws, pages, rng, page


class _Disk:
    __slots__ = ("cursor", "data", "disk", "lba", "mode", "rng", "sectors", "slots", "where", "write")

    def __init__(self, write: bool, disk: str, sectors: int, mode: str, lba: int, slots: int,
                 rng: Random | None, data: DiskBytes | None, where: str) -> None:
        self.write, self.disk, self.sectors, self.mode, self.lba = write, disk, sectors, mode, lba
        self.slots, self.rng, self.data, self.cursor, self.where = slots, rng, data, 0, where


class _Flush:
    __slots__ = ("disk",)

    def __init__(self, disk: str) -> None:
        self.disk = disk


class _Mark:
    __slots__ = ("name", "where")

    def __init__(self, name: str, where: str) -> None:
        self.name, self.where = name, where


class _Repeat:
    __slots__ = ("body", "count")

    def __init__(self, count: int, body: list[Any]) -> None:
        self.count, self.body = count, body


class _Loop:
    __slots__ = ("body", "forever", "hi", "lo", "where")

    def __init__(self, forever: bool, lo: int, hi: int, body: list[Any], where: str) -> None:
        self.forever, self.lo, self.hi, self.body, self.where = forever, lo, hi, body, where


class _Choose:
    __slots__ = ("bodies", "cumulative", "rng", "total")

    def __init__(self, weights: Iterable[float], bodies: list[list[Any]], rng: Random) -> None:
        self.cumulative: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self.cumulative.append(total)
        self.total, self.bodies, self.rng = total, bodies, rng


_COMPUTE, _HALT, _IDLE = 0, 1, 2
_TIMED_OPS = {"compute": _COMPUTE, "halt": _HALT, "idle": _IDLE}


class VcpuGuest:
    """One vCPU's run of a program: bind it to the platform, then :meth:`run` it as a process.

    ``seed`` is the VM's seed (the host derives one per VM); ``index`` picks the vCPU's section
    and its random stream; ``log`` collects acknowledged writes and marks (shared by a VM's vCPUs).
    ``statements`` and ``touches`` count what has run, for the interpreter's cost figure."""

    def __init__(self, engine: Engine, program: Program, platform: GuestPlatform, vcpu: Any, *,
                 index: int | None = None, seed: int | str = 0, log: GuestLog | None = None) -> None:
        self.engine = engine
        self.program = program
        self.platform = platform
        self.vcpu = vcpu
        self.index = getattr(vcpu, "index", 0) if index is None else index
        self.log = log
        self.vm_seed = f"{seed}:{program.seed}"
        self.rng = Random(f"guest:{self.vm_seed}:vcpu{self.index}")
        self.page_size = platform.page_size
        self.statements = 0
        self.touches = 0
        #: the engine process running this vCPU (set by :func:`start`)
        self.process: Process | None = None
        body = program.body_for(self.index)
        if body is None:
            have = ", ".join(str(k) for k in sorted(program.bodies))
            raise GuestRuntimeError(f"{program.filename}: no section for vcpu {self.index} "
                                    f"(the program has vcpu {have} and no vcpu all)")
        self.body = self._bind(body)

    # -- binding ------------------------------------------------------------------------------

    def _bind(self, body: tuple[Statement, ...]) -> list[Any]:
        return [self._bind_one(node) for node in body]

    def _bind_one(self, node: Statement) -> Any:
        if isinstance(node, Timed):
            return _Timed(_TIMED_OPS[node.op], node.duration.lo, node.duration.hi)
        if isinstance(node, Touch):
            return self._bind_touch(node)
        if isinstance(node, Disk):
            return self._bind_disk(node)
        if isinstance(node, Flush):
            return _Flush(node.disk)
        if isinstance(node, Mark):
            return _Mark(node.name, node.where)
        if isinstance(node, Repeat):
            return _Repeat(node.count, self._bind(node.body))
        if isinstance(node, Loop):
            lo, hi = (0, 0) if node.duration is None else (node.duration.lo, node.duration.hi)
            return _Loop(node.duration is None, lo, hi, self._bind(node.body), node.where)
        assert isinstance(node, Choose)
        rng = self.rng if node.seed is None else Random(f"choose:{node.seed}")
        return _Choose((float(w) for w in node.weights), [self._bind(b) for b in node.bodies], rng)

    def _bytes(self, size: Size, where: str, what: str) -> int:
        value = size.bytes(self.page_size)
        if value.denominator != 1:
            raise GuestRuntimeError(f"{where}: {what} {size} is not a whole number of bytes")
        return int(value)

    def _bind_touch(self, node: Touch) -> _Touch:
        ps = self.page_size
        at = self._bytes(node.at, node.where, "offset")
        if at % ps:
            raise GuestRuntimeError(f"{node.where}: offset {node.at} is not a multiple of the platform's "
                                    f"{ps}-byte page")
        first, count = at // ps, math.ceil(self._bytes(node.size, node.where, "size") / ps)
        page = None if node.content is None else page_source(
            node.content, ps, self.rng, self.program.images, f"vcpu:{self.vm_seed}:{self.index}")
        if node.order == "sequential":
            return _Touch(first, count, 0, None, None, page)
        if node.order == "random":
            rng = self.rng if node.seed is None else Random(f"touch:{node.seed}")
            return _Touch(first, count, node.count, None, rng, page)
        # working set: the same subset every run of the statement, shared by the VM's vCPUs
        key = f"ws:{node.seed}" if node.seed is not None else f"ws:{self.vm_seed}:{node.where}"
        k = max(1, round(node.fraction * count))
        subset = sorted(first + p for p in Random(key).sample(range(count), k))
        if node.count:
            rng = self.rng if node.seed is None else Random(f"touch:{node.seed}")
            return _Touch(first, count, node.count, subset, rng, page)
        return _Touch(first, count, 0, subset, None, page)

    def _bind_disk(self, node: Disk) -> _Disk:
        length = self._bytes(node.size, node.where, "size")
        if length <= 0 or length % SECTOR:
            raise GuestRuntimeError(f"{node.where}: size {node.size} is not a whole number of 512-byte sectors")
        sectors = length // SECTOR
        place = node.place
        slots, rng = 1, None
        if place.within is not None:
            slots = self._bytes(place.within, node.where, "region") // length
        if place.mode == "random":
            rng = self.rng if place.seed is None else Random(f"disk:{place.seed}")
        data = None if node.content is None else disk_source(node.content, self.page_size, self.rng,
                                                             self.program.images, f"vcpu:{self.vm_seed}:{self.index}")
        return _Disk(node.op == "write", node.disk, sectors, place.mode, place.lba, slots, rng, data, node.where)

    # -- running ------------------------------------------------------------------------------

    def run(self) -> Generator[Event, Any, int]:
        """The vCPU's process: runs its body once (loops inside it may run for ever); returns
        the number of statements executed."""
        yield from self._block(self.body)
        return self.statements

    def _block(self, body: list[Any]) -> Generator[Event, Any, None]:
        plat, vcpu = self.platform, self.vcpu
        for ins in body:
            self.statements += 1
            kind = type(ins)
            if kind is _Timed:
                us = ins.lo if ins.lo == ins.hi else self.rng.randint(ins.lo, ins.hi)
                op = ins.op
                if op == _COMPUTE:
                    yield plat.compute(vcpu, us)
                elif op == _HALT:
                    yield plat.halt(vcpu, us)
                else:
                    yield plat.idle_loop(vcpu, us)
            elif kind is _Touch:
                yield from self._touch(ins)
            elif kind is _Disk:
                yield from self._disk(ins)
            elif kind is _Repeat:
                for _ in range(ins.count):
                    yield from self._block(ins.body)
            elif kind is _Choose:
                pick = bisect.bisect_right(ins.cumulative, ins.rng.random() * ins.total)
                yield from self._block(ins.bodies[min(pick, len(ins.bodies) - 1)])
            elif kind is _Loop:
                yield from self._loop(ins)
            elif kind is _Flush:
                yield plat.flush(vcpu, ins.disk)
            else:
                if self.log is not None:
                    self.log.marks.append(MarkEntry(self.engine.now, self.index, ins.name, ins.where))

    def _loop(self, ins: _Loop) -> Generator[Event, Any, None]:
        engine = self.engine
        start = engine.now
        limit = None if ins.forever else (ins.lo if ins.lo == ins.hi else self.rng.randint(ins.lo, ins.hi))
        stalled = 0
        while limit is None or engine.now - start < limit:
            before = engine.now
            yield from self._block(ins.body)
            stalled = stalled + 1 if engine.now == before else 0
            if stalled >= STALL_LIMIT:
                raise GuestRuntimeError(
                    f"{ins.where}: {STALL_LIMIT} iterations in a row took no simulated time, so the loop "
                    f"would never end (add compute, halt or idle to it)")

    def _touch(self, ins: _Touch) -> Generator[Event, Any, None]:
        pages: Sequence[int]
        if ins.pages is not None and ins.rng is not None:
            pages = ins.rng.choices(ins.pages, k=ins.draws)
        elif ins.pages is not None:
            pages = ins.pages
        elif ins.rng is not None:
            pages = ins.rng.choices(range(ins.first, ins.first + ins.count), k=ins.draws)
        else:
            pages = range(ins.first, ins.first + ins.count)
        touch_pages, vcpu, page = self.platform.touch_pages, self.vcpu, ins.page
        start, total = 0, len(pages)
        while start < total:
            done, wait = touch_pages(vcpu, pages, start, page)
            start += done
            if wait is not None:
                yield wait
        self.touches += total

    def _disk(self, ins: _Disk) -> Generator[Event, Any, None]:
        if ins.mode == "at":
            lba = ins.lba
        elif ins.mode == "random":
            lba = ins.lba + ins.rng.randrange(ins.slots) * ins.sectors  # type: ignore[union-attr]
        else:
            lba = ins.lba + ins.cursor * ins.sectors
            ins.cursor = (ins.cursor + 1) % ins.slots
        if not ins.write:
            got = yield self.platform.disk_read(self.vcpu, ins.disk, lba, ins.sectors)
            if ins.data is not None:
                self._check_read(ins, lba, got)
            return
        data = ins.data(lba, ins.sectors)  # type: ignore[misc]
        yield self.platform.disk_write(self.vcpu, ins.disk, lba, data)
        if self.log is not None:
            self.log.record(AckedWrite(self.engine.now, self.index, ins.disk, lba, data, ins.where))


    def _check_read(self, ins: _Disk, lba: int, got: Any) -> None:
        """``read ... expect CONTENT``: the bytes read must be exactly that content."""
        want = ins.data(lba, ins.sectors)  # type: ignore[misc]
        if got == want:
            return
        if not isinstance(got, (bytes, bytearray, memoryview)):
            raise GuestRuntimeError(f"{ins.where}: expect needs the read's data, but the platform's "
                                    f"disk_read gave {type(got).__name__}")
        got = bytes(got)
        first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        raise GuestRuntimeError(
            f"{ins.where}: read {ins.disk} at LBA {lba}: data differs from what was expected from byte "
            f"{first} (sector {lba + first // SECTOR}) on, at {self.engine.now} us")


def start(engine: Engine, program: Program, platform: GuestPlatform, vcpus: Sequence[Any], *,
          seed: int | str = 0, log: GuestLog | None = None, name: str | None = None) -> list[VcpuGuest]:
    """Bind the program to each vCPU (``vcpus[i]`` runs section ``i``) and start one engine
    process per vCPU, named ``NAME.vcpuI``; returns the runs (each with ``.process``)."""
    runs: list[VcpuGuest] = []
    label = name or program.name
    extra = [k for k in sorted(program.section_lines) if k >= len(vcpus)]
    if extra:
        raise GuestRuntimeError(f"{program.section_lines[extra[0]]}: vcpu {extra[0]} has a section but the VM "
                                f"has {len(vcpus)} vCPU{'s' if len(vcpus) != 1 else ''}")
    for i, vcpu in enumerate(vcpus):
        run = VcpuGuest(engine, program, platform, vcpu, index=i, seed=seed, log=log)
        runs.append(run)
    for i, run in enumerate(runs):
        run.process = engine.process(run.run(), name=f"{label}.vcpu{i}")
    return runs
