"""What the passes share: options, the typed :class:`CheckState`, and the :class:`Context` through
which they report problems, notes and progress.

A run has up to three phases (see :mod:`vmfs.fsck.run`): *check* (read-only, every answer
recorded but nothing repaired), *repair* (the volume opened read-write, passes repair on yes) and
*verify* (read-only again, quiet).  Each phase builds a fresh :class:`CheckState`; the only
thing carried from the check into the repair is :attr:`CheckState.in_use`, the resources the check
found in use, which keeps the repair's allocations away from them even where the on-disk bitmaps
say "free" (e2fsck's block_found_map does the same for its allocations).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmfs.errors import VmfsError
from vmfs.fsck.policy import Policy
from vmfs.fsck.problems import BY_CODE, Code, Flag, Problem

if TYPE_CHECKING:
    from vmfs.cluster.attachment import HostAttachment
    from vmfs.cluster.host import HostIdentity
    from vmfs.device.base import BlockDevice
    from vmfs.device.lvm import LogicalVolume
    from vmfs.format.geometry import Geometry
    from vmfs.volume.resources import ResourceFile
    from vmfs.volume.volume import Volume

#: (resource type, cluster, resource): one resource of a resource file (VMFS5 file blocks too)
ResKey = tuple[int, int, int]


@dataclass
class FsckOptions:
    """Everything a run may be told (the command line maps onto this one to one)."""

    policy: Policy
    #: watch in-use heartbeat slots of other hosts for ``lease`` seconds: unchanged = gone
    watch: bool = False
    lease: float | None = None  # None: the descriptor's leaseIntervalMs, else 16 s
    #: host UUIDs (or "all") whose in-use slots are to be taken as stale without watching
    stale_hosts: frozenset[str] = frozenset()
    #: repair even though other hosts' heartbeats are live or unknown
    force_live: bool = False
    #: the identity vmfs-fsck writes with (default: :func:`fsck_identity`); its own in-use slots
    #: are leftovers of an interrupted run
    host: HostIdentity | None = None
    verbose: bool = False
    #: called with each :class:`Event` as it happens (the tool prints them)
    on_event: Callable[[Event], None] | None = None
    #: called with (pass label, done, total) while a pass walks a large structure
    on_progress: Callable[[str, int, int], None] | None = None


def fsck_identity() -> HostIdentity:
    """vmfs-fsck's own host identity on this machine: stable across runs (an interrupted repair's
    slot and journal are found again), but not the one vmfs-mount uses, so a check never takes a
    slot of a mount of this machine for a leftover of its own."""
    from vmfs.cluster.host import HostIdentity

    return HostIdentity.for_process("vmfs-fsck")


@dataclass
class Finding:
    """One reported problem."""

    problem: Problem
    facts: dict[str, Any]
    subject: str
    message: str
    fix: str
    phase: str
    answer: bool  # what the policy said
    fixed: bool = False  # the repair ran and committed (repair phase only)
    error: str | None = None  # why the repair failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": f"0x{int(self.problem.code):06x}",
            "name": self.problem.name,
            "pass": self.problem.pass_number,
            "message": self.message,
            "fix": self.fix,
            "answer": self.answer,
            "fixed": self.fixed,
            "error": self.error,
            "facts": {k: v for k, v in self.facts.items() if isinstance(v, (int, str, bool, float))},
        }


@dataclass
class Event:
    """Something the tool may print: a pass starting, a problem, a note."""

    kind: str  # "pass", "problem", "note", "phase"
    phase: str
    text: str
    finding: Finding | None = None


@dataclass(slots=True)
class FdRecord:
    """What pass 2 keeps of one file descriptor in use (content-valid, whatever the bitmap says)."""

    address: int
    vol_offset: int
    type: int
    zla: int
    size: int
    block_size: int
    generation: int
    links: int
    mode: int
    is_dir: bool
    marked: bool  # the FD bitmap says "in use"
    lock_mode: int = 0
    lock_owner: str = ""
    lock_hb_addr: int = 0
    lock_hb_gen: int = 0


@dataclass(slots=True)
class Entry:
    """A directory entry as it is on disk (VMFS5: byte offset of its 140-byte slot)."""

    name: str
    address: int
    type: int
    generation: int
    offset: int


@dataclass
class DirRecord:
    address: int
    entries: list[Entry]  # without '.' and '..'
    dot: int | None
    dotdot: int | None


@dataclass
class SlotRecord:
    """A heartbeat slot as pass 1 found it, and what pass 1 concluded about its owner."""

    slot: int
    addr: int
    raw: bytes
    hb: Any  # construct Container of vmfs.ondisk.heartbeat.Heartbeat
    in_use: bool
    #: "free", "ours" (the repair's own slot), "live", "in use" (not watched), "stale"
    liveness: str = "free"
    reason: str = ""
    journal: str = ""  # where its journal is, in words ("FB 13")
    journal_block: int | None = None  # FB number when valid (VMFS5)
    #: (cluster, resource) of its journal block in .jbc.sf when valid (VMFS6)
    journal_jb: tuple[int, int] | None = None
    journal_offset: int | None = None
    journal_size: int = 0
    #: "empty", "committed", "torn", "foreign", "invalid", ""
    journal_state: str = ""
    journal_records: int = 0


@dataclass
class CheckState:
    """Facts shared by the passes of one phase."""

    phase: str
    lv: LogicalVolume
    #: the bytes as they are on disk in this phase (check: an in-memory overlay that may hold a
    #: dry-run journal replay; repair: the logical volume itself)
    raw: BlockDevice
    #: the device the library's Volume sits on (patched headers, guarded bitmaps)
    device: Any = None
    descriptor: Any = None
    geometry: Geometry | None = None
    volume: Volume | None = None
    #: repair runs only: this fsck's host attachment (heartbeat slot, journal, locks, allocators)
    attachment: HostAttachment | None = None
    #: volume offset -> corrected bytes presented to the library (rebuilt resource headers)
    header_patches: dict[int, bytes] = field(default_factory=dict)
    #: volume offset -> corrected lock (and FD metadata) sectors: lock blocks whose type or own
    #: address is damaged, shown corrected to the library (it validates and takes locks on them)
    lock_patches: dict[int, bytes] = field(default_factory=dict)
    #: pass 1: per resource file, what is wrong with its header and the rebuilt header
    header_findings: list[dict[str, Any]] = field(default_factory=list)
    slots: list[SlotRecord] = field(default_factory=list)
    fds: dict[int, FdRecord] = field(default_factory=dict)
    #: resource -> first owner (FD address, or "journal of slot N")
    owners: dict[ResKey, int | str] = field(default_factory=dict)
    dirs: dict[int, DirRecord] = field(default_factory=dict)
    reachable: set[int] = field(default_factory=set)
    #: pass 4: orphans not connected (and what they hold): left out of link counts
    detached: set[int] = field(default_factory=set)
    #: pass 4: directory -> (parent, entry offset) that stays its parent
    keepers: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: pass 4: the FD named by each entry along the tree (files: every name), for link counts
    tree_entries: list[int] = field(default_factory=list)
    parent: dict[int, int] = field(default_factory=dict)
    paths: dict[int, str] = field(default_factory=dict)
    #: pass 5 of the check: volume offset of a cluster's metadata -> (resources in use that its
    #: bitmap calls free, header fields to put right, the resource file); the repair's device
    #: shows them so (vmfs.fsck.device)
    guards: dict[int, tuple[set[int], dict[str, int], ResourceFile]] = field(default_factory=dict)
    #: the repair trusts the check's verdict on watched slots: (slot, hbGen, stamp) -> reason
    carried_stale: dict[tuple[int, int, int], str] | None = None
    #: (lock type, volume offset, mode, owner, hbAddr, hbGen, label) of cluster locks held
    cluster_locks: list[tuple[int, int, int, str, int, int, str]] = field(default_factory=list)
    #: resource usage summary for the final line: kind -> (total, used)
    usage: dict[int, tuple[int, int]] = field(default_factory=dict)
    fatal: bool = False

    def patch(self, offset: int, image: bytes) -> None:
        """Show the library ``image`` at ``offset`` from now on (and in the repair phase)."""
        self.lock_patches[offset] = image
        if self.device is not None:
            self.device.patch(offset, image)
        if self.volume is not None:
            self.volume.invalidate_caches()


class Context:
    """The passes' only way out: problems, notes, progress."""

    def __init__(self, state: CheckState, options: FsckOptions, *, repairing: bool, quiet: bool = False) -> None:
        self.state = state
        self.options = options
        self.policy = options.policy
        self.repairing = repairing
        self.quiet = quiet
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self._current: Finding | None = None

    @property
    def volume(self) -> Volume:
        assert self.state.volume is not None
        return self.state.volume

    @property
    def attachment(self) -> HostAttachment:
        """The host attachment repairs write through (repair runs only)."""
        assert self.state.attachment is not None, "a repair outside a repair run"
        return self.state.attachment

    @property
    def geometry(self) -> Geometry:
        assert self.state.geometry is not None
        return self.state.geometry

    def _emit(self, event: Event) -> None:
        if not self.quiet and self.options.on_event is not None:
            self.options.on_event(event)

    def problem(self, code: Code, *, subject: str = "", **facts: Any) -> bool:
        """Report a problem; True when the caller must repair it now."""
        problem = BY_CODE[code]
        facts.setdefault("path", "")
        message = problem.format(facts)
        fix = problem.format_fix(facts) if problem.fix else ""
        answer = self.policy.answer(problem, subject or message, f"{message}.  {fix}" if fix else message)
        finding = Finding(problem, facts, subject or message, message, fix, self.state.phase, answer)
        self.findings.append(finding)
        self._current = finding
        self._emit(Event("problem", self.state.phase, message, finding))
        if problem.flags & Flag.FATAL:
            self.state.fatal = True
        return answer and self.repairing

    @property
    def last(self) -> Finding:
        """The finding of the last :meth:`problem` call."""
        assert self._current is not None
        return self._current

    @contextlib.contextmanager
    def repair(self, *findings: Finding) -> Iterator[None]:
        """Around the repair of ``findings`` (default: the problem just reported): marks them
        fixed, or records why not.  A repair that fails leaves the volume as the last committed
        transaction left it; the run goes on."""
        targets = list(findings) or ([self._current] if self._current is not None else [])
        try:
            yield
        except VmfsError as exc:
            for f in targets:
                f.error = str(exc)
            self.note(f"repair failed: {exc}")
            if self.state.volume is not None:
                self.state.volume.invalidate_caches()
            return
        for f in targets:
            f.fixed = True

    def note(self, text: str) -> None:
        self.notes.append(text)
        self._emit(Event("note", self.state.phase, text))

    def verbose(self, text: str) -> None:
        if self.options.verbose:
            self.note(text)

    def progress(self, label: str, done: int, total: int) -> None:
        if not self.quiet and self.options.on_progress is not None:
            self.options.on_progress(label, done, total)
