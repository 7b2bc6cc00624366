"""What every extent format offers the disk layer, and the grain algorithm they share.

An extent maps its own sectors ``0 .. capacity`` to storage.  Reads return the bytes *and* the
ranges the extent does not hold (``holes``): a delta's unallocated grains must come from the parent
disk, and only the disk layer knows the parent.  Writes receive a ``fill`` callback for the same
reason: a partial write into an unallocated grain is completed with the parent's bytes
(copy-on-write, vmdk-format.md section 3.6) and ``fill=None`` means "no parent: zeros".

Hosted sparse, stream-optimized, COWD and seSparse extents are all "grain tables over a file"; they
differ in how an entry is encoded, where tables live and how space is allocated.
:class:`GrainedExtent` holds the one read/write algorithm and asks its subclass for those three
things, so that copy-on-write ordering (data first, then the pointer; section 3.6 step 4) and the
"validate everything before the first byte is written" rule exist once.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator
from typing import BinaryIO

from vmfs.vmdk.errors import CorruptError, OutOfRangeError, ReadOnlyError
from vmfs.vmdk.storage import DiskStorage

SECTOR = 512

#: ``fill(sector, count)`` returns the lower layers' bytes for extent sectors; None means zeros.
Filler = Callable[[int, int], bytes] | None
#: ``(first_sector, count)`` in extent sectors.
Hole = tuple[int, int]


class GrainState(enum.IntEnum):
    """How one grain of a grained extent reads."""

    UNALLOCATED = 0  #: not in this extent: read the parent (zeros without one)
    ZERO = 1  #: reads as zeros and hides the parent
    DATA = 2  #: raw data at a file sector
    COMPRESSED = 3  #: a compressed grain record at a file sector (stream-optimized)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True if every byte is zero (C-speed count, no per-byte Python loop)."""
    return bytes(data).count(0) == len(data) if isinstance(data, memoryview) else data.count(0) == len(data)


def add_hole(holes: list[Hole], start: int, count: int) -> None:
    """Append a hole, merging it with the previous one when they touch."""
    if holes and holes[-1][0] + holes[-1][1] == start:
        holes[-1] = (holes[-1][0], holes[-1][1] + count)
    else:
        holes.append((start, count))


class Extent(abc.ABC):
    """One extent of a disk.  ``capacity`` is in sectors; sector arguments are extent-relative."""

    #: storage name, used in every error message
    name: str
    capacity: int
    writable: bool = False
    #: True for delta formats whose unallocated ranges read from the parent.
    sparse: bool = False
    #: called once, before the first byte of the first modification is written (CID update...)
    on_modify: Callable[[], None] | None = None

    def _modifying(self) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.name}: extent is read-only")
        hook, self.on_modify = self.on_modify, None
        if hook is not None:
            hook()

    def _check_range(self, sector: int, count: int) -> None:
        if sector < 0 or count < 0 or sector + count > self.capacity:
            raise OutOfRangeError(
                f"{self.name}: sectors {sector}..{sector + count} outside the extent's {self.capacity}"
            )

    @abc.abstractmethod
    def read(self, sector: int, count: int) -> tuple[bytearray, list[Hole]]:
        """``count`` sectors; holes read as zeros in the buffer and are listed for the caller."""

    @abc.abstractmethod
    def write(self, sector: int, data: bytes, fill: Filler) -> None:
        """Write whole sectors.  Raises before writing anything if the metadata it needs is bad."""

    def prepare_write(self, sector: int, count: int) -> None:  # noqa: B027 - optional hook
        """Load and validate all metadata a write of this range needs, so that a corrupt table is
        reported before any other layer (descriptor CID, parent fill) is touched."""

    @abc.abstractmethod
    def allocated(self) -> Iterator[tuple[int, int, bool]]:
        """Ranges this extent defines, as ``(sector, count, reads_as_zero)``, in order."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Push cached metadata to storage."""

    def set_unclean(self, unclean: bool) -> None:  # noqa: B027 - optional hook
        """Set or clear the format's unclean-shutdown mark, if it has one."""

    @property
    def unclean(self) -> bool:
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release the storage handle."""


class ZeroExtent(Extent):
    """``ZERO`` extent lines: reads as zeros, has no file and cannot be written."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity

    def read(self, sector: int, count: int) -> tuple[bytearray, list[Hole]]:
        self._check_range(sector, count)
        return bytearray(count * SECTOR), []

    def write(self, sector: int, data: bytes, fill: Filler) -> None:
        raise ReadOnlyError(f"{self.name}: a ZERO extent cannot be written")

    def allocated(self) -> Iterator[tuple[int, int, bool]]:
        if self.capacity:
            yield (0, self.capacity, True)


