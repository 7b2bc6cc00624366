"""The program tree a guest program parses into: plain frozen data, no behaviour.

Why a tree separate from the interpreter: the parser checks everything that can be checked from
the text alone (units, counts, balanced blocks, disk names) and the tree is then safe to run many
times, on several vCPUs and VMs.  Sizes stay symbolic (:class:`Size`) because ``pages`` means the
platform's page size, known only when the program is bound to a platform.  Every statement keeps
``where`` (``FILE:LINE``) so a runtime complaint points at its line too."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

SECTOR = 512

#: bytes per unit; ``pages`` is resolved with the platform's page size
SIZE_UNITS: dict[str, int] = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "sectors": SECTOR, "pages": 0}

#: microseconds per duration unit
DURATION_UNITS: dict[str, int] = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000, "min": 60_000_000}


@dataclass(frozen=True, slots=True)
class Size:
    """A size as written: ``value`` of ``unit`` (a key of :data:`SIZE_UNITS`)."""

    value: Fraction
    unit: str

    def bytes(self, page_size: int) -> Fraction:
        """The size in bytes (a Fraction: the caller checks it is whole where that matters)."""
        per = page_size if self.unit == "pages" else SIZE_UNITS[self.unit]
        return self.value * per

    def __str__(self) -> str:
        return f"{self.value}{self.unit if self.unit in ('B', 'KiB', 'MiB', 'GiB') else ' ' + self.unit}"


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration in µs, or a uniform range ``lo..hi`` (both ends included) drawn per run."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Content:
    """What a write puts in a page or on disk.

    ``kind``: ``zero``; ``byte`` (``value`` 0..255); ``pattern`` (``data``, from ``text``/``hex``,
    repeated from the start of each page or I/O); ``random`` (``seed`` or None: None draws from the
    vCPU's stream, a seed gives the same bytes wherever and whenever it runs); ``image``
    (``name``, a declared shared image)."""

    kind: str
    value: int = 0
    data: bytes = b""
    seed: int | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Image:
    """A named shared image: page *p* of it has the same bytes in every VM that writes it.

    ``zero`` is the fraction of its pages that are all zero (real images hold many), chosen per
    page from the image's name and seed."""

    name: str
    seed: int
    zero: Fraction
    where: str = field(compare=False)


@dataclass(frozen=True, slots=True)
class Timed:
    """``compute``, ``halt`` or ``idle`` (``op``) for a duration."""

    where: str
    op: str
    duration: Duration


@dataclass(frozen=True, slots=True)
class Touch:
    """Touch the guest pages of a region (``size`` bytes from ``at``).

    ``order``: ``sequential`` (each page once, ascending), ``random`` (``count`` pages drawn
    uniformly with replacement) or ``working-set`` (a fixed subset of ``fraction`` of the region's
    pages, the same subset every time the statement runs, touched in ascending order, or, with
    ``count`` above 0, ``count`` pages drawn uniformly from that subset).
    ``content`` None reads; otherwise each touched page is written with it."""

    where: str
    size: Size
    at: Size
    order: str
    count: int
    fraction: Fraction
    seed: int | None
    content: Content | None


@dataclass(frozen=True, slots=True)
class Place:
    """Where a disk I/O goes: ``at`` a fixed LBA, or ``random`` / ``next`` (a sequential cursor
    that wraps) inside ``within`` bytes from LBA ``lba``, aligned to the I/O size."""

    mode: str
    lba: int
    within: Size | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Disk:
    """``read`` or ``write`` of ``size`` bytes on disk ``disk`` at ``place``: a write puts
    ``content`` there; a read with ``content`` checks that the bytes read are that content
    (``expect``), so a guest can verify its own data after a crash or a failover."""

    where: str
    op: str
    disk: str
    size: Size
    place: Place
    content: Content | None


@dataclass(frozen=True, slots=True)
class Flush:
    """Wait until the disk's earlier writes are stable (a SCSI SYNCHRONIZE CACHE)."""

    where: str
    disk: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Put a named marker in the run's log with the current simulated time (no time passes)."""

    where: str
    name: str


@dataclass(frozen=True, slots=True)
class Repeat:
    """Run ``body`` ``count`` times."""

    where: str
    count: int
    body: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class Loop:
    """``forever`` (``duration`` None) or ``for DURATION``: run ``body`` again while less than
    ``duration`` of simulated time has passed since the loop began."""

    where: str
    duration: Duration | None
    body: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class Choose:
    """Run one of ``bodies``, picked at random with probability proportional to its weight."""

    where: str
    weights: tuple[Fraction, ...]
    bodies: tuple[tuple[Statement, ...], ...]
    seed: int | None


Statement = Timed | Touch | Disk | Flush | Mark | Repeat | Loop | Choose


@dataclass(frozen=True, slots=True)
class Program:
    """A parsed guest program.

    ``bodies`` maps a vCPU index to its body; ``default`` is the body of every other vCPU (the
    whole program when it has no ``vcpu`` sections, or its ``vcpu all`` section), None when the
    program gives bodies only to some vCPUs."""

    filename: str
    name: str
    seed: int
    images: dict[str, Image]
    bodies: dict[int, tuple[Statement, ...]]
    default: tuple[Statement, ...] | None
    disks: frozenset[str]
    #: vCPU index -> ``FILE:LINE`` of its ``vcpu`` section (to refuse sections the VM lacks)
    section_lines: dict[int, str] = field(default_factory=dict)

    def body_for(self, index: int) -> tuple[Statement, ...] | None:
        """The statements vCPU ``index`` runs (None when the program has none for it)."""
        body = self.bodies.get(index)
        return self.default if body is None else body