def read_exact(fh: BinaryIO, offset: int, length: int, file: str, what: str) -> bytes:
    """Read exactly ``length`` bytes or report the structure as truncated."""
    fh.seek(offset)
    data = fh.read(length)
    if data is None or len(data) != length:
        got = 0 if data is None else len(data)
        raise CorruptError(file, what, f"truncated: {got} of {length} bytes present", offset=offset)
    return data


class GrainedExtent(Extent):
    """Grain tables over a file.  Subclasses provide the table encoding and allocation."""

    sparse = True
    grain_size: int  # sectors
    #: whether the format has a "zeroed grain" entry that hides the parent
    supports_zero_grain: bool = False
    fh: BinaryIO

    def __init__(self, storage: DiskStorage, name: str, *, writable: bool = False) -> None:
        """Open ``name`` in ``storage`` and load its header and directory; the file is closed
        again if loading fails, so a corrupt extent never leaks a handle."""
        self.storage = storage
        self.name = name
        self.writable = writable
        self.fh = storage.open(name, "r+b" if writable else "rb")
        try:
            self._load()
        except BaseException:
            self.fh.close()
            raise

    @abc.abstractmethod
    def _load(self) -> None:
        """Read and validate the header and grain directory of :attr:`fh`."""

    # -- hooks ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _entries(self, first_grain: int, count: int) -> list[tuple[GrainState, int]]:
        """State and file sector of grains ``first_grain ..``; loads and validates tables."""

    @abc.abstractmethod
    def _iter_entries(self) -> Iterator[tuple[int, GrainState, int]]:
        """Every grain that is not UNALLOCATED, in grain order, as ``(grain, state, value)``."""

    def _read_compressed(self, grain: int, value: int) -> bytes:
        raise CorruptError(self.name, "grain table", f"grain {grain} is compressed in an uncompressed extent")

    @abc.abstractmethod
    def _allocate(self, grains: int) -> int:
        """File sector of ``grains`` new, contiguous grains (the space is reserved, not written)."""

    @abc.abstractmethod
    def _commit(self, updates: list[tuple[int, GrainState, int]]) -> None:
        """Write table entries ``(grain, state, file_sector)``: tables first, directories last."""

    # -- shared algorithm --------------------------------------------------------------------------

    def _grain_sectors(self, grain: int) -> int:
        """Sectors of ``grain`` inside the capacity (the last grain may be short)."""
        return min(self.grain_size, self.capacity - grain * self.grain_size)

    def _file_read(self, file_sector: int, count: int) -> bytes:
        return read_exact(self.fh, file_sector * SECTOR, count * SECTOR, self.name, "grain data")

    def read(self, sector: int, count: int) -> tuple[bytearray, list[Hole]]:
        self._check_range(sector, count)
        buf = bytearray(count * SECTOR)
        holes: list[Hole] = []
        if count == 0:
            return buf, holes
        gs = self.grain_size
        end = sector + count
        g0 = sector // gs
        entries = self._entries(g0, (end - 1) // gs - g0 + 1)
        pos = sector
        while pos < end:
            g = pos // gs
            state, value = entries[g - g0]
            inner = pos - g * gs
            n = min(gs - inner, end - pos)
            if state == GrainState.DATA:
                # Coalesce following grains that are contiguous in the file into one read.
                start = value + inner
                while pos + n < end:
                    ng = (pos + n) // gs
                    nstate, nvalue = entries[ng - g0]
                    if nstate != GrainState.DATA or nvalue != start + n:
                        break
                    n += min(gs, end - pos - n)
                off = (pos - sector) * SECTOR
                buf[off : off + n * SECTOR] = self._file_read(start, n)
            elif state == GrainState.UNALLOCATED or state == GrainState.ZERO:
                # the grains after it in the same state join it: one step for the run, not one
                # per grain (a COWD delta's grains are single sectors, thousands to a read)
                k, last = g - g0 + 1, len(entries)
                while k < last and entries[k][0] == state:
                    k += 1
                n = min((g0 + k) * gs, end) - pos
                if state == GrainState.UNALLOCATED:
                    add_hole(holes, pos, n)
            elif state == GrainState.COMPRESSED:
                grain = self._read_compressed(g, value)
                off = (pos - sector) * SECTOR
                buf[off : off + n * SECTOR] = grain[inner * SECTOR : (inner + n) * SECTOR]
            pos += n
        return buf, holes

    def prepare_write(self, sector: int, count: int) -> None:
        self._check_range(sector, count)
        if count:
            g0 = sector // self.grain_size
            self._entries(g0, (sector + count - 1) // self.grain_size - g0 + 1)

    def write(self, sector: int, data: bytes, fill: Filler) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.name}: extent is read-only")
        if len(data) % SECTOR:
            raise OutOfRangeError(f"{self.name}: write of {len(data)} bytes is not whole sectors")
        count = len(data) // SECTOR
        self._check_range(sector, count)
        if count == 0:
            return
        gs = self.grain_size
        end = sector + count
        g0 = sector // gs
        entries = self._entries(g0, (end - 1) // gs - g0 + 1)
        view = memoryview(data)

        # Phase 1: decide everything (reads only).
        in_place: list[tuple[int, memoryview | bytes]] = []
        new_grains: list[tuple[int, bytes | bytearray | memoryview]] = []
        zero_grains: list[int] = []
        pos = sector
        while pos < end:
            g = pos // gs
            state, value = entries[g - g0]
            inner = pos - g * gs
            n = min(gs - inner, end - pos)
            chunk = view[(pos - sector) * SECTOR : (pos - sector + n) * SECTOR]
            pos += n
            if state == GrainState.DATA:
                in_place.append((value + inner, chunk))
                continue
            if state == GrainState.COMPRESSED:
                raise ReadOnlyError(f"{self.name}: compressed grains cannot be rewritten")
            length = self._grain_sectors(g)
            if inner == 0 and n == length:
                grain: bytes | bytearray | memoryview = chunk
            else:
                if state == GrainState.UNALLOCATED and fill is not None:
                    grain = bytearray(fill(g * gs, length))
                else:
                    grain = bytearray(length * SECTOR)
                grain[inner * SECTOR : (inner + n) * SECTOR] = chunk
            if is_zero(grain):
                if state == GrainState.ZERO or (state == GrainState.UNALLOCATED and fill is None):
                    continue
                if self.supports_zero_grain:
                    zero_grains.append(g)
                    continue
            if length < gs:  # a short last grain is still stored whole
                grain = bytes(grain) + bytes((gs - length) * SECTOR)
            new_grains.append((g, grain))

        if not (in_place or new_grains or zero_grains):
            return
        # Phase 2: write.  Data goes before any pointer to it.
        self._modifying()
        for file_sector, piece in _coalesce(in_place):
            self.fh.seek(file_sector * SECTOR)
            self.fh.write(piece)
        updates: list[tuple[int, GrainState, int]] = []
        if new_grains:
            first = self._allocate(len(new_grains))
            self.fh.seek(first * SECTOR)
            self.fh.write(b"".join(bytes(g) for _, g in new_grains))
            updates += [(g, GrainState.DATA, first + i * gs) for i, (g, _) in enumerate(new_grains)]
        updates += [(g, GrainState.ZERO, 0) for g in zero_grains]
        if updates:
            updates.sort()
            self._commit(updates)

    def allocated(self) -> Iterator[tuple[int, int, bool]]:
        run: list[int] | None = None  # [start, count, zero]
        for grain, state, _value in self._iter_entries():
            start = grain * self.grain_size
            if start >= self.capacity:
                continue
            length = self._grain_sectors(grain)
            zero = state == GrainState.ZERO
            if run is not None and run[0] + run[1] == start and bool(run[2]) == zero:
                run[1] += length
                continue
            if run is not None:
                yield (run[0], run[1], bool(run[2]))
            run = [start, length, int(zero)]
        if run is not None:
            yield (run[0], run[1], bool(run[2]))


def _coalesce(pieces: list[tuple[int, memoryview | bytes]]) -> Iterator[tuple[int, bytes]]:
    """Merge writes that are adjacent in the file into single writes."""
    current: tuple[int, list[memoryview | bytes], int] | None = None
    for sector, data in pieces:
        count = len(data) // SECTOR
        if current is not None and current[0] + current[2] == sector:
            current[1].append(data)
            current = (current[0], current[1], current[2] + count)
            continue
        if current is not None:
            yield current[0], b"".join(current[1])
        current = (sector, [data], count)
    if current is not None:
        yield current[0], b"".join(current[1])


def check_entry_target(file: str, structure: str, grain: int, target: int, file_sectors: int) -> None:
    """A grain pointer must address a sector inside the file (``qemu-img check``'s rule)."""
    if target >= file_sectors:
        raise CorruptError(
            file,
            structure,
            f"grain {grain} points to sector {target}, beyond the end of the file ({file_sectors} sectors)",
        )


__all__ = [
    "SECTOR",
    "Extent",
    "Filler",
    "GrainState",
    "GrainedExtent",
    "Hole",
    "ZeroExtent",
    "add_hole",
    "check_entry_target",
    "is_zero",
    "read_exact",
]
